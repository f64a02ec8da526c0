"""batou.lib.download: checksummed downloads (see executor.lib.download)."""

from executor.lib.download import Download

__all__ = ["Download"]
