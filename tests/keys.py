"""One signing key for the whole test session, and a trust file that names it."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder.signing import allowed_signers_line, generate_key


@dataclass(frozen=True)
class SigningKey:
    private: Path
    trust: Path


@functools.cache
def signing_key() -> SigningKey:
    directory = Path(tempfile.mkdtemp(prefix="consign-test-key-"))
    atexit.register(shutil.rmtree, directory, True)
    private = directory / "builder"
    public = generate_key(private, comment="consign tests")
    trust = directory / "allowed_signers"
    trust.write_text(allowed_signers_line(public) + "\n")
    trust.chmod(0o644)
    return SigningKey(private, trust)


def ssh_keypair(path: Path, passphrase: str = "", kind: str = "ed25519") -> Path:
    """An OpenSSH key pair made by ssh-keygen: `path` and `path.pub`."""
    import subprocess

    extra = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *extra, "-N", passphrase, "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path
