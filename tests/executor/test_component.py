from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from executor.component import (
    Attribute,
    Component,
    ConfigString,
    UpdateNeeded,
    platform,
)
from executor.errors import (
    AttributeValueError,
    CommandError,
    ComponentLoadError,
    ConfigurationError,
    MissingNamevarError,
    OverrideError,
    TemplateError,
    UnknownKeywordError,
)
from executor.loader import load_components
from executor.model import RootRecord, VfsMode, VfsRules
from executor.run import Level, RunContext, running
from tests.executor.component_helpers import (
    Marker,
    Touched,
    apply_twice,
    configure_ok,
    configure_roots,
    deploy,
    deploy_ok,
    line_of,
    load,
    prepare,
    write_component,
)

# --- the constructor ----------------------------------------------------------


class Named(Component):
    namevar = "name"
    name: str
    size = 1


class Plain(Component):
    size = 1


def test_namevar_is_set_from_the_first_positional_argument() -> None:
    component = Named("app")
    assert component.name == "app"
    assert repr(component) == "<Named('app')>"


def test_namevar_may_be_given_as_keyword() -> None:
    component = Named(name="app", size=2)
    assert (component.name, component.size) == ("app", 2)


def test_namevar_given_twice_is_an_error() -> None:
    with pytest.raises(UnknownKeywordError) as info:
        Named("a", name="b")
    assert info.value.message == (
        "Named got its 'name' twice: 'a' as first argument and 'b' as keyword"
    )


def test_missing_namevar_is_an_error_naming_it() -> None:
    with pytest.raises(MissingNamevarError) as info:
        Named(size=2)
    assert info.value.message == "Named needs its 'name' as first argument, got none"
    assert info.value.hint == "write Named(<name>, ...) or Named(name=...)"


def test_positional_argument_without_namevar_is_an_error() -> None:
    with pytest.raises(UnknownKeywordError) as info:
        Plain("app")
    assert info.value.message == (
        "Plain takes no positional argument (it has no namevar), got 'app'"
    )
    assert info.value.hint == "pass attributes as keywords"


def test_unacceptable_keywords_are_listed_sorted() -> None:
    with pytest.raises(UnknownKeywordError) as info:
        Plain(zeta=1, size=2, alpha=3)
    assert info.value.message == "Plain does not accept 'alpha', 'zeta'"
    assert info.value.hint is not None and "alpha = None" in info.value.hint


class WithCallables(Component):
    factory = dict

    def method(self) -> None:
        pass

    @staticmethod
    def static() -> None:
        pass

    @classmethod
    def klass(cls) -> None:
        pass


@pytest.mark.parametrize("key", ["factory", "method", "static", "klass", "configure", "cmd"])
def test_callable_class_attributes_are_not_acceptable_keywords(key: str) -> None:
    with pytest.raises(UnknownKeywordError) as info:
        WithCallables(**{key: 1})
    assert info.value.message == f"WithCallables does not accept {key!r}"


@pytest.mark.parametrize("key", ["host", "parent", "root", "environment", "defdir", "changed"])
def test_runtime_names_are_not_acceptable_keywords(key: str) -> None:
    with pytest.raises(UnknownKeywordError, match=f"does not accept {key!r}"):
        Plain(**{key: 1})


class Computed(Component):
    _base = "http://example.com"

    @property
    def url(self) -> str:
        return self._base + "/"

    @property
    def settable(self) -> str:
        return self._base

    @settable.setter
    def settable(self, value: str) -> None:
        self._base = value.upper()


def test_read_only_property_cannot_be_set_by_keyword() -> None:
    with pytest.raises(UnknownKeywordError) as info:
        Computed(url="http://other")
    assert info.value.message == "Computed.url cannot be set (read-only)"
    assert info.value.hint == "drop the keyword url=...; Computed computes it"


def test_property_with_setter_accepts_a_keyword() -> None:
    assert Computed(settable="x").settable == "X"


# --- composition --------------------------------------------------------------


class Recorder(Component):
    """Remembers the context it was configured in."""

    namevar = "name"
    name: str
    seen: dict[str, Any]

    def configure(self) -> None:
        self.seen = {
            "host": self.host,
            "environment": self.environment,
            "root": self.root,
            "parent": self.parent,
            "workdir": self.workdir,
            "defdir": self.defdir,
            "cwd": os.getcwd(),
        }


class Family(Component):
    def configure(self) -> None:
        self += Recorder("child")
        assert isinstance(self._, Recorder)
        self._.seen["children_of_parent"] = list(self.sub_components)


class Nested(Component):
    namevar = "name"

    def configure(self) -> None:
        self += Recorder("grandchild")


class Grand(Component):
    def configure(self) -> None:
        self += Nested("child")


def test_add_appends_the_child_and_configures_it_in_the_parents_context(tmp_path: Path) -> None:
    root = prepare(Family(), tmp_path)
    [child] = root.sub_components
    assert isinstance(child, Recorder)
    seen = child.seen
    assert seen["host"] is root.host
    assert seen["environment"] is root.environment
    assert seen["root"] is root
    assert seen["parent"] is root
    assert seen["workdir"] == root.workdir == str(tmp_path / "target" / "work" / "root")
    assert seen["defdir"] == root.defdir == str(tmp_path)
    # configure ran before the child was appended.
    assert seen["children_of_parent"] == [child]
    assert root.host.fqdn == "web1.example.com"


def test_grandchildren_share_the_root_and_know_their_parent(tmp_path: Path) -> None:
    root = prepare(Grand(), tmp_path)
    [child] = root.sub_components
    [grandchild] = child.sub_components
    assert isinstance(grandchild, Recorder)
    assert grandchild.seen["root"] is root
    assert grandchild.seen["parent"] is child
    assert list(root.recursive_sub_components) == [child, grandchild]
    assert grandchild._breadcrumbs == "Grand > Nested('child') > Recorder('grandchild')"


class AddsNone(Component):
    def configure(self) -> None:
        self += Marker("a")
        self += None
        self.last = self._


def test_adding_none_is_ignored(tmp_path: Path) -> None:
    root = prepare(AddsNone(), tmp_path)
    assert [c.name for c in root.sub_components] == ["a"]  # type: ignore[attr-defined]
    assert root.last is root.sub_components[0]  # type: ignore[attr-defined]


class Computes(Component):
    def configure(self) -> None:
        self |= Recorder("helper")
        self.helper = self._


def test_or_configures_without_adding(tmp_path: Path) -> None:
    root = prepare(Computes(), tmp_path)
    assert root.sub_components == []
    helper = root.helper  # type: ignore[attr-defined]
    assert isinstance(helper, Recorder)
    assert helper.seen["parent"] is root
    assert helper.seen["workdir"] == root.workdir


class Underscore(Component):
    def configure(self) -> None:
        self.seen: list[str | None] = []
        self += Marker("added")
        self.seen.append(self._.name if isinstance(self._, Marker) else None)
        self |= Marker("computed")
        self.seen.append(self._.name if isinstance(self._, Marker) else None)
        self += None
        self.seen.append(self._.name if isinstance(self._, Marker) else None)
        self += Marker("added-again")
        self.seen.append(self._.name if isinstance(self._, Marker) else None)


def test_underscore_is_the_last_component_added_by_either_operator(tmp_path: Path) -> None:
    root = prepare(Underscore(), tmp_path)
    assert root.seen == ["added", "computed", "computed", "added-again"]  # type: ignore[attr-defined]
    assert [c.name for c in root.sub_components] == ["added", "added-again"]  # type: ignore[attr-defined]


def test_configuring_again_builds_the_same_tree(tmp_path: Path) -> None:
    root = prepare(Grand(), tmp_path)
    prepare(root, tmp_path)
    assert [c._breadcrumbs for c in root.recursive_sub_components] == [
        "Grand > Nested('child')",
        "Grand > Nested('child') > Recorder('grandchild')",
    ]


# --- places: defdir and workdir -------------------------------------------------


class Places(Component):
    def configure(self) -> None:
        self.configure_cwd = os.getcwd()

    def verify(self) -> None:
        self.verify_cwd = os.getcwd()
        # A relative path: only found when verify runs in the workdir.
        assert os.path.exists("stamp")

    def update(self) -> None:
        self.update_cwd = os.getcwd()
        Path("stamp").touch()


def test_configure_runs_in_defdir(tmp_path: Path) -> None:
    defdir = tmp_path / "components" / "places"
    defdir.mkdir(parents=True)
    before = os.getcwd()
    root = prepare(Places(), tmp_path, defdir=defdir)
    assert root.configure_cwd == str(defdir.resolve())  # type: ignore[attr-defined]
    assert os.getcwd() == before


def test_verify_and_update_run_in_the_workdir_which_is_created(tmp_path: Path) -> None:
    root = prepare(Places(), tmp_path)
    workdir = tmp_path / "target" / "work" / "root"
    assert not workdir.exists()
    before = os.getcwd()
    first, _ = apply_twice(root)
    assert first.changed == ("Places",)
    assert (workdir / "stamp").is_file()
    assert root.verify_cwd == root.update_cwd == str(workdir.resolve())  # type: ignore[attr-defined]
    assert os.getcwd() == before


class OwnWorkdir(Component):
    workdir = "sub"

    def configure(self) -> None:
        self += Recorder("inherits")


class Workdirs(Component):
    def configure(self) -> None:
        self += Recorder("plain")
        self += OwnWorkdir()
        self += Recorder("absolute", workdir="/srv/elsewhere")
        self += Recorder("relative-keyword", workdir="../shared")


def test_children_inherit_the_workdir_unless_they_set_their_own(tmp_path: Path) -> None:
    root = prepare(Workdirs(), tmp_path)
    base = str(tmp_path / "target" / "work" / "root")
    plain, own, absolute, relative = root.sub_components
    assert plain.workdir == base
    assert own.workdir == base + "/sub"
    assert own.sub_components[0].workdir == base + "/sub"
    assert absolute.workdir == "/srv/elsewhere"
    assert relative.workdir == str(tmp_path / "target" / "work" / "shared")


def test_an_absolute_workdir_goes_through_the_vfs(tmp_path: Path) -> None:
    root = prepare(Workdirs(), tmp_path, vfs=VfsRules(VfsMode.DEVELOPER))
    absolute = root.sub_components[2]
    assert absolute.workdir == str(tmp_path / "target" / "work" / "_" / "srv" / "elsewhere")


class RootWithWorkdir(Component):
    workdir = "/srv/app"

    def configure(self) -> None:
        self += Touched("stamp")


def test_a_root_may_override_its_workdir_and_deploys_there(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    root = prepare(
        RootWithWorkdir(), tmp_path, vfs=VfsRules(VfsMode.MAP, (("/srv", str(sandbox)),))
    )
    assert root.workdir == str(sandbox / "app")
    assert root.sub_components[0].workdir == str(sandbox / "app")
    first, _ = apply_twice(root)
    assert first.changed == ("RootWithWorkdir > Touched('stamp')",)
    assert (sandbox / "app" / "stamp").is_file()


def test_workdir_given_as_keyword_to_a_root(tmp_path: Path) -> None:
    root = prepare(Plain(workdir="custom"), tmp_path)
    assert root.workdir == str(tmp_path / "target" / "work" / "root" / "custom")


# --- helpers: map, touch, chdir, expand, log ----------------------------------


def test_map_resolves_relative_paths_against_the_workdir(tmp_path: Path) -> None:
    root = prepare(Plain(), tmp_path)
    assert root.map("a/../b/c") == str(tmp_path / "target" / "work" / "root" / "b" / "c")
    assert root.map("/etc/app") == "/etc/app"


def test_map_expands_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = prepare(Plain(), tmp_path)
    assert root.map("~/app.conf") == str(tmp_path / "home" / "app.conf")


def test_map_with_developer_vfs_puts_outside_paths_below_the_target(tmp_path: Path) -> None:
    root = prepare(Plain(), tmp_path, vfs=VfsRules(VfsMode.DEVELOPER))
    target = tmp_path / "target"
    assert root.map("/etc/app/app.conf") == str(target / "work" / "_" / "etc" / "app" / "app.conf")
    # Paths inside the target directory (the workdir, say) stay where they are.
    assert root.map("data") == str(target / "work" / "root" / "data")


def test_map_with_map_vfs_uses_the_longest_matching_prefix(tmp_path: Path) -> None:
    rules = (("/srv", "/home/me/srv"), ("/srv/app", "/home/me/app"))
    root = prepare(Plain(), tmp_path, vfs=VfsRules(VfsMode.MAP, rules))
    assert root.map("/srv/app/etc/x") == "/home/me/app/etc/x"
    assert root.map("/srv/app") == "/home/me/app"
    assert root.map("/srv/application") == "/home/me/srv/application"
    assert root.map("/var/log") == "/var/log"


def test_map_of_a_relative_path_before_prepare_is_an_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        Plain().map("data")
    assert info.value.message == "cannot resolve 'data': Plain is not part of a deployment yet"


def test_touch_creates_and_refreshes_a_file_in_the_workdir(tmp_path: Path) -> None:
    root = prepare(Plain(), tmp_path)
    workdir = Path(root.workdir or "")
    workdir.mkdir(parents=True)
    root.touch("stamp")
    stamp = workdir / "stamp"
    assert stamp.read_bytes() == b""
    os.utime(stamp, (1_000_000, 1_000_000))
    stamp.write_bytes(b"kept")
    os.utime(stamp, (1_000_000, 1_000_000))
    root.touch("stamp")
    assert stamp.read_bytes() == b"kept"
    assert stamp.stat().st_mtime > 1_000_000


def test_chdir_changes_into_a_mapped_directory_and_back(tmp_path: Path) -> None:
    root = prepare(Plain(), tmp_path)
    sub = Path(root.workdir or "") / "sub"
    sub.mkdir(parents=True)
    before = os.getcwd()
    with root.chdir("sub"):
        assert os.getcwd() == str(sub.resolve())
    assert os.getcwd() == before
    with pytest.raises(RuntimeError), root.chdir("sub"):
        raise RuntimeError("inside")
    assert os.getcwd() == before


def test_expand_renders_in_the_components_context(tmp_path: Path) -> None:
    root = prepare(Named("app", size=3), tmp_path, data={"alias": "shop"})
    text = "{{component.name}}:{{component.size}} on {{host.fqdn}} ({{host.data['alias']}}) in {{environment.name}}"
    assert root.expand(text) == "app:3 on web1.example.com (shop) in test"
    assert root.expand("{{extra}}-{{component.name}}", extra="x") == "x-app"
    assert root.expand("{{component.name}}", component=Named("other")) == "other"


def test_expand_of_an_undefined_name_is_a_template_error(tmp_path: Path) -> None:
    root = prepare(Plain(), tmp_path)
    with pytest.raises(TemplateError, match="'nope' is undefined"):
        root.expand("{{ nope }}")


class Chatty(Component):
    def configure(self) -> None:
        self += Talker()


class Talker(Component):
    def verify(self) -> None:
        self.log("checked %s of %d", "a", 2)
        self.log("100% literal")


def test_log_lands_in_the_runs_log_with_the_breadcrumbs(tmp_path: Path) -> None:
    root = prepare(Chatty(), tmp_path)
    run = RunContext()
    assert deploy(root, run=run).error is None
    assert [(e.component, e.message, e.level) for e in run.log] == [
        ("Chatty > Talker", "checked a of 2", Level.INFO),
        ("Chatty > Talker", "100% literal", Level.INFO),
    ]


# --- cmd ------------------------------------------------------------------------


@pytest.fixture
def shell(tmp_path: Path) -> Component:
    return prepare(Named("app", size=3), tmp_path)


def test_cmd_returns_stdout_and_stderr(shell: Component) -> None:
    with running(RunContext()):
        assert shell.cmd("echo out; echo err >&2") == ("out\n", "err\n")


def test_cmd_expands_the_command_as_a_template(shell: Component) -> None:
    run = RunContext()
    with running(run):
        out, _ = shell.cmd("echo {{host.name}} {{component.name}} {{component.size}}")
        listed, _ = shell.cmd(["printf", "%s", "{{ host.fqdn }} as one argument"])
        raw, _ = shell.cmd("echo '{{x}}'", expand=False)
    assert out == "web1 app 3\n"
    assert listed == "web1.example.com as one argument"
    assert raw == "{{x}}\n"
    assert run.log[0].message == "$ echo web1 app 3"
    assert run.log[0].level is Level.DEBUG
    assert run.log[0].component == "Named('app')"


def test_cmd_raises_command_error_with_returncode_and_outputs(shell: Component) -> None:
    with running(RunContext()), pytest.raises(CommandError) as info:
        shell.cmd("echo partial; echo broken >&2; exit 3")
    error = info.value
    assert (error.returncode, error.stdout, error.stderr) == (3, "partial\n", "broken\n")
    assert error.command == "echo partial; echo broken >&2; exit 3"
    assert error.message.startswith("command exited with 3: echo partial")
    assert "stderr: broken" in error.message
    assert "stdout: partial" in error.message


def test_cmd_ignore_returncode_returns_the_outputs(shell: Component) -> None:
    with running(RunContext()):
        assert shell.cmd("echo out; exit 1", ignore_returncode=True) == ("out\n", "")


def test_cmd_merges_env_into_the_environment(
    shell: Component, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSIGN_INHERITED", "kept")
    with running(RunContext()):
        out, _ = shell.cmd(
            "echo $CONSIGN_ADDED $CONSIGN_INHERITED", env={"CONSIGN_ADDED": "added"}
        )
    assert out == "added kept\n"


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda: RunContext(command_timeout=0.5), id="command-timeout"),
        pytest.param(lambda: RunContext(deadline=time.monotonic() + 0.5), id="run-deadline"),
    ],
)
def test_cmd_over_its_time_limit_is_killed_quickly(shell: Component, run: Any) -> None:
    started = time.monotonic()
    with running(run()), pytest.raises(CommandError) as info:
        shell.cmd("echo started; sleep 30")
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"the command ran {elapsed:.1f}s"
    assert info.value.returncode is None
    assert info.value.stdout == "started\n"
    assert re.match(r"command timed out after 0\.\ds: echo started; sleep 30$", info.value.message)
    assert info.value.hint is not None and "--timeout" in info.value.hint


def test_cmd_timeout_argument_caps_the_limit(shell: Component) -> None:
    started = time.monotonic()
    with running(RunContext(command_timeout=60)), pytest.raises(CommandError, match="timed out"):
        shell.cmd("sleep 30", timeout=0.5)
    assert time.monotonic() - started < 10


def test_cmd_does_not_wait_for_daemonized_grandchildren(shell: Component, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    try:
        with running(RunContext(command_timeout=0.5)), pytest.raises(CommandError) as info:
            # The grandchild leaves the process group and keeps stdout open.
            shell.cmd(f"setsid sleep 30 & echo $! > {pidfile}; sleep 30", expand=False)
        assert time.monotonic() - started < 10
        assert info.value.returncode is None
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_assert_cmd_turns_a_failing_command_into_update_needed(shell: Component) -> None:
    with running(RunContext()):
        shell.assert_cmd("true")
        with pytest.raises(UpdateNeeded, match="command failed: test -e /nonexistent"):
            shell.assert_cmd("test -e /nonexistent")


def test_assert_cmd_lets_a_timeout_fail_the_run(shell: Component) -> None:
    with running(RunContext(command_timeout=0.2)), pytest.raises(CommandError, match="timed out"):
        shell.assert_cmd("sleep 30")


# --- assertions for verify -----------------------------------------------------


@pytest.fixture
def workdir_root(tmp_path: Path) -> Component:
    root = prepare(Plain(), tmp_path)
    Path(root.workdir or "").mkdir(parents=True)
    return root


def _file(root: Component, name: str, mtime: float) -> None:
    path = root.map(name)
    Path(path).write_text(name)
    os.utime(path, (mtime, mtime))


def test_assert_file_is_current_needs_the_reference(workdir_root: Component) -> None:
    with pytest.raises(UpdateNeeded, match="does not exist"):
        workdir_root.assert_file_is_current("built")


def test_assert_file_is_current_needs_an_update_when_a_requirement_is_newer(
    workdir_root: Component,
) -> None:
    _file(workdir_root, "built", 1_000)
    _file(workdir_root, "source", 2_000)
    with pytest.raises(UpdateNeeded, match="source is newer than"):
        workdir_root.assert_file_is_current("built", ["source"])


def test_assert_file_is_current_passes_for_older_and_missing_requirements(
    workdir_root: Component,
) -> None:
    _file(workdir_root, "built", 2_000)
    _file(workdir_root, "source", 1_000)
    workdir_root.assert_file_is_current("built", ["source", "missing"])
    workdir_root.assert_file_is_current("built")


def test_assert_file_is_current_compares_by_the_given_key(workdir_root: Component) -> None:
    _file(workdir_root, "long-name", 1_000)
    _file(workdir_root, "x", 1_000)
    with pytest.raises(UpdateNeeded):
        workdir_root.assert_file_is_current("x", ["long-name"], key="st_size")


class Stamped(Component):
    """last_updated() from a fixed time, to compare components."""

    namevar = "name"
    when: float | None = None

    def last_updated(self, key: str = "st_mtime") -> float | None:
        return self.when


def test_assert_component_is_current() -> None:
    own = Stamped("own", when=2.0)
    own.assert_component_is_current([Stamped("older", when=1.0), Stamped("unknown")])
    own.assert_component_is_current(Stamped("same", when=2.0))
    with pytest.raises(UpdateNeeded, match=r"Stamped\('newer'\) is newer"):
        own.assert_component_is_current([Stamped("older", when=1.0), Stamped("newer", when=3.0)])
    with pytest.raises(UpdateNeeded, match="has never been updated"):
        Stamped("fresh").assert_component_is_current(Stamped("other", when=1.0))


class Parent(Component):
    def configure(self) -> None:
        self += Stamped("a", when=1.0)
        self += Stamped("b", when=5.0)
        self += Stamped("c")


def test_last_updated_defaults_to_the_newest_child(tmp_path: Path) -> None:
    assert prepare(Parent(), tmp_path).last_updated() == 5.0
    assert prepare(Plain(), tmp_path).last_updated() is None


def test_assert_no_subcomponent_changes_and_assert_no_changes(tmp_path: Path) -> None:
    root = prepare(Parent(), tmp_path)
    root.assert_no_subcomponent_changes()
    root.assert_no_changes()
    root.sub_components[1].changed = True
    with pytest.raises(UpdateNeeded, match=r"Stamped\('b'\) changed"):
        root.assert_no_subcomponent_changes()
    root.sub_components[1].changed = False
    root.changed = True
    root.assert_no_subcomponent_changes()
    with pytest.raises(UpdateNeeded, match="Parent changed"):
        root.assert_no_changes()


# --- checksum ------------------------------------------------------------------


class Summed(Component):
    namevar = "name"
    name: str
    payload: Any = None
    size = Attribute(int, default=1)

    def configure(self) -> None:
        self += Marker("child-of-" + self.name)


def test_checksum_is_stable_for_equal_configurations(tmp_path: Path) -> None:
    payload = {"b": [1, 2], "a": {"x", "y"}, "c": None}
    first = prepare(Summed("s", payload=payload, size=ConfigString("2")), tmp_path)
    second = prepare(
        Summed("s", payload={"a": {"y", "x"}, "c": None, "b": [1, 2]}, size=ConfigString("2")),
        tmp_path,
    )
    assert first.checksum() == second.checksum()
    assert len(first.checksum()) == 64


def test_checksum_differs_when_an_attribute_differs(tmp_path: Path) -> None:
    base = prepare(Summed("s", size=2), tmp_path).checksum()
    assert prepare(Summed("s", size=3), tmp_path).checksum() != base
    assert prepare(Summed("t", size=2), tmp_path).checksum() != base
    assert prepare(Summed("s", size=2), tmp_path).checksum("content") != base


def test_checksum_is_free_of_memory_addresses(tmp_path: Path) -> None:
    def make() -> Component:
        return prepare(Summed("s", payload=[object(), lambda: None, Plain()]), tmp_path)

    keep = [make(), make()]  # both alive: their objects have different addresses
    assert keep[0].checksum() == keep[1].checksum()


CHECKSUM_SCRIPT = """
import sys
from pathlib import Path
from executor.component import Component
from tests.executor.component_helpers import prepare

class Summed(Component):
    payload = None

component = Summed(payload={"alpha", "beta", "gamma", "delta", "epsilon"})
print(prepare(component, Path(sys.argv[1])).checksum())
"""


def test_checksum_is_the_same_in_every_process(tmp_path: Path) -> None:
    repository = Path(__file__).resolve().parents[2]
    sums = set()
    for seed in ("1", "2", "3"):
        completed = subprocess.run(
            [sys.executable, "-c", CHECKSUM_SCRIPT, str(tmp_path)],
            cwd=repository,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        sums.add(completed.stdout.strip())
    assert len(sums) == 1, sums


def test_checksum_covers_the_children(tmp_path: Path) -> None:
    root = prepare(Summed("s"), tmp_path)
    before = root.checksum()
    root.sub_components[0].extra = "changed"  # type: ignore[attr-defined]
    assert root.checksum() != before


# --- attributes and overrides ---------------------------------------------------


class Web(Component):
    port = Attribute(int, default=80)
    names = Attribute("list", default=ConfigString(""))
    settings = Attribute("literal", default=None)
    debug = Attribute(bool, default=False)
    listen = Attribute(str, default=ConfigString("{{host.fqdn}}:{{component.port}}"))
    raw = Attribute(str, default="", expand=False)
    data = Attribute(str, default="data", map=True)
    title = "plain"

    def configure(self) -> None:
        if self.parent is None:
            # A child of the same class does not see the root's overrides.
            self += Web()


def test_overrides_are_converted(tmp_path: Path) -> None:
    root = prepare(
        Web(),
        tmp_path,
        overrides=[
            ("port", "8080"),
            ("names", "a, b,,\n c\n"),
            ("settings", "{'workers': [1, 2]}"),
            ("debug", "yes"),
        ],
    )
    assert root.port == 8080  # type: ignore[attr-defined]
    assert root.names == ["a", "b", "c"]  # type: ignore[attr-defined]
    assert root.settings == {"workers": [1, 2]}  # type: ignore[attr-defined]
    assert root.debug is True  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("NO", False),
        ("off", False),
        (" 0 ", False),
    ],
)
def test_bool_attributes_parse_strictly(tmp_path: Path, text: str, value: bool) -> None:
    root = prepare(Web(), tmp_path, overrides=[("debug", text)])
    assert root.debug is value  # type: ignore[attr-defined]


def test_bool_attribute_rejects_anything_else(tmp_path: Path) -> None:
    with pytest.raises(AttributeValueError) as info:
        prepare(Web(), tmp_path, overrides=[("debug", "maybe")])
    assert info.value.message == (
        "cannot convert Web.debug = 'maybe' with bool: "
        "expected true/false, yes/no, on/off or 1/0, got 'maybe'"
    )
    assert info.value.where == "Web"


def test_config_string_default_is_expanded_and_converted(tmp_path: Path) -> None:
    root = prepare(Web(), tmp_path)
    assert root.listen == "web1.example.com:80"  # type: ignore[attr-defined]
    assert root.names == []  # type: ignore[attr-defined]


class DataPort(Component):
    port = Attribute(int, ConfigString("80{{host.data['n']}}"))


def test_config_string_default_sees_host_data(tmp_path: Path) -> None:
    assert prepare(DataPort(), tmp_path, data={"n": "81"}).port == 8081  # type: ignore[attr-defined]


def test_plain_default_and_plain_keyword_are_used_as_is(tmp_path: Path) -> None:
    class Loose(Component):
        port = Attribute(int, default="not converted")
        other = Attribute(int, default=None)

    root = prepare(Loose(), tmp_path)
    assert root.port == "not converted"  # type: ignore[attr-defined]
    assert root.other is None  # type: ignore[attr-defined]
    child = prepare(Web(port="8080", listen="{{ kept }}"), tmp_path)
    assert child.port == "8080"  # type: ignore[attr-defined]
    assert child.listen == "{{ kept }}"  # type: ignore[attr-defined]
    assert prepare(Web(port=ConfigString("81")), tmp_path).port == 81  # type: ignore[attr-defined]


def test_map_attribute_resolves_against_the_workdir_and_vfs(tmp_path: Path) -> None:
    root = prepare(
        Web(),
        tmp_path,
        vfs=VfsRules(VfsMode.DEVELOPER),
        overrides=[("data", "/var/lib/app")],
    )
    assert root.data == str(tmp_path / "target" / "work" / "_" / "var" / "lib" / "app")  # type: ignore[attr-defined]
    root = prepare(Web(), tmp_path, overrides=[("data", "{{host.name}}-data")])
    assert root.data == str(tmp_path / "target" / "work" / "root" / "web1-data")  # type: ignore[attr-defined]


def test_expand_false_keeps_braces(tmp_path: Path) -> None:
    root = prepare(Web(), tmp_path, overrides=[("raw", "{{ not a template }}")])
    assert root.raw == "{{ not a template }}"  # type: ignore[attr-defined]


def test_overrides_apply_to_the_root_only(tmp_path: Path) -> None:
    root = prepare(Web(), tmp_path, overrides=[("port", "8080"), ("title", "{{host.name}}")])
    [child] = root.sub_components
    assert (root.port, child.port) == (8080, 80)  # type: ignore[attr-defined]
    assert (root.title, child.title) == ("web1", "plain")  # type: ignore[attr-defined]


def test_overrides_are_expanded_in_the_components_context(tmp_path: Path) -> None:
    root = prepare(
        Web(),
        tmp_path,
        overrides=[("port", "{{ 8000 + 80 }}"), ("listen", "{{host.fqdn}}:{{component.port}}")],
    )
    assert root.listen == "web1.example.com:8080"  # type: ignore[attr-defined]


class Needy(Component):
    token = Attribute(str)

    def configure(self) -> None:
        self.seen = self.token


def test_missing_value_names_the_attribute(tmp_path: Path) -> None:
    with pytest.raises(AttributeValueError) as info:
        prepare(Needy(), tmp_path)
    assert info.value.message == "Needy.token has no value: no default and no override"
    assert info.value.hint is not None and "token=" in info.value.hint
    assert info.value.where == "Needy"
    assert prepare(Needy(), tmp_path, overrides=[("token", "t")]).seen == "t"  # type: ignore[attr-defined]


def test_conversion_error_names_attribute_value_and_conversion(tmp_path: Path) -> None:
    with pytest.raises(AttributeValueError) as info:
        prepare(Web(), tmp_path, overrides=[("port", "eighty")])
    assert info.value.message.startswith("cannot convert Web.port = 'eighty' with int: ")
    assert info.value.hint == "give Web.port a value that int accepts"
    with pytest.raises(AttributeValueError, match=r"cannot convert Web.settings = '\[1' with 'literal'"):
        prepare(Web(), tmp_path, overrides=[("settings", "[1")])


def test_expansion_error_names_the_attribute(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        prepare(Web(), tmp_path, overrides=[("port", "{{ nope }}")])
    assert info.value.message == (
        "cannot expand Web.port = '{{ nope }}' (for int): "
        "template uses an undefined name: 'nope' is undefined"
    )
    assert info.value.where == "Web"


def test_expansion_error_in_an_override_of_a_plain_attribute_names_it(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        prepare(Web(), tmp_path, overrides=[("title", "{{ nope }}")])
    assert info.value.message.startswith("cannot expand the override Web.title = '{{ nope }}': ")
    assert info.value.where == "Web"


def test_override_naming_no_attribute_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as info:
        prepare(Web(), tmp_path, overrides=[("prot", "8080")])
    assert info.value.message == "override 'prot' names no attribute of Web"
    assert info.value.where == "Web"
    assert info.value.hint == (
        "Web's attributes: converges, data, debug, features, listen, names, port, raw, "
        "settings, title, workdir"
    )


def test_override_of_a_read_only_property_is_an_override_error(tmp_path: Path) -> None:
    with pytest.raises(OverrideError) as info:
        prepare(Computed(), tmp_path, overrides=[("url", "x")])
    assert info.value.message == "override 'url' cannot be set: Computed.url is read-only"
    assert info.value.where == "Computed"


def test_unknown_attribute_conversion_is_refused() -> None:
    with pytest.raises(ValueError, match="Attribute conversion 'number' is unknown"):
        Attribute("number")


# --- platforms ------------------------------------------------------------------


class Base(Component):
    def configure(self) -> None:
        self += Marker("base-component")


@platform("nixos", Base)
class BaseNixos(Component):
    def configure(self) -> None:
        self += Marker("i-am-nixos")


@platform("ubuntu", Base)
class BaseUbuntu(Component):
    pass


class Derived(Base):
    pass


def test_platform_variant_is_added_as_the_last_child(tmp_path: Path) -> None:
    root = prepare(Base(), tmp_path, platform="nixos")
    base, variant = root.sub_components
    assert isinstance(variant, BaseNixos)
    assert variant.parent is root
    assert [c._breadcrumbs for c in root.recursive_sub_components] == [
        "Base > Marker('base-component')",
        "Base > BaseNixos",
        "Base > BaseNixos > Marker('i-am-nixos')",
    ]


@pytest.mark.parametrize("name", ["debian", None])
def test_other_platforms_get_no_variant(tmp_path: Path, name: str | None) -> None:
    root = prepare(Base(), tmp_path, platform=name)
    assert [type(c) for c in root.sub_components] == [Marker]


def test_platform_registration_is_per_exact_class(tmp_path: Path) -> None:
    root = prepare(Derived(), tmp_path, platform="nixos")
    assert [type(c) for c in root.sub_components] == [Marker]


def test_two_variants_for_one_platform_are_an_error() -> None:
    with pytest.raises(ValueError) as info:

        @platform("nixos", Base)
        class OtherNixos(Component):
            pass

    assert str(info.value) == "Base has two variants for platform 'nixos': BaseNixos and OtherNixos"


def test_platform_variant_deploys_after_the_other_children(tmp_path: Path) -> None:
    calls: list[str] = []

    class Service(Component):
        def configure(self) -> None:
            self += Touched("config", calls=calls)

    @platform("nixos", Service)
    class ServiceNixos(Component):
        def configure(self) -> None:
            self += Touched("nixos", calls=calls)

    root = prepare(Service(), tmp_path, platform="nixos")
    apply_twice(root)
    assert calls[:4] == ["verify config", "update config", "verify config", "verify nixos"]


# --- features -------------------------------------------------------------------


class Database(Component):
    features = ["primary", "replica"]


def test_selected_features_are_set(tmp_path: Path) -> None:
    assert prepare(Database(), tmp_path, features=("replica",)).features == ["replica"]


def test_without_selection_all_declared_features_are_set(tmp_path: Path) -> None:
    assert prepare(Database(), tmp_path).features == ["primary", "replica"]
    assert prepare(Plain(), tmp_path).features == []


def test_unknown_feature_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        prepare(Database(), tmp_path, features=("replica", "arbiter"))
    assert info.value.message == "Database has no feature 'arbiter'"
    assert info.value.where == "Database"
    assert info.value.hint == "its features are: primary, replica"


# --- errors while configuring ----------------------------------------------------


class Failing(Component):
    namevar = "name"
    kind = "exception"

    def configure(self) -> None:
        if self.kind == "exception":
            dict[str, str]()["missing"]
        if self.kind != "fine":
            raise AssertionError("kind must be fine")  # pytest would rewrite an assert here


class HoldsFailing(Component):
    kind = "exception"

    def configure(self) -> None:
        self += Marker("ok")
        self += Failing("bad", kind=self.kind)


def test_exception_in_configure_is_a_configuration_error_with_breadcrumbs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        prepare(HoldsFailing(), tmp_path)
    assert info.value.message == "configure raised KeyError: 'missing'"
    assert info.value.where == "HoldsFailing > Failing('bad')"
    assert isinstance(info.value.__cause__, KeyError)


def test_assertion_in_configure_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        prepare(HoldsFailing(kind="assert"), tmp_path)
    assert info.value.message == "assertion failed while configuring: kind must be fine"
    assert info.value.where == "HoldsFailing > Failing('bad')"


BROKEN = """
from batou.component import Component
from batou.lib.file import File


class Leaf(Component):
    namevar = "name"

    def configure(self):
        self.value = int(self.name)  # converts


class Broken(Component):
    mode = "raise"

    def configure(self):
        self += Leaf("1")
        if self.mode == "raise":
            self += Leaf("one")
        elif self.mode == "assert":
            assert self.mode == "fine", "mode must be fine"  # asserts
        elif self.mode == "keyword":
            self += Leaf("2", colour="red")  # bad keyword
"""


@pytest.mark.parametrize(
    ("mode", "marker", "where", "message"),
    [
        (
            "raise",
            "# converts",
            "Broken > Leaf('one')",
            "configure raised ValueError: invalid literal for int() with base 10: 'one'",
        ),
        ("assert", "# asserts", "Broken", "assertion failed while configuring: mode must be fine"),
        ("keyword", "# bad keyword", "Broken", "Leaf does not accept 'colour'"),
    ],
)
def test_configuration_errors_name_the_users_file_and_line(
    tmp_path: Path, mode: str, marker: str, where: str, message: str
) -> None:
    path = write_component(tmp_path, "broken", BROKEN)
    record = RootRecord("broken", overrides=(("mode", mode),))
    configured, errors = configure_roots(tmp_path, record)
    assert configured == []
    [error] = errors
    assert isinstance(error, ConfigurationError)
    assert error.message == message
    assert error.where == f"{where} (components/broken/component.py:{line_of(path, marker)})"


# --- component files: several per file, batou.c, load order ---------------------


def test_a_file_may_define_several_components(tmp_path: Path) -> None:
    write_component(
        tmp_path,
        "web",
        """
        from batou.component import Component

        class Nginx(Component):
            pass

        class Frontend(Component):
            def configure(self):
                self += Nginx()
        """,
    )
    registry = load(tmp_path)
    assert registry.names() == ["frontend", "nginx"]
    frontend, nginx = configure_ok(tmp_path, "frontend", "nginx")
    assert [c._breadcrumbs for c in frontend.component.recursive_sub_components] == [
        "Frontend > Nginx"
    ]
    assert type(nginx.component).__name__ == "Nginx"


def test_components_reach_each_other_through_batou_c_at_call_time(tmp_path: Path) -> None:
    # "app" loads before "zlib"; the lookup happens while configuring.
    write_component(
        tmp_path,
        "app",
        """
        import batou.c
        from batou.component import Component

        class App(Component):
            def configure(self):
                self += batou.c.zlib.Compressor()
                self.defdirs = [self.defdir, self._.defdir]
        """,
    )
    write_component(
        tmp_path,
        "zlib",
        """
        from batou.component import Component

        class Compressor(Component):
            pass
        """,
    )
    [app] = configure_ok(tmp_path, "app")
    [child] = app.component.sub_components
    assert type(child).__module__ == "batou.c.zlib"
    components = tmp_path.resolve() / "components"
    # defdir is the directory of the file that defines the class.
    assert app.component.defdirs == [str(components / "app"), str(components / "zlib")]  # type: ignore[attr-defined]


def test_component_files_load_in_sorted_order(tmp_path: Path) -> None:
    write_component(
        tmp_path,
        "b-derived",
        """
        from batou.c.a_base import Base  # at import time: a_base loaded first

        class Derived(Base):
            greeting = "derived"
        """,
    )
    write_component(
        tmp_path,
        "a_base",
        """
        from batou.component import Component

        class Base(Component):
            greeting = "base"

            def configure(self):
                self.heard = self.greeting
        """,
    )
    registry = load(tmp_path)
    assert registry.names() == ["base", "derived"]
    assert registry.files["base"] == "components/a_base/component.py"
    [derived] = configure_ok(tmp_path, "derived")
    assert derived.component.heard == "derived"  # type: ignore[attr-defined]
    assert derived.component.defdir == str(tmp_path.resolve() / "components" / "b-derived")


def test_an_earlier_file_cannot_import_a_later_one_at_import_time(tmp_path: Path) -> None:
    path = write_component(
        tmp_path,
        "a",
        """
        from batou.c.b import Late  # b is not loaded yet

        class Early(Late):
            pass
        """,
    )
    write_component(
        tmp_path,
        "b",
        """
        from batou.component import Component

        class Late(Component):
            pass
        """,
    )
    registry, errors = load_components(tmp_path)
    [error] = errors
    assert isinstance(error, ComponentLoadError)
    assert error.message.startswith("loading component 'a' raised ModuleNotFoundError")
    assert error.where == f"components/a/component.py:{line_of(path, 'not loaded yet')}"
    assert registry.names() == ["late"]


def test_configure_of_a_loaded_component_runs_in_its_directory(tmp_path: Path) -> None:
    write_component(
        tmp_path,
        "app",
        """
        import os
        from batou.component import Component

        class App(Component):
            def configure(self):
                self.cwd = os.getcwd()
                with open("app.conf") as f:
                    self.template_text = f.read()
        """,
    )
    (tmp_path / "components" / "app" / "app.conf").write_text("port=80\n")
    [app] = configure_ok(tmp_path, "app")
    assert app.component.cwd == str(tmp_path.resolve() / "components" / "app")  # type: ignore[attr-defined]
    assert app.component.template_text == "port=80\n"  # type: ignore[attr-defined]


def test_seed_platform_example_builds_and_deploys(tmp_path: Path) -> None:
    write_component(
        tmp_path,
        "test",
        """
        import batou.component
        import batou.lib.file

        class Test(batou.component.Component):

            def configure(self):
                self += batou.lib.file.File('base-component')

        @batou.component.platform('nixos', Test)
        class TestNixos(batou.component.Component):

            def configure(self):
                self += batou.lib.file.File('i-am-nixos')

        @batou.component.platform('ubuntu', Test)
        class TestUbuntu(batou.component.Component):

            def configure(self):
                self += batou.lib.file.File('i-am-ubuntu')
        """,
    )
    [root] = configure_ok(tmp_path, "test", platform="nixos")
    first, _ = apply_twice(root.component)
    workdir = tmp_path / "target" / "work" / "test"
    assert sorted(p.name for p in workdir.iterdir()) == ["base-component", "i-am-nixos"]
    assert first.changed != ()
    assert deploy_ok(root.component).changed == ()
