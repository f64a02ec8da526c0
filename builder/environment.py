"""Load an environment file (``environments/<name>/environment.cfg``).

The file is batou's INI dialect: case-sensitive keys, no interpolation, no
inline comments, continuation lines. We read it with our own small
line-based reader instead of :mod:`configparser` so that every key, every
list entry and every continuation line keeps its line number for errors.

Loading never stops at the first problem: :func:`load_environment` returns
a best-effort :class:`EnvironmentConfig` (bad entries left out) together
with every problem found, so the builder can report them all at once.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from executor.age import AgeError, Recipient
from executor.errors import ConsignError, closest
from executor.model import EnvironmentRecord, FamilyRequirement, VfsMode, VfsRules

from .errors import EnvironmentFileError, EnvironmentNotFound

ENVIRONMENTS_DIR = "environments"
# How to write [host:NAME] recipient (in environment.cfg or secrets.cfg.age).
RECIPIENT_HINT = (
    "write the host's ssh-ed25519 host key ('executor init' prints it) or an age1... key"
)
ENVIRONMENT_FILE = "environment.cfg"


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class RootAssignment:
    component: str
    features: tuple[str, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class PushSettings:
    """What 'bundle push' runs on a host; None: not set here."""

    # The command that runs the executor there (a shell command line).
    executor: str | None = None
    # Where --bootstrap puts executor.pex, and the allowed signers file.
    executor_pex: str | None = None
    allowed_signers: str | None = None

    def over(self, other: PushSettings) -> PushSettings:
        """These settings, with what they leave unset taken from `other`."""
        return PushSettings(
            self.executor if self.executor is not None else other.executor,
            self.executor_pex if self.executor_pex is not None else other.executor_pex,
            self.allowed_signers if self.allowed_signers is not None else other.allowed_signers,
        )


PUSH_KEYS = ("executor", "executor_pex", "allowed_signers")


@dataclass(frozen=True, slots=True)
class HostConfig:
    name: str
    roots: tuple[RootAssignment, ...]
    skipped: tuple[RootAssignment, ...]
    ignored: bool
    platform: str | None
    data: tuple[tuple[str, str], ...]
    location: Location
    # The Python the host's runtime is built for ([host:x] python).
    python: str | None = None
    # How 'bundle push' reaches the executor there ([host:x] wins over [environment]).
    push: PushSettings = field(default_factory=lambda: PushSettings())
    # The key the host's secrets are encrypted to (executor.age), and where it was set.
    recipient: str | None = None
    recipient_location: Location | None = None


@dataclass(frozen=True, slots=True)
class Override:
    attribute: str
    value: str
    location: Location


@dataclass(frozen=True, slots=True)
class ComponentOverrides:
    component: str
    overrides: tuple[Override, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class EnvironmentSettings:
    host_domain: str | None = None
    platform: str | None = None
    service_user: str | None = None
    target_directory: str = "~/deployment"
    timeout: int | None = None
    jobs: int = 1
    require_v4: FamilyRequirement = True
    require_v6: FamilyRequirement = False
    branch: str | None = None
    # Signing keys (paths relative to the repository, or ~/...), comma-separated.
    sign_keys: tuple[str, ...] = ()
    # The Python hosts run (X.Y) when no host says otherwise.
    python: str | None = None
    push: PushSettings = field(default_factory=lambda: PushSettings())


@dataclass(frozen=True, slots=True)
class EnvironmentConfig:
    name: str
    path: Path
    settings: EnvironmentSettings
    hosts: tuple[HostConfig, ...]
    overrides: tuple[ComponentOverrides, ...]
    resolver: tuple[tuple[str, tuple[str, ...]], ...]
    vfs: VfsRules
    notes: tuple[str, ...]

    def record(self, target_directory: str | None = None) -> EnvironmentRecord:
        """The executor's record of these settings.

        ``target_directory`` replaces the configured one, e.g. once the
        builder has expanded ``~`` for the service user.
        """
        s = self.settings
        return EnvironmentRecord(
            name=self.name,
            target_directory=(
                target_directory if target_directory is not None else s.target_directory
            ),
            service_user=s.service_user,
            host_domain=s.host_domain,
            platform=s.platform,
            timeout=s.timeout,
            jobs=s.jobs,
            require_v4=s.require_v4,
            require_v6=s.require_v6,
            vfs=self.vfs,
        )


# --- finding environments -------------------------------------------------


def environment_names(repo: Path) -> list[str]:
    """Sorted names of the environments in ``repo``, both layouts."""
    base = repo / ENVIRONMENTS_DIR
    if not base.is_dir():
        return []
    names: set[str] = set()
    for entry in base.iterdir():
        if entry.is_dir() and (entry / ENVIRONMENT_FILE).is_file():
            names.add(entry.name)
        elif entry.is_file() and entry.suffix == ".cfg" and entry.stem:
            names.add(entry.stem)
    return sorted(names)


def _not_found(repo: Path, name: str) -> EnvironmentNotFound:
    existing = environment_names(repo)
    new_layout = f"{ENVIRONMENTS_DIR}/{name}/{ENVIRONMENT_FILE}"
    if not existing:
        return EnvironmentNotFound(
            f"environment {name!r} not found: this repository has no environments"
            f" (looked for {ENVIRONMENTS_DIR}/<name>/{ENVIRONMENT_FILE}"
            f" and {ENVIRONMENTS_DIR}/<name>.cfg)",
            hint=f"create {new_layout} with a [hosts] section,"
            " or point the builder at your deployment repository",
        )
    close = closest(name, existing)
    hint = f"did you mean {close!r}? " if close else ""
    return EnvironmentNotFound(
        f"environment {name!r} not found; existing environments: {', '.join(existing)}",
        hint=f"{hint}pick one of the existing environments or create {new_layout}",
    )


def _is_plain_name(name: str) -> bool:
    # N.B. the name becomes a path component; never let it walk elsewhere.
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name


def load_environment(
    repo: Path, name: str, *, platform: str | None = None
) -> tuple[EnvironmentConfig | None, list[ConsignError]]:
    """Read environment ``name`` of ``repo``; return it with every problem found.

    ``platform`` is the builder's ``--platform`` option. The config is
    ``None`` only when the environment does not exist or its file cannot
    be read at all.
    """
    if not _is_plain_name(name):
        return None, [
            EnvironmentNotFound(
                f"{name!r} is not an environment name: names cannot contain '/' or be '.' or '..'",
                hint=f"existing environments: {', '.join(environment_names(repo)) or '(none)'}",
            )
        ]
    new = Path(ENVIRONMENTS_DIR, name, ENVIRONMENT_FILE)
    old = Path(ENVIRONMENTS_DIR, f"{name}.cfg")
    has_new, has_old = (repo / new).is_file(), (repo / old).is_file()
    if has_new and has_old:
        return None, [
            EnvironmentFileError(
                f"environment {name!r} is defined twice: by {new.as_posix()}"
                f" and by {old.as_posix()}",
                hint=f"keep {new.as_posix()} and remove {old.as_posix()}"
                " (the older layout)",
            )
        ]
    if not (has_new or has_old):
        return None, [_not_found(repo, name)]
    relative = new if has_new else old
    path = (repo / relative).absolute()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        return None, [
            EnvironmentFileError(
                f"cannot read {relative.as_posix()}: {exc.strerror or exc}",
                where=relative.as_posix(),
                hint="check that the file exists and is readable",
            )
        ]
    except UnicodeDecodeError as exc:
        return None, [
            EnvironmentFileError(
                f"{relative.as_posix()} is not UTF-8 text"
                f" (byte {exc.start}: {exc.reason})",
                where=relative.as_posix(),
                hint="save the environment file as UTF-8",
            )
        ]
    return _Loader(name, path, relative.as_posix(), platform).load(text)


# --- the INI reader -------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    key: str
    line: int
    # Each physical line of the value with its line number; the first one
    # is the text after the delimiter and may be empty.
    parts: list[tuple[int, str]]

    @property
    def value(self) -> str:
        return "\n".join(text for _, text in self.parts).strip()

    def lines(self) -> list[tuple[int, str]]:
        return [(line, text) for line, text in self.parts if text]


@dataclass(slots=True)
class _Section:
    name: str
    line: int
    entries: list[_Entry] = field(default_factory=list)


_KEY_VALUE = re.compile(r"(?P<key>[^=:]*?)\s*[=:]\s*(?P<value>.*)")


class _Loader:
    def __init__(self, name: str, path: Path, file: str, platform: str | None) -> None:
        self.name = name
        self.path = path
        self.file = file
        self.platform = platform or None
        self.errors: list[tuple[int, EnvironmentFileError]] = []
        self.notes: list[tuple[int, str]] = []

    # -- reporting

    def at(self, line: int) -> Location:
        return Location(self.file, line)

    def error(self, line: int, message: str, hint: str) -> None:
        self.errors.append(
            (line, EnvironmentFileError(message, where=str(self.at(line)), hint=hint))
        )

    def note(self, line: int, text: str) -> None:
        self.notes.append((line, f"{self.at(line)}: {text}"))

    # -- reading

    def read(self, text: str) -> list[_Section]:
        sections: list[_Section] = []
        seen: dict[str, int] = {}
        section: _Section | None = None
        keys: dict[str, int] = {}
        entry: _Entry | None = None
        for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
            stripped = raw.strip()
            if not stripped or stripped[0] in "#;":
                continue
            if entry is not None and raw[0].isspace():
                entry.parts.append((number, stripped))
                continue
            entry = None
            if stripped.startswith("["):
                if not stripped.endswith("]"):
                    self.error(
                        number,
                        f"expected a section header '[name]' alone on its line,"
                        f" found {stripped!r}",
                        "close the header with ']' and put comments on their own line",
                    )
                    # Its keys are dropped quietly rather than reported one by one.
                    section, keys = _Section(stripped, number), {}
                    continue
                name = stripped[1:-1].strip()
                section = _Section(name, number)
                keys = {}
                if name in seen:
                    self.error(
                        number,
                        f"section [{name}] appears twice (first on line {seen[name]});"
                        " this one is left out",
                        f"merge both [{name}] sections into one",
                    )
                else:
                    seen[name] = number
                    sections.append(section)
                continue
            match = _KEY_VALUE.fullmatch(stripped)
            if match is None or not match["key"]:
                self.error(
                    number,
                    "expected 'key = value', a '[section]' header, a comment or an"
                    f" indented continuation line, found {stripped!r}",
                    "fix or remove the line; comments start with '#' or ';'",
                )
                continue
            key = match["key"]
            # Continuation lines of a bad key are swallowed with it.
            entry = _Entry(key, number, [(number, match["value"])])
            if section is None:
                self.error(
                    number,
                    f"key {key!r} is outside any section",
                    "put it under a section header such as [environment] or [hosts]",
                )
            elif key in keys:
                self.error(
                    number,
                    f"key {key!r} appears twice in [{section.name}]"
                    f" (first on line {keys[key]}); this one is left out",
                    "remove one of them",
                )
            else:
                keys[key] = number
                section.entries.append(entry)
        return sections

    # -- interpreting

    def load(self, text: str) -> tuple[EnvironmentConfig, list[ConsignError]]:
        sections = self.read(text)
        settings = EnvironmentSettings()
        short_hosts: list[HostConfig] = []
        long_hosts: list[HostConfig] = []
        overrides: dict[str, ComponentOverrides] = {}
        resolver: dict[str, tuple[int, tuple[str, ...]]] = {}
        vfs = VfsRules()
        hosts_line: int | None = None
        for section in sections:
            kind, _, arg = section.name.partition(":")
            kind, arg = kind.strip(), arg.strip()
            if section.name == "environment":
                settings = self.environment(section)
            elif section.name == "hosts":
                hosts_line = section.line
                short_hosts.extend(self.short_hosts(section))
            elif section.name == "resolver":
                resolver = self.resolver(section)
            elif section.name == "vfs":
                vfs = self.vfs(section)
            elif kind in ("host", "component", "provisioner") and ":" in section.name:
                if not arg:
                    self.error(
                        section.line,
                        f"section [{section.name}] needs a name after ':'",
                        f"write e.g. [{kind}:{'web1' if kind == 'host' else 'app'}]",
                    )
                elif kind == "host":
                    host = self.long_host(section, arg)
                    if host is not None:
                        long_hosts.append(host)
                elif kind == "component":
                    self.component(section, arg, overrides)
                else:
                    self.note(
                        section.line,
                        f"[{section.name}] is ignored: consign does not provision hosts",
                    )
            else:
                self.unknown_section(section)

        hosts = self.merge_hosts(short_hosts, long_hosts, settings)
        if not hosts:
            self.error(
                hosts_line or 1,
                f"environment {self.name!r} has no hosts",
                "list hosts and their components in a [hosts] section,"
                " e.g. 'web1 = nginx, app'",
            )
        config = EnvironmentConfig(
            name=self.name,
            path=self.path,
            settings=settings,
            hosts=tuple(hosts),
            overrides=tuple(overrides.values()),
            resolver=tuple((name, resolver[name][1]) for name in sorted(resolver)),
            vfs=vfs,
            notes=tuple(text for _, text in sorted(self.notes, key=lambda n: n[0])),
        )
        errors: list[ConsignError] = [e for _, e in sorted(self.errors, key=lambda e: e[0])]
        return config, errors

    def unknown_section(self, section: _Section) -> None:
        kind, colon, arg = section.name.partition(":")
        if colon:
            close = closest(kind.strip(), _NAMED_SECTIONS)
            guess = f"{close}:{arg.strip()}" if close else None
        else:
            close = closest(section.name, _PLAIN_SECTIONS)
            guess = close
        allowed = ", ".join(_ALLOWED_SECTIONS)
        self.error(
            section.line,
            f"unknown section [{section.name}]",
            (f"did you mean [{guess}]? " if guess else "") + f"allowed sections: {allowed}",
        )

    # [environment]

    def environment(self, section: _Section) -> EnvironmentSettings:
        settings = EnvironmentSettings()
        for entry in section.entries:
            key, value, line = entry.key, entry.value, entry.line
            if key in _IGNORED_ENVIRONMENT_KEYS:
                self.note(line, f"{key} is ignored: {_IGNORED_ENVIRONMENT_KEYS[key]}")
            elif key not in _ENVIRONMENT_KEYS:
                self.unknown_key(
                    entry, "[environment]", [*_ENVIRONMENT_KEYS, *_IGNORED_ENVIRONMENT_KEYS]
                )
            elif "\n" in value:
                self.error(
                    line,
                    f"{key} must be a single line, found {len(entry.lines())} lines",
                    f"write {key} and its value on one line",
                )
            elif key in ("host_domain", "platform", "service_user", "branch"):
                # An empty value means "not set", as it does in batou.
                text = value or None
                match key:
                    case "host_domain":
                        settings = replace(settings, host_domain=text)
                    case "platform":
                        settings = replace(settings, platform=text)
                    case "service_user":
                        settings = replace(settings, service_user=text)
                    case _:
                        settings = replace(settings, branch=text)
            elif key in PUSH_KEYS:
                push = self.push_setting(entry, settings.push, "[environment]")
                settings = replace(settings, push=push)
            elif key == "python":
                if _PYTHON_VERSION.fullmatch(value):
                    settings = replace(settings, python=value)
                else:
                    self.error(
                        line,
                        f"python must be a version from 3.11 on, found {value!r}",
                        "write e.g. 'python = 3.11' (major.minor of the hosts' python3; "
                        "consign's runtime needs 3.11 or newer)",
                    )
            elif key == "sign_key":
                keys = tuple(k.strip() for k in value.split(",") if k.strip())
                if keys:
                    settings = replace(settings, sign_keys=keys)
                else:
                    self.error(
                        line,
                        "sign_key must name at least one key file",
                        "write e.g. 'sign_key = ~/.config/consign/builder-key', or remove the line",
                    )
            elif key == "target_directory":
                if value.startswith(("/", "~")):
                    settings = replace(settings, target_directory=value)
                else:
                    self.error(
                        line,
                        "target_directory must be an absolute path or start with '~',"
                        f" found {value!r}",
                        "write e.g. 'target_directory = /srv/app'"
                        " or 'target_directory = ~/deployment'",
                    )
            elif key == "timeout":
                number = _whole_number(value)
                if number is not None and number >= 1:
                    settings = replace(settings, timeout=number)
                else:
                    self.error(
                        line,
                        "timeout must be a positive whole number of seconds,"
                        f" found {value!r}",
                        "write e.g. 'timeout = 30', or remove the line for no timeout",
                    )
            elif key == "jobs":
                number = _whole_number(value)
                if number is not None and number >= 1:
                    settings = replace(settings, jobs=number)
                else:
                    self.error(
                        line,
                        f"jobs must be a whole number of at least 1, found {value!r}",
                        "write e.g. 'jobs = 4'",
                    )
            else:  # require_v4, require_v6
                family = _family(value)
                if family is None:
                    self.error(
                        line,
                        f"{key} must be true, false or optional, found {value!r}",
                        f"write '{key} = true', '{key} = false' or '{key} = optional'"
                        " (yes/no, on/off and 1/0 work too)",
                    )
                elif key == "require_v4":
                    settings = replace(settings, require_v4=family)
                else:
                    settings = replace(settings, require_v6=family)
        return settings

    def push_setting(self, entry: _Entry, push: PushSettings, where: str) -> PushSettings:
        """`push` with the setting of `entry` (executor, executor_pex, allowed_signers)."""
        key, value = entry.key, entry.value
        if "\n" in value or not value:
            self.error(
                entry.line,
                f"{key} in {where} must be one non-empty line",
                "write e.g. 'executor = PEX_ROOT=/var/lib/consign/pex python3 "
                "/usr/local/lib/consign/executor.pex'"
                if key == "executor"
                else f"write e.g. '{key} = /absolute/path'",
            )
            return push
        if key != "executor" and not value.startswith("/"):
            self.error(
                entry.line,
                f"{key} in {where} must be an absolute path on the host, found {value!r}",
                f"write e.g. '{key} = /usr/local/lib/consign/executor.pex'"
                if key == "executor_pex"
                else f"write e.g. '{key} = /etc/consign/allowed_signers'",
            )
            return push
        return replace(push, **{key: value})

    def unknown_key(self, entry: _Entry, where: str, known: Sequence[str]) -> None:
        close = closest(entry.key, known)
        guess = f"did you mean {close!r}? " if close else ""
        self.error(
            entry.line,
            f"unknown key {entry.key!r} in {where}",
            f"{guess}known keys: {', '.join(sorted(known))}",
        )

    # [hosts] and [host:NAME]

    def short_hosts(self, section: _Section) -> list[HostConfig]:
        hosts: list[HostConfig] = []
        for entry in section.entries:
            ignored = entry.key.startswith("!")
            name = entry.key[1:].strip() if ignored else entry.key
            if not self.valid_host_name(name, entry.line):
                continue
            roots, skipped = self.components(entry, name)
            hosts.append(
                HostConfig(
                    name=name,
                    roots=roots,
                    skipped=skipped,
                    ignored=ignored,
                    platform=None,  # resolved in merge_hosts
                    data=(),
                    location=self.at(entry.line),
                )
            )
        return hosts

    def long_host(self, section: _Section, name: str) -> HostConfig | None:
        if not self.valid_host_name(name, section.line):
            return None
        roots: tuple[RootAssignment, ...] = ()
        skipped: tuple[RootAssignment, ...] = ()
        ignored = False
        platform: str | None = None
        python: str | None = None
        push = PushSettings()
        data: dict[str, str] = {}
        recipient: tuple[str, Location] | None = None
        has_components = False
        for entry in section.entries:
            key, value = entry.key, entry.value
            if key == "recipient":
                try:
                    recipient = (Recipient.parse(value).text, self.at(entry.line))
                except AgeError as problem:
                    self.error(entry.line, f"recipient of host {name!r}: {problem}", RECIPIENT_HINT)
            elif key == "components":
                has_components = True
                roots, skipped = self.components(entry, name)
            elif key == "platform":
                if "\n" in value:
                    self.error(
                        entry.line,
                        f"platform of host {name!r} must be a single line,"
                        f" found {len(entry.lines())} lines",
                        "write the platform name on the same line as 'platform ='",
                    )
                else:
                    platform = value or None
            elif key == "python":
                if _PYTHON_VERSION.fullmatch(value):
                    python = value
                else:
                    self.error(
                        entry.line,
                        f"python of host {name!r} must be a version from 3.11 on, found {value!r}",
                        "write e.g. 'python = 3.12' (major.minor of the host's python3; "
                        "consign's runtime needs 3.11 or newer)",
                    )
            elif key in PUSH_KEYS:
                push = self.push_setting(entry, push, f"[host:{name}]")
            elif key == "ignore":
                flag = _boolean(value)
                if flag is None:
                    self.error(
                        entry.line,
                        f"ignore of host {name!r} must be true or false, found {value!r}",
                        "write 'ignore = true' or 'ignore = false'"
                        " (yes/no, on/off and 1/0 work too)",
                    )
                else:
                    ignored = flag
            elif key.startswith("data-"):
                if key == "data-":
                    self.error(
                        entry.line,
                        f"key 'data-' of host {name!r} needs a name after 'data-'",
                        "write e.g. 'data-alias = shop.example.com'",
                    )
                else:
                    data[key[len("data-") :]] = value
            else:
                self.unknown_key(
                    entry,
                    f"[host:{name}]",
                    ["components", "platform", "python", "ignore", "data-NAME", "recipient", *PUSH_KEYS],
                )
        if not has_components:
            self.note(section.line, f"host {name!r} lists no components: it deploys nothing")
        return HostConfig(
            name=name,
            roots=roots,
            skipped=skipped,
            ignored=ignored,
            platform=platform,
            data=tuple(sorted(data.items())),
            location=self.at(section.line),
            python=python,
            push=push,
            recipient=None if recipient is None else recipient[0],
            recipient_location=None if recipient is None else recipient[1],
        )

    def valid_host_name(self, name: str, line: int) -> bool:
        # N.B. host names become file names (bundles/<env>/<host>.bundle).
        if _HOST_NAME.fullmatch(name):
            return True
        self.error(
            line,
            "expected a host name of letters, digits, '.', '-' and '_',"
            f" found {name!r}",
            "write e.g. 'web1' or 'web1.example.com'",
        )
        return False

    def components(
        self, entry: _Entry, host: str
    ) -> tuple[tuple[RootAssignment, ...], tuple[RootAssignment, ...]]:
        roots: dict[str, RootAssignment] = {}
        skipped: dict[str, RootAssignment] = {}
        for line, text in entry.lines():
            for item in (piece.strip() for piece in text.split(",")):
                if not item:
                    continue
                skip = item.startswith("!")
                component, *features = (p.strip() for p in item.lstrip("!").split(":"))
                component = component.lower()
                if not component.isidentifier():
                    self.error(
                        line,
                        f"expected a component name on host {host!r}, found {item!r}",
                        "component names are Python class names, lowercased; separate"
                        " components with ',' and features with ':' (e.g. 'postgres:replica')",
                    )
                    continue
                if not all(features):
                    self.error(
                        line,
                        f"component {component!r} on host {host!r} has an empty feature"
                        f" in {item!r}",
                        f"write features after ':' without gaps, e.g. '{component}:replica'",
                    )
                    continue
                target = skipped if skip else roots
                assignment = RootAssignment(component, tuple(features), self.at(line))
                first = target.get(component)
                if first is None:
                    target[component] = assignment
                elif first.features != assignment.features:
                    self.note(
                        line,
                        f"component {component!r} is listed again on host {host!r}"
                        f" with other features; the first entry"
                        f" (line {first.location.line}) wins",
                    )
        for component, assignment in skipped.items():
            if component in roots:
                self.error(
                    assignment.location.line,
                    f"component {component!r} is both deployed and skipped on host {host!r}",
                    f"remove either {component!r} or '!{component}'",
                )
        if not roots:
            self.note(entry.line, f"host {host!r} lists no components: it deploys nothing")
        return tuple(roots.values()), tuple(
            a for c, a in skipped.items() if c not in roots
        )

    def merge_hosts(
        self,
        short_hosts: list[HostConfig],
        long_hosts: list[HostConfig],
        settings: EnvironmentSettings,
    ) -> list[HostConfig]:
        by_name: dict[str, HostConfig] = {}
        short_names = {host.name for host in short_hosts}
        for host in short_hosts:
            first = by_name.get(host.name)
            if first is not None:
                self.error(
                    host.location.line,
                    f"host {host.name!r} is defined twice in [hosts]"
                    f" (first on line {first.location.line}); this one is left out",
                    "keep one line per host; '!host' and 'host' name the same host",
                )
            else:
                by_name[host.name] = host
        for host in long_hosts:
            first = by_name.get(host.name)
            if first is not None and first.name not in short_names:
                self.error(
                    host.location.line,
                    f"host {host.name!r} is defined twice: [host:{host.name}] sections on"
                    f" lines {first.location.line} and {host.location.line};"
                    " this one is left out",
                    "merge both sections into one",
                )
            elif first is not None:
                self.error(
                    host.location.line,
                    f"host {host.name!r} is defined both in [hosts]"
                    f" (line {first.location.line}) and in [host:{host.name}]"
                    f" (line {host.location.line})",
                    f"keep one: move the components into [host:{host.name}]"
                    " as 'components = ...', or remove the section",
                )
            else:
                by_name[host.name] = host
        fallback = self.platform or settings.platform or settings.host_domain
        return [
            replace(
                host,
                platform=host.platform or fallback,
                python=host.python or settings.python,
                push=host.push.over(settings.push),
            )
            for host in by_name.values()
        ]

    # [component:NAME]

    def component(
        self, section: _Section, name: str, overrides: dict[str, ComponentOverrides]
    ) -> None:
        component = name.lower()
        if not component.isidentifier():
            self.error(
                section.line,
                f"expected a component name in [{section.name}], found {name!r}",
                "component names are Python class names, lowercased, e.g. [component:app]",
            )
            return
        first = overrides.get(component)
        if first is not None:
            self.error(
                section.line,
                f"overrides for component {component!r} are defined twice"
                f" (first on line {first.location.line}); this section is left out",
                "merge both sections into one",
            )
            return
        overrides[component] = ComponentOverrides(
            component=component,
            overrides=tuple(
                Override(entry.key, entry.value, self.at(entry.line))
                for entry in section.entries
            ),
            location=self.at(section.line),
        )

    # [resolver]

    def resolver(self, section: _Section) -> dict[str, tuple[int, tuple[str, ...]]]:
        result: dict[str, tuple[int, tuple[str, ...]]] = {}
        for entry in section.entries:
            name = entry.key.lower().rstrip(".")
            if not name:
                self.error(
                    entry.line,
                    f"expected a host name in [resolver], found {entry.key!r}",
                    "write e.g. 'db.example.com = 10.0.0.5'",
                )
                continue
            if name in result:
                self.error(
                    entry.line,
                    f"resolver name {name!r} is set twice (first on line {result[name][0]})",
                    "list all addresses of a name under one key, one per line",
                )
                continue
            v4: list[tuple[int, str]] = []
            v6: list[tuple[int, str]] = []
            good = True
            for line, text in entry.lines():
                try:
                    address = ipaddress.ip_address(text)
                except ValueError:
                    self.error(
                        line,
                        f"resolver address for {name!r} must be an IPv4 or IPv6 address,"
                        f" found {text!r}",
                        "write one address per line, e.g. '10.0.0.5' or 'fd00::5'",
                    )
                    good = False
                    continue
                family = v4 if address.version == 4 else v6
                if family:
                    self.error(
                        line,
                        f"resolver name {name!r} has more than one IPv{address.version}"
                        f" address: {family[0][1]} (line {family[0][0]}) and {address}",
                        "set only one IP address per type (one IPv4, one IPv6)"
                        " for each name",
                    )
                    good = False
                    continue
                family.append((line, str(address)))
            if not v4 and not v6 and good:
                self.error(
                    entry.line,
                    f"resolver name {name!r} has no address",
                    f"write e.g. '{entry.key} = 10.0.0.5', or remove the line",
                )
            if v4 or v6:
                result[name] = (entry.line, tuple(a for _, a in (*v4, *v6)))
        return result

    # [vfs]

    def vfs(self, section: _Section) -> VfsRules:
        mode: VfsMode | None = None
        sandbox_line: int | None = None
        rules: dict[str, tuple[int, str]] = {}
        for entry in section.entries:
            key, value, line = entry.key, entry.value, entry.line
            if key == "sandbox":
                sandbox_line = line
                mode = _SANDBOXES.get(value.lower())
                if mode is None:
                    self.error(
                        line,
                        f"sandbox must be Developer or Map, found {value!r}",
                        "write 'sandbox = Developer' or 'sandbox = Map'",
                    )
            elif key.startswith("/"):
                if "\n" in value or not value.startswith("/"):
                    self.error(
                        line,
                        f"vfs rule for {key!r} must map to one absolute path,"
                        f" found {value!r}",
                        "write e.g. '/srv/app = /home/me/sandbox/app'",
                    )
                    continue
                prefix = posixpath.normpath(key)
                if prefix in rules:
                    self.error(
                        line,
                        f"vfs rule for {prefix!r} is set twice"
                        f" (first on line {rules[prefix][0]})",
                        "keep one rule per prefix",
                    )
                    continue
                rules[prefix] = (line, posixpath.normpath(value))
            else:
                self.error(
                    line,
                    f"unknown key {key!r} in [vfs]: expected 'sandbox' or an absolute"
                    " path prefix",
                    "write 'sandbox = Developer', or 'sandbox = Map' followed by"
                    " '/srv/app = /home/me/sandbox/app' lines",
                )
        if mode is None:
            if rules and sandbox_line is None:
                first_line = min(line for line, _ in rules.values())
                self.error(
                    first_line,
                    "vfs path rules need 'sandbox = Map', found no sandbox",
                    "add 'sandbox = Map' to [vfs]",
                )
            return VfsRules()
        if mode is VfsMode.DEVELOPER:
            if rules:
                first_line = min(line for line, _ in rules.values())
                self.error(
                    first_line,
                    "vfs path rules need 'sandbox = Map', found 'sandbox = Developer'",
                    "use 'sandbox = Map' to map paths, or remove the rules to keep"
                    " Developer",
                )
            return VfsRules(VfsMode.DEVELOPER)
        if not rules:
            assert sandbox_line is not None
            self.note(sandbox_line, "sandbox = Map without path rules maps nothing")
        return VfsRules(
            VfsMode.MAP, tuple((prefix, rules[prefix][1]) for prefix in sorted(rules))
        )


# --- tables and small parsers ---------------------------------------------

_PLAIN_SECTIONS = ("environment", "hosts", "resolver", "vfs")
_NAMED_SECTIONS = ("host", "component", "provisioner")
_ALLOWED_SECTIONS = (
    "[environment]",
    "[hosts]",
    "[host:NAME]",
    "[component:NAME]",
    "[resolver]",
    "[vfs]",
    "[provisioner:NAME]",
)

_ENVIRONMENT_KEYS = (
    "host_domain",
    "platform",
    "service_user",
    "target_directory",
    "timeout",
    "jobs",
    "require_v4",
    "require_v6",
    "branch",
    "sign_key",
    "python",
    *PUSH_KEYS,
)

_IGNORED_ENVIRONMENT_KEYS = {
    "connect_method": "consign hosts receive bundles instead of SSH sessions",
    "update_method": "hosts get the repository inside the bundle, not from a checkout",
    "repository_url": "hosts get the repository inside the bundle, not from a checkout",
    "repository_root": "the builder bundles the deployment repository it runs in",
    "require_sudo": "the executor runs on the host itself; there is no sudo over SSH",
    "deployment_base": "consign uses target_directory",
}

# consign's runtime needs Python 3.11 or newer.
_PYTHON_VERSION = re.compile(r"3\.(1[1-9]|[2-9]\d)")

_SANDBOXES = {"developer": VfsMode.DEVELOPER, "map": VfsMode.MAP}

_BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}

_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _whole_number(value: str) -> int | None:
    # N.B. stricter than int(): no sign, no underscores, no spaces.
    return int(value) if value.isascii() and value.isdigit() else None


def _boolean(value: str) -> bool | None:
    return _BOOLEANS.get(value.lower())


def _family(value: str) -> FamilyRequirement | None:
    if value.lower() == "optional":
        return "optional"
    return _boolean(value)
