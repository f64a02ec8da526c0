"""The build with secrets: merging them into the environment, refusing
conflicts, selecting per host, and keeping values out of errors and models."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from builder.errors import BuildFailed, SecretsError
from builder.secrets import encrypt_for, write_private
from executor.age import decrypt, read_identities
from executor.model import decode_model
from executor.secrets import decode_secrets
from tests.deployments import build_bundles, deployment, verified
from tests.keys import ssh_keypair

PASSWORD = "pw-4c1d9e77b2"
TOKEN = "tok-0e55a3c9"

APP = """
    from batou.component import Attribute, Component
    from batou.lib.file import File

    class App(Component):
        password = Attribute(str, None)

        def configure(self):
            self += File("app.conf", content="pw={{component.password}}\\n")
    """

PLAIN = """
    from batou.component import Component
    from batou.lib.file import File

    class Plain(Component):
        def configure(self):
            self += File("plain.conf", content="plain\\n")
    """


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path_factory.mktemp("operator") / "key.txt"
    path.write_text(f"{identity}\n")
    return path, str(identity.to_public())


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ssh_keypair(tmp_path_factory.mktemp("host") / "ssh_host_ed25519_key")


def make(
    tmp_path: Path,
    operator: tuple[Path, str],
    host_key: Path,
    *,
    secrets: str,
    environment: str | None = None,
    components: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    recipient = host_key.with_suffix(".pub").read_text().strip()
    repo = deployment(
        tmp_path / "repo",
        components=components or {"app": APP, "plain": PLAIN},
        environments={
            "prod": environment
            or f"""
                [host:web1]
                components = app
                recipient = {recipient}

                [host:web2]
                components = plain
                """
        },
    )
    directory = repo / "environments" / "prod"
    members = [operator[1]]
    text = f"[batou]\nmembers = {operator[1]}\n\n" + secrets
    write_private(directory / "secrets.cfg.age", encrypt_for(text.encode(), members))
    for name, content in (files or {}).items():
        write_private(directory / f"secret-{name}.age", encrypt_for(content, members))
    return repo


def build(repo: Path, operator: tuple[Path, str]):  # type: ignore[no-untyped-def]
    return build_bundles("prod", repo, identities=(operator[0],))


def errors_of(repo: Path, operator: tuple[Path, str]) -> str:
    with pytest.raises(BuildFailed) as raised:
        build(repo, operator)
    return raised.value.render()


def test_secrets_apply_like_the_environment_file_and_stay_out_of_the_model(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    repo = make(tmp_path, operator, host_key, secrets=f"[component:app]\npassword = {PASSWORD}\n")
    result = build(repo, operator)
    web1, web2 = (h for h in result.hosts)
    assert web1.secrets == ("app.password",)
    assert web2.secrets == ()
    bundle = verified(web1.path)
    model = decode_model(bundle.read("model", 1 << 20))
    assert model.roots[0].overrides == ()
    assert PASSWORD.encode() not in web1.path.read_bytes()
    selection = decode_secrets(decrypt(bundle.read("secrets", 1 << 20), read_identities(host_key.read_bytes())))
    assert selection.overrides == (("app", (("password", PASSWORD),)),)
    # A host whose roots use no secret gets no secrets blob at all.
    assert verified(web2.path).manifest.blob("secrets") is None


@pytest.mark.parametrize(
    ("environment", "secrets", "expected"),
    [
        (
            "[host:web1]\ncomponents = app\n\n[component:app]\npassword = clear\n",
            "[component:app]\npassword = x-secret-1\n",
            "[component:app] password is set in both environments/prod/environment.cfg:5 and "
            "environments/prod/secrets.cfg.age:5",
        ),
        (
            "[host:web1]\ncomponents = app\ndata-token = clear\n",
            "[host:web1]\ndata-token = x-secret-2\n",
            "data-token of host 'web1' is set in both environments/prod/environment.cfg:1 and "
            "environments/prod/secrets.cfg.age:5",
        ),
        (
            "[host:web1]\ncomponents = app\n",
            "[host:web9]\ndata-token = x-secret-3\n",
            "[host:web9] gives secrets to a host environment 'prod' does not have",
        ),
        (
            "[host:web1]\ncomponents = app\n",
            "[component:app]\npasword = x-secret-4\n",
            "[component:app] sets 'pasword', which App does not have",
        ),
        (
            "[host:web1]\ncomponents = app\n",
            "[component:ap]\npassword = x-secret-5\n",
            "[component:ap] overrides a component this deployment does not define",
        ),
        (
            "[host:web1]\ncomponents = app\n",
            "[component:app]\npassword = x-secret-6\n",
            "host 'web1' uses secrets (app.password) but has no recipient to encrypt them to",
        ),
    ],
)
def test_bad_secrets_are_build_errors_without_values(
    tmp_path: Path,
    operator: tuple[Path, str],
    host_key: Path,
    environment: str,
    secrets: str,
    expected: str,
) -> None:
    repo = make(tmp_path, operator, host_key, secrets=secrets, environment=environment)
    rendered = errors_of(repo, operator)
    assert expected in rendered
    assert "x-secret" not in rendered


def test_a_recipient_in_both_files_is_a_conflict(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    recipient = host_key.with_suffix(".pub").read_text().strip()
    repo = make(
        tmp_path, operator, host_key,
        environment=f"[host:web1]\ncomponents = app\nrecipient = {recipient}\n",
        secrets=f"[host:web1]\nrecipient = {recipient}\n",
    )
    assert "recipient of host 'web1' is set in both" in errors_of(repo, operator)


def test_a_configure_error_that_quotes_a_secret_is_redacted(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    leaky = """
        from batou.component import Attribute, Component

        class App(Component):
            password = Attribute(str, None)

            def configure(self):
                raise ValueError(f"refusing password {self.password!r}")
        """
    repo = make(
        tmp_path, operator, host_key, components={"app": leaky, "plain": PLAIN},
        secrets=f"[component:app]\npassword = {PASSWORD}\n",
    )
    rendered = errors_of(repo, operator)
    assert "refusing password '***'" in rendered
    assert PASSWORD not in rendered


def test_secret_files_are_read_in_configure_and_shipped_to_readers_only(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    reader = """
        from batou.component import Component
        from batou.lib.file import File

        class App(Component):
            def configure(self):
                assert "tls" in self.environment.secret_files
                assert self.environment.secret_files.get("nope") is None
                assert sorted(self.environment.secret_files) == ["blob", "tls"]
                self += File("tls.pem", content=self.environment.secret_files["tls"])
                binary = self.environment.secret_files["blob"]
                assert isinstance(binary, bytes)
        """
    repo = make(
        tmp_path, operator, host_key, components={"app": reader, "plain": PLAIN},
        secrets="", files={"tls": b"-----BEGIN-----\nkey-material-77\n", "blob": b"\xff\xfe\x00"},
    )
    result = build(repo, operator)
    web1 = next(h for h in result.hosts if h.name == "web1")
    assert web1.secrets == ("secret file 'blob'", "secret file 'tls'")
    assert verified(next(h for h in result.hosts if h.name == "web2").path).manifest.blob("secrets") is None


def test_an_unknown_secret_file_is_a_clear_error(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    reader = """
        from batou.component import Component

        class App(Component):
            def configure(self):
                self.key = self.environment.secret_files["tsl"]
        """
    repo = make(
        tmp_path, operator, host_key, components={"app": reader, "plain": PLAIN},
        secrets="", files={"tls": b"key-material-88"},
    )
    rendered = errors_of(repo, operator)
    assert "there is no secret file 'tsl' here" in rendered
    assert "did you mean 'tls'?" in rendered
    assert "key-material" not in rendered


def test_a_secret_in_a_component_name_is_masked_in_the_tree(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    named = """
        from batou.component import Attribute, Component
        from batou.lib.file import File

        class App(Component):
            password = Attribute(str, None)

            def configure(self):
                self += File(f"conf-{self.password}", content="x\\n")
        """
    repo = make(
        tmp_path, operator, host_key, components={"app": named, "plain": PLAIN},
        secrets=f"[component:app]\npassword = {PASSWORD}\n",
    )
    result = build(repo, operator)
    web1 = next(h for h in result.hosts if h.name == "web1")
    model = decode_model(verified(web1.path).read("model", 1 << 20))
    assert any("conf-***" in crumb for crumb in model.roots[0].tree)
    assert PASSWORD.encode() not in web1.path.read_bytes()


def test_secret_host_data_reaches_only_its_host(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    data = """
        from batou.component import Component
        from batou.lib.file import File

        class App(Component):
            def configure(self):
                self += File("token", content=self.host.data["token"] + self.host.data["role"])
        """
    recipient = host_key.with_suffix(".pub").read_text().strip()
    repo = make(
        tmp_path, operator, host_key, components={"app": data, "plain": PLAIN},
        environment=f"[host:web1]\ncomponents = app\ndata-role = web\nrecipient = {recipient}\n"
        "[host:web2]\ncomponents = plain\n",
        secrets=f"[host:web1]\ndata-token = {TOKEN}\n",
    )
    result = build(repo, operator)
    web1 = next(h for h in result.hosts if h.name == "web1")
    bundle = verified(web1.path)
    assert decode_model(bundle.read("model", 1 << 20)).host.data == (("role", "web"),)
    selection = decode_secrets(decrypt(bundle.read("secrets", 1 << 20), read_identities(host_key.read_bytes())))
    assert selection.data == (("token", TOKEN),)
    for host in result.hosts:
        assert TOKEN.encode() not in host.path.read_bytes()


def test_a_missing_secrets_cfg_with_secret_files_still_builds(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    repo = make(tmp_path, operator, host_key, secrets="")
    (repo / "environments" / "prod" / "secrets.cfg.age").unlink()
    write_private(
        repo / "environments" / "prod" / "secret-tls.age", encrypt_for(b"tls-data-99", [operator[1]])
    )
    result = build(repo, operator)
    assert all(h.secrets == () for h in result.hosts)


def test_no_secrets_no_identity_needed(tmp_path: Path, host_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    repo = deployment(tmp_path / "repo", components={"plain": PLAIN}, environments={"prod": "[hosts]\nweb2 = plain\n"})
    result = build_bundles("prod", repo)
    assert [h.name for h in result.hosts] == ["web2"]
    assert result.identity_paths == ()


def test_secrets_error_is_a_secrets_error(tmp_path: Path, operator: tuple[Path, str], host_key: Path) -> None:
    repo = make(tmp_path, operator, host_key, secrets="")
    (repo / "environments" / "prod" / "secrets.cfg.age").write_bytes(b"not age")
    with pytest.raises(SecretsError, match="cannot decrypt environments/prod/secrets.cfg.age"):
        build(repo, operator)


def test_a_host_recipient_must_be_ed25519_or_age(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    repo = make(
        tmp_path, operator, host_key, environment="[host:web1]\ncomponents = app\n",
        secrets="[host:web1]\nrecipient = ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\n",
    )
    with pytest.raises(SecretsError) as raised:
        build(repo, operator)
    assert raised.value.render().startswith(
        "environments/prod/secrets.cfg.age:5: recipient of host 'web1': a recipient must be an "
        "age1... key or an ssh-ed25519 public key, found 'ssh-rsa'"
    )
    environment = make(
        tmp_path / "env", operator, host_key, secrets="",
        environment="[host:web1]\ncomponents = app\nrecipient = age1nothing\n",
    )
    assert "environment.cfg:3: recipient of host 'web1': the age key" in errors_of(environment, operator)


def test_too_short_secrets_are_refused(tmp_path: Path, operator: tuple[Path, str], host_key: Path) -> None:
    repo = make(tmp_path, operator, host_key, secrets="[component:app]\npassword = abc\n[host:web1]\ndata-pin = 12\n")
    rendered = errors_of(repo, operator)
    assert "environments/prod/secrets.cfg.age:5: [component:app] password is shorter than 4 characters" in rendered
    assert "environments/prod/secrets.cfg.age:7: data-pin of host 'web1' is shorter than 4 characters" in rendered


def test_a_secret_value_in_the_clear_model_fails_the_build(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    two = """
        from batou.component import Attribute, Component

        class App(Component):
            password = Attribute(str, None)
            user = Attribute(str, None)
        """
    recipient = host_key.with_suffix(".pub").read_text().strip()
    repo = make(
        tmp_path, operator, host_key, components={"app": two, "plain": PLAIN},
        environment=f"[host:web1]\ncomponents = app\nrecipient = {recipient}\n"
        f"[component:app]\nuser = {PASSWORD}\n",
        secrets=f"[component:app]\npassword = {PASSWORD}\n",
    )
    rendered = errors_of(repo, operator)
    assert "the clear model of host 'web1' would hold the value of app.password" in rendered
    assert PASSWORD not in rendered


def test_an_identity_inside_the_repository_is_refused(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    repo = make(tmp_path, operator, host_key, secrets=f"[component:app]\npassword = {PASSWORD}\n")
    inside = repo / "keys" / "operator.txt"
    inside.parent.mkdir()
    inside.write_text(operator[0].read_text())
    with pytest.raises(SecretsError, match="lies inside the repository .* would travel in every bundle"):
        build_bundles("prod", repo, identities=(inside,))


def test_component_names_in_secrets_are_lowercased_like_the_environment_s(
    tmp_path: Path, operator: tuple[Path, str], host_key: Path
) -> None:
    repo = make(
        tmp_path, operator, host_key, environment="[host:web1]\ncomponents = app\n[component:app]\npassword = clear\n",
        secrets="[component:App]\npassword = x-secret-7\n",
    )
    assert "[component:app] password is set in both" in errors_of(repo, operator)
