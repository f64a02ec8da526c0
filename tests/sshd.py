"""A real OpenSSH server on 127.0.0.1 for tests, with throwaway keys.

The server runs as the test's user (root in CI), accepts one client key,
and serves scp through its internal sftp. Clients reach it through an
ssh_config that maps test host names to it (see :meth:`Sshd.config_for`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sshd_unavailable() -> str | None:
    """Why a real sshd cannot run here, or None."""
    if not os.path.exists(SSHD):
        return "sshd is not installed (Debian: openssh-server; .ci/run installs it)"
    if os.geteuid() != 0:
        return "sshd for tests needs root (privilege separation)"
    return None


@dataclass(frozen=True)
class Sshd:
    port: int
    directory: Path
    client_key: Path
    known_hosts: Path
    user: str

    def config_for(self, *names: str, hostname: bool = True, port: int | None = None) -> str:
        """ssh_config lines that send `names` to this server (or to `port`,
        where nothing listens). Without `hostname` ssh resolves the names
        itself."""
        lines = []
        for name in names:
            lines.append(f"Host {name}")
            if hostname:
                lines.append("    HostName 127.0.0.1")
            lines += [
                f"    Port {port or self.port}",
                f"    User {self.user}",
                f"    IdentityFile {self.client_key}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {self.known_hosts}",
                "    StrictHostKeyChecking yes",
                "    HostKeyAlias consign-test-sshd",
                "    LogLevel ERROR",
            ]
        return "\n".join(lines) + "\n"


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "consign-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def running_sshd(directory: Path) -> Iterator[Sshd]:
    directory.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key, client_key = directory / "host_key", directory / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = directory / "authorized_keys"
    shutil.copyfile(client_key.with_suffix(".pub"), authorized)
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(
        "consign-test-sshd " + host_key.with_suffix(".pub").read_text().split(" consign-test")[0] + "\n"
    )
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "LogLevel ERROR",
                "Subsystem sftp internal-sftp",
            ]
        )
        + "\n"
    )
    with open(directory / "sshd.log", "wb") as log:
        process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"sshd did not start: {(directory / 'sshd.log').read_text(errors='replace')}"
                )
            time.sleep(0.05)
        import pwd

        yield Sshd(port, directory, client_key, known_hosts, pwd.getpwuid(os.geteuid()).pw_name)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
