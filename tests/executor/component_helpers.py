"""Driving components in tests: prepare roots, deploy them, load component files.

Components are configured exactly as the executor does it (``prepare_root``)
and deployed through :func:`executor.deploy.deploy_roots`, so the tests see
the same ordering, error locating and re-verification as a real run.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

from executor.component import Component
from executor.configure import ConfiguredRoot, configure_host
from executor.deploy import deploy_roots
from executor.outcome import DeployOutcome
from executor.environment import Environment, Host
from executor.errors import ConsignError, DeployError
from executor.loader import Registry, load_components
from executor.model import EnvironmentRecord, HostModel, HostRecord, RootRecord, VfsRules
from executor.run import RunContext

SERVICE_USER = "app"


def host_record(platform: str | None = None, data: dict[str, str] | None = None) -> HostRecord:
    return HostRecord(
        name="web1",
        fqdn="web1.example.com",
        platform=platform,
        data=tuple(sorted((data or {}).items())),
    )


def environment_record(tmp_path: Path, vfs: VfsRules | None = None) -> EnvironmentRecord:
    return EnvironmentRecord(
        name="test",
        target_directory=str(tmp_path / "target"),
        service_user=SERVICE_USER,
        host_domain="example.com",
        vfs=vfs or VfsRules(),
    )


def prepare(
    component: Component,
    tmp_path: Path,
    *,
    name: str = "root",
    platform: str | None = None,
    data: dict[str, str] | None = None,
    vfs: VfsRules | None = None,
    features: Sequence[str] = (),
    overrides: Sequence[tuple[str, str]] = (),
    defdir: Path | None = None,
) -> Component:
    """Configure `component` as the root `name` of the test host; return it."""
    component.prepare_root(
        name=name,
        host=Host(host_record(platform, data), SERVICE_USER),
        environment=Environment(environment_record(tmp_path, vfs)),
        defdir=str(defdir if defdir is not None else tmp_path),
        features=features,
        overrides=overrides,
    )
    return component


def deploy(
    *roots: Component,
    predicting: bool = False,
    command_timeout: float | None = None,
    deadline: float | None = None,
    run: RunContext | None = None,
) -> DeployOutcome:
    """Deploy prepared roots in order, named by their root name."""
    if run is None:
        run = RunContext(predicting=predicting, command_timeout=command_timeout, deadline=deadline)
    configured = [
        ConfiguredRoot(RootRecord(root._consign.root_name or type(root).__name__.lower()), root)
        for root in roots
    ]
    return deploy_roots(configured, run)


def deploy_ok(*roots: Component, predicting: bool = False) -> DeployOutcome:
    outcome = deploy(*roots, predicting=predicting)
    assert outcome.error is None, outcome.error.render()
    return outcome


def apply_twice(*roots: Component) -> tuple[DeployOutcome, DeployOutcome]:
    """Deploy twice; assert the second run succeeds and changes nothing."""
    first = deploy_ok(*roots)
    second = deploy_ok(*roots)
    assert second.changed == (), f"the second run changed {second.changed}"
    return first, second


def write_component(repository: Path, directory: str, source: str) -> Path:
    path = repository / "components" / directory / "component.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return path


def load(repository: Path) -> Registry:
    registry, errors = load_components(repository)
    assert errors == [], [e.render() for e in errors]
    return registry


def configure_roots(
    repository: Path,
    *roots: RootRecord | str,
    platform: str | None = None,
    data: dict[str, str] | None = None,
    registry: Registry | None = None,
) -> tuple[list[ConfiguredRoot], list[ConsignError]]:
    """Load the repository's component files and configure `roots` on the test host."""
    if registry is None:
        registry = load(repository)
    model = HostModel(
        environment=environment_record(repository),
        host=host_record(platform, data),
        roots=tuple(RootRecord(r) if isinstance(r, str) else r for r in roots),
    )
    return configure_host(model, registry, base_dir=str(repository.resolve()))


def configure_ok(
    repository: Path, *roots: RootRecord | str, platform: str | None = None
) -> list[ConfiguredRoot]:
    configured, errors = configure_roots(repository, *roots, platform=platform)
    assert errors == [], [e.render() for e in errors]
    return configured


def line_of(path: Path, marker: str) -> int:
    """The 1-based line of `path` that contains `marker`."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in {path}")


class Marker(Component):
    """Does nothing; named, to tell children apart."""

    namevar = "name"
    name: str


class Touched(Component):
    """Converges by creating `path` (relative paths: in the workdir); records its calls."""

    namevar = "path"
    path: str
    calls: list[str] | None = None

    def _record(self, what: str) -> None:
        if self.calls is not None:
            self.calls.append(f"{what} {self.path}")

    def verify(self) -> None:
        self._record("verify")
        assert os.path.exists(self.map(self.path)), f"{self.path} is missing"

    def update(self) -> None:
        self._record("update")
        self.touch(self.path)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        try:
            return float(getattr(os.stat(self.map(self.path)), key))
        except FileNotFoundError:
            return None


class LibraryFailure(Component):
    """A library component (no deployment frames) whose verify fails."""

    namevar = "name"

    def verify(self) -> None:
        raise DeployError("the library gave up")
