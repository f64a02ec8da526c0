"""Caches shared by the whole test session.

Every test bundle carries a runtime (a pex) built by the builder, and every
apply makes a runtime environment from it. Both are cached by content, so
the session shares one cache for each instead of building per test.
Set CONSIGN_CACHE_DIR / CONSIGN_RUNTIME_DIR to choose where they live.
Name resolution stays offline (CONSIGN_DNS=offline).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_base = Path(tempfile.gettempdir(), f"consign-test-cache-{os.getuid()}")
os.environ.setdefault("CONSIGN_CACHE_DIR", str(_base / "builder"))
os.environ.setdefault("CONSIGN_RUNTIME_DIR", str(_base / "runtimes"))
# Tests never ask a name server: overrides, pinned answers and /etc/hosts only.
os.environ.setdefault("CONSIGN_DNS", "offline")
for _directory in (os.environ["CONSIGN_CACHE_DIR"], os.environ["CONSIGN_RUNTIME_DIR"]):
    os.makedirs(_directory, mode=0o700, exist_ok=True)
    os.chmod(_directory, 0o700)


# Property-based tests (hypothesis): a bounded, reproducible set of examples
# in the suite ("ci"); HYPOTHESIS_PROFILE=long searches more, at random.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
