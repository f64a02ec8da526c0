"""batou.lib.git: git checkouts (see executor.lib.git)."""

from executor.lib.git import Clone

__all__ = ["Clone"]
