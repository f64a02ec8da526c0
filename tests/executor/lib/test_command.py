"""Command: a shell command or argv with guards (unless, creates, onlyif_changed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component, UpdateNeeded
from executor.configure import ConfiguredRoot
from executor.deploy import deploy_roots
from executor.errors import CommandError, ConfigurationError, DeployError, NotConvergedError
from executor.lib.command import OUTPUT_TAIL_LINES, Command, output_tail
from executor.lib.file import File
from executor.model import RootRecord
from executor.outcome import DeployOutcome
from executor.run import Level, LogEntry, RunContext

from .helpers import ROOT_NAME, apply_twice, configure, deploy, workdir


def root_with(*makers: Callable[[], Component]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            for make in makers:
                self += make()

    return Root


def messages(run: RunContext) -> list[str]:
    """What the run's log (without -v) says about the Command."""
    return [
        entry.message
        for entry in run.log
        if entry.component.startswith("Root > Command") and entry.level is not Level.DEBUG
    ]


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def failure(outcome: DeployOutcome) -> Any:
    assert outcome.error is not None, "the run should have failed"
    return outcome.error


# -- no guard ----------------------------------------------------------------


def test_without_a_guard_the_command_runs_on_every_deploy(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    root = root_with(lambda: Command(f"echo ran >> {counter}"))

    for expected in (1, 2):
        outcome, _ = deploy(root, tmp_path)
        assert outcome.error is None, outcome.error
        assert outcome.changed == (f"Root > Command('echo ran >> {counter}')",)
        assert runs(counter) == expected


def test_a_dry_run_shows_an_unguarded_command_as_always_running(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    outcome, run = deploy(
        root_with(lambda: Command(f"echo ran >> {counter}")), tmp_path, predicting=True
    )

    assert outcome.error is None
    assert outcome.changed == (f"Root > Command('echo ran >> {counter}')",)
    assert messages(run) == [
        f"runs every time: echo ran >> {counter} has no guard "
        "(unless=, creates= or onlyif_changed=)"
    ]
    assert not counter.exists()


def test_output_and_return_code_go_to_the_runs_log(tmp_path: Path) -> None:
    outcome, run = deploy(
        root_with(lambda: Command("echo out; echo err >&2", env={"TOKEN": "s3cret"})), tmp_path
    )

    assert outcome.error is None
    assert messages(run) == [
        "env: TOKEN (values not shown)",
        "ran echo out; echo err >&2: exit code 0",
        "stdout:\nout",
        "stderr:\nerr",
    ]
    assert all("s3cret" not in entry.message for entry in run.log)


def test_env_reaches_the_command_and_the_workdir_is_its_directory(tmp_path: Path) -> None:
    apply_twice(
        root_with(lambda: Command('echo "$GREETING" > out', env={"GREETING": "hi"}, creates="out")),
        tmp_path,
    )

    assert (workdir(tmp_path) / "out").read_text() == "hi\n"


def test_the_log_keeps_only_the_tail_of_long_output(tmp_path: Path) -> None:
    _, run = deploy(root_with(lambda: Command("seq 1 1000")), tmp_path)

    stdout = next(m for m in messages(run) if m.startswith("stdout:"))
    lines = stdout.splitlines()
    assert lines[1] == f"[{1000 - OUTPUT_TAIL_LINES} earlier lines not shown]"
    assert lines[-1] == "1000"
    assert len(lines) == OUTPUT_TAIL_LINES + 2


def test_output_tail_cuts_long_lines_and_bounds_the_size() -> None:
    tail = output_tail("x" * 10_000 + "\n" + "y\n")
    assert tail.splitlines()[0].endswith(" [...]")
    assert len(tail) < 1000
    assert output_tail("a\nb\n") == "a\nb"


def test_the_command_is_a_template_of_the_component_that_adds_it(tmp_path: Path) -> None:
    class Root(Component):
        word = "hello"

        def configure(self) -> None:
            self += Command("echo {{component.word}} > said", creates="said")

    apply_twice(Root, tmp_path)

    assert (workdir(tmp_path) / "said").read_text() == "hello\n"


def test_an_argv_list_never_goes_through_a_shell(tmp_path: Path) -> None:
    target = tmp_path / "out"

    apply_twice(
        root_with(
            lambda: Command(
                ["sh", "-c", 'printf "%s" "$1" > "$2"', "-", "$HOME;x", str(target)],
                creates=str(target),
            )
        ),
        tmp_path,
    )

    assert target.read_text() == "$HOME;x"


def test_shell_false_splits_a_string_and_runs_it_without_a_shell(tmp_path: Path) -> None:
    target = tmp_path / "a b"

    apply_twice(
        root_with(lambda: Command(f"touch '{target}' ';'", shell=False, creates=str(target))),
        tmp_path,
    )

    assert target.exists()
    assert (workdir(tmp_path) / ";").exists()


# -- creates -------------------------------------------------------------------


def test_creates_runs_the_command_until_the_path_exists(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    apply_twice(
        root_with(lambda: Command(f"echo ran >> {counter}; touch done", creates="done")), tmp_path
    )

    assert runs(counter) == 1
    assert (workdir(tmp_path) / "done").exists()


def test_creates_is_relative_to_cwd_when_given(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()

    apply_twice(
        root_with(
            lambda: Command("mkdir -p build && touch build/app", cwd=str(src), creates="build/app")
        ),
        tmp_path,
    )

    assert (src / "build" / "app").exists()


def test_a_command_that_does_not_create_its_path_did_not_converge(tmp_path: Path) -> None:
    outcome, _ = deploy(root_with(lambda: Command("true", creates="never")), tmp_path)

    error = failure(outcome)
    assert isinstance(error, NotConvergedError)
    assert f"true ran, but did not create {workdir(tmp_path)}/never" in str(error)
    assert "Root > Command('true')" in str(error)


def test_a_missing_cwd_is_a_clear_error(tmp_path: Path) -> None:
    outcome, _ = deploy(root_with(lambda: Command("true", cwd="missing")), tmp_path)

    error = failure(outcome)
    assert isinstance(error, DeployError)
    assert f"working directory {workdir(tmp_path)}/missing does not exist" in str(error)


# -- unless --------------------------------------------------------------------


def test_unless_runs_the_command_only_while_the_guard_fails(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    marker = tmp_path / "marker"

    first, run = apply_twice(
        root_with(
            lambda: Command(f"echo ran >> {counter}; touch {marker}", unless=f"test -e {marker}")
        ),
        tmp_path,
    )

    assert runs(counter) == 1
    assert len(first.changed) == 1


def test_unless_as_an_argv(tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    apply_twice(
        root_with(lambda: Command(["touch", str(marker)], unless=["test", "-e", str(marker)])),
        tmp_path,
    )

    assert marker.exists()


def test_a_guard_that_cannot_run_is_an_error_not_a_reason_to_run(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    outcome, _ = deploy(
        root_with(lambda: Command(f"echo ran >> {counter}", unless="no-such-check-command")),
        tmp_path,
    )

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert "unless guard cannot run (exit 127, not found): no-such-check-command" in str(error)
    assert "Root > Command(" in str(error)
    assert not counter.exists()


def test_a_guard_argv_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    outcome, _ = deploy(root_with(lambda: Command("true", unless=["/no/such/check"])), tmp_path)

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert "unless guard cannot run (exit 127, not found): /no/such/check" in str(error)


def test_a_guard_that_still_fails_after_the_command_ran_did_not_converge(tmp_path: Path) -> None:
    outcome, _ = deploy(root_with(lambda: Command("true", unless="false")), tmp_path)

    error = failure(outcome)
    assert isinstance(error, NotConvergedError)
    assert "unless guard false failed" in str(error)
    assert "Root > Command('true')" in str(error)


def test_a_dry_run_checks_the_guard_and_runs_nothing(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    outcome, run = deploy(
        root_with(lambda: Command(f"echo ran >> {counter}", unless="false")),
        tmp_path,
        predicting=True,
    )

    assert outcome.error is None
    assert len(outcome.changed) == 1
    assert messages(run) == [f"would run echo ran >> {counter}: unless guard false failed"]
    assert not counter.exists()


# -- onlyif_changed ------------------------------------------------------------


def test_onlyif_changed_runs_when_a_dependency_changed_in_this_run(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    config = tmp_path / "app.conf"

    class Root(Component):
        content = "v1\n"

        def configure(self) -> None:
            self += File(str(config), content=self.content)
            self += Command(f"echo ran >> {counter}", onlyif_changed=self._)

    apply_twice(Root, tmp_path)
    assert runs(counter) == 1

    class Changed(Root):
        content = "v2\n"

    outcome, _ = deploy(Changed, tmp_path)
    assert outcome.error is None
    assert runs(counter) == 2
    assert f"Changed > Command('echo ran >> {counter}')" in outcome.changed


def test_onlyif_changed_takes_a_list_and_runs_if_any_changed(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    stable = tmp_path / "stable"
    stable.write_text("same\n")

    class Root(Component):
        def configure(self) -> None:
            self += File(str(stable), content="same\n")
            first = self._
            self += File(str(tmp_path / "new"), content="new\n")
            self += Command(f"echo ran >> {counter}", onlyif_changed=[first, self._])

    apply_twice(Root, tmp_path)
    assert runs(counter) == 1


def test_onlyif_changed_in_a_dry_run(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    class Root(Component):
        def configure(self) -> None:
            self += File(str(tmp_path / "conf"), content="x\n")
            self += Command(f"echo ran >> {counter}", onlyif_changed=self._)

    outcome, run = deploy(Root, tmp_path, predicting=True)

    assert outcome.changed[-1] == f"Root > Command('echo ran >> {counter}')"
    assert messages(run) == [f"would run echo ran >> {counter}: File('{tmp_path}/conf') changed"]
    assert not counter.exists()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        (
            "not-added",
            "onlyif_changed names File('/not-added'), which is not part of this root's "
            "deployment before this Command",
        ),
        ("ancestor", "onlyif_changed names Root, which contains this Command and deploys after it"),
        ("text", "onlyif_changed must be a component or a non-empty list of components, got 'x'"),
        ("empty", "onlyif_changed must be a component or a non-empty list of components, got []"),
    ],
)
def test_onlyif_changed_must_name_components_deployed_before(
    tmp_path: Path, how: str, message: str
) -> None:
    class Root(Component):
        def configure(self) -> None:
            dependency: Any
            if how == "not-added":
                self |= File("/not-added", content="x")
                dependency = self._
            elif how == "ancestor":
                dependency = self
            elif how == "text":
                dependency = "x"
            else:
                dependency = []
            self += Command("true", onlyif_changed=dependency)

    with pytest.raises(ConfigurationError) as raised:
        configure(Root, tmp_path)

    assert message in str(raised.value)
    assert "Root > Command('true')" in str(raised.value)


# -- failures and timeouts -----------------------------------------------------


def test_a_failing_command_names_command_exit_code_and_stderr(tmp_path: Path) -> None:
    outcome, run = deploy(root_with(lambda: Command("echo broken >&2; exit 3")), tmp_path)

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert error.returncode == 3
    assert "command exited with 3: echo broken >&2; exit 3\n  stderr: broken" in str(error)
    assert "Root > Command('echo broken >&2; exit 3')" in str(error)
    assert "ran echo broken >&2; exit 3: exit code 3" in messages(run)


def test_a_command_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    outcome, _ = deploy(root_with(lambda: Command(["/no/such/program", "x"])), tmp_path)

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert "command exited with 127 (not found): /no/such/program x" in str(error)


def test_a_command_past_its_timeout_is_killed_and_fails_the_run(tmp_path: Path) -> None:
    outcome, run = deploy(
        root_with(lambda: Command("echo started; sleep 30", timeout=0.3)), tmp_path
    )

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert "command timed out after 0.3s: echo started; sleep 30" in str(error)
    assert "Root > Command(" in str(error)
    assert messages(run) == ["ran echo started; sleep 30: timed out", "stdout:\nstarted"]


def test_the_runs_command_limit_applies_too(tmp_path: Path) -> None:
    component = configure(root_with(lambda: Command("sleep 30")), tmp_path)
    run = RunContext(command_timeout=0.3)

    outcome = deploy_roots([ConfiguredRoot(RootRecord(ROOT_NAME), component)], run)

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert "timed out after 0.3s" in str(error)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"command": "  "}, "command is empty"),
        ({"command": ["make", 1]}, "command must be a string or a non-empty list of strings"),
        ({"command": []}, "command must be a string or a non-empty list of strings, got []"),
        ({"command": "true", "unless": ""}, "unless is empty"),
        (
            {"command": "true", "timeout": -1},
            "timeout must be a positive number of seconds, got -1",
        ),
        ({"command": "true", "timeout": "soon"}, "timeout must be a positive number"),
        ({"command": "true", "env": {"A": 1}}, "env['A'] has a value of type int, expected str"),
        ({"command": "true", "env": {"A=B": "x"}}, "env has a bad variable name 'A=B'"),
        ({"command": "true", "env": ["A"]}, "env must map variable names to strings, got a list"),
        ({"command": "echo 'open", "shell": False}, 'cannot split command "echo \'open"'),
        ({"command": "echo {{ nothing }}"}, "template uses an undefined name"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    tmp_path: Path, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        configure(root_with(lambda: Command(**kw)), tmp_path)

    assert message in str(raised.value)
    assert "Root > Command(" in str(raised.value)


def test_log_entries_are_attributed_to_the_command(tmp_path: Path) -> None:
    _, run = deploy(root_with(lambda: Command("true")), tmp_path)

    assert LogEntry("Root > Command('true')", "ran true: exit code 0") in run.log
    assert os.getcwd() != str(workdir(tmp_path))


# -- env values never show -------------------------------------------------------

SECRET = "hunter2secret"


def assert_hidden(run: RunContext, error: Any = None) -> None:
    """The secret is nowhere in the run's log, its diffs or `error`."""
    assert all(SECRET not in entry.message for entry in run.log)
    assert all(SECRET not in repr(diff) for diff in run.diffs)
    if error is not None:
        for text in (str(error), error.message, error.command, error.stdout, error.stderr):
            assert SECRET not in text


def test_env_values_never_show_in_output_logged(tmp_path: Path) -> None:
    command = "echo $DB_PASSWORD; echo $DB_PASSWORD >&2"

    outcome, run = deploy(
        root_with(lambda: Command(command, env={"DB_PASSWORD": SECRET})), tmp_path
    )

    assert outcome.error is None
    assert_hidden(run)
    assert "stdout:\n***" in messages(run)
    assert "stderr:\n***" in messages(run)


def test_env_values_never_show_in_a_failing_commands_error(tmp_path: Path) -> None:
    command = "echo out $DB_PASSWORD; echo err $DB_PASSWORD >&2; exit 3"

    outcome, run = deploy(
        root_with(lambda: Command(command, env={"DB_PASSWORD": SECRET})), tmp_path
    )

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert_hidden(run, error)
    assert "\n  stderr: err ***" in str(error)
    assert (error.stdout, error.stderr) == ("out ***\n", "err ***\n")
    assert "stdout:\nout ***" in messages(run)


def test_env_values_never_show_in_a_timed_out_commands_error(tmp_path: Path) -> None:
    command = "echo $DB_PASSWORD; sleep 30"

    outcome, run = deploy(
        root_with(lambda: Command(command, env={"DB_PASSWORD": SECRET}, timeout=0.3)), tmp_path
    )

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert error.returncode is None
    assert_hidden(run, error)
    assert error.stdout == "***\n"


def test_env_values_never_show_in_a_broken_guards_error(tmp_path: Path) -> None:
    outcome, run = deploy(
        root_with(
            lambda: Command(
                "true",
                unless="echo $DB_PASSWORD; echo no $DB_PASSWORD >&2; exit 127",
                env={"DB_PASSWORD": SECRET},
            )
        ),
        tmp_path,
    )

    error = failure(outcome)
    assert isinstance(error, CommandError)
    assert "unless guard cannot run (exit 127, not found)" in str(error)
    assert "\n  stderr: no ***" in str(error)
    assert_hidden(run, error)


def test_env_values_in_the_command_text_are_hidden_too(tmp_path: Path) -> None:
    class Root(Component):
        password = SECRET

        def configure(self) -> None:
            # Rendered into the text: the breadcrumb keeps the template.
            self += Command(
                "test {{component.password}} = x", env={"DB_PASSWORD": "{{component.password}}"}
            )

    outcome, run = deploy(Root, tmp_path)

    error = failure(outcome)
    assert "command exited with 1: test *** = x" in str(error)
    assert all(SECRET not in entry.message for entry in run.log)  # also the -v lines
    assert_hidden(run, error)


# -- the working directory -------------------------------------------------------


def test_the_command_and_guard_run_in_cwd_without_moving_the_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    moves: list[str] = []
    monkeypatch.setattr(os, "chdir", lambda path: moves.append(str(path)))

    class Root(Component):
        def configure(self) -> None:
            self += Command("pwd > ran-in", cwd=str(src), unless="pwd > guard-in; false")

    outcome, _ = deploy(Root, tmp_path)

    # The guard still fails after the run: not converged, but both ran in src.
    assert isinstance(outcome.error, NotConvergedError)
    assert (src / "ran-in").read_text() == f"{src}\n"
    assert (src / "guard-in").read_text() == f"{src}\n"
    assert str(src) not in moves


def test_a_cwd_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    outcome, _ = deploy(root_with(lambda: Command("true", cwd=str(tmp_path / "file"))), tmp_path)

    error = failure(outcome)
    assert isinstance(error, DeployError)
    assert f"working directory {tmp_path}/file is not a directory" in str(error)


# -- a run owed by a failed run ---------------------------------------------------


def pending_markers(tmp_path: Path) -> list[Path]:
    return sorted(workdir(tmp_path).glob(".consign-pending-command-*"))


def onlyif_root(tmp_path: Path, counter: Path, content: str) -> type[Component]:
    """A config file and a command run when it changes, which fails while
    `tmp_path/broken` exists."""
    broken = tmp_path / "broken"

    class Root(Component):
        def configure(self) -> None:
            self += File(str(tmp_path / "app.conf"), content=content)
            self += Command(f"test ! -e {broken} && echo ran >> {counter}", onlyif_changed=self._)

    return Root


def test_a_command_that_failed_after_its_dependency_changed_runs_next_time(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "counter"
    apply_twice(onlyif_root(tmp_path, counter, "v1\n"), tmp_path)
    assert runs(counter) == 1
    (tmp_path / "broken").touch()

    failed, _ = deploy(onlyif_root(tmp_path, counter, "v2\n"), tmp_path)

    assert isinstance(failed.error, CommandError)
    assert runs(counter) == 1
    assert len(pending_markers(tmp_path)) == 1
    (tmp_path / "broken").unlink()

    # Nothing changes now, but the command is still owed.
    dry, run = deploy(onlyif_root(tmp_path, counter, "v2\n"), tmp_path, predicting=True)
    assert dry.changed == (
        f"Root > Command('test ! -e {tmp_path}/broken && echo ran >> {counter}')",
    )
    assert messages(run)[0].endswith(": a run was pending from an earlier run")
    outcome, _ = deploy(onlyif_root(tmp_path, counter, "v2\n"), tmp_path)
    assert outcome.error is None, outcome.error
    assert runs(counter) == 2
    assert pending_markers(tmp_path) == []
    apply_twice(onlyif_root(tmp_path, counter, "v2\n"), tmp_path)
    assert runs(counter) == 2


def test_a_run_that_dies_between_the_dependency_and_the_command_owes_it(
    tmp_path: Path,
) -> None:
    counter = tmp_path / "counter"
    config = tmp_path / "app.conf"

    class Failing(Component):
        """Fails after the config changed, before the Command's turn."""

        fail = False

        def verify(self) -> None:
            if self.fail:
                raise UpdateNeeded()

        def update(self) -> None:
            raise DeployError("broken")

    def root(content: str, fail: bool) -> type[Component]:
        class Root(Component):
            def configure(self) -> None:
                self += File(str(config), content=content)
                dependency = self._
                self += Failing(fail=fail)
                self += Command(f"echo ran >> {counter}", onlyif_changed=dependency)

        return Root

    apply_twice(root("v1\n", False), tmp_path)
    failed, _ = deploy(root("v2\n", True), tmp_path)
    assert isinstance(failed.error, DeployError)
    assert runs(counter) == 1

    apply_twice(root("v2\n", False), tmp_path)

    assert runs(counter) == 2
    assert pending_markers(tmp_path) == []


def test_a_dry_run_writes_no_marker(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    apply_twice(onlyif_root(tmp_path, counter, "v1\n"), tmp_path)

    outcome, _ = deploy(onlyif_root(tmp_path, counter, "v2\n"), tmp_path, predicting=True)

    assert len(outcome.changed) == 2
    assert pending_markers(tmp_path) == []
