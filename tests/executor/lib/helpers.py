"""Configuring and deploying library components in-process, for tests.

A test defines a root component class (``class Root(Component)``) whose
``configure`` adds the components under test, and hands it to
:func:`deploy` or :func:`apply_twice`. The target directory is
``<tmp_path>/target``; the root's workdir is ``<target>/work/root``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from executor.component import Component
from executor.configure import ConfiguredRoot
from executor.deploy import deploy_roots
from executor.outcome import DeployOutcome
from executor.environment import Environment, Host
from executor.model import EnvironmentRecord, HostRecord, RootRecord, VfsRules
from executor.run import RunContext

ROOT_NAME = "root"


def target_directory(tmp_path: Path) -> Path:
    return tmp_path / "target"


def workdir(tmp_path: Path) -> Path:
    """Where relative paths of the root land."""
    return target_directory(tmp_path) / "work" / ROOT_NAME


def configure(
    factory: Callable[[], Component],
    tmp_path: Path,
    *,
    defdir: Path | None = None,
    vfs: VfsRules | None = None,
) -> Component:
    """A configured root: raises what configure raises."""
    record = EnvironmentRecord(
        name="test",
        target_directory=str(target_directory(tmp_path)),
        vfs=vfs if vfs is not None else VfsRules(),
    )
    environment = Environment(record)
    host = Host(HostRecord(name="host1", fqdn="host1.example.com"), None)
    component = factory()
    component.prepare_root(
        name=ROOT_NAME,
        host=host,
        environment=environment,
        defdir=str(defdir if defdir is not None else tmp_path),
    )
    return component


def deploy(
    factory: Callable[[], Component],
    tmp_path: Path,
    *,
    predicting: bool = False,
    defdir: Path | None = None,
    vfs: VfsRules | None = None,
    secrets: frozenset[str] = frozenset(),
) -> tuple[DeployOutcome, RunContext]:
    """Configure a fresh root and deploy it once; return the outcome and the run."""
    component = configure(factory, tmp_path, defdir=defdir, vfs=vfs)
    run = RunContext(predicting=predicting, secrets=secrets)
    outcome = deploy_roots([ConfiguredRoot(RootRecord(ROOT_NAME), component)], run)
    return outcome, run


def apply_twice(
    factory: Callable[[], Component],
    tmp_path: Path,
    *,
    defdir: Path | None = None,
    vfs: VfsRules | None = None,
) -> tuple[DeployOutcome, RunContext]:
    """Deploy twice; the first run must succeed and the second change nothing.

    Returns the first run's outcome and run context.
    """
    first, run = deploy(factory, tmp_path, defdir=defdir, vfs=vfs)
    assert first.error is None, first.error
    second, second_run = deploy(factory, tmp_path, defdir=defdir, vfs=vfs)
    assert second.error is None, second.error
    assert second.changed == (), f"the second run changed {second.changed}"
    assert second_run.diffs == []
    return first, run


# A stand-in for systemctl: appends its arguments to $FAKE_SYSTEMCTL/calls
# and answers is-enabled / is-active / show from files there.
FAKE_SYSTEMCTL = r"""#!/bin/sh
dir="$FAKE_SYSTEMCTL"
echo "$*" >> "$dir/calls"
if [ -e "$dir/broken" ]; then
    echo "Failed to connect to bus: No medium found" >&2
    exit 1
fi
manager=system verb= unit=
for arg in "$@"; do
    case "$arg" in
        --user) manager=user ;;
        --machine=*) manager="${arg#--machine=}" ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$arg; else unit=$arg; fi ;;
    esac
done
state="$dir/$manager-$unit"
case "$verb" in
    is-enabled)
        if [ -e "$state.masked" ]; then echo masked; exit 1; fi
        if [ -e "$state.enabled" ]; then echo enabled; else echo disabled; exit 1; fi ;;
    is-active)
        if [ -e "$state.active" ]; then echo active; else echo inactive; exit 3; fi ;;
    show)
        if [ -e "$dir/$manager-need-reload" ]; then echo yes; else echo no; fi ;;
    daemon-reload) rm -f "$dir/$manager-need-reload" ;;
    enable) touch "$state.enabled" ;;
    start|restart) touch "$state.active" ;;
    *) echo "fake systemctl: unknown verb $verb" >&2; exit 1 ;;
esac
"""
