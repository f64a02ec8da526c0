"""What passes between the host executor and the bundle's runtime: JSON with a protocol number."""

from __future__ import annotations

import json
from typing import Any

import pytest

from executor.console import print_error
from executor.errors import ConfigurationError, ConsignError, ErrorList, RunTimeoutError
from executor.outcome import RootOutcome, RootStatus
from executor.protocol import (
    PROTOCOL,
    ProtocolError,
    ReportedError,
    RunReport,
    RunRequest,
    error_from_json,
    error_to_json,
)
from executor.run import FileDiff, Level, LogEntry

REQUEST = RunRequest(
    model=bytes(range(256)),
    host="web1",
    environment="prod",
    repository="/var/lib/consign/store/abc",
    target_directory="/srv/app",
    dry_run=True,
    timeout=12.5,
    report="/tmp/consign-run-x/report.json",
)

REPORT = RunReport(
    roots=(
        RootOutcome("app", RootStatus.OK, ("App > File('/srv/app/a')", "App > Restart"), 0.25),
        RootOutcome("db", RootStatus.FAILED, (), 1.5, ""),
        RootOutcome("extra", RootStatus.SKIPPED, reason="--skip-component"),
        RootOutcome("late", RootStatus.NOT_RUN, reason="an earlier root failed"),
    ),
    log=(
        LogEntry("App", "restarted", Level.INFO),
        LogEntry("", "a note", Level.WARNING),
        LogEntry("Db", "ran sqlite3", Level.DEBUG),
    ),
    diffs=(
        FileDiff("App", "/srv/app/a", "--- a\n+++ b\n@@\n-x\n+y\n"),
        FileDiff("App", "/srv/app/secret", None, "content withheld"),
    ),
    error=None,
    target_directory="/srv/app",
)


def test_a_request_survives_the_round_trip() -> None:
    text = REQUEST.to_json()

    assert json.loads(text)["protocol"] == PROTOCOL
    assert RunRequest.from_json(text) == REQUEST


@pytest.mark.parametrize(
    "changes", [{"target_directory": None, "timeout": None, "dry_run": False}, {"model": b""}]
)
def test_a_request_without_optional_values_survives_the_round_trip(changes: dict[str, Any]) -> None:
    request = RunRequest(**{**REQUEST.__dict__, **changes})

    assert RunRequest.from_json(request.to_json()) == request


def test_a_report_survives_the_round_trip() -> None:
    assert RunReport.from_json(REPORT.to_json()) == REPORT


def test_a_reported_error_keeps_code_where_hint_and_detail() -> None:
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        error = RunTimeoutError(
            "the run exceeded its time limit", where="Slow (c.py:3)", hint="raise --timeout"
        )
        error.__cause__ = exc
    report = RunReport((), (), (), error, "/srv/app")

    back = RunReport.from_json(report.to_json())

    assert isinstance(back.error, ReportedError)
    assert back.error.code == "run-timeout"
    assert back.error.message == "the run exceeded its time limit"
    assert back.error.where == "Slow (c.py:3)"
    assert back.error.hint == "raise --timeout"
    assert back.error.detail is not None
    assert "ZeroDivisionError: division by zero" in back.error.detail
    assert back.error.detail.startswith("Traceback (most recent call last):")
    # Rendered like the original.
    assert back.error.render() == error.render()
    assert back.error.to_json()["code"] == "run-timeout"


def test_a_reported_error_passes_on_unchanged() -> None:
    error = ReportedError("command-failed", "ls exited 2", "App", None, "the traceback")

    again = error_from_json(error_to_json(error))

    assert (again.code, again.message, again.where, again.hint, again.detail) == (
        "command-failed",
        "ls exited 2",
        "App",
        None,
        "the traceback",
    )


def test_an_error_without_a_cause_has_no_detail() -> None:
    assert error_to_json(ConsignError("plain"))["detail"] is None


def error_list() -> ErrorList:
    try:
        raise KeyError("port")
    except KeyError as exc:
        first = ConfigurationError("port must be a number", where="components/app/component.py:7")
        first.__cause__ = exc
    return ErrorList(
        [first, ConfigurationError("no such template", where="components/web/component.py:3")],
        "configure failed on this host (2 errors)",
    )


def test_the_errors_of_an_error_list_survive_the_report() -> None:
    back = RunReport.from_json(RunReport((), (), (), error_list(), "").to_json()).error

    assert isinstance(back, ReportedError)
    assert (back.code, back.message) == ("errors", "configure failed on this host (2 errors)")
    parts = back.parts()
    assert all(isinstance(p, ReportedError) for p in parts)
    assert [(p.code, p.where, p.message) for p in parts] == [
        ("configuration-error", "components/app/component.py:7", "port must be a number"),
        ("configuration-error", "components/web/component.py:3", "no such template"),
    ]
    # Each keeps its own traceback.
    first, second = [p for p in parts if isinstance(p, ReportedError)]
    assert first.detail is not None and "KeyError: 'port'" in first.detail
    assert second.detail is None
    # And they pass on again unchanged, as the executor's JSON result does.
    assert back.to_json()["errors"] == [p.to_json() for p in error_list().parts()]
    again = error_from_json(error_to_json(back))
    assert [(p.where, p.message) for p in again.parts()] == [(p.where, p.message) for p in parts]


def test_a_single_error_is_its_own_part_and_carries_no_error_list() -> None:
    data = error_to_json(ConfigurationError("port must be a number"))
    back = error_from_json(data)

    assert "errors" not in data or data["errors"] == []
    assert back.parts() == [back]
    assert back.errors == []


@pytest.mark.parametrize("verbose", [False, True])
def test_the_executor_prints_each_reported_error_and_with_verbose_its_traceback(
    verbose: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    back = RunReport.from_json(RunReport((), (), (), error_list(), "").to_json()).error
    assert back is not None

    print_error(back, verbose=verbose)

    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "error: components/app/component.py:7: port must be a number"
    assert "error: components/web/component.py:3: no such template" in lines
    assert lines[-1] == "configure failed on this host (2 errors)"
    assert ("Traceback (most recent call last):" in err) is verbose
    assert ("KeyError: 'port'" in err) is verbose


def test_a_reported_error_list_renders_like_the_original() -> None:
    error = error_list()

    back = RunReport.from_json(RunReport((), (), (), error, "").to_json()).error

    assert back is not None
    assert back.render() == error.render()


def document(base: str, **changes: Any) -> str:
    data = json.loads(base)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


BAD_REQUESTS: dict[str, tuple[str, str]] = {
    "a newer protocol": (
        document(REQUEST.to_json(), protocol=2),
        "the request speaks protocol 2, this side 1",
    ),
    "no protocol": (document(REQUEST.to_json(), protocol=...), "the request speaks protocol None"),
    "not an object": ("[1, 2]", "the request is not a JSON object"),
    "no model": (document(REQUEST.to_json(), model=...), "the request is incomplete: 'model'"),
    "no report path": (
        document(REQUEST.to_json(), report=...),
        "the request is incomplete: 'report'",
    ),
    "no host": (document(REQUEST.to_json(), host=...), "the request is incomplete: 'host'"),
    "a model that is no base64": (
        document(REQUEST.to_json(), model="not base64!"),
        "the request is incomplete: ",
    ),
    "a timeout that is text": (
        document(REQUEST.to_json(), timeout="12"),
        "the request's timeout is not a number: '12'",
    ),
    "a timeout that is a boolean": (
        document(REQUEST.to_json(), timeout=True),
        "the request's timeout is not a number: True",
    ),
    "a target directory that is no text": (
        document(REQUEST.to_json(), target_directory=["/srv/app"]),
        "the request's target_directory is not text: ['/srv/app']",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_is_a_protocol_error(case: str) -> None:
    text, message = BAD_REQUESTS[case]

    with pytest.raises(ProtocolError) as caught:
        RunRequest.from_json(text)

    assert str(caught.value).startswith(message)


def test_a_whole_number_timeout_is_a_timeout() -> None:
    request = RunRequest.from_json(document(REQUEST.to_json(), timeout=30))

    assert request.timeout == 30


def root(**changes: Any) -> list[dict[str, Any]]:
    data: dict[str, Any] = {
        "name": "app",
        "status": "ok",
        "changed": [],
        "duration_s": 0.1,
        "reason": "",
    }
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return [data]


BAD_REPORTS: dict[str, tuple[str, str]] = {
    "an older protocol": (document(REPORT.to_json(), protocol=0), "the report speaks protocol 0"),
    "not an object": ('"ok"', "the report is not a JSON object"),
    "no roots": (document(REPORT.to_json(), roots=...), "the report is incomplete: 'roots'"),
    "no log": (document(REPORT.to_json(), log=...), "the report is incomplete: 'log'"),
    "no error field": (document(REPORT.to_json(), error=...), "the report is incomplete: 'error'"),
    "a root without a name": (
        document(REPORT.to_json(), roots=root(name=...)),
        "the report is incomplete: 'name'",
    ),
    "an unknown root status": (
        document(REPORT.to_json(), roots=root(status="exploded")),
        "the report is incomplete: 'exploded' is not a valid RootStatus",
    ),
    "a duration that is no number": (
        document(REPORT.to_json(), roots=root(duration_s="soon")),
        "the report is incomplete: ",
    ),
    "an unknown log level": (
        document(REPORT.to_json(), log=[{"component": "", "message": "", "level": "loud"}]),
        "the report is incomplete: 'loud' is not a valid Level",
    ),
    "an error without a code": (
        document(REPORT.to_json(), error={"message": "x"}),
        "the report is incomplete: 'code'",
    ),
    "roots that are no list": (document(REPORT.to_json(), roots=3), "the report is incomplete: "),
}


@pytest.mark.parametrize("case", BAD_REPORTS, ids=list(BAD_REPORTS))
def test_a_bad_report_is_a_protocol_error(case: str) -> None:
    text, message = BAD_REPORTS[case]

    with pytest.raises(ProtocolError) as caught:
        RunReport.from_json(text)

    assert str(caught.value).startswith(message)
