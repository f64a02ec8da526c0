"""The executor's command line: output, JSON and exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from builder.signing import read_public_key
from executor.cli import app
from executor.state import HostState, load_state, save_state
from tests.bundles import doc_split
from tests.deployments import build_bundles, deployment
from tests.keys import signing_key

runner = CliRunner()


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("app.conf", content="hello\\n")
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n"},
    )
    build_bundles("prod", repo)
    return repo / "bundles" / "prod"


def apply(bundles: Path, tmp_path: Path, *extra: str) -> Result:
    return runner.invoke(
        app,
        [
            "apply",
            str(bundles / "web1.bundle"),
            "--target-dir",
            str(tmp_path / "target"),
            "--state-dir",
            str(tmp_path / "state"),
            "--trust",
            str(signing_key().trust),
            *extra,
        ],
    )


def test_apply_reports_changes_then_none(bundles: Path, tmp_path: Path) -> None:
    first = apply(bundles, tmp_path, "--host", "web1")
    assert first.exit_code == 0, first.output
    assert "changed  App > File(" in first.stdout
    assert "+hello" in first.stdout
    assert "ok: 2 components changed" in first.stdout

    second = apply(bundles, tmp_path, "--host", "web1")
    assert second.exit_code == 0
    assert "ok: 0 components changed" in second.stdout


def test_a_large_change_shows_the_first_changes_and_counts_the_rest(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "many": """
                from batou.component import Component
                from batou.lib.file import File

                class Many(Component):
                    def configure(self):
                        for n in range(250):
                            self += File(f"f{n:03}.conf", content=f"line {n}\\n")
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = many\n"},
    )
    build_bundles("prod", repo)
    bundles = repo / "bundles/prod"

    dry = apply(bundles, tmp_path, "--host", "web1", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.count("would change  Many > File(") == 50
    assert "... and 450 more would change components (-v lists all" in dry.stdout
    assert dry.stdout.count("(current)") == 20
    assert "... and 230 more file changes" in dry.stdout

    verbose = apply(bundles, tmp_path, "--host", "web1", "--dry-run", "-v")
    assert verbose.stdout.count("would change  Many > File(") == 500
    assert verbose.stdout.count("(current)") == 200
    assert verbose.stdout.count("diff not made: more than 200 files changed in this run") == 50

    scripted = apply(bundles, tmp_path, "--host", "web1", "--json")
    data = json.loads(scripted.stdout)
    assert len(data["changed"]) == 500
    assert (tmp_path / "target/work/many/f249.conf").read_text() == "line 249\n"


def test_apply_json_has_the_documented_fields(bundles: Path, tmp_path: Path) -> None:
    result = apply(bundles, tmp_path, "--host", "web1", "--json", "--dry-run")

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert {"host", "environment", "status", "changed", "duration_s"} <= set(data)
    assert data["host"] == "web1"
    assert data["environment"] == "prod"
    assert data["status"] == "ok"
    assert data["dry_run"] is True
    assert len(data["changed"]) == 2
    assert not (tmp_path / "target/work/app/app.conf").exists()


def test_a_refused_bundle_exits_3_with_the_reason(bundles: Path, tmp_path: Path) -> None:
    result = apply(bundles, tmp_path, "--host", "web2")

    assert result.exit_code == 3
    assert "this bundle is for host 'web1' (web1), but this host is 'web2'" in result.stderr


def test_a_refused_bundle_in_json_mode_prints_json(bundles: Path, tmp_path: Path) -> None:
    (bundles / "web1.bundle").write_bytes(b"junk")
    result = apply(bundles, tmp_path, "--host", "web1", "--json")

    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["status"] == "refused"
    assert data["error"]["code"] == "bad-bundle"


def test_a_missing_bundle_file_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["apply", str(tmp_path / "nope.bundle"), "--host", "web1", "--trust", str(signing_key().trust)],
    )

    assert result.exit_code == 3
    assert "cannot read the bundle" in result.stderr


def test_a_bad_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["apply", "--timeout", "soon", "x.bundle"])

    assert result.exit_code == 2


def test_a_failed_run_exits_1(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                from batou.component import Component

                class App(Component):
                    def verify(self):
                        assert False, "always"

                    def update(self):
                        pass
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n"},
    )
    build_bundles("prod", repo)

    result = apply(repo / "bundles/prod", tmp_path, "--host", "web1")

    assert result.exit_code == 1
    assert "update() ran but verify() still fails: always" in result.stderr
    assert "converges = False" in result.stderr


# -- verify, revocation, downgrades, environments, reset-serial --------------------


@dataclass(frozen=True)
class Fleet:
    """web1's bundles of prod (serials 100 and 200) and of staging (300)."""

    root: Path

    def __call__(self, name: str) -> Path:
        return self.root / name / "web1.bundle"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    root = tmp_path_factory.mktemp("executor-cli")
    repo = deployment(
        root / "repo",
        components={
            "app": """
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("app.conf", content="hello\\n")
                """
        },
        environments={
            "prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n",
            "staging": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = app\n",
        },
    )
    for name, environment, serial in (
        ("prod-100", "prod", 100), ("prod-200", "prod", 200), ("staging-300", "staging", 300)
    ):  # fmt: skip
        build_bundles(environment, repo, out=root / "out" / name, serial=serial)
        shutil.copytree(root / "out" / name / environment, root / name)
    return Fleet(root)


def executor(command: str, bundle: Path, tmp_path: Path, *extra: str, **kw: Any) -> Result:
    """`executor COMMAND BUNDLE` as host web1, state in tmp_path, the test key trusted."""
    return runner.invoke(
        app,
        [command, str(bundle), "--host", "web1", "--state-dir", str(tmp_path / "state"),
         "--trust", str(signing_key().trust), *extra]
        + (["--target-dir", str(tmp_path / "target")] if command == "apply" else []),
        **kw,
    )  # fmt: skip


def manifest_digest(bundle: Path) -> str:
    return hashlib.sha256(doc_split(bundle.read_bytes()).manifest).hexdigest()


def revoked_keys(tmp_path: Path) -> Path:
    path = tmp_path / "revoked_keys"
    path.write_text(read_public_key(signing_key().private).openssh() + " stolen\n")
    path.chmod(0o644)
    return path


FINGERPRINT = read_public_key(signing_key().private).fingerprint()
VERIFY_JSON_KEYS = {
    "host", "environment", "bundle", "status", "serial", "signer", "downgrade_from", "notes", "error",
    "secrets",
}  # fmt: skip


def test_verify_says_what_it_checked_and_changes_nothing(fleet: Fleet, tmp_path: Path) -> None:
    result = executor("verify", fleet("prod-200"), tmp_path)

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"ok: {fleet('prod-200')} is a valid bundle for web1 (prod), serial 200, "
        f"signed by builder ({FINGERPRINT})\n"
    )
    assert not (tmp_path / "state").exists()


def test_verify_json_reports_the_bundle_it_accepted(fleet: Fleet, tmp_path: Path) -> None:
    result = executor("verify", fleet("prod-200"), tmp_path, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "host": "web1",
        "environment": "prod",
        "bundle": manifest_digest(fleet("prod-200")),
        "status": "ok",
        "serial": 200,
        "signer": FINGERPRINT,
        "downgrade_from": None,
        "notes": [],
        "error": None,
        "secrets": None,
    }


def test_verify_json_of_a_refused_bundle_has_the_same_keys(fleet: Fleet, tmp_path: Path) -> None:
    result = executor("verify", fleet("prod-200"), tmp_path, "--json", "--host", "web2")

    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert set(data) == VERIFY_JSON_KEYS
    error = data.pop("error")
    assert data == {
        "host": "web2",
        "environment": None,
        "bundle": str(fleet("prod-200")),
        "status": "refused",
        "serial": None,
        "signer": None,
        "downgrade_from": None,
        "notes": [],
        "secrets": None,
    }
    assert error["code"] == "wrong-target"
    assert error["message"] == "this bundle is for host 'web1' (web1), but this host is 'web2'"
    assert result.stderr == ""


def test_apply_json_of_a_refused_bundle_keeps_apply_s_keys(fleet: Fleet, tmp_path: Path) -> None:
    applied = executor("apply", fleet("prod-200"), tmp_path, "--json", "--dry-run")
    result = executor("apply", fleet("prod-200"), tmp_path, "--json", "--host", "web2")

    assert result.exit_code == 3, result.output
    data = json.loads(result.stdout)
    assert set(data) == set(json.loads(applied.stdout))
    assert (data["status"], data["bundle"], data["host"]) == ("refused", str(fleet("prod-200")), "web2")
    assert (data["changed"], data["roots"], data["error"]["code"]) == ([], [], "wrong-target")


def test_a_bundle_signed_by_a_revoked_key_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    revoked = revoked_keys(tmp_path)
    message = f"{fleet('prod-200')} has no signature this host trusts: {FINGERPRINT}: the key is revoked"

    for command in ("verify", "apply"):
        result = executor(command, fleet("prod-200"), tmp_path, "--revoked", str(revoked))

        assert result.exit_code == 3, result.output
        assert result.stderr.startswith(f"error: {message}\n")
        assert (
            "  hint: the key that signed it is revoked on this host: rebuild and sign with a "
            "key that is not (docs/operations.md, When a key is stolen)\n"
        ) in result.stderr
    assert not (tmp_path / "target").exists()


def test_the_revoked_keys_file_comes_from_consign_revoked(fleet: Fleet, tmp_path: Path) -> None:
    result = executor(
        "verify", fleet("prod-200"), tmp_path, env={"CONSIGN_REVOKED": str(revoked_keys(tmp_path))}
    )

    assert result.exit_code == 3, result.output
    assert "the key is revoked" in result.stderr


def test_the_default_revoked_keys_file_counts_only_when_it_exists(
    fleet: Fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("executor.verify.DEFAULT_REVOKED_FILE", str(tmp_path / "missing"))
    assert executor("verify", fleet("prod-200"), tmp_path).exit_code == 0

    monkeypatch.setattr("executor.verify.DEFAULT_REVOKED_FILE", str(revoked_keys(tmp_path)))
    result = executor("verify", fleet("prod-200"), tmp_path)

    assert result.exit_code == 3, result.output
    assert "the key is revoked" in result.stderr


def test_allow_downgrade_applies_an_older_bundle_once(fleet: Fleet, tmp_path: Path) -> None:
    assert executor("apply", fleet("prod-200"), tmp_path).exit_code == 0
    refused = executor("verify", fleet("prod-100"), tmp_path)
    assert refused.exit_code == 3
    assert "this bundle has serial 100, older than serial 200" in refused.stderr

    checked = executor("verify", fleet("prod-100"), tmp_path, "--allow-downgrade")
    assert checked.exit_code == 0, checked.output
    assert "downgrade: older than serial 200, which this host accepted before" in checked.stdout
    applied = executor("apply", fleet("prod-100"), tmp_path, "--allow-downgrade", "--json")
    assert applied.exit_code == 0, applied.output
    assert any(
        "downgrade allowed: serial 200 -> 100" in entry["message"]
        for entry in json.loads(applied.stdout)["log"]
    )

    state = load_state(str(tmp_path / "state"))
    assert state.highest_serial == 200
    assert [(d.from_serial, d.to_serial) for d in state.downgrades] == [(200, 100)]
    assert executor("apply", fleet("prod-100"), tmp_path).exit_code == 3


def test_the_environment_option_moves_the_host(fleet: Fleet, tmp_path: Path) -> None:
    assert executor("apply", fleet("prod-200"), tmp_path).exit_code == 0
    refused = executor("verify", fleet("staging-300"), tmp_path)
    assert refused.exit_code == 3
    assert "this bundle is for environment 'staging', but this host belongs to 'prod'" in refused.stderr
    assert "pass --environment staging" in refused.stderr

    moved = executor("apply", fleet("staging-300"), tmp_path, "--environment", "staging")

    assert moved.exit_code == 0, moved.output
    assert load_state(str(tmp_path / "state")).environment == "staging"
    back = executor("verify", fleet("prod-200"), tmp_path, "--allow-downgrade")
    assert back.exit_code == 3
    assert "this bundle is for environment 'prod', but this host belongs to 'staging'" in back.stderr


def test_reset_serial_lowers_the_floor_and_records_it(fleet: Fleet, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert executor("apply", fleet("prod-200"), tmp_path).exit_code == 0

    result = runner.invoke(app, ["reset-serial", "100", "--state-dir", str(state_dir)])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"serial floor reset: 200 -> 100 (recorded in {state_dir})\n"
    state = load_state(str(state_dir))
    assert state.highest_serial == 100
    reset = state.history[-1]
    assert (reset.kind, reset.from_serial, reset.to_serial) == ("reset", 200, 100)
    verified = executor("verify", fleet("prod-100"), tmp_path)
    assert verified.exit_code == 0, verified.output
    assert "downgrade" not in verified.stdout


def test_reset_serial_reads_the_state_directory_from_consign_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    save_state(str(state_dir), HostState("prod", 300, "a" * 64))

    result = runner.invoke(app, ["reset-serial", "0"], env={"CONSIGN_STATE_DIR": str(state_dir)})

    assert result.exit_code == 0, result.output
    assert load_state(str(state_dir)).highest_serial == 0


@pytest.mark.parametrize("serial", ["-1", "soon", str(1 << 64)])
def test_reset_serial_refuses_what_is_no_serial(tmp_path: Path, serial: str) -> None:
    result = runner.invoke(app, ["reset-serial", serial, "--state-dir", str(tmp_path / "state")])

    assert result.exit_code == 2
    assert not (tmp_path / "state").exists()


def test_reset_serial_refuses_a_state_directory_others_can_write(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    save_state(str(state_dir), HostState("prod", 300, "a" * 64))
    state_dir.chmod(0o777)

    result = runner.invoke(app, ["reset-serial", "100", "--state-dir", str(state_dir)])

    assert result.exit_code == 1
    assert f"error: the state directory {state_dir} is writable by others (mode 777)" in result.stderr
    state_dir.chmod(0o700)
    assert load_state(str(state_dir)).highest_serial == 300
