"""Deciding whether this host accepts a bundle, before anything is touched.

In order: the host's trust (allowed signers, revoked keys), the bundle's
framing, one trusted signature over the manifest, the manifest itself, the
target (host and environment), freshness (serial against the highest this
host accepted), and every blob's hash. Only then may the executor unpack.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from .bundle import VerifiedBundle, read_envelope, verify_envelope
from .errors import RollbackError, TrustError, WrongTargetError
from .fs import NotRegularFile, open_regular
from .sshsig import PublicKey, Trust, TrustFileError, parse_allowed_signers, parse_revoked_keys
from .state import DEFAULT_STATE_DIR, HostState, load_state

DEFAULT_TRUST_FILE = "/etc/consign/allowed_signers"
DEFAULT_REVOKED_FILE = "/etc/consign/revoked_keys"
MAX_TRUST_FILE_BYTES = 1 << 20


def this_host() -> str:
    return socket.gethostname()


def _read_trust_file(path: str, what: str) -> str:
    try:
        f, status = open_regular(path)
        with f:
            data = f.read(MAX_TRUST_FILE_BYTES + 1)
    except NotRegularFile as exc:
        raise TrustError(f"the {what} file {path} is {exc.kind}") from None
    except FileNotFoundError:
        raise TrustError(
            f"there is no {what} file at {path}",
            hint="put the line 'bundle keys generate' printed into it, or pass --trust FILE",
        ) from None
    except OSError as exc:
        raise TrustError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022:
        raise TrustError(
            f"the {what} file {path} is writable by others (mode {mode:o})",
            hint=f"chmod 644 {path}: whoever can write it decides what this host runs",
        )
    if status.st_uid not in (0, os.geteuid()):
        # Its owner could make it writable again at any time.
        raise TrustError(
            f"the {what} file {path} belongs to uid {status.st_uid}, not to root",
            hint=f"chown root {path}: whoever owns it decides what this host runs",
        )
    if len(data) > MAX_TRUST_FILE_BYTES:
        raise TrustError(f"the {what} file {path} is larger than {MAX_TRUST_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrustError(f"the {what} file {path} is not UTF-8 text") from None


def revoked_file(given: os.PathLike[str] | str | None) -> str | None:
    """The revoked-keys file to use: the one given, else the default if it exists."""
    if given is not None:
        return str(given)
    return DEFAULT_REVOKED_FILE if os.path.exists(DEFAULT_REVOKED_FILE) else None


def load_trust(trust_file: str, revoked_file: str | None = None) -> tuple[Trust, list[str]]:
    """The allowed signers minus the revoked keys, and notes on skipped lines."""
    text = _read_trust_file(trust_file, "allowed signers")
    try:
        signers, notes = parse_allowed_signers(text)
    except TrustFileError as exc:
        raise TrustError(f"{trust_file}: {exc}", hint="see ssh-keygen(1), ALLOWED SIGNERS") from None
    if not signers:
        raise TrustError(
            f"{trust_file} names no ed25519 key, so no bundle can be trusted",
            hint="add the line 'bundle keys generate' printed",
        )
    revoked: frozenset[PublicKey] = frozenset()
    if revoked_file is not None:
        try:
            revoked = frozenset(parse_revoked_keys(_read_trust_file(revoked_file, "revoked keys")))
        except TrustFileError as exc:
            raise TrustError(f"{revoked_file}: {exc}", hint="one public key per line") from None
    return Trust(tuple(signers), revoked), [f"{trust_file} {note}" for note in notes]


@dataclass(frozen=True)
class VerifyOptions:
    bundle: str
    host: str | None = None
    environment: str | None = None
    trust_file: str = DEFAULT_TRUST_FILE
    revoked_file: str | None = None
    state_directory: str = DEFAULT_STATE_DIR
    allow_downgrade: bool = False
    now: int | None = None


@dataclass(frozen=True)
class Acceptance:
    """A bundle this host may apply, and what accepting it means."""

    bundle: VerifiedBundle
    state: HostState
    # Set when the bundle is older than the newest accepted (--allow-downgrade).
    downgrade_from: int | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """`executor verify --json`: the keys of apply's result that apply to a check."""
        manifest = self.bundle.manifest
        return {
            "host": manifest.host,
            "environment": manifest.environment,
            "bundle": self.bundle.digest,
            "status": "ok",
            "serial": manifest.serial,
            "signer": self.bundle.signer.key.fingerprint(),
            "downgrade_from": self.downgrade_from,
            "notes": list(self.notes),
            "error": None,
        }


def check_target(bundle: VerifiedBundle, identity: str, environment: str | None) -> None:
    manifest = bundle.manifest
    if identity not in (manifest.host, manifest.fqdn):
        raise WrongTargetError(
            f"this bundle is for host {manifest.host!r} ({manifest.fqdn}), "
            f"but this host is {identity!r}",
            where=bundle.path,
            hint="apply the bundle built for this host, or name the host with --host",
        )
    if environment is not None and manifest.environment != environment:
        raise WrongTargetError(
            f"this bundle is for environment {manifest.environment!r}, "
            f"but this host belongs to {environment!r}",
            where=bundle.path,
            hint="apply a bundle of this host's environment; to move the host, "
            f"pass --environment {manifest.environment}",
        )


def accept_bundle(options: VerifyOptions) -> Acceptance:
    """Verify a bundle for this host; raise a RefusedError if it may not apply."""
    now = options.now if options.now is not None else int(time.time())
    trust, notes = load_trust(options.trust_file, options.revoked_file)
    state = load_state(options.state_directory)
    bundle = verify_envelope(read_envelope(options.bundle), trust, now)
    check_target(bundle, options.host or this_host(), options.environment or state.environment)
    serial = bundle.manifest.serial
    downgrade_from = None
    if state.highest_serial is not None and serial < state.highest_serial:
        if not options.allow_downgrade:
            raise RollbackError(
                f"this bundle has serial {serial}, older than serial {state.highest_serial} "
                "which this host accepted before",
                where=bundle.path,
                hint="apply a newer bundle; to roll back on purpose, pass --allow-downgrade "
                "(the downgrade is recorded)",
            )
        downgrade_from = state.highest_serial
    bundle.check_blobs()
    return Acceptance(bundle, state, downgrade_from, tuple(notes))
