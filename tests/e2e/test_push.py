"""bundle push against a real OpenSSH server on loopback.

Several "hosts" share one sshd (127.0.0.1, a free port, throwaway keys):
each has its own executor config, so its own state and target directory.
The repository's ssh_config sends their names to the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.signing import read_public_key
from executor.bundle import open_unverified
from tests.deployments import git_commit
from tests.keys import signing_key
from tests.sshd import Sshd, free_port, running_sshd, sshd_unavailable

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "CONSIGN_SIGN_KEY": str(signing_key().private),
}

APP = """\
from batou.component import Component
from batou.lib.file import File
from batou.utils import Address


class App(Component):
    def configure(self):
        self.address = Address(self.host.fqdn, 8080)
        self += File("app.conf", content="{{host.name}} {{component.address.listen}}\\n")


class Api(App):
    def configure(self):
        super().configure()
        self.provide("api", self.address)
"""

FRONT = """\
from batou.component import Component
from batou.lib.file import File


class Front(Component):
    def configure(self):
        self.apps = self.require("api")
        self += File("upstreams", content="@@ for a in component.apps\\n{{a.connect}}\\n@@ endfor\\n")
"""


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    reason = sshd_unavailable()
    if reason:
        pytest.skip(reason)
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False, env=ENV
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"{args} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


class Fleet:
    """A deployment repository whose hosts are directories behind one sshd."""

    def __init__(self, root: Path, sshd: Sshd) -> None:
        self.root = root
        self.sshd = sshd
        self.repo = root / "repo"

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def host_config(self, host: str) -> Path:
        directory = self.host_dir(host)
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "executor.toml"
        config.write_text(
            f'host = "{host}"\n'
            f'state_dir = "{directory / "state"}"\n'
            f'target_dir = "{directory / "target"}"\n'
            f'trust = "{signing_key().trust}"\n'
        )
        return config

    def write(self, hosts: dict[str, str], *, extra: str = "", ssh_config: str = "") -> None:
        sections = []
        for host, components in hosts.items():
            sections.append(
                f"[host:{host}]\ncomponents = {components}\n"
                f"executor = env CONSIGN_CONFIG={self.host_config(host)} {BIN / 'executor'}\n"
            )
        environment = (
            "[environment]\nhost_domain = example.com\ntarget_directory = /srv/app\n"
            "require_v6 = false\n\n" + "\n".join(sections) + extra
        )
        files = {
            "components/app/component.py": APP,
            "components/front/component.py": FRONT,
            "environments/prod/environment.cfg": environment,
            "ssh_config": ssh_config or self.sshd.config_for(*(f"{h}.example.com" for h in hosts)),
        }
        for name, text in files.items():
            path = self.repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git_commit(self.repo)

    def build(self) -> None:
        run("bundle", "build", "prod", "--serial", str(int(1e9) + len(os.listdir(self.root))), cwd=self.repo)

    def push(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("bundle", "push", "prod", *extra, cwd=self.repo, check=check)


@pytest.fixture
def fleet(tmp_path: Path, sshd: Sshd) -> Fleet:
    return Fleet(tmp_path, sshd)


RESOLVER = "\n[resolver]\nweb1.example.com = 192.0.2.1\nweb2.example.com = 192.0.2.2\n"


def test_push_applies_every_host_and_a_second_push_changes_nothing(fleet: Fleet) -> None:
    fleet.write({"web1": "app", "web2": "app"}, extra=RESOLVER)
    fleet.build()

    first = fleet.push()

    lines = first.stdout.splitlines()
    assert any(line.startswith("ok          web1: 2 components changed, generation 1") for line in lines), first.stdout
    assert any(line.startswith("ok          web2: 2 components changed, generation 1") for line in lines), first.stdout
    assert lines[-1].startswith("ok: 2 hosts of prod applied in ")
    assert (fleet.host_dir("web1") / "target/work/app/app.conf").read_text() == "web1 192.0.2.1:8080\n"
    assert (fleet.host_dir("web2") / "target/work/app/app.conf").read_text() == "web2 192.0.2.2:8080\n"

    second = fleet.push("--json")

    data = json.loads(second.stdout)
    assert [(h["host"], h["status"], h["changed"]) for h in data["hosts"]] == [
        ("web1", "ok", []),
        ("web2", "ok", []),
    ]
    assert data["failed"] == []
    # The copies pushed are gone from the remote home.
    assert not list(Path.home().glob(".consign-push-*"))


def test_a_host_without_sshd_is_reported_and_the_others_still_apply(fleet: Fleet) -> None:
    closed = free_port()
    config = fleet.sshd.config_for("web1.example.com", "web3.example.com") + fleet.sshd.config_for(
        "web2.example.com", port=closed
    )
    fleet.write({"web1": "app", "web2": "app", "web3": "app"}, extra=RESOLVER + "web3.example.com = 192.0.2.3\n", ssh_config=config)
    fleet.build()

    result = fleet.push(check=False)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    web2 = [line for line in lines if " web2: " in line]
    assert len(web2) == 1 and web2[0].startswith("unreachable web2: "), result.stdout
    assert "Connection refused" in web2[0]
    assert sum(line.startswith("ok ") for line in lines) == 2
    assert lines[-1] == "failed: 1 of 3 hosts did not apply: web2 (unreachable)"
    assert (fleet.host_dir("web3") / "target/work/app/app.conf").is_file()


def test_hosts_go_in_waves_and_a_failed_provider_holds_back_its_consumers(fleet: Fleet) -> None:
    closed = free_port()
    fleet.write({"web1": "api", "web2": "front"}, extra=RESOLVER)
    fleet.build()

    pushed = fleet.push()
    assert "waves    1. web1; 2. web2" in pushed.stdout
    assert (fleet.host_dir("web2") / "target/work/front/upstreams").read_text() == "web1.example.com:8080\n"

    (fleet.repo / "ssh_config").write_text(
        fleet.sshd.config_for("web1.example.com", port=closed) + fleet.sshd.config_for("web2.example.com")
    )
    held = fleet.push("--json", check=False)

    data = json.loads(held.stdout)
    assert held.returncode == 1
    assert [(h["host"], h["status"]) for h in data["hosts"]] == [("web1", "unreachable"), ("web2", "skipped")]
    assert data["hosts"][1]["message"] == "not pushed: it applies after web1, which did not succeed"


def test_ssh_never_uses_the_resolver_overrides(fleet: Fleet, sshd: Sshd) -> None:
    # The host's name is localhost; the deployment overrides localhost to an
    # address where nothing answers. ssh must resolve it the ordinary way.
    fleet.write({"localhost": "app"}, extra="\n[resolver]\nlocalhost.example.com = 192.0.2.250\n")
    env = fleet.repo / "environments/prod/environment.cfg"
    env.write_text(env.read_text().replace("host_domain = example.com\n", ""))
    env.write_text(env.read_text().replace("localhost.example.com = 192.0.2.250", "localhost = 192.0.2.250"))
    (fleet.repo / "ssh_config").write_text(sshd.config_for("localhost", hostname=False))
    git_commit(fleet.repo)
    fleet.build()

    result = fleet.push()

    assert "ok          localhost: 2 components changed" in result.stdout
    # Deployment code did see the override.
    assert (fleet.host_dir("localhost") / "target/work/app/app.conf").read_text() == (
        "localhost 192.0.2.250:8080\n"
    )


def test_a_tampered_bundle_is_refused_by_the_host_through_push(fleet: Fleet) -> None:
    fleet.write({"web1": "app"}, extra=RESOLVER.replace("web2.example.com = 192.0.2.2\n", ""))
    fleet.build()
    bundle = fleet.repo / "bundles/prod/web1.bundle"
    # A byte of the repository blob: push reads only the model, the host checks all.
    offset = open_unverified(str(bundle)).envelope.blobs_offset + 100
    data = bytearray(bundle.read_bytes())
    data[offset] ^= 1
    bundle.write_bytes(bytes(data))

    result = fleet.push("--json", check=False)

    (host,) = json.loads(result.stdout)["hosts"]
    assert result.returncode == 1
    assert host["status"] == "refused"
    assert "blob 'repo' does not match its sha256" in host["message"]
    assert not (fleet.host_dir("web1") / "target/work").exists()


def test_a_bundle_signed_by_a_key_the_host_does_not_trust_is_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    fleet.write({"web1": "app"}, extra=RESOLVER.replace("web2.example.com = 192.0.2.2\n", ""))
    fleet.build()
    other = tmp_path / "other-key"
    run("bundle", "keys", "generate", other, "--trust-file", tmp_path / "other-trust", cwd=tmp_path)
    config = fleet.host_dir("web1") / "executor.toml"
    config.write_text(config.read_text().replace(str(signing_key().trust), str(tmp_path / "other-trust")))

    result = fleet.push("--json", check=False)

    (host,) = json.loads(result.stdout)["hosts"]
    assert host["status"] == "refused"
    assert "has no signature this host trusts" in host["message"]


def test_a_bundle_damaged_where_push_reads_it_stops_before_connecting(fleet: Fleet) -> None:
    fleet.write({"web1": "app"}, extra=RESOLVER.replace("web2.example.com = 192.0.2.2\n", ""))
    fleet.build()
    bundle = fleet.repo / "bundles/prod/web1.bundle"
    data = bytearray(bundle.read_bytes())
    data[-10] ^= 1  # the model, the last blob
    bundle.write_bytes(bytes(data))

    result = fleet.push(check=False)

    assert result.returncode == 3
    assert "blob 'model' does not match its sha256" in result.stderr
    assert not (fleet.host_dir("web1") / "state").exists()


def test_push_names_hosts_without_a_bundle_before_connecting(fleet: Fleet) -> None:
    fleet.write({"web1": "app", "web2": "app"}, extra=RESOLVER)

    result = fleet.push(check=False)

    assert result.returncode == 1
    assert "error: there is no bundle for host 'web1' in" in result.stderr
    assert "hint: run 'bundle build prod' first" in result.stderr
    assert "error: there is no bundle for host 'web2' in" in result.stderr


def test_bootstrap_installs_the_executor_and_the_trust_where_a_host_lacks_them(
    fleet: Fleet,
) -> None:
    home = fleet.host_dir("web1")
    pex, signers = home / "lib/executor.pex", home / "etc/allowed_signers"
    config = fleet.host_config("web1")
    config.write_text(config.read_text().replace(str(signing_key().trust), str(signers)))
    fleet.write({"web1": "app"}, extra=RESOLVER.replace("web2.example.com = 192.0.2.2\n", ""))
    environment = fleet.repo / "environments/prod/environment.cfg"
    # A stock python3 runs the executor pex, as on a fresh host.
    environment.write_text(
        environment.read_text().replace(
            f"executor = env CONSIGN_CONFIG={config} {BIN / 'executor'}\n",
            f"executor = env PEX_ROOT={home / 'pex'} CONSIGN_CONFIG={config} /usr/bin/python3 {pex}\n"
            f"executor_pex = {pex}\nallowed_signers = {signers}\n",
        )
    )
    git_commit(fleet.repo)
    fleet.build()

    first = fleet.push("--bootstrap", "--json")

    (host,) = json.loads(first.stdout)["hosts"]
    assert (host["status"], host["bootstrapped"]) == ("ok", [str(pex), str(signers)]), host
    assert oct(pex.stat().st_mode & 0o777) == "0o755"
    # The host trusts exactly the key that signed the bundle.
    key = read_public_key(signing_key().private).openssh()
    assert signers.read_text() == f'builder namespaces="consign-bundle" {key}\n'

    second = fleet.push("--bootstrap", "--json")

    (again,) = json.loads(second.stdout)["hosts"]
    assert (again["status"], again["bootstrapped"], again["changed"]) == ("ok", [], [])
