"""The apply in a child process: whatever the runtime does, the executor reports it.

``run_runtime`` is driven with fake "python" executables (scripts given as
the interpreter) that crash, hang, print, or write bad reports; then real
bundles whose components do the same go through ``apply_bundle``.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import signal
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import executor.apply
import executor.child
from executor.apply import ApplyStatus, apply_bundle, run_runtime
from executor.cli import app as cli_app
from executor.errors import RunTimeoutError, RuntimeFailure
from executor.outcome import RootOutcome, RootStatus
from executor.protocol import RunReport, RunRequest
from executor.run import FileDiff, Level, LogEntry
from tests.deployments import apply_options, build_bundles, deployment, verified
from tests.keys import signing_key

REQUEST = RunRequest(
    model=b"model bytes",
    host="web1",
    environment="prod",
    repository="/nonexistent/repository",
    target_directory="/srv/app",
    dry_run=False,
    timeout=None,
    report="",
)

REPORT = RunReport(
    roots=(RootOutcome("app", RootStatus.OK, ("App > File('/srv/app/a')",), 0.5),),
    log=(LogEntry("App", "did it", Level.INFO),),
    diffs=(FileDiff("App", "/srv/app/a", "+x\n"),),
    error=None,
    target_directory="/srv/app",
)


def script(tmp_path: Path, body: str, *, shell: bool = False) -> Path:
    """A fake interpreter: run as `SCRIPT -I -u -m executor.child REQUEST_FILE`."""
    path = tmp_path / ("fake-sh" if shell else "fake-python")
    shebang = "#!/bin/sh" if shell else f"#!{sys.executable}"
    path.write_text(shebang + "\n" + textwrap.dedent(body).lstrip("\n"))
    path.chmod(0o755)
    return path


def run_fake(
    python: Path, request: RunRequest = REQUEST, limit: float | None = None
) -> RunReport:
    with contextlib.ExitStack() as cleanup:
        return run_runtime(python, request, cleanup, limit)


def open_descriptors() -> list[str]:
    """What this process has open, by descriptor."""
    found = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        with contextlib.suppress(FileNotFoundError):
            found.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
    return found


def gone(pid: int, within: float = 3.0) -> bool:
    """Whether process `pid` ended (a zombie waiting for init counts as ended)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def kill_quietly(pid_file: Path) -> None:
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


# -- run_runtime with fake runtimes ------------------------------------------------------


def test_a_runtime_that_crashes_is_a_failure_with_its_output(tmp_path: Path) -> None:
    python = script(
        tmp_path,
        """
        echo "Fatal Python error: Segmentation fault"
        echo "on stderr too" >&2
        exit 3
        """,
        shell=True,
    )

    report = run_fake(python)

    assert isinstance(report.error, RuntimeFailure)
    assert report.error.code == "runtime"
    assert report.error.message == "the runtime exited with 3 without a report"
    assert report.error.hint == (
        "its output: Fatal Python error: Segmentation fault\non stderr too"
    )
    assert report.roots == () and report.log == ()


def test_a_runtime_that_says_nothing_says_so(tmp_path: Path) -> None:
    report = run_fake(script(tmp_path, "exit 1", shell=True))

    assert report.error is not None
    assert report.error.message == "the runtime exited with 1 without a report"
    assert report.error.hint == "its output: (none)"


def test_a_runtime_killed_by_a_signal_names_the_signal(tmp_path: Path) -> None:
    report = run_fake(script(tmp_path, "echo dying\nkill -KILL $$", shell=True))

    assert isinstance(report.error, RuntimeFailure)
    assert report.error.message == "the runtime was killed by signal 9 without a report"
    assert report.error.hint == "its output: dying"


def test_a_runtime_past_its_time_is_killed_with_everything_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor.apply, "KILL_GRACE", 0.5)
    pid_file = tmp_path / "grandchild.pid"
    python = script(
        tmp_path,
        f"""
        trap '' TERM INT ALRM
        sleep 60 &
        echo $! > {pid_file}
        wait
        """,
        shell=True,
    )
    try:
        started = time.monotonic()
        report = run_fake(python, RunRequest(**{**REQUEST.__dict__, "timeout": 0.3}))
        elapsed = time.monotonic() - started

        assert isinstance(report.error, RunTimeoutError)
        assert report.error.code == "run-timeout"
        assert report.error.message == (
            "the runtime did not stop within its limit of 0.3s and was killed"
        )
        assert report.error.hint == "raise --timeout, or find what hangs with --verbose"
        assert 0.8 <= elapsed < 5
        assert gone(int(pid_file.read_text()))
    finally:
        kill_quietly(pid_file)


def test_the_timeout_names_the_user_s_limit_not_what_was_left_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # apply passes the runtime what is left of --timeout after verifying and
    # preparing; the message names --timeout itself.
    monkeypatch.setattr(executor.apply, "KILL_GRACE", 0.2)
    python = script(tmp_path, "exec sleep 60", shell=True)

    report = run_fake(python, RunRequest(**{**REQUEST.__dict__, "timeout": 0.1}), limit=30.0)

    assert isinstance(report.error, RunTimeoutError)
    assert report.error.message == (
        "the runtime did not stop within its limit of 30s and was killed"
    )


def test_killing_the_runtime_leaks_no_pipes_or_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor.apply, "KILL_GRACE", 0.2)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    python = script(tmp_path, "sleep 60", shell=True)
    gc.collect()
    before = open_descriptors()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        for _ in range(3):
            report = run_fake(python, RunRequest(**{**REQUEST.__dict__, "timeout": 0.1}))
            assert isinstance(report.error, RunTimeoutError)
        gc.collect()

    assert open_descriptors() == before
    assert [str(u.exc_value) for u in unraisable] == []


def test_the_runtime_reads_its_request_from_a_file_and_talks_through_no_pipe(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "seen.json"
    python = script(
        tmp_path,
        f"""
        import json, os, stat, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        out, err = os.fstat(1), os.fstat(2)
        pipes = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{{fd}}").startswith("pipe:"):
                    pipes.append(fd)
            except FileNotFoundError:  # the listing's own descriptor
                pass
        data = {{
            "argv": sys.argv[1:],
            "request": request,
            "stdin": os.readlink("/proc/self/fd/0"),
            "stdout is a file": stat.S_ISREG(out.st_mode),
            "stderr is stdout": (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino),
            "pipes": pipes,
        }}
        with open({str(seen)!r}, "w") as f:
            json.dump(data, f)
        with open(request["report"], "w") as f:
            f.write({REPORT.to_json()!r})
        """,
    )

    with contextlib.ExitStack() as cleanup:
        report = run_runtime(python, REQUEST, cleanup)
        data = json.loads(seen.read_text())
        request_file = Path(data["argv"][-1])
        scratch = request_file.parent
        assert request_file.is_file()

    assert report.error is None and report.roots == REPORT.roots
    assert data["argv"] == ["-I", "-u", "-m", "executor.child", str(request_file)]
    assert request_file.is_absolute() and scratch.name.startswith("consign-run-")
    # The request is the one given, with the report to write beside it.
    assert RunRequest.from_json(json.dumps(data["request"])) == RunRequest(
        **{**REQUEST.__dict__, "report": str(scratch / "report.json")}
    )
    assert data["stdin"] == "/dev/null"
    assert data["stdout is a file"] is True
    assert data["stderr is stdout"] is True
    assert data["pipes"] == []
    # Request, report and output go with the run.
    assert not scratch.exists()


def test_an_unreadable_report_is_a_runtime_failure(tmp_path: Path) -> None:
    python = script(
        tmp_path,
        """
        import json, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        with open(request["report"], "w") as f:
            f.write("{this is no json")
        """,
    )

    report = run_fake(python)

    assert isinstance(report.error, RuntimeFailure)
    assert report.error.message.startswith("the runtime's report is unreadable: Expecting ")


def test_a_report_in_another_protocol_is_a_runtime_failure(tmp_path: Path) -> None:
    python = script(
        tmp_path,
        """
        import json, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        with open(request["report"], "w") as f:
            json.dump({"protocol": 2, "roots": []}, f)
        """,
    )

    report = run_fake(python)

    assert report.error is not None
    assert report.error.message == (
        "the runtime's report is unreadable: the report speaks protocol 2, this side 1"
    )


def test_what_the_runtime_prints_lands_in_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEX_ROOT", str(tmp_path / "pex"))
    monkeypatch.setenv("PEX_INHERIT_PATH", "fallback")
    python = script(
        tmp_path,
        f"""
        import json, os, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        print("hello from deployment code")
        print("host", request["host"], "in", request["environment"], "cwd", os.getcwd())
        print("pex variables:", sorted(k for k in os.environ if k.startswith("PEX_")), flush=True)
        print("a warning", file=sys.stderr)
        with open(request["report"], "w") as f:
            f.write({REPORT.to_json()!r})
        """,
    )

    report = run_fake(python)

    assert report.error is None
    assert report.roots == REPORT.roots
    assert report.diffs == REPORT.diffs
    assert report.log == (
        *REPORT.log,
        LogEntry(
            "runtime output",
            "hello from deployment code\nhost web1 in prod cwd /\npex variables: []\na warning",
            Level.INFO,
        ),
    )


def test_a_runtime_that_prints_a_lot_keeps_the_end(tmp_path: Path) -> None:
    python = script(
        tmp_path,
        f"""
        import json, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        for n in range(20000):
            print(f"line {{n:05d}} " + "x" * 40)
        print("the end")
        with open(request["report"], "w") as f:
            f.write({REPORT.to_json()!r})
        """,
    )

    report = run_fake(python)

    output = report.log[-1]
    assert output.component == "runtime output"
    assert len(output.message.encode()) <= executor.apply.MAX_RUNTIME_OUTPUT
    assert output.message.endswith("line 19999 " + "x" * 40 + "\nthe end")


def test_a_runtime_that_leaves_a_process_behind_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor.apply, "KILL_GRACE", 0.5)
    pid_file = tmp_path / "daemon.pid"
    python = script(
        tmp_path,
        f"""
        import json, subprocess, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        with open(request["report"], "w") as f:
            f.write({REPORT.to_json()!r})
        # A service the deployment started, inheriting stdout.
        daemon = subprocess.Popen(["sleep", "30"])
        with open({str(pid_file)!r}, "w") as f:
            f.write(str(daemon.pid))
        """,
    )
    try:
        started = time.monotonic()
        report = run_fake(python, RunRequest(**{**REQUEST.__dict__, "timeout": 1.0}))

        assert report.error is None, report.error
        assert report.roots == REPORT.roots
        assert time.monotonic() - started < 1.4
        # A success does not kill what the deployment started.
        assert not gone(int(pid_file.read_text()), within=0.1)
    finally:
        kill_quietly(pid_file)


@pytest.mark.parametrize("timeout", [None, 20.0], ids=["no timeout", "a timeout"])
def test_a_grandchild_holding_the_runtime_s_output_does_not_hold_the_apply(
    tmp_path: Path, timeout: float | None
) -> None:
    pid_file = tmp_path / "sleep.pid"
    python = script(
        tmp_path,
        f"""
        sleep 30 &
        echo $! > {pid_file}
        exec {sys.executable} - "$@" <<'EOF'
        import json, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        print("started a service")
        with open(request["report"], "w") as f:
            f.write({REPORT.to_json()!r})
        EOF
        """,
        shell=True,
    )
    reports: list[RunReport] = []
    request = RunRequest(**{**REQUEST.__dict__, "timeout": timeout})
    # In a thread: waiting for the output's end would wait out the sleep.
    thread = threading.Thread(target=lambda: reports.append(run_fake(python, request)))
    try:
        started = time.monotonic()
        thread.start()
        thread.join(timeout=10)
        elapsed = time.monotonic() - started

        assert not thread.is_alive(), "the apply waits for the process the runtime left"
        assert elapsed < 5
        (report,) = reports
        assert report.error is None, report.error
        assert report.roots == REPORT.roots
        assert report.log == (
            *REPORT.log,
            LogEntry("runtime output", "started a service", Level.INFO),
        )
        assert not gone(int(pid_file.read_text()), within=0.1)
    finally:
        kill_quietly(pid_file)
        thread.join()


# -- the runtime's environment ----------------------------------------------------------

# What the executor's environment may hold, and whether the runtime gets it.
ENVIRONMENT: dict[str, tuple[str, bool]] = {
    "PATH": ("/usr/local/bin:/usr/bin:/bin", True),
    "HOME": ("/root", True),
    "LANG": ("C.UTF-8", True),
    "LC_ALL": ("C.UTF-8", True),
    "TZ": ("UTC", True),
    "FOO": ("bar", True),
    "MY_PYTHONPATH": ("kept: only a prefix withholds", True),
    "CONDAX": ("kept: CONDA_ is the prefix", True),
    "CONSIGNED": ("kept: CONSIGN_ is the prefix", True),
    "python_lowercase": ("kept: names are case-sensitive", True),
    "PYTHONPATH": ("/evil", False),
    "PYTHONHOME": ("/evil", False),
    "PYTHONSTARTUP": ("/evil/startup.py", False),
    "PYTHONINSPECT": ("1", False),
    "PYTHONUSERBASE": ("/evil/user", False),
    "PEX_INHERIT_PATH": ("prefer", False),
    "PEX_ROOT": ("/evil/pex", False),
    "PEX_PYTHON": ("/evil/python", False),
    "PEX_TOOLS": ("1", False),
    "VIRTUAL_ENV": ("/evil/venv", False),
    "VIRTUAL_ENV_PROMPT": ("(evil)", False),
    "CONDA_PREFIX": ("/evil/conda", False),
    "CONDA_DEFAULT_ENV": ("base", False),
    "CONSIGN_SIGN_KEY": ("/home/builder/.config/consign/builder-key", False),
    "CONSIGN_STATE_DIR": ("/var/lib/consign", False),
    # The one consign setting the runtime reads itself: how names resolve.
    "CONSIGN_DNS": ("offline", True),
    "__PYVENV_LAUNCHER__": ("/evil/python", False),
}


def test_the_runtime_environment_withholds_python_pex_venv_conda_and_consign_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, (value, _passes) in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)

    assert executor.apply.runtime_environment() == {
        name: value for name, (value, passes) in ENVIRONMENT.items() if passes
    }


def test_the_runtime_runs_with_that_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, (value, _passes) in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    seen = tmp_path / "environment.json"
    python = script(
        tmp_path,
        f"""
        import json, os, sys
        with open(sys.argv[-1], encoding="utf-8") as f:
            request = json.load(f)
        with open({str(seen)!r}, "w") as f:
            json.dump(dict(os.environ), f)
        with open(request["report"], "w") as f:
            f.write({REPORT.to_json()!r})
        """,
    )

    report = run_fake(python)

    assert report.error is None
    environment = json.loads(seen.read_text())
    assert {name for name in ENVIRONMENT if name in environment} == {
        name for name, (_value, passes) in ENVIRONMENT.items() if passes
    }
    assert environment["FOO"] == "bar" and environment["PATH"] == ENVIRONMENT["PATH"][0]
    # Of the test session's own settings (conftest.py) only the resolver's passes.
    assert [name for name in environment if name.startswith("CONSIGN_")] == ["CONSIGN_DNS"]


# -- the child's own entry point ---------------------------------------------------------


EMPTY = "from batou.component import Component\nclass App(Component):\n    pass\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    repo = deployment(
        tmp_path_factory.mktemp("child") / "repo",
        components={"app": EMPTY},
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n"},
    )
    build_bundles("prod", repo)
    return verified(repo / "bundles/prod/web1.bundle").read("model", 1 << 26)


class NoStdin(io.StringIO):
    def read(self, size: int | None = -1) -> str:
        raise AssertionError("the child read its stdin")


def child_main(request: RunRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[int, RunReport]:
    """executor.child.main as the executor runs it: the request in the file
    named by the only argument, stdin at /dev/null."""
    request_file = Path(request.report).with_name("request.json")
    request_file.write_text(request.to_json(), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", [executor.child.__file__, str(request_file)])
    monkeypatch.setattr(sys, "stdin", NoStdin())
    code = executor.child.main()
    return code, RunReport.from_json(Path(request.report).read_text())


def test_the_child_refuses_a_model_that_is_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = RunRequest(**{**REQUEST.__dict__, "report": str(tmp_path / "report.json")})

    code, report = child_main(request, monkeypatch)

    assert code == 0
    assert report.error is not None
    assert report.error.message.startswith("the bundle's model is invalid: ")
    assert report.roots == ()


def test_the_child_refuses_a_model_of_another_host(
    model: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = RunRequest(
        **{**REQUEST.__dict__, "model": model, "host": "web2", "report": str(tmp_path / "r.json")}
    )

    code, report = child_main(request, monkeypatch)

    assert code == 0
    assert report.error is not None
    assert report.error.message == (
        "the bundle's manifest names host 'web2' in 'prod', its model host 'web1' in 'prod'"
    )


def test_a_bug_in_the_runtime_is_reported_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(request: RunRequest, secrets: bytes | None = None) -> RunReport:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(executor.child, "run", broken)
    request = RunRequest(**{**REQUEST.__dict__, "report": str(tmp_path / "report.json")})

    code, report = child_main(request, monkeypatch)

    assert code == 0
    assert report.error is not None
    assert report.error.code == "internal-error"
    assert report.error.message == "the runtime failed: ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in (getattr(report.error, "detail", None) or "")
    assert "Traceback" in capsys.readouterr().err
    # Only the report is left beside the request, no temporary file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "request.json"]


# -- components that crash, print, or hang, through apply_bundle -------------------------


def one_component(tmp_path: Path, code: str) -> Path:
    repo = deployment(
        tmp_path / "repo",
        components={"app": code},
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n"},
    )
    build_bundles("prod", repo)
    return repo / "bundles/prod/web1.bundle"


def test_a_component_that_ends_the_process_fails_the_run_not_the_executor(
    tmp_path: Path,
) -> None:
    bundle = one_component(
        tmp_path,
        """
        import os
        from batou.component import Component

        class App(Component):
            def verify(self):
                raise AssertionError("needs work")

            def update(self):
                print("leaving now", flush=True)
                os._exit(7)
        """,
    )

    result = apply_bundle(apply_options(bundle, tmp_path))

    assert result.status is ApplyStatus.FAILED
    assert isinstance(result.error, RuntimeFailure)
    assert result.error.message == "the runtime exited with 7 without a report"
    assert result.error.hint == "its output: leaving now"
    assert result.to_json()["error"]["code"] == "runtime"
    # The executor carries on: the next apply runs (and ends) the same way.
    again = apply_bundle(apply_options(bundle, tmp_path))
    assert again.error is not None and again.error.message == result.error.message


def test_what_a_component_prints_is_kept_in_the_result_log(tmp_path: Path) -> None:
    bundle = one_component(
        tmp_path,
        """
        import sys
        from batou.component import Component

        class App(Component):
            updated = False

            def verify(self):
                print("checking the app")
                if not self.updated:
                    print("the app is old", file=sys.stderr)
                    raise AssertionError("old")

            def update(self):
                print("updating the app")
                self.updated = True
        """,
    )

    result = apply_bundle(apply_options(bundle, tmp_path))

    assert result.status is ApplyStatus.OK, result.error
    assert result.changed == ("App",)
    (output,) = [e for e in result.log if e.component == "runtime output"]
    assert output.level is Level.INFO
    # verify, update, verify again, stderr in its place: the runtime runs
    # unbuffered (-u) into one file.
    assert output.message.split("\n") == [
        "checking the app",
        "the app is old",
        "updating the app",
        "checking the app",
    ]
    assert result.to_json()["log"][-1] == {
        "component": "runtime output",
        "message": output.message,
        "level": "info",
    }


def test_a_component_that_blocks_the_alarm_is_killed_with_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor.apply, "KILL_GRACE", 0.5)
    pid_file = tmp_path / "helper.pid"
    bundle = one_component(
        tmp_path,
        f"""
        import signal, subprocess, time
        from batou.component import Component

        class App(Component):
            def verify(self):
                raise AssertionError()

            def update(self):
                helper = subprocess.Popen(["sleep", "60"])
                with open({str(pid_file)!r}, "w") as f:
                    f.write(str(helper.pid))
                # Deployment code that keeps the run's alarm out.
                signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGALRM}})
                time.sleep(60)
        """,
    )
    try:
        result = apply_bundle(apply_options(bundle, tmp_path, timeout=1.0))

        assert result.status is ApplyStatus.FAILED
        assert isinstance(result.error, RunTimeoutError)
        # The limit the user gave, not what was left of it for the runtime.
        assert result.error.message == (
            "the runtime did not stop within its limit of 1s and was killed"
        )
        assert result.duration_s < 10
        assert gone(int(pid_file.read_text()))
    finally:
        kill_quietly(pid_file)


def test_apply_verbose_shows_the_traceback_of_the_failing_component(tmp_path: Path) -> None:
    bundle = one_component(
        tmp_path,
        """
        from batou.component import Component

        class App(Component):
            def verify(self):
                raise AssertionError("needs work")

            def update(self):
                raise RuntimeError("disk on fire")
        """,
    )

    arguments = [
        "apply", str(bundle), "--host", "web1",
        "--target-dir", str(tmp_path / "target"), "--state-dir", str(tmp_path / "state"),
        "--trust", str(signing_key().trust),
    ]

    quiet = CliRunner().invoke(cli_app, arguments)
    result = CliRunner().invoke(cli_app, [*arguments, "--verbose"])

    assert quiet.exit_code == 1
    assert "disk on fire" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    assert result.exit_code == 1
    assert "RuntimeError: disk on fire" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert 'raise RuntimeError("disk on fire")' in result.stderr
