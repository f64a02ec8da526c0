"""The builder's signing keys: where they come from and how they sign.

A signing key is an ed25519 key in one of two places:

- an unencrypted OpenSSH private key file: it signs in this process;
- ssh-agent, named by the key's ``.pub`` file: the secret stays in the agent
  (protocol: draft-miller-ssh-agent), so encrypted keys and hardware-backed
  agents work too.

Either way a signature is an SSHSIG (namespace ``consign-bundle``, sha512)
that ``ssh-keygen -Y verify`` accepts, and ed25519 makes it deterministic:
the same key and message give the same bytes, so builds stay reproducible.

    signers = load_signers([Path("keys/builder"), Path("~/.ssh/ci.pub")])
    signatures = sign_all(signers, manifest)

Hosts trust a key through a line of ``/etc/consign/allowed_signers``, as
:func:`allowed_signers_line` writes it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import shlex
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from executor.fs import NotRegularFile, fsync_directory, open_regular, write_atomic
from executor.sshsig import (
    KEY_TYPE,
    NAMESPACE,
    PublicKey,
    Signature,
    SignatureFormatError,
    WireReader,
    signed_data,
    ssh_string,
)

from .errors import SigningKeyError

HASH_ALGORITHM = "sha512"
# An ed25519 key file is about 400 bytes, a 16384-bit RSA key file 13 KiB.
MAX_KEY_FILE = 64 * 1024
# Every exchange with ssh-agent ends within this many seconds. Generous,
# because a key added with `ssh-add -c` waits for the user to confirm.
AGENT_TIMEOUT = 30.0
# An identities answer with a hundred RSA keys is about 60 KiB.
MAX_AGENT_MESSAGE = 256 * 1024

PRIVATE_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
PRIVATE_END = "-----END OPENSSH PRIVATE KEY-----"
PRIVATE_MAGIC = b"openssh-key-v1\0"

# With their article, for "PATH is an RSA key (ssh-rsa)".
KEY_TYPE_NAMES = {
    "ssh-rsa": "an RSA",
    "ssh-dss": "a DSA",
    "ecdsa-sha2-nistp256": "an ECDSA",
    "ecdsa-sha2-nistp384": "an ECDSA",
    "ecdsa-sha2-nistp521": "an ECDSA",
    "sk-ssh-ed25519@openssh.com": "an ed25519 security-key (FIDO)",
    "sk-ecdsa-sha2-nistp256@openssh.com": "an ECDSA security-key (FIDO)",
    "ssh-ed25519-cert-v01@openssh.com": "an ed25519 certificate",
}

SSH_AGENT_FAILURE = 5
SSH_AGENTC_REQUEST_IDENTITIES = 11
SSH_AGENT_IDENTITIES_ANSWER = 12
SSH_AGENTC_SIGN_REQUEST = 13
SSH_AGENT_SIGN_RESPONSE = 14


class Signer(Protocol):
    """One ed25519 key that makes SSHSIG signatures of bundle manifests."""

    @property
    def key(self) -> PublicKey: ...

    @property
    def source(self) -> str:
        """Where the key came from, for messages: a path, "PATH (agent)"."""
        ...

    def sign(self, message: bytes) -> Signature:
        """An SSHSIG over `message`: namespace consign-bundle, sha512."""
        ...


@dataclass(frozen=True, slots=True)
class FileSigner:
    """Signs in this process with the secret of a private key file."""

    key: PublicKey
    source: str
    private: Ed25519PrivateKey = field(repr=False, compare=False)

    def sign(self, message: bytes) -> Signature:
        data = signed_data(message, NAMESPACE, HASH_ALGORITHM)
        return Signature(self.key, NAMESPACE, HASH_ALGORITHM, self.private.sign(data))


@dataclass(frozen=True, slots=True)
class AgentSigner:
    """Asks the ssh-agent at `socket_path` to sign with `key`."""

    key: PublicKey
    source: str
    socket_path: str
    timeout: float = AGENT_TIMEOUT

    def sign(self, message: bytes) -> Signature:
        data = signed_data(message, NAMESPACE, HASH_ALGORITHM)
        try:
            signature = _agent_sign(self.socket_path, self.key, data, self.timeout)
        except _AgentError as exc:
            raise _agent_error(self.source, self.socket_path, exc) from None
        if signature is None:
            raise SigningKeyError(
                f"ssh-agent at {self.socket_path} refused to sign with {self.source} "
                f"({self.key.fingerprint()})",
                hint="was the key removed from the agent (`ssh-add -l` lists what it holds), "
                "or added with `ssh-add -c` and the confirmation declined?",
            )
        try:
            Ed25519PublicKey.from_public_bytes(self.key.raw).verify(signature, data)
        except InvalidSignature:
            raise SigningKeyError(
                f"ssh-agent at {self.socket_path} returned a signature that does not verify "
                f"with the key of {self.source} ({self.key.fingerprint()})",
                hint="is SSH_AUTH_SOCK the socket of a genuine ssh-agent?",
            ) from None
        return Signature(self.key, NAMESPACE, HASH_ALGORITHM, signature)


# -- loading -------------------------------------------------------------------


def load_signer(path: Path) -> Signer:
    """The signer for `path`: a private key file, or a ``.pub`` file whose
    key ssh-agent (``SSH_AUTH_SOCK``) holds."""
    if path.name.endswith(".pub"):
        return _load_agent_signer(path)
    return _load_file_signer(path)


def load_signers(paths: Sequence[Path]) -> list[Signer]:
    """One signer per path, in order; the same key twice is an error."""
    signers: list[Signer] = []
    for path in paths:
        signer = load_signer(path)
        for earlier in signers:
            if earlier.key == signer.key:
                raise SigningKeyError(
                    f"signing keys {earlier.source} and {signer.source} are the same key "
                    f"({signer.key.fingerprint()})",
                    hint="name each key once; a second signature by the same key adds nothing",
                )
        signers.append(signer)
    return signers


def sign_all(signers: Sequence[Signer], message: bytes) -> tuple[Signature, ...]:
    """A signature of `message` by each signer, in the order given."""
    if not signers:
        raise SigningKeyError(
            "no signing key to sign the bundle with",
            hint="name at least one key: a private key file, or a .pub file of a key in ssh-agent",
        )
    return tuple(signer.sign(message) for signer in signers)


def read_public_key(path: Path) -> PublicKey:
    """The public key in a ``.pub`` file, or of an OpenSSH private key file
    (read from its unencrypted header, so encrypted keys work too)."""
    data, _ = _read_file(path, "key file")
    text = _text(data)
    if text is not None and text.lstrip().startswith(PRIVATE_BEGIN):
        parsed = _parse_private_file(path, text)
        _require_ed25519(path, parsed.key_type)
        return _public_from_blob(path, parsed.public_blob)
    return _parse_public_file(path, text)


def _load_file_signer(path: Path) -> FileSigner:
    data, status = _read_file(path, "signing key")
    text = _text(data)
    if text is None or not text.lstrip().startswith(PRIVATE_BEGIN):
        raise _not_a_private_key(path, text)
    parsed = _parse_private_file(path, text)
    _require_ed25519(path, parsed.key_type)
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        # N.B. like ssh(1): a secret others can read is refused, encrypted or not.
        raise SigningKeyError(
            f"permissions {mode:04o} for {path} are too open",
            hint=f"a private key must be readable by its owner only: chmod 600 {_q(path)}",
        )
    if parsed.cipher != "none":
        public = path.with_name(path.name + ".pub")
        make_public = (
            ""
            if os.path.exists(public.expanduser())
            else f" (write it first with `ssh-keygen -y -f {_q(path)} > {_q(public)}`)"
        )
        raise SigningKeyError(
            f"signing key {path} is encrypted with a passphrase ({parsed.cipher})",
            hint=f"load it into ssh-agent with `ssh-add {_q(path)}` and pass {public} "
            f"to sign through the agent{make_public}",
        )
    key = _public_from_blob(path, parsed.public_blob)
    try:
        private = load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise _damaged(path, str(exc)) from None
    if not isinstance(private, Ed25519PrivateKey):
        raise _damaged(path, "its secret is not an ed25519 key")
    if private.public_key().public_bytes_raw() != key.raw:
        raise _damaged(path, "its secret does not belong to its public key")
    return FileSigner(key, str(path), private)


def _load_agent_signer(path: Path) -> AgentSigner:
    # N.B. strictly a public key: a private key named .pub is a mix-up to point out.
    data, _ = _read_file(path, "signing key")
    key = _parse_public_file(path, _text(data))
    private = path.with_name(path.name.removesuffix(".pub"))
    socket_path = os.environ.get("SSH_AUTH_SOCK", "")
    if not socket_path:
        raise SigningKeyError(
            f"cannot sign with {path} through ssh-agent: SSH_AUTH_SOCK is not set",
            hint=f'start an agent (`eval "$(ssh-agent)"`) and `ssh-add {_q(private)}`, '
            f"or pass the private key file {private} instead of the .pub",
        )
    source = f"{path} (agent)"
    timeout = AGENT_TIMEOUT
    try:
        blobs = _agent_identities(socket_path, timeout)
    except _AgentError as exc:
        raise _agent_error(source, socket_path, exc) from None
    if key.blob not in blobs:
        raise SigningKeyError(
            f"ssh-agent at {socket_path} does not hold the key of {path} ({key.fingerprint()}); "
            f"it holds {len(blobs)} other key{'' if len(blobs) == 1 else 's'}",
            hint=f"add it with `ssh-add {_q(private)}`; `ssh-add -l` lists the keys the agent holds",
        )
    return AgentSigner(key, source, socket_path, timeout)


# -- key files -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PrivateKeyFile:
    """The clear header of an OpenSSH private key (PROTOCOL.key)."""

    cipher: str
    key_type: str
    public_blob: bytes


def _q(path: Path) -> str:
    return shlex.quote(str(path))


def _read_file(path: Path, role: str) -> tuple[bytes, os.stat_result]:
    """The bytes of a small regular file, and its status from the same open."""
    try:
        f, status = open_regular(str(path.expanduser()))
    except FileNotFoundError:
        if path.name.endswith(".pub"):
            hint = f"`ssh-add -L` lists the public keys ssh-agent holds; save the one to use as {path}"
        else:
            hint = f"create one with `bundle keys generate {_q(path)}`"
        raise SigningKeyError(f"{role} {path} does not exist", hint=hint) from None
    except OSError as exc:
        raise SigningKeyError(
            f"cannot read {role} {path}: {exc.strerror}",
            hint="check the path and the permissions of the file and its directories",
        ) from None
    except NotRegularFile as exc:
        raise SigningKeyError(f"{role} {path} is {exc.kind}", hint="name the key file itself") from None
    with f:
        try:
            data = f.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise SigningKeyError(f"cannot read {role} {path}: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise SigningKeyError(
            f"{role} {path} is not an OpenSSH key: it is larger than {MAX_KEY_FILE // 1024} KiB",
            hint="name the key file itself",
        )
    return data, status


def _text(data: bytes) -> str | None:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return None


def _describe(text: str | None) -> str:
    """What a file that is no OpenSSH private key seems to hold."""
    if text is None:
        return "binary data"
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        return "an empty file"
    if first.startswith(PRIVATE_BEGIN):
        return "an OpenSSH private key"
    if first.startswith("-----BEGIN ") and first.endswith("PRIVATE KEY-----"):
        return f"a PEM private key ({first.strip('-').removeprefix('BEGIN ')})"
    if len(first.split()) >= 2 and first.split()[1].startswith("AAAA"):
        return f"a public key ({first.split()[0]})"
    return "text that is not a key"


def _not_a_private_key(path: Path, text: str | None) -> SigningKeyError:
    what = _describe(text)
    if what.startswith("a public key"):
        hint = f"to sign through ssh-agent, name the public key with a .pub suffix ({path}.pub)"
    elif what.startswith("a PEM"):
        hint = f"rewrite it in OpenSSH format with `ssh-keygen -p -f {_q(path)}`"
    else:
        hint = (
            "name a private key written by `ssh-keygen -t ed25519`, "
            "or its .pub file to sign through ssh-agent"
        )
    return SigningKeyError(f"{path} is not an OpenSSH private key: it holds {what}", hint=hint)


def _damaged(path: Path, detail: str) -> SigningKeyError:
    return SigningKeyError(
        f"signing key {path} is a damaged OpenSSH private key: {detail}",
        hint="restore the key from a backup, or create a new one with `ssh-keygen -t ed25519`",
    )


def _parse_private_file(path: Path, text: str) -> _PrivateKeyFile:
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != PRIVATE_BEGIN or lines[-1] != PRIVATE_END:
        raise _damaged(path, f"the text between {PRIVATE_BEGIN} and {PRIVATE_END} is incomplete")
    try:
        blob = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise _damaged(path, "it is not valid base64") from None
    try:
        wire = WireReader(blob)
        if wire.take(len(PRIVATE_MAGIC)) != PRIVATE_MAGIC:
            raise SignatureFormatError("it does not start with openssh-key-v1")
        cipher = wire.string().decode("ascii", errors="replace")
        wire.string()  # kdf name
        wire.string()  # kdf options
        count = wire.u32()
        if count != 1:
            raise SignatureFormatError(f"it holds {count} keys; OpenSSH writes one per file")
        public_blob = wire.string()
        wire.string()  # the (perhaps encrypted) private section
        wire.done()
        key_type = WireReader(public_blob).string().decode("ascii", errors="replace")
    except SignatureFormatError as exc:
        raise _damaged(path, str(exc)) from None
    return _PrivateKeyFile(cipher, key_type, public_blob)


def _require_ed25519(path: Path, key_type: str) -> None:
    if key_type == KEY_TYPE:
        return
    name = KEY_TYPE_NAMES.get(key_type)
    kind = f"{name} key ({key_type})" if name else f"a {key_type!r} key"
    raise SigningKeyError(
        f"{path} is {kind}; consign signs with ed25519 keys only",
        hint="create one with `ssh-keygen -t ed25519 -f KEYFILE` "
        "and add its allowed_signers line on the hosts",
    )


def _public_from_blob(path: Path, blob: bytes) -> PublicKey:
    try:
        return PublicKey.from_blob(blob)
    except SignatureFormatError as exc:
        raise _damaged(path, str(exc)) from None


def _parse_public_file(path: Path, text: str | None) -> PublicKey:
    lines = [] if text is None else [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    parts = lines[0].split() if len(lines) == 1 else []
    if len(parts) < 2 or not parts[1].startswith("AAAA"):
        what = _describe(text)
        if "private key" in what:
            hint = "a .pub file names a key in ssh-agent; a private key file signs under a name without .pub"
        else:
            hint = (
                "expected one line 'ssh-ed25519 AAAA... comment', as in the .pub file "
                "ssh-keygen writes beside a private key"
            )
        raise SigningKeyError(f"{path} is not an OpenSSH public key: it holds {what}", hint=hint)
    _require_ed25519(path, parts[0])
    try:
        return PublicKey.from_openssh(lines[0])
    except SignatureFormatError as exc:
        raise SigningKeyError(
            f"{path} is not a valid ed25519 public key: {exc}",
            hint="restore it with `ssh-keygen -y -f PRIVATE_KEY`, or `ssh-add -L` for keys in ssh-agent",
        ) from None


# -- writing keys --------------------------------------------------------------


def generate_key(path: Path, *, comment: str = "consign builder") -> PublicKey:
    """Write a new ed25519 key pair: `path` (OpenSSH private key, 0600,
    unencrypted) and ``path.pub`` (0644); missing directories get 0700.

    Refuses to replace an existing key file: that would lock out every host
    that trusts the old key.
    """
    _check_one_line("key comment", comment)
    path = path.expanduser()
    public_path = path.with_name(path.name + ".pub")
    for target in (path, public_path):
        if os.path.lexists(target):
            raise _exists(target)
    private = Ed25519PrivateKey.generate()
    key = PublicKey(private.public_key().public_bytes_raw())
    public_text = f"{key.openssh()} {comment}" if comment else key.openssh()
    try:
        _make_directories(path.parent)
        _write_new(path, _encode_private(private, key, comment), 0o600)
        try:
            _write_new(public_path, f"{public_text}\n".encode(), 0o644)
        except BaseException:
            os.unlink(path)
            raise
        fsync_directory(str(path.parent))
    except FileExistsError as exc:
        raise _exists(Path(exc.filename or path)) from None
    except OSError as exc:
        raise SigningKeyError(
            f"cannot write signing key {path}: {exc.strerror}"
            + (f" ({exc.filename})" if exc.filename else ""),
            hint="check that the directory exists and is writable",
        ) from None
    return key


def _exists(path: Path) -> SigningKeyError:
    return SigningKeyError(
        f"{path} already exists; refusing to overwrite a key",
        hint="choose another path, or move the old key away first "
        "(hosts trust it by its allowed_signers line)",
    )


def _make_directories(directory: Path) -> None:
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):
            created.mkdir(mode=0o700)
            os.chmod(created, 0o700)  # not narrowed further by an odd umask


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `data` and `mode`, or fail if it exists.

    N.B. not executor.fs.stage_file: that copies the mode of a file already at
    `path`, and a secret must never sit in a file with a wider mode, not even
    briefly. The temporary file starts as 0600 (mkstemp) and gets its mode
    before any byte is written; link(2) then refuses to replace a file that
    appeared meanwhile, where rename(2) would silently overwrite it.
    """
    fd, temporary = tempfile.mkstemp(prefix=".consign-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _encode_private(private: Ed25519PrivateKey, key: PublicKey, comment: str) -> bytes:
    """The OpenSSH private key format (PROTOCOL.key), unencrypted, as
    ssh-keygen writes it; unlike cryptography's writer, it keeps the comment."""
    check = os.urandom(4)
    section = (
        check
        + check
        + ssh_string(KEY_TYPE.encode())
        + ssh_string(key.raw)
        + ssh_string(private.private_bytes_raw() + key.raw)
        + ssh_string(comment.encode())
    )
    section += bytes(range(1, 1 + -len(section) % 8))  # pad to the cipher block size, 8 for "none"
    blob = (
        PRIVATE_MAGIC
        + ssh_string(b"none")
        + ssh_string(b"none")
        + ssh_string(b"")
        + struct.pack(">I", 1)
        + ssh_string(key.blob)
        + ssh_string(section)
    )
    text = base64.b64encode(blob).decode()
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([PRIVATE_BEGIN, *lines, PRIVATE_END, ""]).encode()


def _check_one_line(what: str, text: str) -> None:
    if any(char in text for char in "\r\n\0"):
        raise SigningKeyError(f"{what} {text!r} must be one line", hint="leave out line breaks")


def allowed_signers_line(key: PublicKey, principal: str = "builder", comment: str = "") -> str:
    """The line of ``/etc/consign/allowed_signers`` that lets `key` sign bundles:
    ``builder namespaces="consign-bundle" ssh-ed25519 AAAA... comment``."""
    if not principal or principal.startswith("#") or any(c.isspace() or c == '"' for c in principal):
        raise SigningKeyError(
            f"principal {principal!r} cannot stand in an allowed_signers line",
            hint="use a name without spaces, quotes or a leading '#', e.g. 'builder'",
        )
    _check_one_line("comment", comment)
    line = f'{principal} namespaces="{NAMESPACE}" {key.openssh()}'
    return f"{line} {comment}" if comment else line


# -- ssh-agent -----------------------------------------------------------------


class _AgentError(Exception):
    """ssh-agent cannot be reached or does not speak its protocol."""

    def __init__(self, reason: str, *, unreachable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


def _agent_error(source: str, socket_path: str, exc: _AgentError) -> SigningKeyError:
    if exc.unreachable:
        hint = (
            'is the agent running? Start one with `eval "$(ssh-agent)"` and add the key with '
            "`ssh-add`, or pass the private key file instead of the .pub"
        )
    else:
        hint = "is SSH_AUTH_SOCK the socket of an ssh-agent?"
    return SigningKeyError(
        f"cannot sign with {source}: ssh-agent at {socket_path} (SSH_AUTH_SOCK) {exc.reason}",
        hint=hint,
    )


def _agent_request(socket_path: str, kind: int, payload: bytes, timeout: float) -> tuple[int, bytes]:
    """Send one request, return the type and payload of the answer."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except FileNotFoundError:
            raise _AgentError("cannot be reached: there is no such socket", unreachable=True) from None
        except ConnectionRefusedError:
            raise _AgentError("cannot be reached: nothing listens there", unreachable=True) from None
        except TimeoutError:
            raise _AgentError(f"did not accept within {timeout:g} s", unreachable=True) from None
        except OSError as exc:
            raise _AgentError(f"cannot be reached: {exc.strerror or exc}", unreachable=True) from None
        try:
            message = bytes([kind]) + payload
            sock.sendall(struct.pack(">I", len(message)) + message)
            (length,) = struct.unpack(">I", _receive(sock, 4, deadline))
            if not 0 < length <= MAX_AGENT_MESSAGE:
                raise _AgentError(f"announced an answer of {length} bytes", unreachable=False)
            answer = _receive(sock, length, deadline)
        except TimeoutError:
            raise _AgentError(f"did not answer within {timeout:g} s", unreachable=False) from None
        except OSError as exc:
            raise _AgentError(f"failed: {exc.strerror or exc}", unreachable=True) from None
    return answer[0], answer[1:]


def _receive(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly `size` bytes, all before `deadline` (a trickle does not extend it)."""
    received = bytearray()
    while len(received) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(min(size - len(received), 65536))
        if not chunk:
            raise _AgentError("closed the connection before it answered", unreachable=False)
        received += chunk
    return bytes(received)


def _agent_identities(socket_path: str, timeout: float) -> list[bytes]:
    """The key blobs the agent holds."""
    kind, payload = _agent_request(socket_path, SSH_AGENTC_REQUEST_IDENTITIES, b"", timeout)
    if kind == SSH_AGENT_FAILURE:
        raise _AgentError("refused to list its keys", unreachable=False)
    if kind != SSH_AGENT_IDENTITIES_ANSWER:
        raise _AgentError(f"answered a request for its keys with message {kind}", unreachable=False)
    try:
        wire = WireReader(payload)
        blobs = []
        for _ in range(wire.u32()):
            blobs.append(wire.string())
            wire.string()  # comment
        wire.done()
    except SignatureFormatError as exc:
        raise _AgentError(f"sent a malformed list of keys ({exc})", unreachable=False) from None
    return blobs


def _agent_sign(socket_path: str, key: PublicKey, data: bytes, timeout: float) -> bytes | None:
    """The raw ed25519 signature of `data`, or None when the agent refuses."""
    request = ssh_string(key.blob) + ssh_string(data) + struct.pack(">I", 0)
    kind, payload = _agent_request(socket_path, SSH_AGENTC_SIGN_REQUEST, request, timeout)
    if kind == SSH_AGENT_FAILURE:
        return None
    if kind != SSH_AGENT_SIGN_RESPONSE:
        raise _AgentError(f"answered a sign request with message {kind}", unreachable=False)
    try:
        wire = WireReader(payload)
        blob = WireReader(wire.string())
        wire.done()
        signature_type = blob.string()
        signature = blob.string()
        blob.done()
    except SignatureFormatError as exc:
        raise _AgentError(f"sent a malformed signature ({exc})", unreachable=False) from None
    if signature_type != KEY_TYPE.encode() or len(signature) != 64:
        raise _AgentError(
            f"sent a {signature_type.decode('ascii', errors='replace')!r} signature "
            f"of {len(signature)} bytes, not an ed25519 one",
            unreachable=False,
        )
    return signature


def generate_or_read_key(
    path: Path, principal: str, comment: str, exist_ok: bool, trust_file: Path | None = None
) -> str:
    """`bundle keys generate`: the allowed_signers line of a new (or, with
    `exist_ok`, the existing) key at `path`; also written to `trust_file`
    (mode 0644 whatever the umask, as hosts refuse one others can write)."""
    if exist_ok and path.exists():
        key = read_public_key(path)
    else:
        key = generate_key(path, comment=comment)
    line = allowed_signers_line(key, principal=principal, comment=comment)
    if trust_file is not None:
        trust_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(str(trust_file), (line + "\n").encode(), mode=0o644)
        os.chmod(trust_file, 0o644)
    return line
