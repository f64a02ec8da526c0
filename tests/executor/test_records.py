"""What the host records about its runs: status.json, the audit log and
Prometheus metrics (executor.records)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from executor.apply import ApplyStatus, apply_bundle
from executor.errors import LockedError, StateError, WrongTargetError
from executor.lock import state_lock
from executor.records import (
    MAX_RECORDED_CHANGES,
    RunRecord,
    Status,
    metrics_text,
    read_audit,
    read_status,
    record_run,
)
from tests.deployments import apply_options, build_bundles, deployment

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="version=VERSION\\n")
    """

BROKEN = """
    from batou.component import Component

    class App(Component):
        def verify(self):
            raise AssertionError("out of date")

        def update(self):
            raise RuntimeError("the update broke")
    """

ENV = "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good build (serial 100), a broken one (serial 100), a good one (serial 200)."""
    root = tmp_path_factory.mktemp("records")
    bundles = {}
    for name, code, serial in (
        ("good", APP.replace("VERSION", "1"), 100),
        ("broken", BROKEN, 100),
        ("newer", APP.replace("VERSION", "2"), 200),
    ):
        repo = deployment(root / name, components={"app": code}, environments={"prod": ENV})
        build_bundles("prod", repo, serial=serial)
        bundles[name] = repo / "bundles/prod/web1.bundle"
    return bundles


def apply(bundle: Path, tmp_path: Path, **kw: Any) -> Any:
    return apply_bundle(apply_options(bundle, tmp_path, **kw))


RECORD_KEYS = sorted([*(f.name for f in fields(RunRecord)), "changed_count"])


# -- status.json -------------------------------------------------------------------------


def test_status_keeps_the_last_success_across_failed_and_refused_runs(
    built: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    ok = apply(built["good"], tmp_path)
    assert ok.status is ApplyStatus.OK
    success = read_status(str(state)).last_success
    assert success is not None and success["result"] == "ok"

    apply(built["broken"], tmp_path)
    with pytest.raises(WrongTargetError):
        apply(built["good"], tmp_path, host="web2")

    status = read_status(str(state))
    assert status.last_success == success
    assert status.last_run is not None
    assert (status.last_run["result"], status.last_run["host"]) == ("refused", "web2")
    assert status.last_run["error"]["code"] == "wrong-target"
    # A dry run predicts; it is no run of the host's to report as last.
    before = (state / "status.json").read_bytes()
    apply(built["good"], tmp_path, dry_run=True)
    assert (state / "status.json").read_bytes() == before
    assert (state / "status.json").stat().st_mode & 0o777 == 0o600

    newer = apply(built["newer"], tmp_path)
    status = read_status(str(state))
    assert status.last_run == status.last_success
    assert status.last_success is not None
    assert (status.last_success["generation"], status.last_success["serial"]) == (
        newer.generation,
        200,
    )


def test_status_records_what_the_run_did(built: dict[str, Path], tmp_path: Path) -> None:
    result = apply(built["good"], tmp_path)

    last = read_status(str(tmp_path / "state")).last_run
    assert last is not None
    assert sorted(last) == RECORD_KEYS
    assert last["kind"] == "apply"
    assert last["result"] == "ok"
    assert last["host"] == "web1"
    assert last["environment"] == "prod"
    assert last["bundle"] == result.bundle_digest
    assert last["bundle_path"] == str(built["good"])
    assert last["serial"] == 100
    assert last["generation"] == 1
    assert last["changed"] == list(result.changed)
    assert last["changed_count"] == len(result.changed)
    assert last["error"] is None
    assert last["pid"] == os.getpid()
    assert sorted(last["phases"]) == ["lock", "run", "runtime", "unpack", "verify"]
    assert sum(last["phases"].values()) <= last["duration_s"] + 0.001


def test_a_run_that_changed_thousands_of_components_keeps_its_records_readable(
    tmp_path: Path,
) -> None:
    changed = tuple(f"root{n}/File('f{n}')" for n in range(20_000))
    record = RunRecord("apply", "ok", 1.0, 2.0, "b.bundle", host="web1", changed=changed)
    (tmp_path / "state").mkdir()
    state = str(tmp_path / "state")

    for _ in range(3):
        assert record_run(state, record, None) == []

    last = read_status(state).last_run
    assert last is not None
    assert last["changed"] == list(changed[:MAX_RECORDED_CHANGES])
    assert last["changed_count"] == 20_000
    assert [entry["changed_count"] for entry in read_audit(state)] == [20_000] * 3
    assert (tmp_path / "state/status.json").stat().st_size < 64 << 10


def test_a_damaged_status_file_does_not_fail_the_run_and_is_written_again(
    built: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    apply(built["good"], tmp_path)
    (state / "status.json").write_text("{not json")

    result = apply(built["good"], tmp_path)

    assert result.status is ApplyStatus.OK
    assert [(e.level.value, e.message) for e in result.log if e.component == ""] == [
        (
            "warning",
            f"{state}/status.json is damaged: Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1)",
        )
    ]
    status = read_status(str(state))
    assert status.last_run is not None and status.last_run["result"] == "ok"
    assert status.last_success == status.last_run


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "Expecting value: line 1 column 1 (char 0)"),
        (b"[]", "not a JSON object"),
        (b"\xff", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ],
)
def test_read_status_names_a_damaged_file(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / "status.json").write_bytes(content)

    with pytest.raises(StateError) as caught:
        read_status(str(tmp_path))

    assert caught.value.message == f"{tmp_path}/status.json is damaged: {problem}"


def test_read_status_before_the_first_run_is_empty(tmp_path: Path) -> None:
    assert read_status(str(tmp_path)) == Status(None, None)


# -- the audit log -------------------------------------------------------------------------


def test_the_audit_log_has_one_json_line_per_run_of_every_kind(
    built: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    apply(built["good"], tmp_path)
    apply(built["broken"], tmp_path)
    with pytest.raises(WrongTargetError):
        apply(built["good"], tmp_path, host="web2")
    apply(built["good"], tmp_path, dry_run=True)
    with state_lock(str(state), "a test holds it", wait=0):
        with pytest.raises(LockedError):
            apply(built["good"], tmp_path, wait=0)
    with pytest.raises(StateError):
        apply(Path("unused"), tmp_path, rollback=True, rollback_to=9)

    raw = (state / "audit.log").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["kind"], e["result"]) for e in entries] == [
        ("apply", "ok"),
        ("apply", "failed"),
        ("apply", "refused"),
        ("dry-run", "ok"),
        ("apply", "locked"),
        ("rollback", "failed"),
    ]
    for line, entry in zip(lines, entries, strict=True):
        assert sorted(entry) == RECORD_KEYS
        # One compact line each, keys sorted: greppable, appendable.
        assert line == json.dumps(entry, sort_keys=True, separators=(",", ":"))
    assert entries[1]["error"]["message"] == "RuntimeError: the update broke"
    assert entries[2]["error"]["code"] == "wrong-target"
    assert entries[3]["generation"] is None
    assert entries[4]["error"]["code"] == "locked"
    assert entries[4]["bundle"] is None
    assert entries[5]["error"]["message"] == f"there is no generation 9 in {state}"
    assert (state / "audit.log").stat().st_mode & 0o777 == 0o600
    assert read_audit(str(state), 2) == entries[-2:]


def test_read_audit_skips_lines_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "audit.log").write_text('{"result":"ok"}\nnot json\n[1]\n{"result":"failed"}\n')

    assert read_audit(str(tmp_path)) == [{"result": "ok"}, {"result": "failed"}]
    assert read_audit(str(tmp_path / "missing")) == []


# -- metrics -------------------------------------------------------------------------------

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{host="(?P<host>(?:[^"\\\n]|\\[\\"n])*)"\} '
    r"(?P<value>\S+)$"
)


def parse_metrics(text: str) -> dict[str, tuple[str, float]]:
    """Prometheus text exposition format, strictly: every sample after its
    HELP and TYPE lines; name -> (host label, value)."""
    assert text.endswith("\n")
    helped: set[str] = set()
    typed: dict[str, str] = {}
    samples: dict[str, tuple[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_text = line[len("# HELP ") :].split(" ", 1)
            assert help_text and name not in helped
            helped.add(name)
        elif line.startswith("# TYPE "):
            name, kind = line[len("# TYPE ") :].split(" ")
            assert kind in ("gauge", "counter", "untyped") and name in helped
            typed[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name = match["name"]
            assert name in typed and name not in samples
            samples[name] = (match["host"], float(match["value"]))
    return samples


def test_metrics_are_prometheus_text_with_the_run_s_values(
    built: dict[str, Path], tmp_path: Path
) -> None:
    metrics = tmp_path / "node-exporter/consign.prom"
    metrics.parent.mkdir()
    state = tmp_path / "state"

    apply(built["good"], tmp_path, metrics_path=str(metrics))

    success = read_status(str(state)).last_success
    assert success is not None
    first = metrics.stat()
    assert first.st_mode & 0o777 == 0o644
    assert parse_metrics(metrics.read_text()) == {
        "consign_last_success_timestamp_seconds": (
            "web1",
            round(success["started"] + success["duration_s"], 3),
        ),
        "consign_current_serial": ("web1", 100),
        "consign_current_generation": ("web1", 1),
        "consign_last_run_failed": ("web1", 0),
        "consign_last_run_timestamp_seconds": ("web1", round(success["started"], 3)),
        "consign_last_run_duration_seconds": ("web1", round(success["duration_s"], 3)),
    }

    apply(built["broken"], tmp_path, metrics_path=str(metrics))

    failed = read_status(str(state)).last_run
    assert failed is not None
    samples = parse_metrics(metrics.read_text())
    assert samples["consign_last_run_failed"] == ("web1", 1)
    assert samples["consign_current_serial"] == ("web1", 100)
    assert samples["consign_current_generation"] == ("web1", 1)
    assert samples["consign_last_success_timestamp_seconds"] == (
        "web1",
        round(success["started"] + success["duration_s"], 3),
    )
    assert samples["consign_last_run_timestamp_seconds"] == ("web1", round(failed["started"], 3))
    # Replaced by rename, never rewritten in place: a scraper sees one or the other.
    second = metrics.stat()
    assert second.st_ino != first.st_ino
    assert second.st_mode & 0o777 == 0o644
    assert os.listdir(metrics.parent) == ["consign.prom"]

    apply(built["newer"], tmp_path, metrics_path=str(metrics))
    samples = parse_metrics(metrics.read_text())
    assert samples["consign_last_run_failed"] == ("web1", 0)
    assert samples["consign_current_serial"] == ("web1", 200)
    assert samples["consign_current_generation"] == ("web1", 3)


def test_metrics_before_any_success_are_zero() -> None:
    run = {"host": "web1", "result": "refused", "started": 1_700_000_000.5, "duration_s": 0.25}

    samples = parse_metrics(metrics_text(Status(run, None)))

    assert samples == {
        "consign_last_success_timestamp_seconds": ("web1", 0),
        "consign_current_serial": ("web1", 0),
        "consign_current_generation": ("web1", 0),
        "consign_last_run_failed": ("web1", 1),
        "consign_last_run_timestamp_seconds": ("web1", 1_700_000_000.5),
        "consign_last_run_duration_seconds": ("web1", 0.25),
    }


def test_metrics_escape_the_host_label() -> None:
    text = metrics_text(Status({"host": 'we"b\\1\n', "result": "ok"}, None))

    assert 'consign_current_serial{host="we\\"b\\\\1\\n"} 0\n' in text
    assert parse_metrics(text)["consign_current_serial"] == ('we\\"b\\\\1\\n', 0)


def test_a_metrics_file_that_cannot_be_written_is_a_note_not_a_failure(
    built: dict[str, Path], tmp_path: Path
) -> None:
    metrics = tmp_path / "missing-dir/consign.prom"

    result = apply(built["good"], tmp_path, metrics_path=str(metrics))

    assert result.status is ApplyStatus.OK
    assert [e.message for e in result.log if e.component == ""] == [
        f"cannot write the metrics file {metrics}: No such file or directory"
    ]
    assert not metrics.parent.exists()
    assert read_status(str(tmp_path / "state")).last_run is not None


def test_a_metrics_path_that_is_a_symbolic_link_is_never_written_through(
    built: dict[str, Path], tmp_path: Path
) -> None:
    # Whoever can write the textfile directory must not make root overwrite
    # another file by planting a link there.
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    metrics = textfile / "consign.prom"
    metrics.symlink_to(victim)

    result = apply(built["good"], tmp_path, metrics_path=str(metrics))

    assert result.status is ApplyStatus.OK
    assert [e.message for e in result.log if e.component == ""] == [
        f"cannot write the metrics file {metrics}: it is a symbolic link; refusing to write through it"
    ]
    assert victim.read_text() == "precious\n"
    assert metrics.is_symlink()
    assert os.listdir(textfile) == ["consign.prom"]


def test_a_hand_edited_status_file_does_not_break_the_next_run(
    built: dict[str, Path], tmp_path: Path
) -> None:
    apply(built["good"], tmp_path)
    status = tmp_path / "state/status.json"
    status.write_text(json.dumps({"last_run": {"host": "web1"}, "last_success": {"host": "web1"}}))

    result = apply(built["good"], tmp_path, metrics_path=str(tmp_path / "consign.prom"))

    assert result.status is ApplyStatus.OK
    assert read_status(str(tmp_path / "state")).last_success is not None
    assert "consign_last_run_failed{host=\"web1\"} 0" in (tmp_path / "consign.prom").read_text()
