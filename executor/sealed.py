"""Opening a bundle's secrets blob with this host's identity.

The host executor decrypts (it has `cryptography`; the bundle's runtime may
not) after the bundle passed every check, and hands the plaintext to the
runtime through a pipe (:mod:`executor.protocol`): it is never written to
the store, the state directory or any other file. The identity is the
host's SSH host key unless ``--identity`` or the host config's
``identity`` name other files.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from . import age
from .bundle import VerifiedBundle
from .canonical import CanonicalError
from .decode import DecodeError
from .errors import BundleError, SecretsKeyError
from .secrets import MAX_SECRETS_BYTES, decode_secrets

DEFAULT_IDENTITY = "/etc/ssh/ssh_host_ed25519_key"
MAX_IDENTITY_BYTES = 1 << 16


def _read_identity(path: str, tag: str) -> list[age.Identity]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IDENTITY_BYTES + 1)
    except OSError as error:
        hint = (
            "run the executor as root (the host key is readable by root only), "
            "or name another key with --identity"
            if error.errno in (errno.EPERM, errno.EACCES)
            else "name the host's key with --identity PATH or 'identity' in the executor config"
        )
        raise SecretsKeyError(
            f"the bundle's secrets need this host's identity, and {path} cannot be read: "
            f"{error.strerror} (the secrets are encrypted to {tag})",
            hint=hint,
        ) from None
    if len(data) > MAX_IDENTITY_BYTES:
        raise SecretsKeyError(
            f"the identity {path} is larger than {MAX_IDENTITY_BYTES} bytes",
            hint="name an OpenSSH private key or an age identity file",
        )
    try:
        return age.read_identities(data)
    except age.AgeError as error:
        raise SecretsKeyError(
            f"the identity {path} is unusable: {error}",
            hint="name an unencrypted ed25519 OpenSSH private key or an age identity file",
        ) from None


def open_secrets(bundle: VerifiedBundle, identities: Sequence[str]) -> bytes | None:
    """The decrypted secrets of a verified bundle, or None when it has none."""
    if bundle.manifest.blob("secrets") is None:
        return None
    ciphertext = bundle.read("secrets", MAX_SECRETS_BYTES + (1 << 20))
    try:
        tag = ", ".join(age.recipient_kinds(ciphertext)) or "no recipient"
    except age.AgeError as error:
        raise BundleError(
            f"the bundle's secrets blob is not an age file: {error}",
            hint="build the bundle again with this consign version",
        ) from None
    keys = [(path, key) for path in identities for key in _read_identity(path, tag)]
    try:
        return age.decrypt(ciphertext, [key for _path, key in keys])
    except age.NoIdentityMatches:
        mine = "; ".join(f"{path}: {key.recipient.text[:60]}..." for path, key in keys)
        raise SecretsKeyError(
            f"this host's identity cannot decrypt the bundle's secrets: they are encrypted "
            f"to {tag}, this host has {mine or 'no key'}",
            hint="set '[host:NAME] recipient' in the environment to this host's key "
            "('executor init' prints it) and build again, or pass the matching --identity",
        ) from None
    except age.AgeError as error:
        raise BundleError(
            f"the bundle's secrets cannot be decrypted: {error}",
            hint="the blob is signed with the bundle, so it was damaged before signing: "
            "build the bundle again",
        ) from None


def secret_values(plaintext: bytes | None) -> frozenset[str]:
    """Every text of the decrypted secrets worth hiding in what a run shows:
    checked here too, so a bundle whose secrets its runtime could not read
    is refused before anything runs."""
    if plaintext is None:
        return frozenset()
    try:
        return decode_secrets(plaintext).values()
    except (CanonicalError, DecodeError) as error:
        raise BundleError(
            f"the bundle's decrypted secrets are invalid: {error}",
            hint="build the bundle again with this consign version, or upgrade the executor",
        ) from None


def identity_paths(given: Sequence[str], configured: str | None) -> tuple[str, ...]:
    """--identity paths, else the host config's (comma-separated), else the host key."""
    if given:
        return tuple(given)
    if configured:
        return tuple(p.strip() for p in configured.split(",") if p.strip())
    return (DEFAULT_IDENTITY,)


def check_secrets(bundle: VerifiedBundle, identities: Sequence[str]) -> int | None:
    """For ``executor verify``: how many values the bundle's secrets hold
    (after decrypting them as apply would), or None when it has none."""
    if bundle.manifest.blob("secrets") is None:
        return None
    return len(secret_values(open_secrets(bundle, identities)))
