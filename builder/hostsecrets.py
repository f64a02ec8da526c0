"""What a build does with the environment's secrets.

1. :func:`read_secrets` decrypts ``secrets.cfg.age`` and every
   ``secret-*.age`` of the environment with the operator's identities (only
   when there are any: a deployment without secrets needs no key).
2. :func:`merge_secrets` adds their component overrides and host data to the
   environment, like the environment file's own; a key set in both is an
   error. Components then see one environment.
3. After configure, :func:`split` takes out of each host's model everything
   that came from the secrets (its roots' secret overrides, its secret host
   data, requirements whose values carry a secret) and adds the secret files
   its components read: the host's :class:`HostSecrets`.
4. :func:`seal` encrypts that selection to the host's recipient, with
   randomness derived from the secrets themselves (executor.age), so that
   equal inputs give equal bundles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from executor import age
from executor.errors import ConsignError, suggest
from executor.model import HostModel, RequirementRecord, model_to_data
from executor.redact import MIN_SECRET_LENGTH
from executor.secrets import (
    HostSecrets,
    SealedRequirement,
    SecretFiles,
    contains_secret,
    encode_secrets,
    file_texts,
)

from .environment import ENVIRONMENTS_DIR, ComponentOverrides, EnvironmentConfig, Location, Override
from .errors import SecretsError
from .secrets import (
    SECRETS_FILE,
    SecretsConfig,
    decrypt_file,
    find_identities,
    parse_secrets,
    secret_files,
    secret_name,
)


@dataclass(frozen=True, slots=True)
class EnvironmentSecrets:
    """An environment's decrypted secrets, as the build uses them."""

    # None: the environment has secret files but no secrets.cfg.age.
    config: SecretsConfig | None
    # secret-NAME.age contents by NAME.
    files: Mapping[str, bytes]
    # Over all plaintext: seeds the encryption (see seal()).
    digest: bytes
    # The identity files that decrypted them (for --check's rebuild).
    identity_paths: tuple[Path, ...] = ()
    file_name: str = ""

    def values(self) -> frozenset[str]:
        """Every secret value of the environment, for redaction and sealing."""
        found = HostSecrets(
            overrides=tuple(
                (name, tuple(pairs.items()))
                for name, pairs in (self.config.overrides("component") if self.config else {}).items()
            ),
            data=tuple(
                (key, value)
                for section in (self.config.overrides("host") if self.config else {}).values()
                for key, value in section.items()
                if key.startswith("data-")
            ),
            files=tuple(self.files.items()),
        )
        return found.values()


def read_secrets(
    root: Path, environment: str, identities: tuple[Path, ...]
) -> EnvironmentSecrets | None:
    """The environment's decrypted secrets (root holds ``environments/``), or
    None when it has none."""
    directory = root / ENVIRONMENTS_DIR / environment
    paths = secret_files(directory)
    if not paths:
        return None
    keys = find_identities(identities)
    digest = hashlib.sha256(b"consign-environment-secrets\0")
    config = None
    files: dict[str, bytes] = {}
    shown = f"{ENVIRONMENTS_DIR}/{environment}/{SECRETS_FILE}"
    for path in paths:
        cfg = path.name == SECRETS_FILE
        members = config.members if config is not None and not cfg else ()
        # Named as in the repository, not in the build's scratch copy.
        name = f"{ENVIRONMENTS_DIR}/{environment}/{path.name}"
        plaintext = decrypt_file(path, keys, members, name=name)
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(plaintext).digest())
        if cfg:
            config = parse_secrets(plaintext.decode("utf-8", "replace"), shown)
        else:
            files[secret_name(path)] = plaintext
    return EnvironmentSecrets(config, files, digest.digest(), keys.paths, shown)


@dataclass(frozen=True, slots=True)
class MergedSecrets:
    """Which overrides and host data of the merged environment are secret."""

    overrides: frozenset[tuple[str, str]] = frozenset()
    data: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Host -> its recipient, from either file.
    recipients: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    values: frozenset[str] = frozenset()
    digest: bytes = b""


def _conflict(what: str, first: str, second: str) -> ConsignError:
    return SecretsError(
        f"{what} is set in both {first} and {second}",
        where=second,
        hint="keep it in one place: secret values in secrets.cfg.age only "
        "('bundle secrets edit ENV'), the rest in the environment file",
    )


def _too_short(value: str, what: str, where: str, errors: list[ConsignError]) -> bool:
    """A secret too short to be told from chance is refused: redaction could
    not hide it (see executor.redact.MIN_SECRET_LENGTH)."""
    if len(value) >= MIN_SECRET_LENGTH:
        return False
    errors.append(
        SecretsError(
            f"{what} is shorter than {MIN_SECRET_LENGTH} characters, too short to be hidden "
            "in what builds and runs show",
            where=where,
            hint="if it is no secret, move it to the environment file; else use a longer value",
        )
    )
    return True


def leaks(model: HostModel, selection: HostSecrets, values: frozenset[str]) -> list[str]:
    """What of `selection` (whose values() are `values`) the clear `model`
    still holds (a value that came in through a door split() does not
    know): by name, never by value."""
    found = contains_secret(model_to_data(model), values)
    if not found:
        return []
    labels = [f"{root}.{key}" for root, pairs in selection.overrides for key, value in pairs if value in found]
    labels += [f"data-{key}" for key, value in selection.data if value in found]
    labels += [f"secret file {name!r}" for name, content in selection.files
               if any(text in found for text in file_texts(content))]
    return labels or ["a value the host requires"]


def merge_secrets(
    config: EnvironmentConfig, secrets: EnvironmentSecrets | None
) -> tuple[EnvironmentConfig, MergedSecrets, list[ConsignError]]:
    """The environment with the secrets' overrides and host data added, what
    of it is secret, and every conflict or unknown name found."""
    recipients = {h.name: h.recipient for h in config.hosts if h.recipient is not None}
    if secrets is None or secrets.config is None:
        files = {} if secrets is None else dict(secrets.files)
        merged = MergedSecrets(
            recipients=recipients,
            files=files,
            values=frozenset() if secrets is None else secrets.values(),
            digest=b"" if secrets is None else secrets.digest,
        )
        return config, merged, []
    errors: list[ConsignError] = []
    file = secrets.file_name
    overrides = {section.component: section for section in config.overrides}
    secret_overrides: set[tuple[str, str]] = set()
    for section in secrets.config.sections:
        if section.kind != "component":
            continue
        # Component names are class names, lowercased, as in environment.cfg.
        name = section.target.strip().lower()
        existing = overrides.get(name)
        added = []
        for entry in section.entries:
            where = f"{file}:{entry.line}"
            if _too_short(entry.value, f"[component:{name}] {entry.key}", where, errors):
                continue
            if existing is not None:
                clash = next((o for o in existing.overrides if o.attribute == entry.key), None)
                if clash is not None:
                    errors.append(_conflict(f"[component:{name}] {entry.key}", str(clash.location), where))
                    continue
            added.append(Override(entry.key, entry.value, Location(file, entry.line)))
            secret_overrides.add((name, entry.key))
        if existing is None:
            overrides[name] = ComponentOverrides(name, tuple(added), Location(file, section.line))
        else:
            overrides[name] = replace(existing, overrides=(*existing.overrides, *added))
    hosts = {h.name: h for h in config.hosts}
    secret_data: dict[str, set[str]] = {}
    for section in secrets.config.sections:
        if section.kind != "host":
            continue
        name = section.target
        host = hosts.get(name)
        if host is None:
            errors.append(
                SecretsError(
                    f"[host:{name}] gives secrets to a host environment {config.name!r} does not have",
                    where=f"{file}:{section.line}",
                    hint=suggest(name, sorted(hosts)),
                )
            )
            continue
        data = dict(host.data)
        for entry in section.entries:
            where = f"{file}:{entry.line}"
            if entry.key == "recipient":
                if host.recipient is not None:
                    errors.append(
                        _conflict(f"recipient of host {name!r}", str(host.recipient_location), where)
                    )
                    continue
                # Valid: parse_secrets checked it.
                recipients[name] = age.Recipient.parse(entry.value).text
                continue
            key = entry.key.removeprefix("data-")
            if _too_short(entry.value, f"data-{key} of host {name!r}", where, errors):
                continue
            if key in data:
                errors.append(
                    _conflict(f"data-{key} of host {name!r}", str(host.location), where)
                )
                continue
            data[key] = entry.value
            secret_data.setdefault(name, set()).add(key)
        hosts[name] = replace(host, data=tuple(sorted(data.items())))
    merged_config = replace(
        config,
        hosts=tuple(hosts[h.name] for h in config.hosts),
        overrides=tuple(overrides[name] for name in sorted(overrides)),
    )
    return (
        merged_config,
        MergedSecrets(
            overrides=frozenset(secret_overrides),
            data={host: frozenset(keys) for host, keys in secret_data.items()},
            recipients=recipients,
            files=dict(secrets.files),
            values=secrets.values(),
            digest=secrets.digest,
        ),
        errors,
    )


def split(
    model: HostModel, merged: MergedSecrets, files: SecretFiles
) -> tuple[HostModel, HostSecrets]:
    """`model` without what came from the secrets, and that host's selection
    (`files`: the host's secret_files, which know what configure read)."""
    if not (merged.overrides or merged.data or merged.files):
        return model, HostSecrets()
    roots = []
    selected_overrides = []
    sealed: list[SealedRequirement] = []
    hidden: set[str] = set()
    for root in model.roots:
        secret = tuple(p for p in root.overrides if (root.name, p[0]) in merged.overrides)
        if secret:
            selected_overrides.append((root.name, secret))
        kept: list[RequirementRecord] = []
        for requirement in root.requires:
            found = contains_secret(list(requirement.values), merged.values)
            if found:
                sealed.append(SealedRequirement(root.name, requirement))
                hidden.update(found)
            else:
                kept.append(requirement)
        roots.append(
            replace(
                root,
                overrides=tuple(p for p in root.overrides if p not in secret),
                requires=tuple(kept),
            )
        )
    secret_keys = merged.data.get(model.host.name, frozenset())
    data = tuple(p for p in model.host.data if p[0] in secret_keys)
    public = tuple(p for p in model.host.data if p[0] not in secret_keys)
    selection = HostSecrets(
        overrides=tuple(selected_overrides),
        data=data,
        files=tuple(sorted((name, merged.files[name]) for name in files.read)),
        requires=tuple(sealed),
        hidden=tuple(sorted(hidden)),
        names=tuple(sorted(merged.files)) if files.consulted else (),
    )
    return (
        replace(model, roots=tuple(roots), host=replace(model.host, data=public)),
        selection,
    )


def seal(selection: HostSecrets, recipient: str, digest: bytes, host: str) -> bytes:
    """The selection, encrypted to `recipient`. The randomness age needs comes
    from the environment's secrets (their digest), the host and the
    plaintext: the same build gives the same bytes, and nobody who lacks
    any of the environment's secrets can predict it."""
    plaintext = encode_secrets(selection)
    seed = hashlib.sha256(
        b"consign-secrets-seed\0"
        + digest
        + host.encode()
        + b"\0"
        + recipient.encode()
        + b"\0"
        + hashlib.sha256(plaintext).digest()
    ).digest()
    return age.encrypt(plaintext, age.Recipient.parse(recipient), seed)
