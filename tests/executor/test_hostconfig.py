"""The host's own settings, /etc/consign/executor.toml (executor.hostconfig):
bad files are named with what is wrong, every command reads it, and an
option on the command line wins over it."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from executor.cli import app
from executor.errors import HostConfigError
from executor.hostconfig import MAX_CONFIG_BYTES, HostConfig, load_host_config
from executor.state import load_state
from tests.deployments import build_bundles, deployment
from tests.keys import signing_key

runner = CliRunner()

KNOWN = "known: host, environment, trust, revoked, state_dir, target_dir, runtime_dir, metrics, report, identity"


def toml_error(text: str) -> str:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return str(exc)
    raise AssertionError(f"{text!r} is valid TOML")


@pytest.mark.parametrize(
    ("content", "problem", "hint"),
    [
        (
            'stat_dir = "/var/lib/consign"\n',
            " has an unknown setting 'stat_dir'",
            "did you mean 'state_dir'?",
        ),
        ('colour = "red"\n', " has an unknown setting 'colour'", KNOWN),
        (
            'report = "/srv/status"\n',
            ": report must be an http(s) URL, got '/srv/status'",
            'write e.g. report = "https://deploy.example.com/status/prod"',
        ),
        ('host = "web1"\n[ssh]\nport = 22\n', " has an unknown setting 'ssh'", KNOWN),
        (
            "state_dir = 5\n",
            ": state_dir must be a string, got int",
            'write it as state_dir = "..."',
        ),
        (
            "host = true\n",
            ": host must be a string, got bool",
            'write it as host = "..."',
        ),
        (
            'metrics = ["/a", "/b"]\n',
            ": metrics must be a string, got list",
            'write it as metrics = "..."',
        ),
        (
            'trust = "keys/allowed_signers"\n',
            ": trust must be an absolute path, got 'keys/allowed_signers'",
            "the executor runs from any directory; give the full path",
        ),
        (
            'runtime_dir = "~/runtimes"\n',
            ": runtime_dir must be an absolute path, got '~/runtimes'",
            "the executor runs from any directory; give the full path",
        ),
        (
            'identity = "/etc/ssh/ssh_host_ed25519_key, keys/age.txt"\n',
            ": identity must be absolute paths, got '/etc/ssh/ssh_host_ed25519_key, keys/age.txt'",
            'write e.g. identity = "/etc/ssh/ssh_host_ed25519_key"',
        ),
        (
            "host = web1\n",
            f" is not valid TOML: {toml_error('host = web1')}",
            "write it again with 'executor init --force', or fix the line named",
        ),
        (
            'host = "web1"\nhost = "web2"\n',
            " is not valid TOML: " + toml_error('host = "web1"\nhost = "web2"\n'),
            "write it again with 'executor init --force', or fix the line named",
        ),
        (
            b'host = "\xff"\n',
            " is not valid TOML: 'utf-8' codec can't decode byte 0xff in position 8: "
            "invalid start byte",
            "write it again with 'executor init --force', or fix the line named",
        ),
        (
            b"# " + b"x" * MAX_CONFIG_BYTES + b"\n",
            f" is larger than {MAX_CONFIG_BYTES} bytes",
            None,
        ),
    ],
    ids=[
        "unknown-close",
        "unknown-far",
        "report-not-http",
        "table",
        "int",
        "bool",
        "list",
        "relative",
        "tilde",
        "identity-relative",
        "invalid",
        "duplicate",
        "not-utf8",
        "too-large",
    ],  # fmt: skip
)
def test_a_bad_config_is_named_with_what_is_wrong(
    tmp_path: Path, content: str | bytes, problem: str, hint: str | None
) -> None:
    path = tmp_path / "executor.toml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)

    with pytest.raises(HostConfigError) as caught:
        load_host_config(str(path))

    assert caught.value.message == f"the executor config {path}{problem}"
    assert caught.value.hint == hint
    assert caught.value.code == "host-config"


def test_an_empty_setting_says_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "executor.toml"
    path.write_text('host = ""\n')

    with pytest.raises(HostConfigError) as caught:
        load_host_config(str(path))

    # Not "got str": the value is a string, an empty one.
    assert caught.value.message == f"the executor config {path}: host is empty"
    assert caught.value.hint == "give host a value, or remove the line for the default"


def test_a_config_named_explicitly_must_exist() -> None:
    with pytest.raises(HostConfigError) as caught:
        load_host_config("/missing/file")

    assert caught.value.message == "the executor config /missing/file does not exist"
    assert caught.value.hint == "write it with 'executor init', or name another with --config"


def test_a_config_that_is_a_directory_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(HostConfigError) as caught:
        load_host_config(str(tmp_path))

    assert caught.value.message == f"cannot read the executor config {tmp_path}: Is a directory"


def test_consign_config_names_the_file_and_it_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("executor.hostconfig.DEFAULT_CONFIG_FILE", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("CONSIGN_CONFIG", str(tmp_path / "missing.toml"))

    with pytest.raises(HostConfigError) as caught:
        load_host_config(None)

    assert caught.value.message == f"the executor config {tmp_path}/missing.toml does not exist"

    # Without the variable, the default file may be missing: every setting has its default.
    monkeypatch.delenv("CONSIGN_CONFIG")
    assert load_host_config(None) == HostConfig()


def test_every_setting_is_read(tmp_path: Path) -> None:
    path = tmp_path / "executor.toml"
    path.write_text(
        "# every setting\n"
        'host = "web1"\n'
        'environment = "prod"\n'
        'trust = "/etc/consign/allowed_signers"\n'
        'revoked = "/etc/consign/revoked_keys"\n'
        'state_dir = "/var/lib/consign"\n'
        'target_dir = "/srv/app"\n'
        'runtime_dir = "/var/cache/consign/runtimes"\n'
        'metrics = "/var/lib/prometheus/node-exporter/consign.prom"\n'
        'identity = "/etc/consign/host-age.txt"\n'
    )

    assert load_host_config(str(path)) == HostConfig(
        host="web1",
        environment="prod",
        trust="/etc/consign/allowed_signers",
        revoked="/etc/consign/revoked_keys",
        state_dir="/var/lib/consign",
        target_dir="/srv/app",
        runtime_dir="/var/cache/consign/runtimes",
        metrics="/var/lib/prometheus/node-exporter/consign.prom",
        identity="/etc/consign/host-age.txt",
        path=str(path),
    )


# -- the command line ------------------------------------------------------------------

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="from the config\\n")
    """

ENV = "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\n"


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The config must decide, not variables of the shell the tests run in."""
    for name in ("CONSIGN_CONFIG", "CONSIGN_STATE_DIR", "CONSIGN_TRUST", "CONSIGN_REVOKED"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundle for web1 (environment prod), shared by the module."""
    repo = deployment(
        tmp_path_factory.mktemp("hostconfig") / "repo",
        components={"app": APP},
        environments={"prod": ENV},
    )
    build_bundles("prod", repo, serial=100)
    return repo / "bundles/prod/web1.bundle"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def write_config(path: Path, **settings: str) -> Path:
    path.write_text("".join(f'{key} = "{value}"\n' for key, value in settings.items()))
    return path


def host_config(tmp_path: Path, **settings: str) -> Path:
    """A config for web1 trusting the test key, state and target in tmp_path."""
    return write_config(
        tmp_path / "executor.toml",
        **{
            "host": "web1",
            "trust": str(signing_key().trust),
            "state_dir": str(tmp_path / "state"),
            "target_dir": str(tmp_path / "target"),
            **settings,
        },
    )


def test_apply_with_only_the_config_uses_its_settings(bundle: Path, tmp_path: Path) -> None:
    config = tmp_path / "etc/executor.toml"
    state, target, metrics = tmp_path / "state", tmp_path / "target", tmp_path / "consign.prom"
    written = invoke(
        "init", "--host", "web1", "--trust", str(signing_key().trust),
        "--state-dir", str(state), "--target-dir", str(target),
        "--metrics", str(metrics), "--config", str(config),
    )  # fmt: skip
    assert written.exit_code == 0, written.output

    applied = invoke("apply", str(bundle), "--config", str(config))

    assert applied.exit_code == 0, applied.output
    assert (target / "work/app/app.conf").read_text() == "from the config\n"
    recorded = load_state(str(state))
    assert (recorded.environment, recorded.highest_serial, recorded.current) == ("prod", 100, 1)
    assert 'consign_current_serial{host="web1"} 100\n' in metrics.read_text()

    verified = invoke("verify", str(bundle), "--config", str(config))
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith(f"ok: {bundle} is a valid bundle for web1 (prod), serial 100")

    status = invoke("status", "--config", str(config), "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.stdout)
    assert (data["state_directory"], data["current"]["number"]) == (str(state), 1)

    collected = invoke("gc", "--keep", "1", "--config", str(config))
    assert collected.exit_code == 0, collected.output
    assert (
        collected.stdout
        == "ok: removed 0 generations and 0 other entries, 0 B; kept generations 1\n"
    )

    rolled_back = invoke("rollback", "--config", str(config))
    assert rolled_back.exit_code == 1
    assert rolled_back.stderr == (
        "error: there is no previous generation to roll back to\n"
        "  hint: 'executor status' lists the generations kept; name one: executor rollback N\n"
    )

    reset = invoke("reset-serial", "0", "--config", str(config))
    assert reset.exit_code == 0, reset.output
    assert reset.stdout == f"serial floor reset: 100 -> 0 (recorded in {state})\n"
    assert load_state(str(state)).highest_serial == 0


def test_consign_config_in_the_environment_works_like_the_option(
    bundle: Path, tmp_path: Path
) -> None:
    config = host_config(tmp_path)

    result = invoke("apply", str(bundle), env={"CONSIGN_CONFIG": str(config)})

    assert result.exit_code == 0, result.output
    assert (tmp_path / "target/work/app/app.conf").read_text() == "from the config\n"
    assert load_state(str(tmp_path / "state")).current == 1


def test_the_config_s_runtime_directory_is_used(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session's shared runtimes come through the variable, which would win.
    monkeypatch.delenv("CONSIGN_RUNTIME_DIR")
    runtimes = tmp_path / "runtimes"
    config = host_config(tmp_path, runtime_dir=str(runtimes))

    result = invoke("apply", str(bundle), "--config", str(config))

    assert result.exit_code == 0, result.output
    assert len(os.listdir(runtimes)) == 1
    assert not (tmp_path / "state/runtimes").exists()


def test_an_option_on_the_command_line_wins_over_the_config(bundle: Path, tmp_path: Path) -> None:
    config = host_config(tmp_path)
    state, target = tmp_path / "other-state", tmp_path / "other-target"

    result = invoke(
        "apply", str(bundle), "--config", str(config),
        "--state-dir", str(state), "--target-dir", str(target),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert (target / "work/app/app.conf").read_text() == "from the config\n"
    assert load_state(str(state)).current == 1
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "state").exists()


def test_the_config_s_host_decides_what_is_accepted(bundle: Path, tmp_path: Path) -> None:
    config = host_config(tmp_path, host="web2")

    result = invoke("apply", str(bundle), "--config", str(config))

    assert result.exit_code == 3
    assert result.stderr == (
        f"error: {bundle}: this bundle is for host 'web1' (web1), but this host is 'web2'\n"
        "  hint: apply the bundle built for this host, or name the host with --host\n"
    )
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize(
    "command",
    [["apply", "BUNDLE"], ["verify", "BUNDLE"], ["status"], ["gc"], ["rollback"],
     ["reset-serial", "0"]],
    ids=["apply", "verify", "status", "gc", "rollback", "reset-serial"],
)  # fmt: skip
def test_every_command_refuses_a_bad_config_naming_it(
    bundle: Path, tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "executor.toml"
    config.write_text(f'host = "web1"\nstate_dir = "{tmp_path}/state"\ncolour = "red"\n')
    arguments = [str(bundle) if part == "BUNDLE" else part for part in command]

    result = invoke(*arguments, "--config", str(config))

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: the executor config {config} has an unknown setting 'colour'\n  hint: {KNOWN}\n"
    )
    assert not (tmp_path / "state").exists()


def test_a_missing_config_named_on_the_command_line_is_an_error(tmp_path: Path) -> None:
    result = invoke("status", "--config", "/missing")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: the executor config /missing does not exist\n"
        "  hint: write it with 'executor init', or name another with --config\n"
    )


def test_the_config_s_revoked_keys_are_refused(bundle: Path, tmp_path: Path) -> None:
    revoked = tmp_path / "revoked_keys"
    public = signing_key().private.with_name(signing_key().private.name + ".pub")
    revoked.write_text(public.read_text())
    revoked.chmod(0o644)
    config = host_config(tmp_path, revoked=str(revoked))

    result = invoke("apply", str(bundle), "--config", str(config))

    assert result.exit_code == 3
    assert "the key is revoked" in result.stderr
    assert not (tmp_path / "target").exists()
