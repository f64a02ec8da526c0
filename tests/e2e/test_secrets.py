"""Secrets from the repository to the host, through the real console scripts
and the age tool: each host gets only its own secrets, encrypted to its
own key, and no secret value shows anywhere in clear."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from executor.state import load_state
from tests.deployments import deployment, git_commit, verified
from tests.keys import signing_key, ssh_keypair

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is not installed"),
]

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "CONSIGN_SIGN_KEY": str(signing_key().private),
}

# Every value below is secret; each must be long enough to be searched for.
APP_PASSWORD = "app-pw-7f3a9c1e"
TOKEN = "token-b81d44e0"
TLS_KEY = "-----BEGIN TEST KEY-----\ntls-line-one-5c2e99aa7d\n-----END TEST KEY-----\n"
DB_PASSWORD = "db-pw-0a6e37bd"
API_KEY = "api-key-93f0c2d5"
SECRET_VALUES = (APP_PASSWORD, TOKEN, "tls-line-one-5c2e99aa7d", DB_PASSWORD, API_KEY)

COMPONENTS = {
    "app": """
        from batou.component import Attribute, Component
        from batou.lib.file import File

        class App(Component):
            password = Attribute(str, None)

            def configure(self):
                self.db = self.require_one("dbpass")
                self += File("app.conf", content="password={{component.password}}\\n"
                             "db={{component.db}}\\nmode=1\\n")
                self += File("token", content=self.host.data["token"])
                self += File("tls.key", content=self.environment.secret_files["tls"])
                self += File("public.conf", content="nothing secret\\n")
                # A template whose own text holds the secret: never in the code cache.
                self.mode = "on"
                self += File("mixed.conf", content=f"pw={self.password}\\n{{{{component.mode}}}}\\n")
        """,
    "db": """
        from batou.component import Attribute, Component

        class Db(Component):
            password = Attribute(str, None)

            def configure(self):
                self.provide("dbpass", self.password)
        """,
    "other": """
        from batou.component import Attribute, Component
        from batou.lib.file import File

        class Other(Component):
            api_key = Attribute(str, None)

            def configure(self):
                self += File("other.conf", content="key={{component.api_key}}\\n")
        """,
}


@dataclass(frozen=True)
class Keys:
    operator: Path
    operator_public: str
    web1: Path
    web2: Path
    db1: Path
    db1_public: str


def run(*args: str, cwd: Path, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, check=False, env=env or ENV
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"{args} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


def age_identity(directory: Path, name: str) -> tuple[Path, str]:
    path = directory / name
    completed = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True)
    return path, completed.stderr.split("Public key:")[1].strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    operator, operator_public = age_identity(directory, "operator.key")
    db1, db1_public = age_identity(directory, "db1.key")
    return Keys(
        operator, operator_public, ssh_keypair(directory / "web1"), ssh_keypair(directory / "web2"),
        db1, db1_public,
    )


def age_encrypt(plaintext: bytes, recipient: str, path: Path) -> None:
    """Encrypt with the age tool itself, as batou users do."""
    subprocess.run(["age", "-e", "-r", recipient, "-o", str(path)], input=plaintext, check=True)


def secrets_cfg(keys: Keys, app_password: str = APP_PASSWORD) -> bytes:
    return f"""\
[batou]
members = {keys.operator_public}
secret_provider = age

[component:app]
password = {app_password}

[component:db]
password = {DB_PASSWORD}

[component:other]
api_key = {API_KEY}

[host:web1]
data-token = {TOKEN}

[host:db1]
recipient = {keys.db1_public}
""".encode()


def make_repo(root: Path, keys: Keys) -> Path:
    web1 = keys.web1.with_suffix(".pub").read_text().strip()
    web2 = keys.web2.with_suffix(".pub").read_text().strip()
    repo = deployment(
        root / "repo",
        components=COMPONENTS,
        files={".gitignore": "bundles/\n"},
        environments={
            "prod": f"""
                [hosts]
                db1 = db

                [host:web1]
                components = app
                recipient = {web1}

                [host:web2]
                components = other
                recipient = {web2}
                data-role = frontend
                """
        },
    )
    directory = repo / "environments" / "prod"
    age_encrypt(secrets_cfg(keys), keys.operator_public, directory / "secrets.cfg.age")
    age_encrypt(TLS_KEY.encode(), keys.operator_public, directory / "secret-tls.age")
    age_encrypt(b"unused-secret-file-4411", keys.operator_public, directory / "secret-unused.age")
    git_commit(repo)
    return repo


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("secrets")
    repo = make_repo(root, keys)
    completed = run("bundle", "build", "prod", "--identity", str(keys.operator), cwd=repo)
    return repo, completed.stdout + completed.stderr


def secrets_blob(bundle: Path) -> bytes:
    return verified(bundle).read("secrets", 1 << 26)


def age_decrypt(blob: bytes, identity: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["age", "-d", "-i", str(identity)], input=blob, capture_output=True, check=False)


def assert_no_secret(data: bytes, where: str, values: tuple[str, ...] = SECRET_VALUES) -> None:
    for value in values:
        assert value.encode() not in data, f"{value!r} in clear in {where}"


def tree_bytes(directory: Path) -> list[tuple[Path, bytes]]:
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found.append((path, path.read_bytes()))
    return found


def test_each_bundle_holds_its_hosts_selection_only(built: tuple[Path, str], keys: Keys) -> None:
    repo, output = built
    assert_no_secret(output.encode(), "the build's output")
    bundles = repo / "bundles" / "prod"
    for host in ("web1", "web2", "db1"):
        # The model, the repository and the manifest: nothing in clear.
        assert_no_secret((bundles / f"{host}.bundle").read_bytes(), f"{host}.bundle")

    web1 = age_decrypt(secrets_blob(bundles / "web1.bundle"), keys.web1)
    assert web1.returncode == 0, web1.stderr
    selection = msgpack.unpackb(web1.stdout)
    assert selection["overrides"] == {"app": {"password": APP_PASSWORD}}
    assert selection["data"] == {"token": TOKEN}
    assert selection["files"] == {"tls": TLS_KEY.encode()}
    # db1's password reaches web1 only as what web1 requires.
    assert [(r["root"], r["key"], r["values"]) for r in selection["requires"]] == [
        ("app", "dbpass", [DB_PASSWORD])
    ]
    assert selection["hidden"] == [DB_PASSWORD]
    # The names (not the contents) of all secret files: web1 asked for one.
    assert selection["names"] == ["tls", "unused"]
    assert API_KEY.encode() not in web1.stdout

    web2 = age_decrypt(secrets_blob(bundles / "web2.bundle"), keys.web2)
    assert web2.returncode == 0, web2.stderr
    assert msgpack.unpackb(web2.stdout) == {
        "version": 1, "overrides": {"other": {"api_key": API_KEY}}, "data": {}, "files": {},
        "requires": [], "hidden": [], "names": [],
    }
    assert_no_secret(web2.stdout, "web2's secrets", (APP_PASSWORD, TOKEN, "tls-line-one", DB_PASSWORD))

    db1 = age_decrypt(secrets_blob(bundles / "db1.bundle"), keys.db1)
    assert db1.returncode == 0, db1.stderr
    assert msgpack.unpackb(db1.stdout)["overrides"] == {"db": {"password": DB_PASSWORD}}


def test_another_hosts_key_cannot_decrypt(built: tuple[Path, str], keys: Keys) -> None:
    repo, _output = built
    blob = secrets_blob(repo / "bundles" / "prod" / "web1.bundle")
    for other in (keys.web2, keys.db1, keys.operator):
        completed = age_decrypt(blob, other)
        assert completed.returncode != 0
        assert completed.stdout == b""


def apply(repo: Path, root: Path, identity: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(
        "executor", "apply", "bundles/prod/web1.bundle", "--host", "web1",
        "--target-dir", str(root / "target"), "--state-dir", str(root / "state"),
        "--trust", str(signing_key().trust), "--identity", str(identity), *extra,
        cwd=repo, check=check,
    )


def test_apply_decrypts_in_memory_and_shows_no_secret(
    built: tuple[Path, str], keys: Keys, tmp_path: Path
) -> None:
    repo, _output = built
    outputs = []
    first = apply(repo, tmp_path, keys.web1, "--verbose")
    outputs.append(first.stdout + first.stderr)
    target = tmp_path / "target" / "work" / "app"
    assert (target / "app.conf").read_text() == f"password={APP_PASSWORD}\ndb={DB_PASSWORD}\nmode=1\n"
    assert (target / "token").read_text() == TOKEN
    assert (target / "tls.key").read_text() == TLS_KEY
    assert (target / "mixed.conf").read_text() == f"pw={APP_PASSWORD}\non\n"
    again = apply(repo, tmp_path, keys.web1, "--json")
    outputs.append(again.stdout + again.stderr)
    assert json.loads(again.stdout)["changed"] == []
    # A changed file that holds a secret shows a notice instead of its diff.
    (target / "app.conf").write_text(f"password={APP_PASSWORD}\ndb={DB_PASSWORD}\nmode=0\n")
    (target / "public.conf").write_text("changed\n")
    dry = apply(repo, tmp_path, keys.web1, "--dry-run", "--json")
    outputs.append(dry.stdout + dry.stderr)
    diffs = {d["path"].rsplit("/", 1)[1]: d for d in json.loads(dry.stdout)["diffs"]}
    assert diffs["app.conf"]["diff"] is None
    assert diffs["app.conf"]["note"] == "content holds a secret value: diff withheld"
    assert "+nothing secret" in diffs["public.conf"]["diff"]
    verbose = apply(repo, tmp_path, keys.web1, "--verbose")
    outputs.append(verbose.stdout + verbose.stderr)
    assert "content holds a secret value: diff withheld" in verbose.stdout
    status = run("executor", "status", "--state-dir", str(tmp_path / "state"), "--json", cwd=repo)
    outputs.append(status.stdout + status.stderr)
    for text in outputs:
        assert_no_secret(text.encode(), "the executor's output")
    # Nothing under the state directory holds a secret in clear: the store,
    # the generations, run records, the audit log, the status.
    files = tree_bytes(tmp_path / "state")
    names = {path.relative_to(tmp_path / "state").as_posix() for path, _data in files}
    assert {"audit.log", "status.json", "state.msgpack", "generations/1/bundle"} <= names
    assert any(name.startswith("store/") for name in names)
    # Compiled templates are cached beside the runtime: sources, not output.
    caches = Path(os.environ["CONSIGN_RUNTIME_DIR"]).glob("*/template-cache")
    files += [item for cache in caches for item in tree_bytes(cache)]
    for path, data in files:
        assert_no_secret(data, str(path))


def test_a_host_with_another_key_is_refused_and_nothing_changes(
    built: tuple[Path, str], keys: Keys, tmp_path: Path
) -> None:
    repo, _output = built
    completed = apply(repo, tmp_path, keys.web2, check=False)
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert "cannot decrypt the bundle's secrets" in completed.stderr
    assert "ssh-ed25519 key tagged" in completed.stderr
    assert "recipient" in completed.stderr
    assert not (tmp_path / "target").exists()
    # A host that applied before (with its own key) stays as it was: its
    # files, generations and store, and what its state accepted (the state
    # and the records only note the refusal).
    apply(repo, tmp_path, keys.web1)

    def host() -> tuple[object, ...]:
        records = ("audit.log", "lock", "status.json", "state.msgpack")
        state = load_state(str(tmp_path / "state"))
        files = {p: d for p, d in tree_bytes(tmp_path) if not p.name.endswith(records)}
        return files, state.highest_serial, state.current, state.bundle

    kept = host()
    assert apply(repo, tmp_path, keys.web2, check=False).returncode == 3
    assert host() == kept
    missing = apply(repo, tmp_path, tmp_path / "no-such-key", check=False)
    assert missing.returncode == 3
    assert "no-such-key cannot be read" in missing.stderr


def test_same_inputs_same_bundles(built: tuple[Path, str], keys: Keys, tmp_path: Path) -> None:
    repo, _output = built
    run("bundle", "build", "prod", "--identity", str(keys.operator), "--out", str(tmp_path / "again"), cwd=repo)
    for host in ("web1", "web2", "db1"):
        assert (tmp_path / "again" / "prod" / f"{host}.bundle").read_bytes() == (
            repo / "bundles" / "prod" / f"{host}.bundle"
        ).read_bytes()
    # --check rebuilds in a clone with another home: the identity goes along.
    checked = run(
        "bundle", "build", "prod", "--identity", str(keys.operator), "--out", str(tmp_path / "checked"),
        "--check", cwd=repo,
    )
    assert "reproducible" in checked.stdout


def test_a_changed_secret_changes_only_its_hosts_selection(keys: Keys, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, keys)
    run("bundle", "build", "prod", "--identity", str(keys.operator), cwd=repo)
    before = {h: (repo / "bundles" / "prod" / f"{h}.bundle").read_bytes() for h in ("web1", "web2")}
    age_encrypt(
        secrets_cfg(keys, app_password="app-pw-changed-1234"),
        keys.operator_public,
        repo / "environments" / "prod" / "secrets.cfg.age",
    )
    git_commit(repo, "rotate", when=1_700_000_000)
    run("bundle", "build", "prod", "--identity", str(keys.operator), cwd=repo)
    after = {h: (repo / "bundles" / "prod" / f"{h}.bundle").read_bytes() for h in ("web1", "web2")}
    assert after["web1"] != before["web1"]
    # N.B. web2's secrets blob is seeded by all secrets of the environment,
    # so its ciphertext changes too; its model and selection do not.
    web2 = msgpack.unpackb(age_decrypt(secrets_blob(repo / "bundles" / "prod" / "web2.bundle"), keys.web2).stdout)
    assert web2["overrides"] == {"other": {"api_key": API_KEY}}


def test_build_without_the_operators_key_names_file_and_members(keys: Keys, tmp_path: Path) -> None:
    repo = make_repo(tmp_path, keys)
    env = {k: v for k, v in ENV.items() if k not in ("CONSIGN_AGE_IDENTITIES", "BATOU_AGE_IDENTITIES")}
    env["HOME"] = str(tmp_path / "home")
    completed = run("bundle", "build", "prod", cwd=repo, check=False, env=env)
    assert completed.returncode == 1
    assert "secrets.cfg.age" in completed.stderr
    assert "no identity" in completed.stderr
    completed = run("bundle", "build", "prod", "--identity", str(keys.web1), cwd=repo, check=False, env=env)
    assert completed.returncode == 1
    stderr = " ".join(completed.stderr.split())
    assert "none of the identities decrypts environments/prod/secrets.cfg.age" in stderr
    assert f"tried {keys.web1} (from --identity)" in stderr
    # age1 recipients are anonymous in the header: it says how many there are.
    assert "its header lists an X25519 (age1...) key" in stderr
    # A secret file names the members, read from secrets.cfg.
    (repo / "environments" / "prod" / "secrets.cfg.age").unlink()
    age_encrypt(secrets_cfg(keys), keys.web1.with_suffix(".pub").read_text().strip(),
                repo / "environments" / "prod" / "secrets.cfg.age")
    git_commit(repo, "only web1 reads the cfg")
    completed = run("bundle", "build", "prod", "--identity", str(keys.web1), cwd=repo, check=False, env=env)
    stderr = " ".join(completed.stderr.split())
    assert "none of the identities decrypts environments/prod/secret-tls.age" in stderr
    assert f"its recipients are the members: {keys.operator_public}" in stderr


def test_verify_checks_that_this_host_can_read_its_secrets(built: tuple[Path, str], keys: Keys) -> None:
    repo, _output = built
    common = ("executor", "verify", "bundles/prod/web1.bundle", "--host", "web1",
              "--trust", str(signing_key().trust))
    ok = run(*common, "--identity", str(keys.web1), "--json", cwd=repo)
    # app.password, the token, the TLS key (whole and its long line), db1's password.
    assert json.loads(ok.stdout)["secrets"] == 5
    plain = run(*common, "--identity", str(keys.web1), cwd=repo)
    assert "secrets: this host's identity decrypts them" in plain.stdout
    refused = run(*common, "--identity", str(keys.web2), "--json", cwd=repo, check=False)
    assert refused.returncode == 3
    data = json.loads(refused.stdout)
    assert data["secrets"] is None
    assert "cannot decrypt the bundle's secrets" in data["error"]["message"]
