"""The age file format (age-encryption.org/v1) for the secrets blob.

A bundle's secrets are encrypted to one recipient, the host's own key: an
``ssh-ed25519`` public key (the host's SSH host key) or an ``age1...`` X25519
key. The host decrypts with the matching private key. The format is age's,
so ``age -d -i /etc/ssh/ssh_host_ed25519_key`` reads the blob too.

Why not pyrage: the builder's bytes must not depend on chance (same inputs,
same bundle), and age draws its file key, ephemeral key and payload nonce at
random. :func:`encrypt` takes them from a seed instead, which the builder
derives from the plaintext and every secret of the environment (see
builder.secrets); equal inputs give equal ciphertext, and only someone who
knows every secret of the environment could predict it. The host executor
needs only `cryptography`, which it has for signatures.

Only what the secrets blob needs: one X25519 or ssh-ed25519 stanza per
file when encrypting; X25519 and ssh-ed25519 identities (an age identity
file, an unencrypted OpenSSH private key) when decrypting.
"""

from __future__ import annotations

import base64
import enum
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .sshsig import PublicKey, SignatureFormatError

INTRO = b"age-encryption.org/v1\n"
X25519_LABEL = b"age-encryption.org/v1/X25519"
SSH_LABEL = b"age-encryption.org/v1/ssh-ed25519"
CHUNK = 64 * 1024
TAG = 16
BODY_COLUMNS = 64
# Far more than a header with a few stanzas needs.
MAX_HEADER = 64 * 1024
_ZERO_NONCE = bytes(12)
# 2**255 - 19, the field of Curve25519 and Ed25519.
_P = 2**255 - 19
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


class KeyType(enum.Enum):
    """The recipient types this module speaks: the stanza's first argument."""

    X25519 = "X25519"
    SSH_ED25519 = "ssh-ed25519"


class AgeError(ValueError):
    """A key or a file that is not what age expects; the message says what."""


class NoIdentityMatches(AgeError):
    """None of the given identities is a recipient of the file."""


# --- keys -----------------------------------------------------------------


def _bech32_polymod(values: Sequence[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            check ^= generator[bit] if (top >> bit) & 1 else 0
    return check


def _bech32_decode(text: str, prefix: str) -> bytes:
    """The 32 bytes of an age key in Bech32 (BIP 173, no length limit)."""
    if text.lower() != text and text.upper() != text:
        raise AgeError("mixes upper and lower case")
    text = text.lower()
    human, separator, data = text.rpartition("1")
    if not separator or human != prefix or len(data) < 6:
        raise AgeError(f"does not start with {prefix!r}")
    try:
        values = [_BECH32.index(char) for char in data]
    except ValueError:
        raise AgeError("holds a character Bech32 does not use") from None
    expanded = [ord(c) >> 5 for c in human] + [0] + [ord(c) & 31 for c in human]
    if _bech32_polymod(expanded + values) != 1:
        raise AgeError("has a bad checksum (mistyped?)")
    accumulator = bits = 0
    out = bytearray()
    for value in values[:-6]:
        accumulator = accumulator << 5 | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append(accumulator >> bits & 0xFF)
    if bits >= 5 or accumulator & ((1 << bits) - 1):
        raise AgeError("has stray padding bits")
    if len(out) != 32:
        raise AgeError(f"holds {len(out)} bytes, not 32")
    return bytes(out)


def _bech32_encode(prefix: str, data: bytes) -> str:
    values = []
    accumulator = bits = 0
    for byte in data:
        accumulator = accumulator << 8 | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            values.append(accumulator >> bits & 31)
    if bits:
        values.append(accumulator << (5 - bits) & 31)
    expanded = [ord(c) >> 5 for c in prefix] + [0] + [ord(c) & 31 for c in prefix]
    check = _bech32_polymod(expanded + values + [0] * 6) ^ 1
    values += [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    return prefix + "1" + "".join(_BECH32[v] for v in values)


def _montgomery(edwards: bytes) -> bytes:
    """An Ed25519 public key as the X25519 key of the same point."""
    y = int.from_bytes(edwards, "little") & ((1 << 255) - 1)
    if y >= _P or y == 1:
        raise AgeError("is not a usable ed25519 key")
    u = (1 + y) * pow(1 - y, _P - 2, _P) % _P
    return u.to_bytes(32, "little")


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _x25519(scalar: bytes, point: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(scalar).exchange(
            X25519PublicKey.from_public_bytes(point)
        )
    except ValueError:
        # A low-order point: no shared secret (age refuses it too).
        raise AgeError("the key exchange gave no shared secret") from None


@dataclass(frozen=True, slots=True)
class Recipient:
    """Whom a file is encrypted to: an ``age1...`` or ``ssh-ed25519`` key."""

    text: str
    kind: KeyType
    # The X25519 public key (for ssh-ed25519: the converted key).
    point: bytes
    # ssh-ed25519 only: the key in SSH wire format.
    ssh_blob: bytes = b""

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """Raises AgeError naming what is wrong (never quoting the key)."""
        text = text.strip()
        if text.startswith("age1"):
            try:
                return cls(text, KeyType.X25519, _bech32_decode(text, "age"))
            except AgeError as error:
                raise AgeError(f"the age key {error}") from None
        if text.startswith("ssh-ed25519"):
            try:
                key = PublicKey.from_openssh(text)
            except SignatureFormatError as error:
                raise AgeError(f"the ssh-ed25519 key is invalid: {error}") from None
            canonical = key.openssh()
            return cls(canonical, KeyType.SSH_ED25519, _montgomery(key.raw), key.blob)
        kind = text.split(maxsplit=1)[0] if text else "(empty)"
        raise AgeError(
            f"a recipient must be an age1... key or an ssh-ed25519 public key, found {kind[:20]!r}"
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """A private key that may decrypt: X25519, or an ssh-ed25519 key's scalar."""

    kind: KeyType
    scalar: bytes
    recipient: Recipient

    @classmethod
    def from_age(cls, text: str) -> Identity:
        try:
            secret = _bech32_decode(text.strip(), "age-secret-key-")
        except AgeError as error:
            raise AgeError(f"the age identity {error}") from None
        public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
        return cls(
            KeyType.X25519, secret, Recipient(_bech32_encode("age", public), KeyType.X25519, public)
        )

    @classmethod
    def from_ssh(cls, data: bytes) -> Identity:
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except (ValueError, TypeError, NotImplementedError) as error:
            reason = "it is encrypted" if "password" in str(error).lower() else str(error)
            raise AgeError(f"cannot read the OpenSSH private key: {reason}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AgeError("the OpenSSH private key is not an ed25519 key")
        seed = key.private_bytes_raw()
        public = PublicKey(key.public_key().public_bytes_raw())
        return cls(
            KeyType.SSH_ED25519,
            hashlib.sha512(seed).digest()[:32],
            Recipient(public.openssh(), KeyType.SSH_ED25519, _montgomery(public.raw), public.blob),
        )


def read_identities(data: bytes) -> list[Identity]:
    """The identities of an identity file: an OpenSSH private key, or age
    ``AGE-SECRET-KEY-1...`` lines (comments and blank lines allowed)."""
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
        return [Identity.from_ssh(data)]
    text = data.decode("utf-8", "replace")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith("AGE-SECRET-KEY-1"):
            raise AgeError(
                "expected an OpenSSH private key or AGE-SECRET-KEY-1... lines"
            )
        found.append(Identity.from_age(line))
    if not found:
        raise AgeError("holds no key")
    return found


# --- encrypting -----------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    text = data.decode("ascii", "replace")
    if "=" in text or any(c.isspace() for c in text):
        raise AgeError("the header holds base64 with padding or spaces")
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise AgeError("the header holds invalid base64") from None
    if _b64(decoded) != data:
        raise AgeError("the header holds non-canonical base64")
    return decoded


def _wrap_body(body: bytes) -> bytes:
    encoded = _b64(body)
    lines = [encoded[i : i + BODY_COLUMNS] for i in range(0, len(encoded), BODY_COLUMNS)]
    if not lines or len(lines[-1]) == BODY_COLUMNS:
        lines.append(b"")
    return b"\n".join(lines) + b"\n"


def _derive(seed: bytes, label: bytes, size: int) -> bytes:
    return hmac.new(seed, b"consign-age/" + label, hashlib.sha256).digest()[:size]


def _stanza(recipient: Recipient, file_key: bytes, ephemeral: bytes) -> bytes:
    share = X25519PrivateKey.from_private_bytes(ephemeral).public_key().public_bytes_raw()
    secret = _x25519(ephemeral, recipient.point)
    salt = share + recipient.point
    if recipient.kind is KeyType.X25519:
        args = b"X25519 " + _b64(share)
        label = X25519_LABEL
    else:
        tweak = _hkdf(b"", recipient.ssh_blob, SSH_LABEL)
        secret = _x25519(tweak, secret)
        tag = hashlib.sha256(recipient.ssh_blob).digest()[:4]
        args = b"ssh-ed25519 " + _b64(tag) + b" " + _b64(share)
        label = SSH_LABEL
    body = ChaCha20Poly1305(_hkdf(secret, salt, label)).encrypt(_ZERO_NONCE, file_key, None)
    return b"-> " + args + b"\n" + _wrap_body(body)


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt(plaintext: bytes, recipient: Recipient, seed: bytes) -> bytes:
    """`plaintext` as an age file to `recipient`, its randomness drawn from
    `seed` (at least 32 unpredictable bytes; equal seeds, equal output)."""
    if len(seed) < 32:
        raise ValueError("the seed must have at least 32 bytes")
    # Bound to the plaintext and the recipient: one seed used for two
    # plaintexts still never repeats a file key (and so a payload nonce).
    seed = hmac.new(
        seed, hashlib.sha256(plaintext).digest() + recipient.point, hashlib.sha256
    ).digest()
    file_key = _derive(seed, b"file-key", 16)
    header = INTRO + _stanza(recipient, file_key, _derive(seed, b"ephemeral", 32)) + b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    nonce = _derive(seed, b"payload-nonce", 16)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    out = [header, b" ", _b64(mac), b"\n", nonce]
    chunks = [plaintext[i : i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    for counter, chunk in enumerate(chunks):
        out.append(aead.encrypt(_chunk_nonce(counter, counter == len(chunks) - 1), chunk, None))
    return b"".join(out)


# --- decrypting -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stanza:
    kind: str
    args: tuple[bytes, ...]
    body: bytes


def read_header(data: bytes) -> tuple[list[Stanza], bytes, bytes, int]:
    """The stanzas, the bytes the MAC covers, the MAC, and where the payload starts."""
    if not data.startswith(INTRO):
        raise AgeError("it is not an age file (no age-encryption.org/v1 line)")
    position = len(INTRO)
    stanzas: list[Stanza] = []

    def line() -> bytes:
        nonlocal position
        end = data.find(b"\n", position, position + MAX_HEADER)
        if end < 0:
            raise AgeError("its header is truncated or too long")
        text, position = data[position:end], end + 1
        return text

    while True:
        start = position
        text = line()
        if text.startswith(b"---"):
            if not text.startswith(b"--- "):
                raise AgeError("its header's MAC line is malformed")
            return stanzas, data[:start] + b"---", _unb64(text[4:]), position
        if not text.startswith(b"-> "):
            raise AgeError("its header holds a line that is neither a stanza nor the MAC")
        parts = text[3:].split(b" ")
        if not parts[0] or any(not part for part in parts):
            raise AgeError("its header holds an empty stanza argument")
        body = []
        while True:
            chunk = line()
            if len(chunk) > BODY_COLUMNS:
                raise AgeError("a stanza body line is longer than 64 columns")
            body.append(chunk)
            if len(chunk) < BODY_COLUMNS:
                break
        stanzas.append(
            Stanza(parts[0].decode("ascii", "replace"), tuple(parts[1:]), _unb64(b"".join(body)))
        )
        if len(stanzas) > 64:
            raise AgeError("its header holds more than 64 stanzas")


def _unwrap(stanza: Stanza, identity: Identity) -> bytes | None:
    if stanza.kind != identity.kind.value:
        return None
    recipient = identity.recipient
    if identity.kind is KeyType.X25519:
        if len(stanza.args) != 1:
            raise AgeError("an X25519 stanza takes one argument")
        share = _unb64(stanza.args[0])
        label = X25519_LABEL
        secret = _x25519(identity.scalar, share) if len(share) == 32 else b""
    else:
        if len(stanza.args) != 2:
            raise AgeError("an ssh-ed25519 stanza takes two arguments")
        if _unb64(stanza.args[0]) != hashlib.sha256(recipient.ssh_blob).digest()[:4]:
            return None
        share = _unb64(stanza.args[1])
        label = SSH_LABEL
        secret = b""
        if len(share) == 32:
            tweak = _hkdf(b"", recipient.ssh_blob, SSH_LABEL)
            secret = _x25519(tweak, _x25519(identity.scalar, share))
    if len(share) != 32 or len(stanza.body) != 16 + TAG:
        raise AgeError(f"an {stanza.kind} stanza has the wrong size")
    try:
        return ChaCha20Poly1305(_hkdf(secret, share + recipient.point, label)).decrypt(
            _ZERO_NONCE, stanza.body, None
        )
    except InvalidTag:
        return None


def recipient_kinds(data: bytes) -> list[str]:
    """What the header says about whom the file is encrypted to."""
    stanzas, _covered, _mac, _start = read_header(data)
    return [
        f"{s.kind} key tagged {s.args[0].decode('ascii', 'replace')}"
        if s.kind == KeyType.SSH_ED25519.value and s.args
        else f"an {s.kind} key"
        for s in stanzas
    ]


def decrypt(data: bytes, identities: Sequence[Identity]) -> bytes:
    """The plaintext of an age file; AgeError when it is damaged,
    NoIdentityMatches when none of `identities` is a recipient."""
    stanzas, covered, mac, start = read_header(data)
    file_key = None
    for stanza in stanzas:
        for identity in identities:
            file_key = _unwrap(stanza, identity)
            if file_key is not None:
                break
        if file_key is not None:
            break
    if file_key is None:
        raise NoIdentityMatches("none of the identities is a recipient of the file")
    expected = hmac.new(_hkdf(file_key, b"", b"header"), covered, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, mac):
        raise AgeError("its header was changed (the MAC does not match)")
    if len(data) < start + 16 + TAG:
        raise AgeError("its payload is truncated")
    nonce = data[start : start + 16]
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    payload = data[start + 16 :]
    size = CHUNK + TAG
    out = []
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    for counter, chunk in enumerate(chunks):
        last = counter == len(chunks) - 1
        if len(chunk) < TAG or (last and counter > 0 and len(chunk) == TAG):
            raise AgeError("its payload is truncated or has an empty last chunk")
        try:
            out.append(aead.decrypt(_chunk_nonce(counter, last), chunk, None))
        except InvalidTag:
            raise AgeError("its payload was changed or truncated") from None
    return b"".join(out)

