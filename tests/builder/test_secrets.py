"""Secrets in the repository: age files, identities, and 'bundle secrets'."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyrage
import pytest
from typer.testing import CliRunner, Result

from builder.cli import app
from builder.errors import AgeIdentityError, NotARecipientError, SecretsError, SecretsParseFailed
from builder.secrets import (
    decrypt_file,
    encrypt_for,
    encrypted_to,
    find_identities,
    parse_secrets,
    write_private,
)

runner = CliRunner()
needs_age = pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is not installed")

SECRETS = """\
[batou]
members = {members}

[component:app]
password = s3cr3t-app

[host:web1]
data-token = s3cr3t-token
"""


@dataclass(frozen=True)
class Key:
    path: Path
    public: str


def age_key(directory: Path, name: str) -> Key:
    identity = pyrage.x25519.Identity.generate()
    path = directory / name
    path.write_text(f"# created: test\n# public key: {identity.to_public()}\n{identity}\n")
    path.chmod(0o600)
    return Key(path, str(identity.to_public()))


def ssh_key(directory: Path, name: str, kind: str = "ed25519") -> Key:
    path = directory / name
    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f", str(path)],
        check=True,
    )
    return Key(path, path.with_name(name + ".pub").read_text().strip())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "environments" / "prod").mkdir(parents=True)
    (repo / "environments" / "prod" / "environment.cfg").write_text("[hosts]\nweb1 = app\n")
    return repo


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Key]:
    directory = tmp_path / "keys"
    directory.mkdir()
    return {"alice": age_key(directory, "alice.key"), "bob": age_key(directory, "bob.key")}


def env_dir(repo: Path) -> Path:
    return repo / "environments" / "prod"


def write_cfg(repo: Path, members: list[str], text: str = SECRETS) -> Path:
    path = env_dir(repo) / "secrets.cfg.age"
    write_private(path, encrypt_for(text.format(members=", ".join(members)).encode(), members))
    return path


def decrypts(path: Path, key: Key) -> bool:
    try:
        pyrage.decrypt(path.read_bytes(), find_identities([key.path]).keys)
    except pyrage.DecryptError:
        return False
    return True


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, ["secrets", *args], input=input, env=env)


# --- reading --------------------------------------------------------------


def test_round_trip_keeps_the_text_and_writes_0600(repo: Path, keys: dict[str, Key]) -> None:
    path = write_cfg(repo, [keys["alice"].public])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"s3cr3t" not in path.read_bytes()
    result = invoke("decrypt-to-stdout", str(path), "-i", str(keys["alice"].path))
    assert result.exit_code == 0, result.output
    assert result.output == SECRETS.format(members=keys["alice"].public)
    assert [p.name for p in env_dir(repo).iterdir()] == ["environment.cfg", "secrets.cfg.age"]


def test_parsed_file_gives_members_overrides_and_host_data(keys: dict[str, Key]) -> None:
    config = parse_secrets(SECRETS.format(members=keys["alice"].public + ",\n  " + keys["bob"].public), "s")
    assert config.members == (keys["alice"].public, keys["bob"].public)
    assert config.overrides("component") == {"app": {"password": "s3cr3t-app"}}
    assert config.overrides("host") == {"web1": {"data-token": "s3cr3t-token"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[component:app]\nx = 1\n", "s:1: there is no [batou] section"),
        ("[batou]\nmembers =\n", "s:1: [batou] lists no members"),
        ("[batou]\nmembers = age1nope\n", "s:2: member 'age1nope' is not a valid recipient"),
        ("[batou]\nmembers = bob@example.com\n", "s:2: member 'bob@example.com' is not a recipient"),
        ("[batou]\nmembers = {m}\nsecret_provider = gpg\n", "s:3: secret_provider must be 'age'"),
        ("[batou]\nmembers = {m}\n[nonsense]\n", "s:3: expected [batou], [component:NAME]"),
        ("[batou]\nmembers = {m}\n[host:a]\nport = 1\n", "s:4: unknown key 'port' in [host:a]"),
        ("[batou]\nmembers = {m}\n[component:a]\nx = 1\nx = 2\n", "s:5: key 'x' appears twice"),
        ("[batou]\nmembers = {m}\nthis line is broken\n", "s:3: expected 'key = value'"),
    ],
)
def test_bad_secrets_files_name_file_and_line(text: str, expected: str, keys: dict[str, Key]) -> None:
    with pytest.raises(SecretsError) as raised:
        parse_secrets(text.replace("{m}", keys["alice"].public), "s")
    assert expected in str(raised.value)


def test_parse_errors_are_all_reported_and_values_not_quoted(keys: dict[str, Key]) -> None:
    text = "[batou]\nmembers = {m}\nhunter2-password-line\n[bad\n".replace("{m}", keys["alice"].public)
    with pytest.raises(SecretsParseFailed) as raised:
        parse_secrets(text, "s")
    rendered = [part.render() for part in raised.value.parts()]
    assert [r.split(":")[1] for r in rendered] == ["3", "4"]
    assert "hunter2" not in "".join(rendered)


# --- identities -----------------------------------------------------------


def test_identity_order_explicit_then_consign_then_batou_then_ssh(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    ssh = ssh_key(home / ".ssh", "id_ed25519")
    environ = {
        "CONSIGN_AGE_IDENTITIES": f"{keys['alice'].path}",
        "BATOU_AGE_IDENTITIES": f"{keys['bob'].path}, {ssh.path}",
    }
    explicit = find_identities([keys["bob"].path], environ, home)
    assert (explicit.source, explicit.paths) == ("--identity", (keys["bob"].path,))
    consign = find_identities([], environ, home)
    assert (consign.source, consign.recipients) == ("CONSIGN_AGE_IDENTITIES", (keys["alice"].public,))
    del environ["CONSIGN_AGE_IDENTITIES"]
    batou = find_identities([], environ, home)
    assert batou.source == "BATOU_AGE_IDENTITIES"
    assert batou.paths == (keys["bob"].path, ssh.path)
    assert len(batou.keys) == 2
    fallback = find_identities([], {}, home)
    assert (fallback.source, fallback.paths) == ("~/.ssh", (ssh.path,))
    assert fallback.recipients == (" ".join(ssh.public.split()[:2]),)


def test_home_ssh_keys_decrypt_through_the_command_line(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    ssh = ssh_key(home / ".ssh", "id_rsa", "rsa")
    path = write_cfg(repo, [ssh.public])
    monkeypatch.setenv("HOME", str(home))
    for variable in ("CONSIGN_AGE_IDENTITIES", "BATOU_AGE_IDENTITIES"):
        monkeypatch.delenv(variable, raising=False)
    result = invoke("decrypt-to-stdout", str(path))
    assert result.exit_code == 0, result.output
    assert "s3cr3t-app" in result.output


def test_unusable_identity_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("hello\n")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(tmp_path / "locked")], check=True)
    with pytest.raises(AgeIdentityError, match="neither an age identity file"):
        find_identities([tmp_path / "junk"])
    with pytest.raises(AgeIdentityError, match="cannot read identity .*missing"):
        find_identities([tmp_path / "missing"])
    with pytest.raises(AgeIdentityError) as raised:
        find_identities([tmp_path / "locked"])
    assert "without a passphrase" in str(raised.value)


def test_missing_identity_names_the_file_the_identities_and_the_members(
    repo: Path, keys: dict[str, Key]
) -> None:
    write_cfg(repo, [keys["alice"].public])
    secret = env_dir(repo) / "secret-tls.age"
    write_private(secret, encrypt_for(b"key", [keys["alice"].public]))
    result = invoke("decrypt-to-stdout", str(secret), "-i", str(keys["bob"].path))
    assert result.exit_code == 1
    assert f"none of the identities decrypts {secret}" in result.output
    assert str(keys["bob"].path) in result.output
    assert "an X25519 (age1...) key" in result.output
    with pytest.raises(NotARecipientError) as raised:
        decrypt_file(secret, find_identities([keys["bob"].path]), [keys["alice"].public])
    assert keys["alice"].public in str(raised.value)
    assert "bundle secrets add" in str(raised.value)
    summary = invoke("summary", "prod", "-C", str(repo), "-i", str(keys["bob"].path))
    assert summary.exit_code == 1
    assert "secrets.cfg.age" in summary.output


# --- interoperability with the age tool -----------------------------------


@needs_age
def test_file_written_by_age_is_read_and_ours_decrypt_with_age(
    repo: Path, keys: dict[str, Key]
) -> None:
    text = SECRETS.format(members=keys["alice"].public)
    path = env_dir(repo) / "secrets.cfg.age"
    subprocess.run(
        ["age", "-e", "-r", keys["alice"].public, "-o", str(path)], input=text.encode(), check=True
    )
    summary = invoke("summary", "prod", "-C", str(repo), "-i", str(keys["alice"].path))
    assert summary.exit_code == 0, summary.output
    assert "[component:app]: password" in summary.output
    added = invoke("add", "prod", keys["bob"].public, "-C", str(repo), "-i", str(keys["alice"].path))
    assert added.exit_code == 0, added.output
    for key in ("alice", "bob"):
        out = subprocess.run(
            ["age", "-d", "-i", str(keys[key].path), str(path)], capture_output=True, check=True
        )
        assert b"password = s3cr3t-app" in out.stdout


@needs_age
def test_ssh_ed25519_members_interoperate_with_age(repo: Path, tmp_path: Path) -> None:
    ssh = ssh_key(tmp_path, "op")
    path = write_cfg(repo, [ssh.public])
    assert encrypted_to(path.read_bytes(), [ssh.public])
    out = subprocess.run(["age", "-d", "-i", str(ssh.path), str(path)], capture_output=True, check=True)
    assert b"s3cr3t-token" in out.stdout
    secret = env_dir(repo) / "secret-blob.age"
    subprocess.run(["age", "-e", "-R", str(ssh.path) + ".pub", "-o", str(secret)], input=b"\x00\xff", check=True)
    result = invoke("decrypt-to-stdout", str(secret), "-i", str(ssh.path))
    assert result.stdout_bytes == b"\x00\xff"


# --- summary, add, remove, reencrypt --------------------------------------


def test_summary_shows_members_sections_and_keys_but_no_values(
    repo: Path, keys: dict[str, Key]
) -> None:
    write_cfg(repo, [keys["alice"].public])
    write_private(env_dir(repo) / "secret-tls.age", encrypt_for(b"s3cr3t-tls", [keys["alice"].public]))
    result = invoke("summary", "prod", "-C", str(repo), "-i", str(keys["alice"].path))
    assert result.exit_code == 0, result.output
    assert keys["alice"].public in result.output
    assert "[component:app]: password" in result.output
    assert "[host:web1]: data-token" in result.output
    assert "files: tls" in result.output
    assert "s3cr3t" not in result.output


def test_add_and_remove_reencrypt_every_file(repo: Path, keys: dict[str, Key]) -> None:
    cfg = write_cfg(repo, [keys["alice"].public])
    tls = env_dir(repo) / "secret-tls.age"
    write_private(tls, encrypt_for(b"s3cr3t-tls", [keys["alice"].public]))
    alice = ["-C", str(repo), "-i", str(keys["alice"].path)]
    result = invoke("add", "prod", keys["bob"].public, *alice)
    assert result.exit_code == 0, result.output
    assert result.output.count("encrypted") == 2
    assert all(decrypts(path, keys["bob"]) for path in (cfg, tls))
    again = invoke("add", "prod", keys["bob"].public, *alice)
    assert again.exit_code == 1 and "already a member" in again.output

    result = invoke("remove", "prod", keys["alice"].public, "-C", str(repo), "-i", str(keys["bob"].path))
    assert result.exit_code == 0, result.output
    assert not any(decrypts(path, keys["alice"]) for path in (cfg, tls))
    assert all(decrypts(path, keys["bob"]) for path in (cfg, tls))
    summary = invoke("summary", "prod", "-C", str(repo), "-i", str(keys["bob"].path))
    assert keys["alice"].public not in summary.output
    last = invoke("remove", "prod", keys["bob"].public, "-C", str(repo), "-i", str(keys["bob"].path))
    assert last.exit_code == 1 and "last member" in last.output


def test_reencrypt_only_when_the_recipients_changed_and_always_with_force(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    ssh = ssh_key(tmp_path, "carol")
    members = [keys["alice"].public, ssh.public]
    write_cfg(repo, members)
    tls = env_dir(repo) / "secret-tls.age"
    write_private(tls, encrypt_for(b"tls", [keys["alice"].public]))  # carol is missing
    alice = ["-C", str(repo), "-i", str(keys["alice"].path)]
    result = invoke("reencrypt", "prod", *alice)
    assert result.exit_code == 0, result.output
    assert f"encrypted {tls}" in result.output.replace("\n", "")
    assert "unchanged" in result.output and "secrets.cfg.age" in result.output
    assert decrypts(tls, ssh)
    before = {p: p.read_bytes() for p in env_dir(repo).glob("*.age")}
    result = invoke("reencrypt", "prod", *alice)
    assert not any(line.startswith("encrypted") for line in result.output.splitlines())
    assert before == {p: p.read_bytes() for p in env_dir(repo).glob("*.age")}
    result = invoke("reencrypt", "prod", "--force", *alice)
    assert result.exit_code == 0 and "unchanged" not in result.output
    assert all(before[p] != p.read_bytes() for p in before)


# --- edit -----------------------------------------------------------------

EDITOR = """\
#!{python}
import pathlib, sys
state = pathlib.Path({state!r})
n = int(state.read_text()) if state.exists() else 0
state.write_text(str(n + 1))
texts = {texts!r}
pathlib.Path(sys.argv[1]).write_text(texts[min(n, len(texts) - 1)])
sys.exit({status})
"""


def fake_editor(tmp_path: Path, texts: list[str], status: int = 0) -> dict[str, str]:
    script = tmp_path / "editor.py"
    state = tmp_path / "editor-calls"
    script.write_text(EDITOR.format(python=sys.executable, state=str(state), texts=texts, status=status))
    script.chmod(0o755)
    return {"EDITOR": str(script)}


def test_edit_survives_a_broken_file_when_asked_to_edit_again(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    cfg = write_cfg(repo, [keys["alice"].public])
    broken = f"[batou]\nmembers = {keys['alice'].public}\n[component:app\npassword = new-s3cr3t\n"
    fixed = broken.replace("[component:app\n", "[component:app]\n")
    env = fake_editor(tmp_path, [broken, fixed])
    result = invoke("edit", "prod", "-C", str(repo), "-i", str(keys["alice"].path), input="y\n", env=env)
    assert result.exit_code == 0, result.output
    assert "secrets.cfg.age:3: expected [batou]" in result.output
    assert "edit again?" in result.output
    assert (tmp_path / "editor-calls").read_text() == "2"
    assert pyrage.decrypt(cfg.read_bytes(), find_identities([keys["alice"].path]).keys).decode() == fixed


def test_a_committed_secrets_file_that_no_longer_parses_can_be_edited(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    members = f"{keys['alice'].public},\n    {keys['bob'].public}"
    broken = f"[batou]\nmembers = {members}\n[component:app\npassword = s3cr3t\n"
    cfg = repo / "environments/prod/secrets.cfg.age"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_bytes(encrypt_for(broken.encode(), [keys["alice"].public, keys["bob"].public]))
    fixed = broken.replace("[component:app\n", "[component:app]\n")
    env = fake_editor(tmp_path, [fixed])

    result = invoke("edit", "prod", "-C", str(repo), "-i", str(keys["alice"].path), env=env)

    assert result.exit_code == 0, result.output
    # Still encrypted to both members the broken file named.
    for who in ("alice", "bob"):
        assert pyrage.decrypt(cfg.read_bytes(), find_identities([keys[who].path]).keys).decode() == fixed


def test_refused_edit_is_kept_encrypted_and_continued_next_time(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    cfg = write_cfg(repo, [keys["alice"].public])
    before = cfg.read_bytes()
    broken = f"[batou]\nmembers = {keys['alice'].public}\n[component:app\npassword = new-s3cr3t\n"
    alice = ["-C", str(repo), "-i", str(keys["alice"].path)]
    # No input at all: like CI, without a terminal.
    result = invoke("edit", "prod", *alice, env=fake_editor(tmp_path, [broken]))
    assert result.exit_code == 1
    assert "kept encrypted in" in result.output
    rejected = env_dir(repo) / "secrets.cfg.age.rejected"
    assert cfg.read_bytes() == before
    assert b"new-s3cr3t" not in rejected.read_bytes()
    assert pyrage.decrypt(rejected.read_bytes(), find_identities([keys["alice"].path]).keys).decode() == broken
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("consign-secrets-*/secrets.cfg"))

    seen = tmp_path / "seen"
    script = tmp_path / "fixer.py"
    script.write_text(
        f"#!{sys.executable}\nimport pathlib, sys\np = pathlib.Path(sys.argv[1])\n"
        f"pathlib.Path({str(seen)!r}).write_text(p.read_text())\n"
        "p.write_text(p.read_text().replace('[component:app\\n', '[component:app]\\n'))\n"
    )
    script.chmod(0o755)
    result = invoke("edit", "prod", *alice, env={"EDITOR": str(script)})
    assert result.exit_code == 0, result.output
    assert seen.read_text() == broken
    assert not rejected.exists()
    assert b"new-s3cr3t" in pyrage.decrypt(cfg.read_bytes(), find_identities([keys["alice"].path]).keys)


def test_failing_editor_saves_nothing_and_keeps_a_changed_text(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    cfg = write_cfg(repo, [keys["alice"].public])
    before = cfg.read_bytes()
    alice = ["-C", str(repo), "-i", str(keys["alice"].path)]
    changed = SECRETS.format(members=keys["alice"].public) + "[component:db]\nx = 1\n"
    result = invoke("edit", "prod", *alice, env=fake_editor(tmp_path, [changed], status=3))
    assert result.exit_code == 1
    assert "exited with status 3" in result.output
    assert cfg.read_bytes() == before
    assert (env_dir(repo) / "secrets.cfg.age.rejected").exists()


def test_unchanged_edit_writes_nothing(repo: Path, keys: dict[str, Key], tmp_path: Path) -> None:
    cfg = write_cfg(repo, [keys["alice"].public])
    before = cfg.read_bytes()
    result = invoke(
        "edit", "prod", "-C", str(repo), "-i", str(keys["alice"].path), env={"EDITOR": "true"}
    )
    assert result.exit_code == 0, result.output
    assert "unchanged" in result.output
    assert cfg.read_bytes() == before


def test_edit_of_a_secret_file_creates_it_for_the_members(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    write_cfg(repo, [keys["alice"].public, keys["bob"].public])
    env = fake_editor(tmp_path, ["-----BEGIN KEY-----\n"])
    result = invoke("edit", "prod", "tls", "-C", str(repo), "-i", str(keys["alice"].path), env=env)
    assert result.exit_code == 0, result.output
    path = env_dir(repo) / "secret-tls.age"
    assert f"created {path}" in result.output.replace("\n", "")
    assert decrypts(path, keys["bob"])


def test_edit_that_changes_members_reencrypts_the_other_files(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    write_cfg(repo, [keys["alice"].public])
    tls = env_dir(repo) / "secret-tls.age"
    write_private(tls, encrypt_for(b"tls", [keys["alice"].public]))
    new = SECRETS.format(members=f"{keys['alice'].public}, {keys['bob'].public}")
    env = fake_editor(tmp_path, [new])
    result = invoke("edit", "prod", "-C", str(repo), "-i", str(keys["alice"].path), env=env)
    assert result.exit_code == 0, result.output
    assert decrypts(tls, keys["bob"])


def test_new_secrets_file_starts_with_the_operators_key_as_member(
    repo: Path, keys: dict[str, Key], tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    script = tmp_path / "look.sh"
    script.write_text(f"#!/bin/sh\ncp \"$1\" {seen}\necho '[component:app]' >> \"$1\"\necho 'x = 1' >> \"$1\"\n")
    script.chmod(0o755)
    result = invoke("edit", "prod", "-C", str(repo), "-i", str(keys["alice"].path), env={"EDITOR": str(script)})
    assert result.exit_code == 0, result.output
    assert f"members = {keys['alice'].public}" in seen.read_text()
    assert decrypts(env_dir(repo) / "secrets.cfg.age", keys["alice"])


def test_unknown_environment_lists_the_existing_ones(repo: Path, keys: dict[str, Key]) -> None:
    result = invoke("summary", "staging", "-C", str(repo), "-i", str(keys["alice"].path))
    assert result.exit_code == 1
    assert "no environment 'staging'" in result.output and "prod" in result.output


def test_textconv_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "secrets.md").read_text()
    assert 'git config diff.age.textconv "bundle secrets decrypt-to-stdout"' in docs
    assert "*.age diff=age" in docs
