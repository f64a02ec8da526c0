"""Deploying configured roots: children first, verify, update, re-verify.

For each component, depth first: deploy the children (a child's change marks
its parent changed), then, inside the component's context manager and in its
workdir, call ``verify()``. When it raises AssertionError (UpdateNeeded is
one), the component needs an update: before-update handlers of the root are
told, ``update()`` runs, and ``verify()`` runs again; when it still fails,
the update did not converge and the run fails. With ``predicting`` (a dry
run) nothing updates and the component is reported as one that would change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .component import Component, accepts_predicting, working_directory, locate, user_location
from .configure import ConfiguredRoot
from .outcome import DeployOutcome, RootOutcome, RootStatus
from .fs import deferred_sync
from .errors import ConsignError, DeployError, NotConvergedError, RunTimeoutError
from .run import DeadlineReached, RunContext, interruptible, running


Handler = tuple[int, Component, Callable[[Component], Any], str]

_HANDLER_NAMES: dict[type, tuple[tuple[str, str], ...]] = {}


def _handler_names(cls: type) -> tuple[tuple[str, str], ...]:
    known = _HANDLER_NAMES.get(cls)
    if known is None:
        # What getattr_static would find for each name (the first class in
        # the MRO that defines it), without asking for every name of dir().
        members: dict[str, Any] = {}
        for klass in cls.__mro__:
            for name, member in vars(klass).items():
                members.setdefault(name, member)
        found = []
        for name in sorted(members):
            marker = getattr(members[name], "_consign_event", None)
            if marker is not None:
                found.append((name, marker[1]))
        known = _HANDLER_NAMES[cls] = tuple(found)
    return known


class _EmptyDirectory:
    """An empty directory for dry runs to verify in, made on first use
    (most runs never need one) and removed with the run."""

    def __init__(self) -> None:
        self._path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            self._path = tempfile.mkdtemp(prefix="consign-empty-")
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)


@dataclass
class _RootRun:
    run: RunContext
    empty: _EmptyDirectory = field(default_factory=_EmptyDirectory)
    order: dict[int, int] = field(default_factory=dict)
    handlers: list[Handler] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    # Workdirs known to exist (a component that removes its own workdir
    # gets it back from the next run).
    workdirs: set[str] = field(default_factory=set)

    def index(self, component: Component) -> None:
        for child in component.sub_components:
            self.index(child)
        position = len(self.order)
        self.order[id(component)] = position
        for name, scope in _handler_names(type(component)):
            self.handlers.append((position, component, getattr(component, name), scope))

    def before_update(self, component: Component) -> None:
        position = self.order[id(component)]
        for handler_position, _owner, method, scope in self.handlers:
            if scope == "precursor" and handler_position <= position:
                continue
            method(component)


def _verify(component: Component, predicting: bool) -> None:
    if accepts_predicting(component.verify):
        component.verify(predicting=predicting)  # type: ignore[call-arg]
    else:
        component.verify()


def _deploy(component: Component, state: _RootRun) -> None:
    component.changed = False
    for child in component.sub_components:
        _deploy(child, state)
        if child.changed:
            component.changed = True
    run = state.run
    run.check_deadline()
    workdir = component.workdir
    try:
        if workdir and workdir not in state.workdirs:
            if not run.predicting and not os.path.isdir(workdir):
                os.makedirs(workdir, exist_ok=True)
            if os.path.isdir(workdir):
                # Components of a root share their workdir: look once.
                state.workdirs.add(workdir)
            else:
                # A dry run creates nothing: verify in an empty directory,
                # where relative paths find nothing, as in the workdir-to-be.
                workdir = state.empty.path
        with interruptible(), working_directory(workdir), component:
            try:
                _verify(component, run.predicting)
            except AssertionError:
                component.changed = True
                state.changed.append(component._breadcrumbs)
                if run.predicting:
                    return
                state.before_update(component)
                component.update()
                run.check_deadline()
                if component.converges:
                    _reverify(component)
    except DeadlineReached as exc:
        raise locate(
            RunTimeoutError(
                "the run exceeded its time limit",
                hint="raise --timeout, or look at what took long in the run's log",
            ),
            component,
            user_location(exc),
        ) from None
    except ConsignError as exc:
        # Re-raise as is: 'from None' would drop the cause the error carries.
        locate(exc, component, user_location(exc))
        raise
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise locate(
            DeployError(f"{type(exc).__name__}: {exc}"), component, user_location(exc)
        ) from exc


def _reverify(component: Component) -> None:
    component._consign.reverifying = True
    try:
        _verify(component, False)
    except AssertionError as exc:
        reason = f": {exc}" if str(exc) else ""
        error = NotConvergedError(
            f"update() ran but verify() still fails{reason}",
            hint="make update() reach the state verify() checks; a component that must "
            "run every time sets 'converges = False'",
        )
        # Point at the assertion that still fails, not at the deploy machinery.
        raise locate(error, component, user_location(exc)) from None
    finally:
        component._consign.reverifying = False


def deploy_roots(
    roots: Sequence[ConfiguredRoot],
    run: RunContext,
    *,
    skipped: Sequence[tuple[str, str]] = (),
) -> DeployOutcome:
    """Deploy `roots` in order; stop at the first failure."""
    outcomes: list[RootOutcome] = []
    error: ConsignError | None = None
    empty = _EmptyDirectory()
    try:
        with running(run), deferred_sync():
            for root in roots:
                name = root.record.name
                if error is not None:
                    outcomes.append(
                        RootOutcome(name, RootStatus.NOT_RUN, reason="an earlier root failed")
                    )
                    continue
                state = _RootRun(run, empty)
                state.index(root.component)
                started = time.monotonic()
                try:
                    _deploy(root.component, state)
                except ConsignError as exc:
                    error = exc
                duration = time.monotonic() - started
                status = RootStatus.OK if error is None else RootStatus.FAILED
                outcomes.append(RootOutcome(name, status, tuple(state.changed), duration))
    finally:
        empty.remove()
    outcomes.extend(RootOutcome(name, RootStatus.SKIPPED, reason=why) for name, why in skipped)
    return DeployOutcome(tuple(outcomes), error)
