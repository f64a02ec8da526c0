from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from builder.environment import (
    ComponentOverrides,
    EnvironmentConfig,
    EnvironmentSettings,
    HostConfig,
    Location,
    Override,
    PushSettings,
    RootAssignment,
    environment_names,
    load_environment,
)
from builder.errors import EnvironmentFileError, EnvironmentNotFound
from executor.errors import ConsignError
from executor.model import EnvironmentRecord, VfsMode, VfsRules

NEW = "environments/prod/environment.cfg"
OLD = "environments/prod.cfg"


def write(repo: Path, relative: str, text: str) -> Path:
    path = repo / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_ok(repo: Path, text: str, **kwargs: str | None) -> EnvironmentConfig:
    write(repo, NEW, text)
    config, errors = load_environment(repo, "prod", **kwargs)
    assert errors == []
    assert config is not None
    return config


def at(line: int, file: str = NEW) -> Location:
    return Location(file, line)


# --- finding environments -------------------------------------------------


def test_environment_names_lists_both_layouts_sorted(tmp_path: Path) -> None:
    write(tmp_path, "environments/prod/environment.cfg", "")
    write(tmp_path, "environments/dev.cfg", "")
    write(tmp_path, "environments/staging/environment.cfg", "")
    write(tmp_path, "environments/notes/README", "")  # a directory without environment.cfg
    write(tmp_path, "environments/README.md", "")
    assert environment_names(tmp_path) == ["dev", "prod", "staging"]


def test_environment_names_is_empty_without_environments_directory(tmp_path: Path) -> None:
    assert environment_names(tmp_path) == []


@pytest.mark.parametrize("relative", [NEW, OLD], ids=["directory layout", "older file layout"])
def test_loads_either_layout(tmp_path: Path, relative: str) -> None:
    path = write(tmp_path, relative, "[hosts]\nweb1 = app\n")
    config, errors = load_environment(tmp_path, "prod")
    assert errors == []
    assert config is not None
    assert config.path == path.absolute()
    assert config.path.is_absolute()
    assert config.hosts[0].location == Location(relative, 2)
    assert str(config.hosts[0].location) == f"{relative}:2"


def test_both_layouts_present_is_an_error_naming_both_files(tmp_path: Path) -> None:
    write(tmp_path, NEW, "[hosts]\nweb1 = app\n")
    write(tmp_path, OLD, "[hosts]\nweb1 = app\n")
    config, errors = load_environment(tmp_path, "prod")
    assert config is None
    [error] = errors
    assert isinstance(error, EnvironmentFileError)
    assert error.message == (
        "environment 'prod' is defined twice: by environments/prod/environment.cfg"
        " and by environments/prod.cfg"
    )
    assert error.hint is not None and "remove environments/prod.cfg" in error.hint


def test_missing_environment_lists_the_existing_ones(tmp_path: Path) -> None:
    write(tmp_path, "environments/production/environment.cfg", "")
    write(tmp_path, "environments/dev.cfg", "")
    config, errors = load_environment(tmp_path, "prodution")
    assert config is None
    [error] = errors
    assert isinstance(error, EnvironmentNotFound)
    assert error.where is None
    assert error.message == (
        "environment 'prodution' not found; existing environments: dev, production"
    )
    assert error.hint is not None and "did you mean 'production'?" in error.hint


def test_missing_environment_without_any_says_where_they_are_looked_for(
    tmp_path: Path,
) -> None:
    config, errors = load_environment(tmp_path, "prod")
    assert config is None
    [error] = errors
    assert isinstance(error, EnvironmentNotFound)
    assert "this repository has no environments" in error.message
    assert "environments/<name>/environment.cfg and environments/<name>.cfg" in error.message
    assert error.hint is not None and "environments/prod/environment.cfg" in error.hint


@pytest.mark.parametrize("name", ["../outside", "prod/../../outside", "..", ""])
def test_environment_name_that_is_a_path_is_not_found(tmp_path: Path, name: str) -> None:
    # Each of these would otherwise reach a file outside environments/<name>.
    for relative in ["outside.cfg", "environment.cfg", "environments/environment.cfg"]:
        write(tmp_path, relative, HOSTS)
    write(tmp_path, NEW, HOSTS)
    config, errors = load_environment(tmp_path, name)
    assert config is None
    [error] = errors
    assert isinstance(error, EnvironmentNotFound)


def test_file_that_is_not_utf8_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / NEW
    path.parent.mkdir(parents=True)
    path.write_bytes(b"[hosts]\nweb1 = caf\xe9\n")
    config, errors = load_environment(tmp_path, "prod")
    assert config is None
    [error] = errors
    assert isinstance(error, EnvironmentFileError)
    assert error.where == NEW
    assert "is not UTF-8 text" in error.message


# --- the happy path -------------------------------------------------------

RICH = """
    # The production environment.
    ; another comment style
    [environment]
    host_domain = example.com
    platform = debian
    service_user = app
    target_directory = /srv/app
    timeout = 30
    jobs = 4
    require_v4 = Yes
    require_v6 = optional
    branch = production
    connect_method = ssh

    [hosts]
    web1 = nginx, App
    web2 = nginx

           app:frontend:tls
    !old = app
    db1: postgres:replica, !backup, nginx, nginx
    empty =

    [host:web3]
    components = nginx
        !app
    platform = nixos
    ignore = off
    data-region = eu
    data-Alias = shop.example.com

    [host:retired]
    components = app
    ignore = TRUE

    [component:App]
    workers = 8
    listen = {{host.fqdn}}:8080
    format = %(name)s $HOME # not a comment
    banner = first line
        second line

    [resolver]
    DB.example.com. = fd00::0005
        10.0.0.5
    cache.example.com = 10.0.0.6

    [vfs]
    sandbox = Map
    /srv/app/ = /home/me/sandbox/app
    /etc = /home/me/sandbox/etc

    [provisioner:default]
    method = container
"""


def test_rich_file_loads_into_complete_records(tmp_path: Path) -> None:
    config = load_ok(tmp_path, RICH)
    assert config == EnvironmentConfig(
        name="prod",
        path=(tmp_path / NEW).absolute(),
        settings=EnvironmentSettings(
            host_domain="example.com",
            platform="debian",
            service_user="app",
            target_directory="/srv/app",
            timeout=30,
            jobs=4,
            require_v4=True,
            require_v6="optional",
            branch="production",
        ),
        hosts=(
            HostConfig(
                name="web1",
                roots=(
                    RootAssignment("nginx", (), at(16)),
                    RootAssignment("app", (), at(16)),
                ),
                skipped=(),
                ignored=False,
                platform="debian",
                data=(),
                location=at(16),
            ),
            HostConfig(
                name="web2",
                roots=(
                    RootAssignment("nginx", (), at(17)),
                    RootAssignment("app", ("frontend", "tls"), at(19)),
                ),
                skipped=(),
                ignored=False,
                platform="debian",
                data=(),
                location=at(17),
            ),
            HostConfig(
                name="old",
                roots=(RootAssignment("app", (), at(20)),),
                skipped=(),
                ignored=True,
                platform="debian",
                data=(),
                location=at(20),
            ),
            HostConfig(
                name="db1",
                roots=(
                    RootAssignment("postgres", ("replica",), at(21)),
                    RootAssignment("nginx", (), at(21)),
                ),
                skipped=(RootAssignment("backup", (), at(21)),),
                ignored=False,
                platform="debian",
                data=(),
                location=at(21),
            ),
            HostConfig(
                name="empty",
                roots=(),
                skipped=(),
                ignored=False,
                platform="debian",
                data=(),
                location=at(22),
            ),
            HostConfig(
                name="web3",
                roots=(RootAssignment("nginx", (), at(25)),),
                skipped=(RootAssignment("app", (), at(26)),),
                ignored=False,
                platform="nixos",
                data=(("Alias", "shop.example.com"), ("region", "eu")),
                location=at(24),
            ),
            HostConfig(
                name="retired",
                roots=(RootAssignment("app", (), at(33)),),
                skipped=(),
                ignored=True,
                platform="debian",
                data=(),
                location=at(32),
            ),
        ),
        overrides=(
            ComponentOverrides(
                component="app",
                overrides=(
                    Override("workers", "8", at(37)),
                    Override("listen", "{{host.fqdn}}:8080", at(38)),
                    Override("format", "%(name)s $HOME # not a comment", at(39)),
                    Override("banner", "first line\nsecond line", at(40)),
                ),
                location=at(36),
            ),
        ),
        resolver=(
            ("cache.example.com", ("10.0.0.6",)),
            ("db.example.com", ("10.0.0.5", "fd00::5")),
        ),
        vfs=VfsRules(
            VfsMode.MAP,
            (("/etc", "/home/me/sandbox/etc"), ("/srv/app", "/home/me/sandbox/app")),
        ),
        notes=(
            f"{NEW}:13: connect_method is ignored:"
            " consign hosts receive bundles instead of SSH sessions",
            f"{NEW}:22: host 'empty' lists no components: it deploys nothing",
            f"{NEW}:53: [provisioner:default] is ignored: consign does not provision hosts",
        ),
    )


def test_record_carries_the_settings_for_the_executor(tmp_path: Path) -> None:
    config = load_ok(tmp_path, RICH)
    vfs = VfsRules(
        VfsMode.MAP, (("/etc", "/home/me/sandbox/etc"), ("/srv/app", "/home/me/sandbox/app"))
    )
    expected = EnvironmentRecord(
        name="prod",
        target_directory="/srv/app",
        service_user="app",
        host_domain="example.com",
        platform="debian",
        timeout=30,
        jobs=4,
        require_v4=True,
        require_v6="optional",
        vfs=vfs,
    )
    assert config.record() == expected
    assert config.record("/home/app/deployment").target_directory == "/home/app/deployment"


def test_minimal_file_gets_the_defaults(tmp_path: Path) -> None:
    config = load_ok(tmp_path, "[hosts]\nweb1 = app\n")
    assert config.settings == EnvironmentSettings()
    assert config.settings.target_directory == "~/deployment"
    assert config.overrides == ()
    assert config.resolver == ()
    assert config.vfs == VfsRules()
    assert config.notes == ()
    assert config.hosts[0].platform is None


def test_developer_sandbox(tmp_path: Path) -> None:
    config = load_ok(tmp_path, "[hosts]\nweb1 = app\n[vfs]\nsandbox = developer\n")
    assert config.vfs == VfsRules(VfsMode.DEVELOPER)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True), ("True", True), ("yes", True), ("ON", True), ("1", True),
        ("false", False), ("No", False), ("off", False), ("0", False),
        ("optional", "optional"), ("Optional", "optional"),
    ],
)  # fmt: skip
def test_address_family_requirements_accept_booleans_and_optional(
    tmp_path: Path, text: str, expected: bool | str
) -> None:
    config = load_ok(tmp_path, f"[environment]\nrequire_v6 = {text}\n[hosts]\nweb1 = app\n")
    assert config.settings.require_v6 == expected


def test_reader_accepts_colon_delimiter_crlf_and_drops_blank_lines_in_values(
    tmp_path: Path,
) -> None:
    text = "[hosts]\r\nweb1: nginx\r\n\r\n   ; a comment inside\r\n   app\r\n"
    config = load_ok(tmp_path, text)
    assert config.hosts[0].roots == (
        RootAssignment("nginx", (), at(2)),
        RootAssignment("app", (), at(5)),
    )


def test_ignored_batou_keys_get_one_note_each(tmp_path: Path) -> None:
    keys = [
        "connect_method",
        "update_method",
        "repository_url",
        "repository_root",
        "require_sudo",
        "deployment_base",
    ]
    text = "[environment]\n" + "".join(f"{key} = x\n" for key in keys) + "[hosts]\nweb1 = app\n"
    config = load_ok(tmp_path, text)
    assert [note.split(": ")[1] for note in config.notes] == [f"{k} is ignored" for k in keys]


def test_repeated_component_on_a_host_keeps_the_first(tmp_path: Path) -> None:
    config = load_ok(tmp_path, "[hosts]\nweb1 = app:a, nginx, app:b, app:a\n")
    assert config.hosts[0].roots == (
        RootAssignment("app", ("a",), at(2)),
        RootAssignment("nginx", (), at(2)),
    )
    assert config.notes == (
        f"{NEW}:2: component 'app' is listed again on host 'web1' with other features;"
        " the first entry (line 2) wins",
    )


# --- platform precedence --------------------------------------------------


@pytest.mark.parametrize(
    ("host_platform", "argument", "env_platform", "host_domain", "expected"),
    [
        ("nixos", "arch", "debian", "example.com", "nixos"),
        (None, "arch", "debian", "example.com", "arch"),
        (None, None, "debian", "example.com", "debian"),
        (None, None, None, "example.com", "example.com"),
        (None, None, None, None, None),
    ],
    ids=["host section", "builder option", "environment", "host_domain", "none"],
)
def test_platform_precedence(
    tmp_path: Path,
    host_platform: str | None,
    argument: str | None,
    env_platform: str | None,
    host_domain: str | None,
    expected: str | None,
) -> None:
    lines = ["[environment]"]
    if env_platform:
        lines.append(f"platform = {env_platform}")
    if host_domain:
        lines.append(f"host_domain = {host_domain}")
    lines += ["[host:web1]", "components = app"]
    if host_platform:
        lines.append(f"platform = {host_platform}")
    lines += ["[hosts]", "web2 = app"]
    config = load_ok(tmp_path, "\n".join(lines) + "\n", platform=argument)
    host_section, short_form = config.hosts[1], config.hosts[0]
    assert (host_section.name, short_form.name) == ("web1", "web2")
    assert host_section.platform == expected
    assert short_form.platform == (argument or env_platform or host_domain)
    assert config.settings.platform == env_platform


# --- python: the version hosts run their runtime with --------------------


@pytest.mark.parametrize(
    ("env_python", "host_python", "expected"),
    [
        (None, None, None),
        ("3.11", None, "3.11"),
        (None, "3.12", "3.12"),
        ("3.11", "3.13", "3.13"),
        ("3.11", "3.20", "3.20"),
    ],
    ids=["neither", "environment", "host section", "host section wins", "two-digit minor"],
)
def test_python_of_the_environment_and_of_a_host_section(
    tmp_path: Path, env_python: str | None, host_python: str | None, expected: str | None
) -> None:
    lines = ["[environment]"]
    if env_python:
        lines.append(f"python = {env_python}")
    lines += ["[host:web1]", "components = app"]
    if host_python:
        lines.append(f"python = {host_python}")
    lines += ["[hosts]", "web2 = app"]
    config = load_ok(tmp_path, "\n".join(lines) + "\n")
    host_section, short_form = config.hosts[1], config.hosts[0]
    assert (host_section.name, short_form.name) == ("web1", "web2")
    assert config.settings == EnvironmentSettings(python=env_python)
    assert host_section.python == expected
    # A host of the [hosts] list has no section to say otherwise.
    assert short_form.python == env_python


# --- bad input ------------------------------------------------------------

HOSTS = "[hosts]\nweb1 = app\n"

BAD: list[tuple[str, str, str, int, str]] = [
    # (id, file text, message substring, line, hint substring)
    ("unknown section", "[enviroment]\nx = 1\n" + HOSTS,
     "unknown section [enviroment]", 1, "did you mean [environment]?"),
    ("unknown named section", "[hots:web1]\ncomponents = app\n" + HOSTS,
     "unknown section [hots:web1]", 1, "did you mean [host:web1]?"),
    ("section without a name", "[host:]\ncomponents = app\n" + HOSTS,
     "section [host:] needs a name after ':'", 1, "[host:web1]"),
    ("unknown environment key", "[environment]\nhost_domian = example.com\n" + HOSTS,
     "unknown key 'host_domian' in [environment]", 2, "did you mean 'host_domain'?"),
    ("reserved key not yet accepted", "[environment]\nruntime = pex\n" + HOSTS,
     "unknown key 'runtime' in [environment]", 2,
     "known keys: allowed_signers, branch, connect_method, deployment_base, executor, executor_pex, host_domain, jobs, platform, python,"),
    ("python without a minor version", "[environment]\npython = 3\n" + HOSTS,
     "python must be a version from 3.11 on, found '3'", 2, "write e.g. 'python = 3.11'"),
    ("python as a word", "[environment]\npython = three\n" + HOSTS,
     "python must be a version from 3.11 on, found 'three'", 2, "major.minor of the hosts' python3"),
    ("python with a patch version", "[environment]\npython = 3.11.7\n" + HOSTS,
     "python must be a version from 3.11 on, found '3.11.7'", 2, "python = 3.11"),
    ("python 2", "[environment]\npython = 2.7\n" + HOSTS,
     "python must be a version from 3.11 on, found '2.7'", 2, "python = 3.11"),
    ("python too old", "[environment]\npython = 3.10\n" + HOSTS,
     "python must be a version from 3.11 on, found '3.10'", 2, "consign's runtime needs 3.11 or newer"),
    ("python over several lines", "[environment]\npython = 3.11\n  3.12\n" + HOSTS,
     "python must be a single line, found 2 lines", 2, "one line"),
    ("timeout with a unit", "[environment]\ntimeout = 30s\n" + HOSTS,
     "timeout must be a positive whole number of seconds, found '30s'", 2, "timeout = 30"),
    ("zero timeout", "[environment]\ntimeout = 0\n" + HOSTS,
     "timeout must be a positive whole number of seconds, found '0'", 2, "timeout = 30"),
    ("jobs not a number", "[environment]\njobs = four\n" + HOSTS,
     "jobs must be a whole number of at least 1, found 'four'", 2, "jobs = 4"),
    ("zero jobs", "[environment]\njobs = 0\n" + HOSTS,
     "jobs must be a whole number of at least 1, found '0'", 2, "jobs = 4"),
    ("bad require_v4", "[environment]\nrequire_v4 = maybe\n" + HOSTS,
     "require_v4 must be true, false or optional, found 'maybe'", 2, "require_v4 = optional"),
    ("relative target_directory", "[environment]\ntarget_directory = srv/app\n" + HOSTS,
     "target_directory must be an absolute path or start with '~', found 'srv/app'", 2,
     "target_directory = /srv/app"),
    ("multi-line setting", "[environment]\nplatform = debian\n  nixos\n" + HOSTS,
     "platform must be a single line, found 2 lines", 2, "one line"),
    ("host in both forms", HOSTS + "[host:web1]\ncomponents = app\n",
     "host 'web1' is defined both in [hosts] (line 2) and in [host:web1] (line 3)", 3,
     "keep one"),
    ("host twice in [hosts]", "[hosts]\nweb1 = app\n!web1 = app\n",
     "host 'web1' is defined twice in [hosts] (first on line 2)", 3, "one line per host"),
    ("host section twice", "[host:web1]\ncomponents = a\n[host: web1]\ncomponents = b\n",
     "host 'web1' is defined twice: [host:web1] sections on lines 1 and 3", 3, "merge"),
    ("bad host name", "[hosts]\nweb/1 = app\nweb2 = app\n",
     "expected a host name of letters, digits, '.', '-' and '_', found 'web/1'", 2, "web1"),
    ("unknown host key", "[host:web1]\ncomponents = app\nplattform = nixos\n",
     "unknown key 'plattform' in [host:web1]", 3, "did you mean 'platform'?"),
    ("misspelt host python", "[host:web1]\ncomponents = app\npyton = 3.12\n",
     "unknown key 'pyton' in [host:web1]", 3,
     "did you mean 'python'? known keys: allowed_signers, components, data-NAME, executor, executor_pex, ignore, platform, python"),
    ("host python without a minor version", "[host:web1]\ncomponents = app\npython = 3\n",
     "python of host 'web1' must be a version from 3.11 on, found '3'", 3,
     "write e.g. 'python = 3.12'"),
    ("host python as a word", "[host:web1]\ncomponents = app\npython = three\n",
     "python of host 'web1' must be a version from 3.11 on, found 'three'", 3,
     "major.minor of the host's python3"),
    ("host python with a patch version", "[host:web1]\ncomponents = app\npython = 3.11.7\n",
     "python of host 'web1' must be a version from 3.11 on, found '3.11.7'", 3, "python = 3.12"),
    ("bad ignore value", "[host:web1]\ncomponents = app\nignore = perhaps\n",
     "ignore of host 'web1' must be true or false, found 'perhaps'", 3, "ignore = true"),
    ("data key without name", "[host:web1]\ncomponents = app\ndata- = x\n",
     "key 'data-' of host 'web1' needs a name after 'data-'", 3, "data-alias"),
    ("bad component name", "[hosts]\nweb1 = nginx\n  my app\n",
     "expected a component name on host 'web1', found 'my app'", 3, "separate"),
    ("empty feature", "[hosts]\nweb1 = postgres:\n",
     "component 'postgres' on host 'web1' has an empty feature in 'postgres:'", 2,
     "postgres:replica"),
    ("component deployed and skipped", "[hosts]\nweb1 = app, !app\n",
     "component 'app' is both deployed and skipped on host 'web1'", 2, "'!app'"),
    ("component overrides twice", HOSTS + "[component:app]\na = 1\n[component:App]\nb = 2\n",
     "overrides for component 'app' are defined twice (first on line 3)", 5, "merge"),
    ("invalid resolver address", HOSTS + "[resolver]\ndb.example.com = 10.0.0.300\n",
     "resolver address for 'db.example.com' must be an IPv4 or IPv6 address,"
     " found '10.0.0.300'", 4, "one address per line"),
    ("two v4 addresses", HOSTS + "[resolver]\ndb = 10.0.0.5\n  10.0.0.6\n",
     "resolver name 'db' has more than one IPv4 address: 10.0.0.5 (line 4) and 10.0.0.6",
     5, "only one IP address per type"),
    ("two v6 addresses", HOSTS + "[resolver]\ndb = fd00::1\n  10.0.0.1\n  fd00::2\n",
     "resolver name 'db' has more than one IPv6 address", 6, "one IPv6"),
    ("resolver name twice", HOSTS + "[resolver]\ndb = 10.0.0.5\nDB. = 10.0.0.6\n",
     "resolver name 'db' is set twice (first on line 4)", 5, "one key"),
    ("unknown sandbox", HOSTS + "[vfs]\nsandbox = Chroot\n",
     "sandbox must be Developer or Map, found 'Chroot'", 4, "sandbox = Map"),
    ("map rules without sandbox", HOSTS + "[vfs]\n/srv = /tmp/srv\n",
     "vfs path rules need 'sandbox = Map', found no sandbox", 4, "sandbox = Map"),
    ("map rules with developer", HOSTS + "[vfs]\nsandbox = Developer\n/srv = /tmp/srv\n",
     "vfs path rules need 'sandbox = Map', found 'sandbox = Developer'", 5, "remove the rules"),
    ("relative map target", HOSTS + "[vfs]\nsandbox = Map\n/srv = tmp/srv\n",
     "vfs rule for '/srv' must map to one absolute path, found 'tmp/srv'", 5, "/srv/app"),
    ("unknown vfs key", HOSTS + "[vfs]\nsandbox = Map\nsrv = /tmp/srv\n",
     "unknown key 'srv' in [vfs]", 5, "sandbox = Map"),
    ("environment without hosts", "[environment]\nplatform = debian\n[hosts]\n",
     "environment 'prod' has no hosts", 3, "web1 = nginx, app"),
    ("environment without hosts section", "[environment]\nplatform = debian\n",
     "environment 'prod' has no hosts", 1, "[hosts]"),
    ("duplicate key", "[hosts]\nweb1 = app\nweb1 = nginx\n",
     "key 'web1' appears twice in [hosts] (first on line 2)", 3, "remove one"),
    ("duplicate section", HOSTS + "[environment]\njobs = 2\n[environment]\njobs = 3\n",
     "section [environment] appears twice (first on line 3)", 5, "merge"),
    ("key outside section", "platform = debian\n" + HOSTS,
     "key 'platform' is outside any section", 1, "[environment]"),
    ("garbage line", HOSTS + "just some words\n",
     "expected 'key = value', a '[section]' header, a comment or an indented continuation"
     " line, found 'just some words'", 3, "comments start with"),
    ("key without name", HOSTS + "= app\n",
     "expected 'key = value'", 3, "fix or remove"),
    ("unclosed section header", HOSTS + "[vfs # map paths\nsandbox = Map\n",
     "expected a section header '[name]' alone on its line, found '[vfs # map paths'", 3,
     "close the header"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message", "line", "hint"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_bad_input_is_reported_with_file_and_line(
    tmp_path: Path, text: str, message: str, line: int, hint: str
) -> None:
    write(tmp_path, NEW, text)
    config, errors = load_environment(tmp_path, "prod")
    assert config is not None
    assert all(isinstance(e, EnvironmentFileError) for e in errors)
    matching = [e for e in errors if message in e.message]
    assert len(matching) == 1, [e.render() for e in errors]
    [error] = matching
    assert error.where == f"{NEW}:{line}"
    assert error.hint is not None and hint in error.hint, error.hint


def test_every_problem_in_one_file_is_reported_and_good_entries_kept(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        NEW,
        """
        [environment]
        timeout = soon
        jobs = 4
        require_v4 = maybe
        colour = blue

        [hosts]
        web1 = nginx, app
        web2 = app

        [host:web2]
        components = nginx

        [resolver]
        db = not-an-address
        cache = 10.0.0.6

        [extras]
        garbage here
        """,
    )
    config, errors = load_environment(tmp_path, "prod")
    assert [(e.where, e.message.split(",")[0]) for e in errors] == [
        (f"{NEW}:2", "timeout must be a positive whole number of seconds"),
        (f"{NEW}:4", "require_v4 must be true"),
        (f"{NEW}:5", "unknown key 'colour' in [environment]"),
        (
            f"{NEW}:11",
            "host 'web2' is defined both in [hosts] (line 9) and in [host:web2] (line 11)",
        ),
        (f"{NEW}:15", "resolver address for 'db' must be an IPv4 or IPv6 address"),
        (f"{NEW}:18", "unknown section [extras]"),
        (f"{NEW}:19", "expected 'key = value'"),
    ]
    assert config is not None
    assert config.settings == EnvironmentSettings(jobs=4)
    assert [host.name for host in config.hosts] == ["web1", "web2"]
    assert config.hosts[1].roots == (RootAssignment("app", (), at(9)),)
    assert config.resolver == (("cache", ("10.0.0.6",)),)


def test_errors_render_with_where_and_hint(tmp_path: Path) -> None:
    write(tmp_path, NEW, "[environment]\njobs = 0\n" + HOSTS)
    _, errors = load_environment(tmp_path, "prod")
    [error] = errors
    assert isinstance(error, ConsignError)
    assert error.render() == (
        f"{NEW}:2: jobs must be a whole number of at least 1, found '0'\n"
        "  hint: write e.g. 'jobs = 4'"
    )


def test_push_settings_of_a_host_section_win_over_the_environment_s(tmp_path: Path) -> None:
    config = load_ok(
        tmp_path,
        "[environment]\n"
        "executor = executor --config /etc/consign/executor.toml\n"
        "executor_pex = /opt/consign/executor.pex\n"
        "[host:web1]\ncomponents = app\n"
        "executor = /venv/bin/executor\n"
        "allowed_signers = /etc/consign/signers\n"
        "[hosts]\nweb2 = app\n",
    )
    by_name = {host.name: host for host in config.hosts}
    web1, web2 = by_name["web1"], by_name["web2"]
    push = config.settings.push
    assert web1.push.over(push) == PushSettings(
        "/venv/bin/executor", "/opt/consign/executor.pex", "/etc/consign/signers"
    )
    assert web2.push.over(push) == PushSettings(
        "executor --config /etc/consign/executor.toml", "/opt/consign/executor.pex", None
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("executor_pex = executor.pex", "executor_pex in [environment] must be an absolute path on the host, found 'executor.pex'"),
        ("allowed_signers = signers", "allowed_signers in [environment] must be an absolute path on the host, found 'signers'"),
        ("executor =", "executor in [environment] must be one non-empty line"),
    ],
)
def test_bad_push_settings_are_errors_with_their_line(tmp_path: Path, line: str, message: str) -> None:
    write(tmp_path, NEW, f"[environment]\n{line}\n[hosts]\nweb1 = app\n")
    _config, errors = load_environment(tmp_path, "prod")
    assert [(e.message, e.where) for e in errors] == [
        (message, "environments/prod/environment.cfg:2")
    ]
