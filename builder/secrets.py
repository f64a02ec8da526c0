"""Secrets in the repository: an environment's age-encrypted files.

batou's layout, read and written the same way::

    environments/<env>/secrets.cfg.age     an INI file: [batou] members, [component:X], [host:H]
    environments/<env>/secret-<name>.age   any bytes, e.g. a TLS key

Every file is encrypted to the recipients listed in ``[batou] members``
(``age1...`` keys, ``ssh-ed25519`` or ``ssh-rsa`` public keys). The builder
decrypts with the operator's identities (:func:`find_identities`). Writing
is atomic (a 0600 temporary file in the same directory, renamed over the
target); plaintext only ever touches disk in the private temporary file of
:func:`edit`.

This module never prints: the command line renders what it returns.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyrage

from executor.age import AgeError
from executor.age import Recipient as HostRecipient
from executor.errors import ConsignError

from .environment import ENVIRONMENTS_DIR, RECIPIENT_HINT, environment_names
from .errors import (
    AgeIdentityError,
    EditorError,
    EditRejected,
    EnvironmentNotFound,
    NotARecipientError,
    SecretsError,
    SecretsFileError,
    SecretsParseFailed,
)

SECRETS_FILE = "secrets.cfg.age"
SECRET_PREFIX = "secret-"
AGE_SUFFIX = ".age"
# An edit that could not be saved is kept, encrypted, beside its file.
REJECTED_SUFFIX = ".rejected"
IDENTITY_VARIABLES = ("CONSIGN_AGE_IDENTITIES", "BATOU_AGE_IDENTITIES")
DEFAULT_SSH_KEYS = ("id_ed25519", "id_rsa")
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa")
PROVIDERS = ("age",)

Identity = pyrage.x25519.Identity | pyrage.ssh.Identity
Recipient = pyrage.x25519.Recipient | pyrage.ssh.Recipient


# --- identities -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identities:
    """The keys this operator decrypts with, and where they came from."""

    paths: tuple[Path, ...]
    # "--identity", an environment variable's name, or "~/.ssh".
    source: str
    keys: tuple[Identity, ...]
    # The public halves we know of (age keys, and ssh keys with a .pub file).
    recipients: tuple[str, ...]

    def describe(self) -> str:
        if not self.paths:
            return f"no identity ({self.source})"
        return f"{', '.join(str(path) for path in self.paths)} (from {self.source})"


def find_identities(
    explicit: Sequence[Path] = (),
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Identities:
    """The operator's identities: `explicit` paths (--identity), else the
    comma-separated paths of CONSIGN_AGE_IDENTITIES, else batou's
    BATOU_AGE_IDENTITIES, else ~/.ssh/id_ed25519 and ~/.ssh/id_rsa."""
    environ = os.environ if environ is None else environ
    home = Path(environ.get("HOME") or Path.home()) if home is None else home
    if explicit:
        return _load_identities(tuple(explicit), "--identity")
    for variable in IDENTITY_VARIABLES:
        value = environ.get(variable, "").strip()
        if value:
            paths = tuple(
                Path(part.strip()).expanduser() for part in value.split(",") if part.strip()
            )
            return _load_identities(paths, variable)
    found = tuple(home / ".ssh" / name for name in DEFAULT_SSH_KEYS if (home / ".ssh" / name).is_file())
    return _load_identities(found, "~/.ssh")


def _load_identities(paths: tuple[Path, ...], source: str) -> Identities:
    keys: list[Identity] = []
    recipients: list[str] = []
    for path in paths:
        found, public = read_identity_file(path, source)
        keys.extend(found)
        recipients.extend(public)
    return Identities(paths, source, tuple(keys), tuple(recipients))


def read_identity_file(path: Path, source: str = "--identity") -> tuple[list[Identity], list[str]]:
    """The identities in an age identity file (AGE-SECRET-KEY-1... lines) or
    an unencrypted OpenSSH private key, and their known public halves."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AgeIdentityError(
            f"cannot read identity {path} (from {source}): {error.strerror}",
            hint="name an existing age identity file or OpenSSH private key",
        ) from None
    text = data.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines()]
    age_lines = [line for line in lines if line.startswith("AGE-SECRET-KEY-1")]
    if age_lines:
        keys: list[Identity] = []
        public: list[str] = []
        for line in age_lines:
            try:
                key = pyrage.x25519.Identity.from_str(line)
            except pyrage.IdentityError:
                raise AgeIdentityError(
                    f"identity {path} (from {source}) holds a damaged AGE-SECRET-KEY line",
                    hint="regenerate it with age-keygen, or fix the file",
                ) from None
            keys.append(key)
            public.append(str(key.to_public()))
        return keys, public
    if "PRIVATE KEY-----" in text:
        try:
            ssh_key = pyrage.ssh.Identity.from_buffer(data)
        except pyrage.IdentityError as error:
            hint = (
                "use a key without a passphrase, or an age identity file (age-keygen)"
                if "decrypted" in str(error)
                else "name an OpenSSH private key (ssh-keygen -t ed25519) or an age identity file"
            )
            raise AgeIdentityError(
                f"identity {path} (from {source}) cannot be used: {error}", hint=hint
            ) from None
        pub = path.with_name(path.name + ".pub")
        known = [" ".join(pub.read_text().split()[:2])] if pub.is_file() else []
        return [ssh_key], known
    raise AgeIdentityError(
        f"identity {path} (from {source}) is neither an age identity file nor an OpenSSH"
        " private key",
        hint="an age identity file has AGE-SECRET-KEY-1... lines (age-keygen makes one)",
    )


# --- recipients -----------------------------------------------------------


def parse_recipient(text: str) -> Recipient:
    """An ``age1...`` key or an ``ssh-ed25519``/``ssh-rsa`` public key line."""
    text = text.strip()
    try:
        if text.startswith("age1"):
            return pyrage.x25519.Recipient.from_str(text)
        if text.split(" ", 1)[0] in SSH_KEY_TYPES:
            return pyrage.ssh.Recipient.from_str(" ".join(text.split()[:2]))
    except pyrage.RecipientError as error:
        raise ValueError(f"{text!r} is not a valid recipient: {error}") from None
    raise ValueError(
        f"{text!r} is not a recipient consign understands"
        " (expected an age1... key, or an ssh-ed25519 or ssh-rsa public key)"
    )


def split_members(value: str) -> list[str]:
    """Members are separated by commas and/or newlines (batou's format)."""
    return [part.strip() for line in value.splitlines() for part in line.split(",") if part.strip()]


def _stanza_of(member: str) -> tuple[str, str]:
    """The (type, tag) of the header stanza age writes for a recipient; an
    X25519 stanza names no recipient, so its tag is empty."""
    kind = member.split(" ", 1)[0]
    if kind in SSH_KEY_TYPES:
        wire = base64.b64decode(member.split()[1])
        tag = base64.b64encode(hashlib.sha256(wire).digest()[:4]).decode().rstrip("=")
        return kind, tag
    return "X25519", ""


def header_stanzas(ciphertext: bytes) -> list[tuple[str, str]]:
    """The (type, tag) of each recipient stanza in an age file's header.

    N.B. age does not say whom a file is encrypted to; the header does name
    ssh recipients (by a 4-byte hash of the key) but not age1 recipients,
    whose stanzas hold only an ephemeral key. rage's random "grease"
    stanzas are left out.
    """
    data = ciphertext
    if data.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----"):
        body = b"".join(
            line for line in data.splitlines()[1:] if not line.startswith(b"-----")
        )
        try:
            data = base64.b64decode(body)
        except binascii.Error:
            return []
    stanzas: list[tuple[str, str]] = []
    for line in data.split(b"\n"):
        if line.startswith(b"--- "):
            break
        if line.startswith(b"-> "):
            args = line[3:].decode("ascii", "replace").split(" ")
            kind = args[0]
            if kind.endswith("-grease"):
                continue
            stanzas.append((kind, args[1] if kind in SSH_KEY_TYPES and len(args) > 1 else ""))
    return stanzas


def encrypted_to(ciphertext: bytes, members: Sequence[str]) -> bool:
    """Whether the header's stanzas are exactly those of `members` (as far
    as the header tells: see :func:`header_stanzas`)."""
    return Counter(header_stanzas(ciphertext)) == Counter(_stanza_of(m) for m in members)


def _describe_header(ciphertext: bytes) -> str:
    stanzas = header_stanzas(ciphertext)
    if not stanzas:
        return "it is not an age file, or is damaged"
    parts = [f"{kind} key with tag {tag}" if tag else f"an {kind} (age1...) key" for kind, tag in stanzas]
    return "its header lists " + "; ".join(sorted(parts))


# --- the secrets file -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretEntry:
    key: str
    value: str
    line: int


@dataclass(frozen=True, slots=True)
class SecretsSection:
    """``[batou]``, ``[component:NAME]`` or ``[host:NAME]``."""

    name: str
    line: int
    entries: tuple[SecretEntry, ...]

    @property
    def kind(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def target(self) -> str:
        return self.name.split(":", 1)[1] if ":" in self.name else ""


@dataclass(frozen=True, slots=True)
class SecretsConfig:
    members: tuple[str, ...]
    provider: str | None
    sections: tuple[SecretsSection, ...]

    def overrides(self, kind: str) -> dict[str, dict[str, str]]:
        """Per component (kind "component") or host (kind "host"): key -> value."""
        return {
            section.target: {entry.key: entry.value for entry in section.entries}
            for section in self.sections
            if section.kind == kind
        }


_KEY_VALUE = re.compile(r"(?P<key>[^=:]*?)\s*[=:]\s*(?P<value>.*)")
_HOST_KEYS = re.compile(r"data-.+|recipient")


def parse_secrets(text: str, file: str) -> SecretsConfig:
    """Read a decrypted secrets.cfg (batou's INI dialect, like environment
    files); raise every problem at once, each naming file:line."""
    errors: list[SecretsFileError] = []

    def error(line: int, message: str, hint: str) -> None:
        errors.append(SecretsFileError(message, where=f"{file}:{line}", hint=hint))

    raw_sections: list[tuple[str, int, list[tuple[str, int, list[str]]]]] = []
    seen: dict[str, int] = {}
    current: list[tuple[str, int, list[str]]] | None = None
    keys: dict[str, int] = {}
    value_lines: list[str] | None = None
    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if value_lines is not None and raw[0].isspace():
            value_lines.append(stripped)
            continue
        value_lines = None
        if stripped.startswith("["):
            name = stripped[1:-1].strip() if stripped.endswith("]") else ""
            kind, _, target = name.partition(":")
            if not name or (name != "batou" and (kind not in ("component", "host") or not target)):
                error(
                    number,
                    f"expected [batou], [component:NAME] or [host:NAME], found {stripped!r}",
                    "secrets.cfg holds members, component overrides and host data only",
                )
                current = None
                continue
            if name in seen:
                error(number, f"section [{name}] appears twice (first on line {seen[name]})",
                      f"merge both [{name}] sections into one")
                current = None
                continue
            seen[name] = number
            current, keys = [], {}
            raw_sections.append((name, number, current))
            continue
        match = _KEY_VALUE.fullmatch(stripped)
        if match is None or not match["key"]:
            error(number, f"expected 'key = value', a '[section]' header, a comment or an"
                  f" indented continuation line, found a line of {len(stripped)} characters",
                  "fix or remove the line; comments start with '#' or ';'")
            continue
        key = match["key"]
        if current is None:
            if not errors or errors[-1].where != f"{file}:{number}":
                error(number, f"key {key!r} is outside any valid section",
                      "put it under [batou], [component:NAME] or [host:NAME]")
            continue
        if key in keys:
            error(number, f"key {key!r} appears twice in its section (first on line {keys[key]})",
                  "remove one of them")
            continue
        keys[key] = number
        value_lines = [match["value"]]
        current.append((key, number, value_lines))

    members: tuple[str, ...] = ()
    provider: str | None = None
    sections: list[SecretsSection] = []
    for name, line, entries in raw_sections:
        section = SecretsSection(
            name, line,
            tuple(SecretEntry(key, "\n".join(parts).strip(), at) for key, at, parts in entries),
        )
        sections.append(section)
        for entry in section.entries:
            if name == "batou":
                if entry.key == "members":
                    members = tuple(split_members(entry.value))
                    for member in members:
                        try:
                            parse_recipient(member)
                        except ValueError as problem:
                            error(entry.line, f"member {problem}",
                                  "list age1... keys or ssh-ed25519/ssh-rsa public keys,"
                                  " separated by commas or newlines")
                elif entry.key == "secret_provider":
                    provider = entry.value
                    if provider not in PROVIDERS:
                        error(entry.line, f"secret_provider must be 'age', found {provider!r}",
                              "consign reads age-encrypted secrets only; re-encrypt with"
                              " 'batou secrets' to age first")
                else:
                    error(entry.line, f"unknown key {entry.key!r} in [batou]",
                          "[batou] takes 'members' and 'secret_provider'")
            elif section.kind == "host" and not _HOST_KEYS.fullmatch(entry.key):
                error(entry.line, f"unknown key {entry.key!r} in [{name}]",
                      "host sections take data-NAME keys (host.data['NAME']) and 'recipient'")
            elif section.kind == "host" and entry.key == "recipient":
                # What the bundle's secrets blob can be encrypted to (executor.age).
                try:
                    HostRecipient.parse(entry.value)
                except AgeError as problem:
                    error(entry.line, f"recipient of host {section.target!r}: {problem}",
                          RECIPIENT_HINT)
    if "batou" not in seen:
        error(1, "there is no [batou] section", "add '[batou]' with 'members = age1..., ...'")
    elif not members:
        error(seen["batou"], "[batou] lists no members: nobody could decrypt the file",
              "add 'members = ' with your age1... key or ssh-ed25519 public key")
    if errors:
        errors.sort(key=lambda e: int((e.where or ":0").rsplit(":", 1)[1]))
        if len(errors) == 1:
            raise errors[0]
        raise SecretsParseFailed(errors, f"{file} has {len(errors)} problems")
    return SecretsConfig(members, provider, tuple(sections))


# --- files of an environment ---------------------------------------------


def environment_directory(repo: Path, environment: str) -> Path:
    """environments/<env>/, which must belong to an existing environment."""
    base = repo / ENVIRONMENTS_DIR
    directory = base / environment
    if directory.is_dir() or (base / f"{environment}.cfg").is_file():
        return directory
    names = environment_names(repo)
    raise EnvironmentNotFound(
        f"there is no environment {environment!r} in {repo}",
        hint=f"the environments are: {', '.join(names)}" if names else
        f"create {ENVIRONMENTS_DIR}/{environment}/environment.cfg first",
    )


def secret_file_path(directory: Path, name: str | None) -> Path:
    """secrets.cfg.age, or secret-<name>.age for a `name`."""
    if name is None:
        return directory / SECRETS_FILE
    if not name or "/" in name or name.startswith("."):
        raise SecretsError(
            f"{name!r} is no secret file name",
            hint="name a file like 'tls-key' (stored as secret-tls-key.age)",
        )
    base = name.removeprefix(SECRET_PREFIX).removesuffix(AGE_SUFFIX)
    return directory / f"{SECRET_PREFIX}{base}{AGE_SUFFIX}"


def secret_files(directory: Path) -> list[Path]:
    """secrets.cfg.age (when present) and every secret-<name>.age, sorted."""
    files = sorted(directory.glob(f"{SECRET_PREFIX}*{AGE_SUFFIX}")) if directory.is_dir() else []
    cfg = directory / SECRETS_FILE
    return ([cfg] if cfg.is_file() else []) + files


def secret_name(path: Path) -> str:
    """The name components use for a secret file: secret-tls.age -> tls."""
    return path.name.removeprefix(SECRET_PREFIX).removesuffix(AGE_SUFFIX)


# --- decrypting and encrypting -------------------------------------------


def decrypt_file(
    path: Path, identities: Identities, members: Sequence[str] = (), name: str | None = None
) -> bytes:
    """The plaintext of one age file; a clear error when no identity fits.
    `name` is how messages call the file [default: its path]."""
    shown = str(path) if name is None else name
    try:
        ciphertext = path.read_bytes()
    except OSError as error:
        raise SecretsError(
            f"cannot read {shown}: {error.strerror}",
            hint="check the file's permissions, or restore it from version control",
        ) from None
    return decrypt_bytes(ciphertext, shown, identities, members)


def decrypt_bytes(
    ciphertext: bytes, name: str, identities: Identities, members: Sequence[str] = ()
) -> bytes:
    if not identities.keys:
        raise NotARecipientError(
            f"cannot decrypt {name}: no identity to decrypt with ({identities.describe()})",
            hint="pass --identity PATH, set CONSIGN_AGE_IDENTITIES, or create ~/.ssh/id_ed25519",
        )
    try:
        return pyrage.decrypt(ciphertext, list(identities.keys))
    except pyrage.DecryptError as error:
        if "No matching keys" not in str(error):
            raise SecretsError(
                f"cannot decrypt {name}: {error} ({_describe_header(ciphertext)})",
                hint="restore the file from version control",
            ) from None
    if members:
        could = "; its recipients are the members: " + ", ".join(members)
        hint = (
            "use an identity of one of these members, or ask a member to run"
            " 'bundle secrets add ENV <your public key>'"
        )
    else:
        could = f"; {_describe_header(ciphertext)}"
        hint = (
            "use the identity of a member listed in its [batou] members, or ask a member"
            " to run 'bundle secrets add ENV <your public key>'"
        )
    raise NotARecipientError(
        f"none of the identities decrypts {name}: tried {identities.describe()}{could}",
        hint=hint,
    )


def recipients_of(members: Sequence[str]) -> list[Recipient]:
    result: list[Recipient] = []
    for member in members:
        try:
            result.append(parse_recipient(member))
        except ValueError as error:
            raise SecretsError(str(error), hint="fix [batou] members") from None
    return result


def encrypt_for(plaintext: bytes, members: Sequence[str]) -> bytes:
    if not members:
        raise SecretsError("there are no members to encrypt to", hint="add one with 'bundle secrets add'")
    return pyrage.encrypt(plaintext, recipients_of(members))


def write_private(path: Path, data: bytes) -> None:
    """Write atomically: a 0600 temporary file beside `path`, fsynced, renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise


# --- what the commands do ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Secrets:
    """An environment's decrypted secrets (None: it has no secrets.cfg.age)."""

    directory: Path
    config: SecretsConfig | None
    files: tuple[Path, ...]


def load_secrets(repo: Path, environment: str, identities: Identities) -> Secrets:
    directory = environment_directory(repo, environment)
    cfg = directory / SECRETS_FILE
    config = None
    if cfg.is_file():
        config = parse_secrets(decrypt_file(cfg, identities).decode("utf-8", "replace"), str(cfg))
    return Secrets(directory, config, tuple(p for p in secret_files(directory) if p != cfg))


def lenient_members(text: str) -> tuple[str, ...]:
    """The members a secrets.cfg names in its ``[batou]`` section, read line by
    line without parsing the rest (which may be broken)."""
    in_batou = False
    for match in re.finditer(r"^\[(?P<section>[^\]\n]*)\]|" + _MEMBERS_LINE.pattern, text, re.MULTILINE):
        if match.group("section") is not None:
            in_batou = match.group("section").strip() == "batou"
        elif in_batou:
            value = re.sub(r"^members[ \t]*[=:]", "", match.group(0))
            members = []
            for member in split_members(value):
                try:
                    parse_recipient(member)
                except ConsignError:
                    continue
                members.append(member)
            return tuple(members)
    return ()


def _broken_config(repo: Path, environment: str, identities: Identities) -> Secrets:
    """The environment's secrets with a secrets.cfg that does not parse: the
    members read leniently (else the editing user's own recipients)."""
    directory = environment_directory(repo, environment)
    cfg = directory / SECRETS_FILE
    text = decrypt_file(cfg, identities).decode("utf-8", "replace")
    members = lenient_members(text) or tuple(identities.recipients)
    config = SecretsConfig(members, None, ())
    return Secrets(directory, config, tuple(p for p in secret_files(directory) if p != cfg))


def _members(secrets: Secrets) -> tuple[str, ...]:
    if secrets.config is None:
        raise SecretsError(
            f"{secrets.directory / SECRETS_FILE} does not exist",
            hint="create it with 'bundle secrets edit ENV' and list the members in [batou]",
        )
    return secrets.config.members


@dataclass(frozen=True, slots=True)
class SecretsSummary:
    directory: Path
    members: tuple[str, ...]
    # Section name -> its keys, in file order; never values.
    sections: tuple[tuple[str, tuple[str, ...]], ...]
    files: tuple[str, ...]


def summarize(repo: Path, environment: str, identities: Identities) -> SecretsSummary:
    secrets = load_secrets(repo, environment, identities)
    members = _members(secrets)
    assert secrets.config is not None
    return SecretsSummary(
        secrets.directory,
        members,
        tuple(
            (section.name, tuple(entry.key for entry in section.entries))
            for section in secrets.config.sections
        ),
        tuple(secret_name(path) for path in secrets.files),
    )


@dataclass(frozen=True, slots=True)
class Reencrypted:
    members: tuple[str, ...]
    written: tuple[Path, ...]
    unchanged: tuple[Path, ...]


def _reencrypt_all(
    secrets: Secrets, members: Sequence[str], identities: Identities, cfg_text: bytes | None,
    force: bool,
) -> Reencrypted:
    """Re-encrypt every file not already encrypted to `members` (all with
    `force`); everything is decrypted before anything is written."""
    cfg = secrets.directory / SECRETS_FILE
    old_members = _members(secrets)
    plain: list[tuple[Path, bytes]] = []
    unchanged: list[Path] = []
    for path in [cfg, *secrets.files]:
        if path == cfg and cfg_text is not None:
            plain.append((path, cfg_text))
            continue
        if not force and encrypted_to(path.read_bytes(), members):
            unchanged.append(path)
            continue
        plain.append((path, decrypt_file(path, identities, old_members)))
    for path, text in plain:
        write_private(path, encrypt_for(text, members))
    return Reencrypted(tuple(members), tuple(p for p, _ in plain), tuple(unchanged))


_MEMBERS_LINE = re.compile(r"^members[ \t]*[=:].*(?:\n[ \t]+\S.*)*", re.MULTILINE)


def _with_members(text: str, config: SecretsConfig, members: Sequence[str]) -> str:
    """The secrets.cfg text with `[batou] members` replaced, the rest kept."""
    value = "members = " + ",\n    ".join(members)
    batou = next(section for section in config.sections if section.name == "batou")
    entry = next((e for e in batou.entries if e.key == "members"), None)
    lines = text.split("\n")
    if entry is None:
        lines.insert(batou.line, value)
        return "\n".join(lines)
    head = "\n".join(lines[: entry.line - 1])
    rest = "\n".join(lines[entry.line - 1 :])
    return head + ("\n" if head else "") + _MEMBERS_LINE.sub(lambda _: value, rest, count=1)


def change_members(
    repo: Path,
    environment: str,
    identities: Identities,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
) -> Reencrypted:
    """Add or remove members and re-encrypt every file to the new set."""
    secrets = load_secrets(repo, environment, identities)
    members = list(_members(secrets))
    cfg = secrets.directory / SECRETS_FILE
    for member in add:
        # Comments of ssh keys stay (they say whose key it is), whitespace is normalized.
        member = " ".join(member.split())
        try:
            if "," in member:
                raise ValueError(f"{member!r} holds a comma, which separates members")
            parse_recipient(member)
        except ValueError as error:
            raise SecretsError(
                str(error), hint="pass an age1... key or an ssh public key line"
            ) from None
        key = " ".join(member.split()[:2])
        if any(" ".join(m.split()[:2]) == key for m in members):
            raise SecretsError(f"{member} is already a member of {environment}")
        members.append(member)
    for member in remove:
        key = " ".join(member.split()[:2])
        match = [m for m in members if " ".join(m.split()[:2]) == key]
        if not match:
            raise SecretsError(
                f"{member} is no member of {environment}",
                hint="the members are: " + ", ".join(members),
            )
        members.remove(match[0])
    if not members:
        raise SecretsError("removing the last member would leave nobody to decrypt the secrets")
    assert secrets.config is not None
    text = decrypt_file(cfg, identities).decode("utf-8")
    new_text = _with_members(text, secrets.config, members)
    parse_secrets(new_text, str(cfg))
    return _reencrypt_all(secrets, members, identities, new_text.encode(), force=True)


def reencrypt(repo: Path, environment: str, identities: Identities, force: bool) -> Reencrypted:
    """Re-encrypt the files whose header does not match the members (all with `force`)."""
    secrets = load_secrets(repo, environment, identities)
    return _reencrypt_all(secrets, _members(secrets), identities, None, force)


# --- editing ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditResult:
    path: Path
    changed: bool
    created: bool
    # Continued from the file's rejected edit.
    resumed: bool
    # Other files re-encrypted because the members changed.
    reencrypted: tuple[Path, ...]


_TEMPLATE = """\
# consign/batou secrets of the environment {environment} (age-encrypted).
# [batou] members: who can decrypt (age1... keys, ssh-ed25519/ssh-rsa public keys).
[batou]
members = {members}

# [component:NAME] overrides attributes of the root component NAME:
# [component:app]
# password = ...

# [host:NAME] data-KEY sets host.data['KEY']:
# [host:web1]
# data-token = ...
"""


def run_editor(path: Path, environ: Mapping[str, str] | None = None) -> None:
    """Run $EDITOR (default vi) on `path`; a failure raises EditorError."""
    environ = os.environ if environ is None else environ
    command = shlex.split(environ.get("EDITOR") or "vi")
    try:
        completed = subprocess.run([*command, str(path)], check=False)
    except OSError as error:
        raise EditorError(
            f"cannot run the editor {command[0]!r}: {error.strerror}",
            hint="set EDITOR to an editor that is installed",
        ) from None
    if completed.returncode != 0:
        raise EditorError(
            f"the editor {' '.join(command)!r} exited with status {completed.returncode}",
            hint="the file was not saved",
        )


def edit(
    repo: Path,
    environment: str,
    name: str | None,
    identities: Identities,
    retry: Callable[[ConsignError], bool],
    editor: Callable[[Path], None] = run_editor,
) -> EditResult:
    """Decrypt to a private temporary file, edit, check, re-encrypt.

    On a parse error `retry(error)` says whether to edit again. An edit
    that cannot be saved (refused retry, failing editor) is never lost: it
    is encrypted to the current members as ``<file>.rejected``, and the
    next edit of that file starts from it.
    """
    try:
        secrets = load_secrets(repo, environment, identities)
    except (SecretsFileError, SecretsParseFailed):
        if name is not None:
            raise
        # A committed secrets.cfg that no longer parses: edit is how it gets
        # fixed, so it opens with the members that can still be read.
        secrets = _broken_config(repo, environment, identities)
    target = secret_file_path(secrets.directory, name)
    rejected = target.with_name(target.name + REJECTED_SUFFIX)
    is_cfg = name is None
    current_members: tuple[str, ...] = (
        secrets.config.members if secrets.config is not None else tuple(identities.recipients)
    )
    if not is_cfg:
        current_members = _members(secrets)
    created = not target.exists()
    original = b""
    if not created:
        original = decrypt_file(target, identities, current_members)
    elif is_cfg:
        original = _TEMPLATE.format(
            environment=environment, members=",\n    ".join(current_members)
        ).encode()
    resumed = rejected.is_file()
    start = decrypt_file(rejected, identities, current_members) if resumed else original

    # N.B. the only plaintext on disk: a 0600 file in a 0700 directory of our own.
    private = Path(tempfile.mkdtemp(prefix="consign-secrets-"))
    os.chmod(private, 0o700)
    # Set when the edit could be kept nowhere else: the directory stays.
    preserved = False
    try:
        work = private / (target.name.removesuffix(AGE_SUFFIX) or "secret")
        fd = os.open(work, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as stream:
            stream.write(start)

        def keep(error: ConsignError) -> EditRejected:
            nonlocal preserved
            if not current_members:
                preserved = True
                return EditRejected(
                    f"{error.render()}\nthere is no member to encrypt the edit to; it stays in"
                    f" {work} (readable by you only)",
                    hint="fix it there, or delete the directory; nothing was written",
                )
            write_private(rejected, encrypt_for(work.read_bytes(), current_members))
            again = f"bundle secrets edit {environment}" + (f" {name}" if name else "")
            return EditRejected(
                f"{error.render()}\nthe edit was not saved; it is kept encrypted in {rejected}",
                hint=f"'{again}' continues from it",
            )

        config: SecretsConfig | None = None
        while True:
            try:
                editor(work)
            except EditorError as error:
                if work.read_bytes() != start:
                    raise keep(error) from None
                raise
            text = work.read_bytes()
            if not is_cfg:
                break
            try:
                config = parse_secrets(text.decode("utf-8"), str(target))
                break
            except UnicodeDecodeError:
                problem: ConsignError = SecretsFileError(
                    f"{target} is not UTF-8 text", hint="save the file as UTF-8"
                )
            except (SecretsFileError, SecretsParseFailed) as error:
                problem = error
            if not retry(problem):
                raise keep(problem)

        if text == start and not resumed:
            return EditResult(target, False, False, False, ())
        if text == original and not created:
            rejected.unlink()
            return EditResult(target, False, False, True, ())
        members = config.members if config is not None else current_members
        reencrypted: tuple[Path, ...] = ()
        try:
            if is_cfg and secrets.config is not None and set(members) != set(current_members):
                done = _reencrypt_all(secrets, members, identities, text, force=True)
                reencrypted = tuple(p for p in done.written if p != target)
            else:
                write_private(target, encrypt_for(text, members))
        except ConsignError as error:
            raise keep(error) from None
        if resumed:
            rejected.unlink()
        return EditResult(target, True, created, resumed, reencrypted)
    finally:
        if not preserved:
            shutil.rmtree(private, ignore_errors=True)
