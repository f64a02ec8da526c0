"""batou.lib.logrotate: logfiles collected into a logrotate configuration
(see executor.lib.logrotate)."""

from executor.lib.logrotate import Logrotate, RotatedLogfile

__all__ = ["Logrotate", "RotatedLogfile"]
