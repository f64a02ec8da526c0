"""batou.lib.cron: cron jobs collected into crontabs (see executor.lib.cron)."""

from executor.lib.cron import CronJob, CronTab

__all__ = ["CronJob", "CronTab"]
