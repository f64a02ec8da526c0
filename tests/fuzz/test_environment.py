"""Property: the environment parser turns any text into a config and a
list of file:line errors; it never raises (issue 11, fuzzing)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from builder.environment import _Loader, load_environment
from executor.errors import ConsignError

SECTIONS = ["[environment]", "[hosts]", "[host:web1]", "[host:]", "[component:app]", "[resolver]",
            "[vfs]", "[host:web1", "[", "[batou]", "[host:a/b]", "[component:App]"]
KEYS = ["host_domain", "platform", "service_user", "target_directory", "timeout", "jobs",
        "require_v4", "require_v6", "branch", "sign_key", "python", "executor", "components",
        "ignore", "data-alias", "data-", "recipient", "web1", "!web2", "db1.example.com",
        "mode", "/srv", "port", "connect_method", ""]
VALUES = ["", "1", "-1", "99999999999999999999", "true", "maybe", "optional", "app, !db",
          "app:feature", "192.0.2.1", "::1", "not an ip", "~/x", "/abs", "3.11", "2.7",
          "ssh-ed25519 AAAA", "age1xyz", "a" * 300, "\u00e9\u00fc", "\t", "x = y = z"]


@st.composite
def ini_text(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.integers(0, 6))
        if kind == 0:
            lines.append(draw(st.sampled_from(SECTIONS)))
        elif kind in (1, 2, 3):
            separator = draw(st.sampled_from([" = ", "=", ": ", " "]))
            lines.append(draw(st.sampled_from(KEYS)) + separator + draw(st.sampled_from(VALUES)))
        elif kind == 4:
            lines.append("    " + draw(st.sampled_from(VALUES)))
        elif kind == 5:
            lines.append(draw(st.sampled_from(["# comment", "; comment", "", "   "])))
        else:
            lines.append(draw(st.text(max_size=40)))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


def check(text: str) -> None:
    config, errors = _Loader("prod", Path("/x/environment.cfg"), "environment.cfg", None).load(text)
    assert config is not None
    for error in errors:
        assert isinstance(error, ConsignError)
        assert error.where is None or error.where.startswith("environment.cfg")
        error.render()


@given(ini_text())
def test_structured_environment_files_never_crash_the_parser(text: str) -> None:
    check(text)


@given(st.text(max_size=2000))
def test_any_text_never_crashes_the_parser(text: str) -> None:
    check(text)


@given(st.binary(max_size=2000))
def test_any_bytes_in_the_file_give_a_config_or_errors(tmp_path_factory, data: bytes) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("env")
    (root / "environments" / "prod").mkdir(parents=True)
    (root / "environments" / "prod" / "environment.cfg").write_bytes(data)
    config, errors = load_environment(root, "prod")
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Not text: no config, one error that says so and names the file.
        assert config is None
        assert [e.where for e in errors] == ["environments/prod/environment.cfg"]
        assert "is not UTF-8 text" in errors[0].message
        return
    assert config is not None
    for error in errors:
        assert isinstance(error, ConsignError)
        assert error.where is None or error.where.startswith("environments/prod/environment.cfg")
