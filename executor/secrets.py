"""A host's secrets: what the bundle's secrets blob holds, decrypted.

The builder splits every host's model in two. The model (clear, signed)
keeps what anyone may read; :class:`HostSecrets` holds what came from the
environment's encrypted secrets and that host needs:

- the secret overrides of its roots (``[component:X]`` in secrets.cfg),
- its secret host data (``[host:H] data-*``),
- the secret files its components read (``environment.secret_files``),
- the requirements whose values carry a secret (a provided password),
  removed from the model and kept here whole,
- further strings to hide: secret values found inside those requirements.

The blob is this record as canonical msgpack, age-encrypted to the host's
key (:mod:`executor.age`). The runtime merges it back into the model
(:func:`merge`) before configuring, so components see one environment;
everything the run shows is redacted with :meth:`HostSecrets.values`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import canonical
from .decode import DecodeError, Fields, shown, str_item
from .errors import ConfigurationError, UnknownSecretFile, suggest
from .model import HostModel, RequirementRecord, requirement_fields
from .redact import MIN_SECRET_LENGTH

SECRETS_VERSION = 1
MAX_SECRETS_BYTES = 64 << 20
# Lines of a secret file this long are hidden on their own too (a PEM
# key's lines), shorter ones would hide common words.
MIN_LINE_LENGTH = 16


@dataclass(frozen=True, slots=True)
class SealedRequirement:
    root: str
    requirement: RequirementRecord


@dataclass(frozen=True, slots=True)
class HostSecrets:
    # Root name -> (attribute, value) pairs, both sorted.
    overrides: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    data: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()
    requires: tuple[SealedRequirement, ...] = ()
    hidden: tuple[str, ...] = ()
    # The names of all the environment's secret files (not secret): so that
    # `in` and iteration answer on the host as in the build.
    names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.overrides or self.data or self.files or self.requires or self.names)

    def values(self) -> frozenset[str]:
        """Every text to hide in what a run shows: each value, and each long
        line of a value of several lines (diffs and logs show lines)."""
        found: set[str] = set()
        texts = [value for _root, pairs in self.overrides for _key, value in pairs]
        texts += [value for _key, value in self.data]
        texts += self.hidden
        for text in texts:
            found.update(text_parts(text))
        for _name, content in self.files:
            found.update(file_texts(content))
        return frozenset(v for v in found if len(v) >= MIN_SECRET_LENGTH)

    def described(self) -> list[str]:
        """What the selection holds, by name (never values), for messages."""
        parts = [f"{root}.{key}" for root, pairs in self.overrides for key, _v in pairs]
        parts += [f"data-{key}" for key, _v in self.data]
        parts += [f"secret file {name!r}" for name, _c in self.files]
        parts += [f"{s.root} requires {s.requirement.key!r}" for s in self.requires]
        if self.names and not self.files:
            parts.append("the names of the secret files")
        return parts


def text_parts(text: str) -> Iterator[str]:
    """The whole text and its long lines, but not PEM armour
    (``-----BEGIN ...-----``), which public certificates share."""
    yield text.strip()
    for line in text.splitlines():
        line = line.strip()
        if len(line) >= MIN_LINE_LENGTH and not (line.startswith("-----") and line.endswith("-----")):
            yield line


def file_texts(content: bytes) -> Iterator[str]:
    """The texts of a secret file worth hiding (none for binary files)."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return
    yield from text_parts(text)


def all_strings(value: Any) -> Iterator[str]:
    """Every text inside frozen or unpacked msgpack data (keys too): where
    contains_secret() looks for secret values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield from file_texts(value)
    elif isinstance(value, list):
        for item in value:
            yield from all_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from all_strings(key)
            yield from all_strings(item)


def contains_secret(value: Any, secrets: Iterable[str]) -> set[str]:
    """The secrets that occur in any text of a frozen value."""
    texts = list(all_strings(value))
    return {s for s in secrets if any(s in text for text in texts)}


# --- codec -----------------------------------------------------------------


def secrets_to_data(secrets: HostSecrets) -> dict[str, Any]:
    return {
        "version": SECRETS_VERSION,
        "overrides": {root: dict(pairs) for root, pairs in secrets.overrides},
        "data": dict(secrets.data),
        "files": dict(secrets.files),
        "requires": [
            {
                "root": s.root,
                "key": s.requirement.key,
                "host": s.requirement.host,
                "values": list(s.requirement.values),
            }
            for s in secrets.requires
        ],
        "hidden": sorted(set(secrets.hidden)),
        "names": sorted(set(secrets.names)),
    }


def _sealed(value: object, path: str) -> SealedRequirement:
    f = Fields(value, path)
    sealed = SealedRequirement(f.string("root"), requirement_fields(f))
    f.done()
    return sealed


def secrets_from_data(data: object, path: str = "secrets") -> HostSecrets:
    top = Fields(data, path)
    version = top.integer("version")
    if version != SECRETS_VERSION:
        raise DecodeError(top.path("version"), f"expected {SECRETS_VERSION}, got {version}")
    overrides = top.mapping("overrides")
    roots = []
    for root in sorted(data["overrides"]):  # type: ignore[index]
        roots.append((str_item(root, overrides.path(str(root))), overrides.string_map(root)))
    overrides.done()
    files = top.raw("files")
    if not isinstance(files, dict):
        raise DecodeError(top.path("files"), f"expected a map, got {shown(files)}")
    for name, content in files.items():
        str_item(name, f"{top.path('files')}[{name!r}]")
        if not isinstance(content, bytes):
            raise DecodeError(f"{top.path('files')}[{name!r}]", f"expected bytes, got {shown(content)}")
    secrets = HostSecrets(
        overrides=tuple(roots),
        data=top.string_map("data"),
        files=tuple(sorted(files.items())),
        requires=top.array("requires", _sealed),
        hidden=top.array("hidden", str_item),
        names=top.array("names", str_item),
    )
    top.done()
    return secrets


def encode_secrets(secrets: HostSecrets) -> bytes:
    return canonical.pack(secrets_to_data(secrets))


def decode_secrets(data: bytes) -> HostSecrets:
    """Raises DecodeError or CanonicalError."""
    return secrets_from_data(canonical.unpack(data, max_bytes=MAX_SECRETS_BYTES))


# --- using it --------------------------------------------------------------


def merge(model: HostModel, secrets: HostSecrets) -> HostModel:
    """The model as the builder configured it: secret overrides, host data
    and sealed requirements put back."""
    overrides = dict(secrets.overrides)
    sealed: dict[str, list[RequirementRecord]] = {}
    for s in secrets.requires:
        sealed.setdefault(s.root, []).append(s.requirement)
    names = {root.name for root in model.roots}
    unknown = sorted((set(overrides) | set(sealed)) - names)
    if unknown:
        raise ConfigurationError(
            f"the bundle's secrets name root {unknown[0]!r}, which its model does not have",
            hint="the secrets and the model come from different builds: rebuild the bundle",
        )
    roots = tuple(
        replace(
            root,
            overrides=tuple(sorted((*root.overrides, *overrides.get(root.name, ())))),
            requires=(*root.requires, *sealed.get(root.name, ())),
        )
        for root in model.roots
    )
    host = replace(model.host, data=tuple(sorted((*model.host.data, *secrets.data))))
    return replace(model, roots=roots, host=host)


class SecretFiles(Mapping[str, "str | bytes"]):
    """``environment.secret_files``: name -> content (text when it is UTF-8,
    else bytes). The builder records what each host reads; a bundle carries
    only those files, and the names of all (`names`), so that `in`,
    iteration and len() answer on the host as in the build."""

    def __init__(self, files: Mapping[str, bytes], names: Iterable[str] = ()) -> None:
        self._files = dict(files)
        self._names = sorted(set(names) | set(self._files))
        self.read: set[str] = set()
        # Whether configure asked anything at all (then the host needs the names).
        self.consulted = False

    def __getitem__(self, name: str) -> str | bytes:
        self.consulted = True
        if name in self._names and name not in self._files:
            raise UnknownSecretFile(
                f"the secret file {name!r} is not in this bundle: configure() did not read it "
                "when the bundle was built",
                hint="read secret files in configure(), not in verify() or update(), "
                "and build again",
            )
        if name not in self._files:
            raise UnknownSecretFile(
                f"there is no secret file {name!r} here",
                hint=f"add it with 'bundle secrets edit ENV {name}'"
                + (f"; {suggest(name, self._names)}" if self._names else ""),
            )
        self.read.add(name)
        content = self._files[name]
        try:
            return content.decode("utf-8")
        except UnicodeDecodeError:
            return content

    def __contains__(self, name: object) -> bool:
        self.consulted = True
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        self.consulted = True
        return iter(self._names)

    def __len__(self) -> int:
        self.consulted = True
        return len(self._names)

    def __repr__(self) -> str:
        return f"<secret files: {', '.join(self._names) or '(none)'}>"
