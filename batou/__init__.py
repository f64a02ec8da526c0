"""batou compatibility: re-exports consign's executor under batou's names.

Existing deployments import ``batou.component``, ``batou.lib.file`` and
``batou.utils``; this package holds no logic of its own.
"""

from executor.component import UpdateNeeded
from executor.errors import ConfigurationError, ConsignError

__all__ = ["ConfigurationError", "ConsignError", "UpdateNeeded"]
