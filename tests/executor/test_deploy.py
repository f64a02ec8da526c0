from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component, UpdateNeeded, handle_event
from executor.configure import ConfiguredRoot
from executor.deploy import deploy_roots
from executor.outcome import RootStatus
from executor.errors import (
    CommandError,
    DeployError,
    NotConvergedError,
    RunTimeoutError,
)
from executor.model import RootRecord
from executor.run import RunContext
from tests.executor.component_helpers import (
    Touched,
    apply_twice,
    configure_ok,
    deploy,
    deploy_ok,
    line_of,
    prepare,
    write_component,
)


class Probe(Component):
    """Out of date until its first update; records verify and update calls."""

    namevar = "name"
    name: str
    calls: list[str] | None = None
    outdated = False
    fail: str = ""

    def _record(self, what: str) -> None:
        assert self.calls is not None
        self.calls.append(f"{what} {self.name}")

    def verify(self) -> None:
        self._record("verify")
        if self.fail == "verify":
            raise KeyError("verify broke")
        if self.outdated:
            raise UpdateNeeded(f"{self.name} is outdated")

    def update(self) -> None:
        self._record("update")
        if self.fail == "update":
            raise OSError("update broke")
        self.outdated = False


class Group(Component):
    """Adds the given children; verifies like a Probe."""

    namevar = "name"
    name: str
    children: Any = ()
    calls: list[str] | None = None
    outdated = False

    def configure(self) -> None:
        for child in self.children:
            self += child

    def verify(self) -> None:
        assert self.calls is not None
        self.calls.append(f"verify {self.name}")
        if self.outdated:
            raise AssertionError(f"{self.name} is outdated")

    def update(self) -> None:
        assert self.calls is not None
        self.calls.append(f"update {self.name}")
        self.outdated = False


def tree(tmp_path: Path, calls: list[str], *, outdated: tuple[str, ...] = ()) -> Group:
    """root{a{a1, a2}, b}; the named components start out of date."""

    def probe(name: str) -> Probe:
        return Probe(name, calls=calls, outdated=name in outdated)

    a = Group("a", children=[probe("a1"), probe("a2")], calls=calls, outdated="a" in outdated)
    root = Group("root", children=[a, probe("b")], calls=calls, outdated="root" in outdated)
    prepare(root, tmp_path)
    return root


def by_name(root: Component) -> dict[str, Component]:
    return {c.name: c for c in [root, *root.recursive_sub_components]}  # type: ignore[attr-defined]


# --- order and changes ---------------------------------------------------------------


def test_children_deploy_first_in_add_order_then_the_parent(tmp_path: Path) -> None:
    calls: list[str] = []
    root = tree(tmp_path, calls)
    outcome = deploy_ok(root)
    assert calls == ["verify a1", "verify a2", "verify a", "verify b", "verify root"]
    assert outcome.changed == ()
    [result] = outcome.roots
    assert (result.name, result.status, result.changed) == ("root", RootStatus.OK, ())
    assert result.duration_s >= 0


def test_update_runs_only_when_verify_raises_an_assertion(tmp_path: Path) -> None:
    calls: list[str] = []
    root = tree(tmp_path, calls, outdated=("a2", "a"))
    first, _ = apply_twice(root)
    # The re-verify after each update is the second verify of a2 and a.
    assert calls[:9] == [
        "verify a1",
        "verify a2",
        "update a2",
        "verify a2",
        "verify a",
        "update a",
        "verify a",
        "verify b",
        "verify root",
    ]
    assert first.changed == ("Group('root') > Group('a') > Probe('a2')", "Group('root') > Group('a')")
    assert calls[9:] == ["verify a1", "verify a2", "verify a", "verify b", "verify root"]


def test_a_childs_change_marks_its_ancestors_changed(tmp_path: Path) -> None:
    calls: list[str] = []
    root = tree(tmp_path, calls, outdated=("a1",))
    outcome = deploy_ok(root)
    changed = {name: c.changed for name, c in by_name(root).items()}
    assert changed == {"root": True, "a": True, "a1": True, "a2": False, "b": False}
    # Only a1 updated itself; its ancestors changed through it.
    assert outcome.changed == ("Group('root') > Group('a') > Probe('a1')",)
    second = deploy_ok(root)
    assert second.changed == ()
    assert not any(c.changed for c in by_name(root).values())


class Aggregate(Component):
    """Updates when a child changed, batou's most common verify."""

    calls: list[str] | None = None

    def configure(self) -> None:
        self += Touched("one", calls=self.calls)
        self += Touched("two", calls=self.calls)

    def verify(self) -> None:
        self.assert_no_subcomponent_changes()

    def update(self) -> None:
        if self.calls is not None:
            self.calls.append("reload")


def test_assert_no_subcomponent_changes_updates_once_and_converges(tmp_path: Path) -> None:
    calls: list[str] = []
    root = prepare(Aggregate(calls=calls), tmp_path)
    first, _ = apply_twice(root)
    assert first.changed == ("Aggregate > Touched('one')", "Aggregate > Touched('two')", "Aggregate")
    assert calls.count("reload") == 1


class NoChanges(Aggregate):
    def verify(self) -> None:
        self.assert_no_changes()


class CurrentStamp(Component):
    """Rebuilds 'built' whenever its source component is newer."""

    source: Component

    def configure(self) -> None:
        self.source = Touched("source")
        self += self.source

    def verify(self) -> None:
        self.assert_component_is_current(self.source)

    def last_updated(self, key: str = "st_mtime") -> float | None:
        try:
            return os.stat(self.map("built")).st_mtime
        except FileNotFoundError:
            return None

    def update(self) -> None:
        self.touch("built")


@pytest.mark.parametrize("component", [NoChanges, CurrentStamp])
def test_change_based_assertions_converge(tmp_path: Path, component: type[Component]) -> None:
    root = prepare(component(), tmp_path)
    first, _ = apply_twice(root)
    assert first.changed[-1] == component.__name__


# --- failures ------------------------------------------------------------------------


def test_an_exception_in_verify_fails_the_run_with_breadcrumbs(tmp_path: Path) -> None:
    calls: list[str] = []
    broken = Probe("broken", calls=calls, fail="verify")
    root = prepare(Group("root", children=[broken, Probe("after", calls=calls)], calls=calls), tmp_path)
    outcome = deploy(root)
    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == "KeyError: 'verify broke'"
    assert outcome.error.where == "Group('root') > Probe('broken')"
    assert isinstance(outcome.error.__cause__, KeyError)
    assert calls == ["verify broken"]
    assert [r.status for r in outcome.roots] == [RootStatus.FAILED]
    assert not outcome.ok


def test_an_exception_in_update_fails_the_run(tmp_path: Path) -> None:
    root = prepare(Probe("broken", calls=[], outdated=True, fail="update"), tmp_path)
    outcome = deploy(root)
    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == "OSError: update broke"
    assert outcome.error.where == "Probe('broken')"


def test_later_roots_do_not_run_after_a_failure(tmp_path: Path) -> None:
    calls: list[str] = []
    first = prepare(Probe("first", calls=calls), tmp_path, name="first")
    broken = prepare(Probe("broken", calls=calls, fail="verify"), tmp_path, name="broken")
    later = prepare(Probe("later", calls=calls), tmp_path, name="later")
    outcome = deploy_roots(
        [
            ConfiguredRoot(RootRecord("first"), first),
            ConfiguredRoot(RootRecord("broken"), broken),
            ConfiguredRoot(RootRecord("later"), later),
        ],
        RunContext(),
        skipped=[("old", "skipped in the environment")],
    )
    assert [(r.name, r.status, r.reason) for r in outcome.roots] == [
        ("first", RootStatus.OK, ""),
        ("broken", RootStatus.FAILED, ""),
        ("later", RootStatus.NOT_RUN, "an earlier root failed"),
        ("old", RootStatus.SKIPPED, "skipped in the environment"),
    ]
    assert calls == ["verify first", "verify broken"]


def test_a_workdir_that_cannot_be_created_fails_the_run(tmp_path: Path) -> None:
    root = prepare(Probe("p", calls=[]), tmp_path)
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "work").write_text("a file where the work directory belongs")
    outcome = deploy(root)
    assert isinstance(outcome.error, DeployError)
    assert outcome.error.where == "Probe('p')"
    assert "work/root" in outcome.error.message


FAILING_FILE = """
from batou.component import Component


class Flaky(Component):
    def verify(self):
        raise RuntimeError("cannot tell")  # verify raises


class Stubborn(Component):
    def verify(self):
        assert False, "still wrong"  # never passes

    def update(self):
        pass


class Loud(Component):
    def verify(self):
        raise AssertionError("outdated")

    def update(self):
        self.cmd("echo nope >&2; exit 4")  # command fails
"""


@pytest.mark.parametrize(
    ("name", "marker", "error", "message"),
    [
        ("flaky", "# verify raises", DeployError, "RuntimeError: cannot tell"),
        (
            "stubborn",
            "# never passes",
            NotConvergedError,
            "update() ran but verify() still fails: still wrong",
        ),
        (
            "loud",
            "# command fails",
            CommandError,
            "command exited with 4: echo nope >&2; exit 4\n  stderr: nope",
        ),
    ],
)
def test_deploy_errors_name_the_users_file_and_line(
    tmp_path: Path, name: str, marker: str, error: type[Exception], message: str
) -> None:
    path = write_component(tmp_path, "failing", FAILING_FILE)
    [root] = configure_ok(tmp_path, name)
    outcome = deploy(root.component)
    assert isinstance(outcome.error, error)
    assert outcome.error.message == message
    line = line_of(path, marker)
    assert outcome.error.where == f"{name.title()} (components/failing/component.py:{line})"


# --- convergence ---------------------------------------------------------------------


class NeverConverges(Component):
    namevar = "name"
    updates = 0

    def verify(self) -> None:
        raise UpdateNeeded("always out of date")

    def update(self) -> None:
        self.updates += 1


class Holder(Component):
    def configure(self) -> None:
        self += NeverConverges("x")


def test_an_update_that_does_not_satisfy_verify_is_not_converged(tmp_path: Path) -> None:
    root = prepare(Holder(), tmp_path)
    outcome = deploy(root)
    assert isinstance(outcome.error, NotConvergedError)
    assert outcome.error.message == "update() ran but verify() still fails: always out of date"
    assert outcome.error.where == "Holder > NeverConverges('x')"
    assert outcome.error.hint is not None and "converges = False" in outcome.error.hint
    assert root.sub_components[0].updates == 1  # type: ignore[attr-defined]


class RunsEveryTime(NeverConverges):
    converges = False


def test_converges_false_opts_out_of_the_re_verify(tmp_path: Path) -> None:
    root = prepare(RunsEveryTime("x"), tmp_path)
    for run in (1, 2):
        outcome = deploy_ok(root)
        # By design it updates on every run, and says so.
        assert outcome.changed == ("RunsEveryTime('x')",)
        assert root.updates == run  # type: ignore[attr-defined]


# --- predicting (dry run) --------------------------------------------------------------


class Predicts(Component):
    namevar = "name"
    seen: Any = None
    updated = False

    def verify(self, predicting: bool = False) -> None:
        self.seen = predicting
        assert self.updated

    def update(self) -> None:
        self.updated = True


class PredictsByKeywordOnly(Predicts):
    # N.B. keyword-only on purpose: the executor must pass `predicting` by name.
    def verify(self, *, predicting: bool = False) -> None:  # type: ignore[override]
        super().verify(predicting=predicting)


class IgnoresPredicting(Component):
    namevar = "name"
    calls = 0
    updated = False

    def verify(self) -> None:
        self.calls += 1
        assert self.updated

    def update(self) -> None:
        self.updated = True


class Watcher(Component):
    events: Any = None

    def configure(self) -> None:
        self += Predicts("positional")
        self += PredictsByKeywordOnly("keyword")
        self += IgnoresPredicting("plain")

    @handle_event("before-update", "*")
    def notice(self, component: Component) -> None:
        self.events.append(component._breadcrumb)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every directory tempfile.mkdtemp makes while the test runs."""
    paths: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def watched(*args: Any, **kw: Any) -> str:
        path = real_mkdtemp(*args, **kw)
        paths.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", watched)
    return paths


def test_a_run_that_needs_no_empty_directory_makes_none(tmp_path: Path, made: list[str]) -> None:
    calls: list[str] = []
    deploy_ok(tree(tmp_path, calls, outdated=("a1",)))
    assert made == []


def test_predicting_reports_changes_without_updating(tmp_path: Path, made: list[str]) -> None:
    events: list[str] = []
    root = prepare(Watcher(events=events), tmp_path)
    outcome = deploy_ok(root, predicting=True)
    positional, keyword, plain = root.sub_components
    assert (positional.seen, keyword.seen) == (True, True)  # type: ignore[attr-defined]
    assert plain.calls == 1  # type: ignore[attr-defined]
    assert outcome.changed == (
        "Watcher > Predicts('positional')",
        "Watcher > PredictsByKeywordOnly('keyword')",
        "Watcher > IgnoresPredicting('plain')",
    )
    assert not any(c.updated for c in root.sub_components)  # type: ignore[attr-defined]
    assert events == []
    assert root.changed
    assert not (tmp_path / "target").exists(), "a dry run must not create the workdir"
    # The dry run verified in one empty directory, gone with the run.
    [empty] = made
    assert os.path.basename(empty).startswith("consign-empty-")
    assert not os.path.exists(empty)
    # A real run after the prediction updates exactly what was predicted.
    real, _ = apply_twice(root)
    assert real.changed == outcome.changed
    assert positional.seen is False  # type: ignore[attr-defined]
    assert events == ["Predicts('positional')", "PredictsByKeywordOnly('keyword')", "IgnoresPredicting('plain')"]


# --- the context manager -----------------------------------------------------------------


class Mounted(Component):
    calls: Any = None
    ok = False
    broken = False

    def __enter__(self) -> Mounted:
        self.calls.append("enter")
        return self

    def __exit__(self, *exc_info: object) -> None:
        exc_type = exc_info[0]
        self.calls.append(f"exit {exc_type.__name__ if isinstance(exc_type, type) else None}")

    def verify(self) -> None:
        self.calls.append("verify")
        assert self.ok

    def update(self) -> None:
        self.calls.append("update")
        if self.broken:
            raise RuntimeError("mount failed")
        self.ok = True


def test_context_manager_wraps_verify_and_update_once(tmp_path: Path) -> None:
    calls: list[str] = []
    root = prepare(Mounted(calls=calls), tmp_path)
    apply_twice(root)
    assert calls == [
        "enter",
        "verify",
        "update",
        "verify",
        "exit None",
        "enter",
        "verify",
        "exit None",
    ]


def test_context_manager_exits_when_update_fails(tmp_path: Path) -> None:
    calls: list[str] = []
    root = prepare(Mounted(calls=calls, broken=True), tmp_path)
    outcome = deploy(root)
    assert isinstance(outcome.error, DeployError)
    assert calls == ["enter", "verify", "update", "exit RuntimeError"]


# --- events ---------------------------------------------------------------------------------


class Service(Component):
    """Reacts to updates before it in the root (stop before changing files)."""

    namevar = "name"
    name: str
    events: Any = None

    @handle_event("before-update", "precursor")
    def stop(self, component: Component) -> None:
        self.events.append(f"{self.name} precursor {component._breadcrumb}")


class Auditor(Component):
    events: Any = None

    @handle_event("before-update", "*")
    def audit(self, component: Component) -> None:
        self.events.append(f"audit {component._breadcrumb}")


class Stack(Component):
    events: Any = None

    def configure(self) -> None:
        self += Probe("early", calls=[], outdated=True)
        self += Service("svc", events=self.events)
        self += Probe("late", calls=[], outdated=True)
        self += Auditor(events=self.events)


def test_before_update_handlers(tmp_path: Path) -> None:
    events: list[str] = []
    root = prepare(Stack(events=events), tmp_path)
    other_events: list[str] = []
    other = prepare(Auditor(events=other_events), tmp_path, name="other")
    first = deploy_ok(root, other)
    assert events == [
        "svc precursor Probe('early')",
        "audit Probe('early')",
        "audit Probe('late')",
    ]
    assert first.changed == ("Stack > Probe('early')", "Stack > Probe('late')")
    # Handlers belong to their root; an unchanged root's handlers hear nothing.
    assert other_events == []
    events.clear()
    assert deploy_ok(root, other).changed == ()
    assert events == []


def test_handler_sees_its_own_component_with_scope_star(tmp_path: Path) -> None:
    events: list[str] = []

    class SelfAware(Component):
        done = False

        def verify(self) -> None:
            assert self.done

        def update(self) -> None:
            self.done = True

        @handle_event("before-update", "*")
        def heard(self, component: Component) -> None:
            events.append(component._breadcrumb)

    apply_twice(prepare(SelfAware(), tmp_path))
    assert events == ["SelfAware"]


@pytest.mark.parametrize(
    ("event", "scope", "message"),
    [
        ("after-update", "*", "unknown event 'after-update'; consign knows before-update"),
        ("before-update", "all", "unknown event scope 'all'; use '*' or 'precursor'"),
    ],
)
def test_bad_event_or_scope_is_refused(event: str, scope: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        handle_event(event, scope)
    assert str(info.value) == message


# --- time limits ------------------------------------------------------------------------------


class Slow(Component):
    namevar = "name"
    name: str
    calls: Any = None
    seconds = 0.0
    command = ""

    def verify(self) -> None:
        self.calls.append(f"verify {self.name}")
        raise UpdateNeeded("always")

    def update(self) -> None:
        if self.command:
            self.cmd(self.command)
        time.sleep(self.seconds)

    converges = False


def test_an_update_that_ends_past_the_deadline_fails_and_nothing_follows(tmp_path: Path) -> None:
    calls: list[str] = []

    class Pipeline(Component):
        def configure(self) -> None:
            self += Slow("first", calls=calls, seconds=0.8)
            self += Slow("second", calls=calls)

    root = prepare(Pipeline(), tmp_path)
    outcome = deploy(root, deadline=time.monotonic() + 0.5)
    assert isinstance(outcome.error, RunTimeoutError)
    assert outcome.error.message == "the run exceeded its time limit"
    assert outcome.error.where == "Pipeline > Slow('first')"
    assert calls == ["verify first"]
    assert outcome.roots[0].status is RootStatus.FAILED


def test_an_expired_deadline_stops_before_the_first_component(tmp_path: Path) -> None:
    calls: list[str] = []
    root = prepare(Slow("only", calls=calls), tmp_path)
    outcome = deploy(root, deadline=time.monotonic() - 1)
    assert isinstance(outcome.error, RunTimeoutError)
    assert calls == []


@pytest.mark.parametrize("limit", ["command_timeout", "deadline"])
def test_a_command_over_the_limit_fails_the_run_quickly(tmp_path: Path, limit: str) -> None:
    root = prepare(Slow("cmd", calls=[], command="sleep 30"), tmp_path)
    started = time.monotonic()
    if limit == "command_timeout":
        outcome = deploy(root, command_timeout=0.5)
    else:
        outcome = deploy(root, deadline=time.monotonic() + 0.5)
    assert time.monotonic() - started < 10
    assert isinstance(outcome.error, CommandError)
    assert outcome.error.returncode is None
    assert outcome.error.message.startswith("command timed out after")
    assert outcome.error.where == "Slow('cmd')"


USES_LIBRARY = """
from batou.component import Component
from tests.executor.component_helpers import LibraryFailure


class Wrapped(LibraryFailure):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)  # not where it is created


class Direct(Component):
    def configure(self):
        self += LibraryFailure("direct")  # created directly


class Indirect(Component):
    def configure(self):
        self += Wrapped("wrapped")  # created through a subclass
"""


@pytest.mark.parametrize(
    ("root", "crumbs", "marker"),
    [
        ("direct", "Direct > LibraryFailure('direct')", "# created directly"),
        ("indirect", "Indirect > Wrapped('wrapped')", "# created through a subclass"),
    ],
)
def test_library_errors_point_at_the_line_that_created_the_component(
    tmp_path: Path, root: str, crumbs: str, marker: str
) -> None:
    path = write_component(tmp_path, "uses", USES_LIBRARY)
    [configured] = configure_ok(tmp_path, root)
    outcome = deploy(configured.component)
    assert isinstance(outcome.error, DeployError)
    assert outcome.error.message == "the library gave up"
    assert outcome.error.where == f"{crumbs} (components/uses/component.py:{line_of(path, marker)})"
