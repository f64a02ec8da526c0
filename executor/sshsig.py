"""OpenSSH signatures (SSHSIG) over bundle manifests, and who may make them.

The format is OpenSSH's ``PROTOCOL.sshsig``; ``ssh-keygen -Y verify``
accepts every signature made here and we accept its. Only ed25519 keys are
used. Trust comes from an ``allowed_signers`` file (``ssh-keygen(1)``,
ALLOWED SIGNERS): principals, options (``namespaces=``, ``valid-after=``,
``valid-before=``), key. A list of revoked public keys may retire keys.

    signature blob  = "SSHSIG" u32(1) string(publickey) string(namespace)
                      string(reserved) string(hash_algorithm) string(signature)
    signed data     = "SSHSIG" string(namespace) string(reserved)
                      string(hash_algorithm) string(H(message))
"""

from __future__ import annotations

import base64
import binascii
import calendar
import datetime
import hashlib
import re
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

NAMESPACE = "consign-bundle"
MAGIC = b"SSHSIG"
VERSION = 1
KEY_TYPE = "ssh-ed25519"
HASHES = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
# A signature blob of an ed25519 key is about 300 bytes.
MAX_SIGNATURE_BLOB = 4096


class SignatureFormatError(ValueError):
    """Bytes that are not an SSHSIG signature we can check."""


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class WireReader:
    """Reads SSH wire encoding (RFC 4251: uint32, string); raises SignatureFormatError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        if self.offset + size > len(self.data):
            raise SignatureFormatError("truncated")
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.u32())

    def done(self) -> None:
        if self.offset != len(self.data):
            raise SignatureFormatError(f"{len(self.data) - self.offset} bytes of trailing data")


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An ed25519 public key."""

    raw: bytes

    @property
    def blob(self) -> bytes:
        """The key in SSH wire format."""
        return ssh_string(KEY_TYPE.encode()) + ssh_string(self.raw)

    @classmethod
    def from_blob(cls, blob: bytes) -> PublicKey:
        reader = WireReader(blob)
        kind = reader.string()
        if kind != KEY_TYPE.encode():
            raise SignatureFormatError(f"key type {kind.decode(errors='replace')!r} is not {KEY_TYPE}")
        raw = reader.string()
        reader.done()
        if len(raw) != 32:
            raise SignatureFormatError("an ed25519 key has 32 bytes")
        return cls(raw)

    @classmethod
    def from_openssh(cls, text: str) -> PublicKey:
        """Parse ``ssh-ed25519 AAAA... [comment]``."""
        parts = text.split()
        if len(parts) < 2:
            raise SignatureFormatError("expected 'ssh-ed25519 <base64> [comment]'")
        if parts[0] != KEY_TYPE:
            raise SignatureFormatError(f"key type {parts[0]!r} is not supported; use {KEY_TYPE}")
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except binascii.Error:
            raise SignatureFormatError("the key is not valid base64") from None
        return cls.from_blob(blob)

    def openssh(self) -> str:
        return f"{KEY_TYPE} {base64.b64encode(self.blob).decode()}"

    def fingerprint(self) -> str:
        """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"


@dataclass(frozen=True, slots=True)
class Signature:
    key: PublicKey
    namespace: str
    hash_algorithm: str
    signature: bytes

    def encode(self) -> bytes:
        signature_blob = ssh_string(KEY_TYPE.encode()) + ssh_string(self.signature)
        return (
            MAGIC
            + struct.pack(">I", VERSION)
            + ssh_string(self.key.blob)
            + ssh_string(self.namespace.encode())
            + ssh_string(b"")
            + ssh_string(self.hash_algorithm.encode())
            + ssh_string(signature_blob)
        )

    @classmethod
    def decode(cls, data: bytes) -> Signature:
        if len(data) > MAX_SIGNATURE_BLOB:
            raise SignatureFormatError(f"{len(data)} bytes is too large for a signature")
        reader = WireReader(data)
        if reader.take(len(MAGIC)) != MAGIC:
            raise SignatureFormatError("missing the SSHSIG magic")
        version = reader.u32()
        if version != VERSION:
            raise SignatureFormatError(f"SSHSIG version {version} is not supported")
        key = PublicKey.from_blob(reader.string())
        namespace = reader.string().decode("utf-8", errors="replace")
        reader.string()  # reserved
        hash_algorithm = reader.string().decode("ascii", errors="replace")
        signature_blob = WireReader(reader.string())
        reader.done()
        kind = signature_blob.string()
        if kind != KEY_TYPE.encode():
            raise SignatureFormatError(f"signature type {kind!r} is not {KEY_TYPE}")
        signature = signature_blob.string()
        signature_blob.done()
        if len(signature) != 64:
            raise SignatureFormatError("an ed25519 signature has 64 bytes")
        return cls(key, namespace, hash_algorithm, signature)

    def armored(self) -> str:
        text = base64.b64encode(self.encode()).decode()
        lines = [text[i : i + 70] for i in range(0, len(text), 70)]
        return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"

    @classmethod
    def from_armored(cls, text: str) -> Signature:
        lines = [line.strip() for line in text.strip().splitlines()]
        if len(lines) < 3 or lines[0] != ARMOR_BEGIN or lines[-1] != ARMOR_END:
            raise SignatureFormatError("not an armored SSH signature")
        try:
            return cls.decode(base64.b64decode("".join(lines[1:-1]), validate=True))
        except binascii.Error:
            raise SignatureFormatError("the armored signature is not valid base64") from None


def signed_data(message: bytes, namespace: str = NAMESPACE, hash_algorithm: str = "sha512") -> bytes:
    """What the key actually signs for `message` (PROTOCOL.sshsig)."""
    digest = HASHES[hash_algorithm](message).digest()
    return (
        MAGIC
        + ssh_string(namespace.encode())
        + ssh_string(b"")
        + ssh_string(hash_algorithm.encode())
        + ssh_string(digest)
    )


def verify(signature: Signature, message: bytes, namespace: str = NAMESPACE) -> bool:
    """Whether `signature` is a valid signature of `message` in `namespace`."""
    if signature.namespace != namespace or signature.hash_algorithm not in HASHES:
        return False
    key = Ed25519PublicKey.from_public_bytes(signature.key.raw)
    try:
        key.verify(signature.signature, signed_data(message, namespace, signature.hash_algorithm))
    except InvalidSignature:
        return False
    return True


# -- allowed_signers ----------------------------------------------------------


class TrustFileError(ValueError):
    """A line of an allowed_signers or revoked-keys file we cannot read."""


@dataclass(frozen=True, slots=True)
class AllowedSigner:
    principals: tuple[str, ...]
    key: PublicKey
    namespaces: tuple[str, ...] | None = None
    valid_after: int | None = None
    valid_before: int | None = None
    line: int = 0

    def refusal(self, namespace: str, now: int) -> str | None:
        """Why this entry does not allow signing `namespace` at `now`, or None."""
        if self.namespaces is not None and not _matches_patterns(namespace, self.namespaces):
            return f"its namespaces ({','.join(self.namespaces)}) do not include {namespace}"
        if self.valid_after is not None and now < self.valid_after:
            return f"it is valid only after {_format_time(self.valid_after)}"
        # N.B. like ssh-keygen -Y verify: still valid at the valid-before second.
        if self.valid_before is not None and now > self.valid_before:
            return f"it was valid only until {_format_time(self.valid_before)}"
        return None


def _match_pattern(name: str, pattern: str) -> bool:
    """OpenSSH's match_pattern: '*' any run, '?' any one character, nothing
    else special (fnmatch's [...] classes would match where ssh-keygen does not)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.DOTALL) is not None


def _matches_patterns(name: str, patterns: Sequence[str]) -> bool:
    """OpenSSH pattern lists: '*' and '?' wildcards; a '!' pattern that matches vetoes."""
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _match_pattern(name, pattern[1:] if negated else pattern):
            if negated:
                return False
            matched = True
    return matched


def _format_time(value: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def _parse_time(text: str) -> int:
    """ssh-keygen's YYYYMMDD[HHMM[SS]][Z]: UTC with Z (or z), else local time,
    as OpenSSH reads it."""
    utc = text[-1:] in ("Z", "z")
    digits = text[:-1] if utc else text
    if not digits.isascii() or not digits.isdigit() or len(digits) not in (8, 12, 14):
        raise TrustFileError(f"time {text!r} is not YYYYMMDD[HHMM[SS]][Z]")
    fields = [int(digits[i : i + 2]) for i in range(4, len(digits), 2)]
    year, month, day, hour, minute, second = [int(digits[:4]), *fields, 0, 0, 0][:6]
    try:
        moment = datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise TrustFileError(f"time {text!r} is not a valid date and time") from None
    if utc:
        return calendar.timegm(moment.timetuple())
    return int(time.mktime(moment.timetuple()))


def _split_options(text: str) -> list[str]:
    """Split ``a,b="x,y",c`` at commas outside quotes."""
    options, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            options.append(current)
            current = ""
        else:
            current += char
    if quoted:
        raise TrustFileError("unterminated quote in options")
    options.append(current)
    return [o for o in options if o]


def _tokens(line: str) -> list[str]:
    """Whitespace-separated tokens; quoted parts may contain spaces."""
    tokens, current, quoted = [], "", False
    for char in line:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
            if current:
                tokens.append(current)
                current = ""
        else:
            current += char
    if current:
        tokens.append(current)
    return tokens


def parse_allowed_signers(text: str) -> tuple[list[AllowedSigner], list[str]]:
    """Entries of an allowed_signers file, and notes on lines we skip.

    Lines with another key type or ``cert-authority`` are skipped with a note:
    consign signs with plain ed25519 keys. Malformed lines raise TrustFileError.
    """
    entries: list[AllowedSigner] = []
    notes: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = _tokens(line)
        if len(tokens) < 3:
            raise TrustFileError(f"line {number}: expected 'principals [options] key-type key'")
        # ssh-keygen allows the principals in quotes: "alice,bob".
        principals = tuple(p for p in tokens[0].strip('"').split(",") if p)
        options: list[str] = []
        rest = tokens[1:]
        if rest[0] != KEY_TYPE and not rest[0].startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                options = _split_options(rest[0])
            except TrustFileError as exc:
                raise TrustFileError(f"line {number}: {exc}") from None
            rest = rest[1:]
        if len(rest) < 2:
            raise TrustFileError(f"line {number}: missing key type or key")
        if any(o.lower() == "cert-authority" for o in options):
            notes.append(
                f"line {number}: skipped (a certificate authority; consign trusts plain "
                f"{KEY_TYPE} keys, not certificates)"
            )
            continue
        if rest[0] != KEY_TYPE:
            notes.append(f"line {number}: skipped ({rest[0]} keys do not sign bundles; only {KEY_TYPE})")
            continue
        try:
            key = PublicKey.from_openssh(f"{rest[0]} {rest[1]}")
        except SignatureFormatError as exc:
            raise TrustFileError(f"line {number}: {exc}") from None
        namespaces: tuple[str, ...] | None = None
        valid_after = valid_before = None
        seen: set[str] = set()
        for option in options:
            name, _, value = option.partition("=")
            name = name.lower()
            if name not in ("namespaces", "valid-after", "valid-before"):
                raise TrustFileError(f"line {number}: unknown option {name!r}")
            if name in seen:
                raise TrustFileError(f"line {number}: option {name!r} appears twice")
            seen.add(name)
            # N.B. ssh-keygen refuses these values unquoted; so do we, so that
            # both tools read the same file the same way.
            if len(value) < 2 or not value.startswith('"') or not value.endswith('"'):
                raise TrustFileError(
                    f'line {number}: the value of {name!r} must be in double quotes ({name}="...")'
                )
            value = value[1:-1]
            try:
                if name == "namespaces":
                    namespaces = tuple(v for v in value.split(",") if v)
                elif name == "valid-after":
                    valid_after = _parse_time(value)
                else:
                    valid_before = _parse_time(value)
            except TrustFileError as exc:
                raise TrustFileError(f"line {number}: {name}: {exc}") from None
        entries.append(AllowedSigner(principals, key, namespaces, valid_after, valid_before, number))
    return entries, notes


def parse_revoked_keys(text: str) -> set[PublicKey]:
    """Public keys, one per line (``ssh-ed25519 AAAA... [comment]``)."""
    keys = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.add(PublicKey.from_openssh(line))
        except SignatureFormatError as exc:
            raise TrustFileError(f"line {number}: {exc}") from None
    return keys


@dataclass(frozen=True)
class Trust:
    """Who may sign bundles: allowed signers minus revoked keys."""

    signers: tuple[AllowedSigner, ...]
    revoked: frozenset[PublicKey] = frozenset()

    def check(
        self, signatures: Sequence[Signature], message: bytes, now: int, namespace: str = NAMESPACE
    ) -> tuple[AllowedSigner | None, list[str]]:
        """The first signer that vouches for `message`, and why others did not."""
        reasons: list[str] = []
        for signature in signatures:
            fingerprint = signature.key.fingerprint()
            if signature.namespace != namespace:
                reasons.append(f"{fingerprint}: signed for namespace {signature.namespace!r}, not {namespace!r}")
                continue
            if not verify(signature, message, namespace):
                reasons.append(f"{fingerprint}: the signature does not match the manifest")
                continue
            if signature.key in self.revoked:
                reasons.append(f"{fingerprint}: the key is revoked")
                continue
            matches = [s for s in self.signers if s.key == signature.key]
            if not matches:
                reasons.append(f"{fingerprint}: the key is not in the allowed signers")
                continue
            for entry in matches:
                refusal = entry.refusal(namespace, now)
                if refusal is None:
                    return entry, reasons
                reasons.append(f"{fingerprint}: allowed signers line {entry.line}: {refusal}")
        return None, reasons
