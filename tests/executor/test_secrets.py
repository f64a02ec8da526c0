"""A host's secrets: the codec, merging into the model, secret_files, and
hiding values in what a run reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor import canonical
from executor.canonical import CanonicalError
from executor.decode import DecodeError
from executor.errors import ConfigurationError, ErrorList, UnknownSecretFile
from executor.model import EnvironmentRecord, HostModel, HostRecord, RequirementRecord, RootRecord
from executor.outcome import RootOutcome, RootStatus
from executor.protocol import RunReport, RunRequest, redact_report
from executor.redact import redact_error
from executor.run import FileDiff, LogEntry, RunContext
from executor.secrets import (
    HostSecrets,
    SealedRequirement,
    SecretFiles,
    decode_secrets,
    encode_secrets,
    merge,
    secrets_to_data,
)

SELECTION = HostSecrets(
    overrides=(("app", (("password", "pw-123456"),)),),
    data=(("token", "tok-abcdef"),),
    files=(("tls", b"-----BEGIN KEY-----\nline-of-key-material-0123\n"), ("bin", b"\xff\x00")),
    requires=(SealedRequirement("app", RequirementRecord("dbpass", "db1", ("db-pw-9876",))),),
    hidden=("db-pw-9876",),
)


def model() -> HostModel:
    return HostModel(
        environment=EnvironmentRecord(name="prod", target_directory="/srv"),
        host=HostRecord(name="web1", fqdn="web1", data=(("role", "web"),)),
        roots=(
            RootRecord(
                name="app",
                overrides=(("port", "8080"),),
                requires=(RequirementRecord("queue", "mq1", ("mq1:5672",)),),
            ),
        ),
    )


def test_round_trip_and_canonical_bytes() -> None:
    data = encode_secrets(SELECTION)
    decoded = decode_secrets(data)
    assert decoded.overrides == SELECTION.overrides
    assert decoded.data == SELECTION.data
    assert decoded.files == tuple(sorted(SELECTION.files))
    assert decoded.requires == SELECTION.requires
    assert encode_secrets(decoded) == data


def test_values_are_every_secret_text_but_not_short_ones() -> None:
    values = SELECTION.values()
    assert {"pw-123456", "tok-abcdef", "db-pw-9876", "line-of-key-material-0123"} <= values
    assert "-----BEGIN KEY-----\nline-of-key-material-0123" in values
    assert "-----BEGIN KEY-----" not in values
    assert HostSecrets(data=(("pin", "123"),)).values() == frozenset()
    assert not HostSecrets()
    assert SELECTION.described() == [
        "app.password", "data-token", "secret file 'tls'", "secret file 'bin'", "app requires 'dbpass'",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=2), "secrets.version: expected 1, got 2"),
        (lambda d: d.update(files={"tls": "text"}), "secrets.files['tls']: expected bytes"),
        (lambda d: d.update(data={"token": 5}), "secrets.data"),
        (lambda d: d.update(extra=1), "secrets"),
        (lambda d: d["requires"][0].update(values=[{"no": "tag"}]), "secrets.requires[0].values[0]"),
    ],
)
def test_bad_selections_name_the_field(change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = secrets_to_data(SELECTION)
    change(data)
    with pytest.raises(DecodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_secrets(canonical.pack(data))
    with pytest.raises(CanonicalError):
        decode_secrets(b"\xc1")


def test_merge_puts_back_overrides_data_and_requirements() -> None:
    merged = merge(model(), SELECTION)
    root = merged.roots[0]
    assert root.overrides == (("password", "pw-123456"), ("port", "8080"))
    assert [r.key for r in root.requires] == ["queue", "dbpass"]
    assert merged.host.data == (("role", "web"), ("token", "tok-abcdef"))
    with pytest.raises(ConfigurationError, match="name root 'other', which its model does not have"):
        merge(model(), HostSecrets(overrides=(("other", (("x", "y"),)),)))


def test_secret_files_behave_as_a_mapping() -> None:
    files = SecretFiles({"tls": b"text", "bin": b"\xff"})
    assert files["tls"] == "text"
    assert files["bin"] == b"\xff"
    assert files.get("nope") is None
    assert sorted(files) == ["bin", "tls"] and len(files) == 2 and "tls" in files
    assert files.read == {"tls", "bin"}
    with pytest.raises(UnknownSecretFile) as raised:
        files["tsl"]
    assert isinstance(raised.value, KeyError)
    assert "there is no secret file 'tsl' here" in str(raised.value)
    assert "did you mean 'tls'?" in str(raised.value)
    assert repr(files) == "<secret files: bin, tls>"


def test_run_context_knows_contents_that_hold_a_secret() -> None:
    context = RunContext(secrets=frozenset({"pw-123456"}))
    assert context.holds_secret(b"password=pw-123456\n")
    assert not context.holds_secret(b"password=other\n")
    assert not RunContext().holds_secret(b"pw-123456")


def test_reports_and_errors_are_redacted_everywhere() -> None:
    error = ErrorList(
        [ConfigurationError("bad pw-123456", where="File('/x/pw-123456')", hint="not tok-abcdef")],
        "1 error",
    )
    report = RunReport(
        roots=(RootOutcome("app", RootStatus.FAILED, ("File('pw-123456')",), 0.1, "because pw-123456"),),
        log=(LogEntry("File('pw-123456')", "wrote pw-123456"),),
        diffs=(FileDiff("c", "/p", "+pw-123456", "note tok-abcdef"),),
        error=error,
        target_directory="/t",
    )
    hidden = redact_report(report, SELECTION.values())
    text = hidden.to_json()
    assert "pw-123456" not in text and "tok-abcdef" not in text
    assert "***" in text
    assert redact_error(ConfigurationError("x tok-abcdef"), ()).message == "x tok-abcdef"


def test_the_request_says_whether_secrets_follow() -> None:
    request = RunRequest(b"m", "web1", "prod", "/r", None, False, None, "/rep", secrets=True)
    assert RunRequest.from_json(request.to_json()).secrets is True
    old = request.to_json().replace(', "secrets": true', "")
    assert RunRequest.from_json(old).secrets is False


def test_identity_paths_come_from_options_then_config_then_the_host_key() -> None:
    from executor.sealed import DEFAULT_IDENTITY, identity_paths

    assert identity_paths(["/k"], "/c") == ("/k",)
    assert identity_paths([], "/a, /b") == ("/a", "/b")
    assert identity_paths([], None) == (DEFAULT_IDENTITY,) == ("/etc/ssh/ssh_host_ed25519_key",)


def test_multi_line_values_are_hidden_line_by_line() -> None:
    values = HostSecrets(data=(("key", "first-line-abcdefgh\nsecond-line-abcdefg"),)).values()
    assert {"first-line-abcdefgh", "second-line-abcdefg"} <= values


def test_redaction_is_the_same_in_every_process() -> None:
    from executor.redact import redact

    assert redact("xabcdey", ["abcd", "bcde"]) == redact("xabcdey", ["bcde", "abcd"]) == "x***ey"


def test_a_redacted_error_keeps_its_traceback_as_redacted_text() -> None:
    try:
        int("pw-123456")
    except ValueError as cause:
        inner = ConfigurationError("bad value pw-123456")
        inner.__cause__ = cause
    outer = ErrorList([ErrorList([inner], "inner list")], "outer list")
    redact_error(outer, {"pw-123456"})
    assert inner.message == "bad value ***"
    assert inner.__cause__ is None
    detail = str(vars(inner)["detail"])
    assert "ValueError" in detail and "pw-123456" not in detail and "***" in detail


def test_output_cut_to_length_never_keeps_part_of_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import executor.apply

    monkeypatch.setattr(executor.apply, "MAX_RUNTIME_OUTPUT", 20)
    path = tmp_path / "output"
    # The cut falls inside the secret.
    path.write_text("start pw-123456789 and the rest of it")
    text = executor.apply._tail(path, frozenset({"pw-123456789"}))
    assert "123" not in text and "pw-" not in text
    assert text.endswith("and the rest of it")
