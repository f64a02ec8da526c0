"""batou.utils: Address, NetLoc and helpers (see executor.utils)."""

from executor.utils import Address, NetLoc, dict_merge, hash

__all__ = ["Address", "NetLoc", "dict_merge", "hash"]
