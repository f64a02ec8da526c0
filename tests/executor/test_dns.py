"""Name resolution as the build decided it: overrides, pinned answers, then the system.

No test asks a name server: the system's resolver is a fake name server
that answers from a table (see `fake_system`), and CONSIGN_DNS=offline
(conftest) keeps the real one out otherwise.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import pytest

from builder.inspect import Change, diff_bundles
from executor import dns as consign_dns
from executor.apply import ApplyStatus, apply_bundle
from executor.child import run as run_child
from executor.dns import (
    Answer,
    Recorder,
    StubNameserver,
    hosts_table,
    overrides_table,
    recording,
    resolving,
)
from executor.model import DnsRecord
from executor.protocol import RunRequest
from executor.utils import Address
from tests.deployments import apply_options, build_bundles, deployment, model_of, verified

OVERRIDES = overrides_table(
    {"db.example.com": ("10.0.0.5", "fd00::5"), "v4only.example.com": ("10.0.0.7",)}
)


def addresses(host: str, family: int = 0) -> list[str]:
    """What socket.getaddrinfo says, as addresses in its order."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, 80, family, socket.SOCK_STREAM)]


def fails(host: str, family: int = 0) -> bool:
    try:
        socket.getaddrinfo(host, 80, family, socket.SOCK_STREAM)
    except socket.gaierror:
        return True
    return False


def install_fake_system(monkeypatch: pytest.MonkeyPatch, table: dict[str, Answer]) -> None:
    """Make /etc/resolv.conf's name servers one stub answering from `table`,
    and let consign ask them (CONSIGN_DNS not offline)."""

    def read_resolv_conf(self: dns.resolver.Resolver, f: object) -> None:
        self.nameservers = [StubNameserver(table, "fake-system")]

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", read_resolv_conf)
    monkeypatch.delenv("CONSIGN_DNS")


SYSTEM = {
    "db.example.com": Answer(("192.0.2.5",), ("2001:db8::5",)),
    "v4only.example.com": Answer(("192.0.2.7",), ("2001:db8::7",)),
    "api.example.com": Answer(("192.0.2.8",), ("2001:db8::8",)),
    "elsewhere.example.com": Answer(("192.0.2.9",), ()),
}


@pytest.fixture
def fake_system(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Answer]]:
    install_fake_system(monkeypatch, SYSTEM)
    yield SYSTEM


# -- tables -----------------------------------------------------------------------------


def test_overrides_answer_both_families_by_normalised_name() -> None:
    table = overrides_table(
        (("DB.Example.COM.", ("fd00::5", "10.0.0.5")), ("v4only.example.com", ("10.0.0.7",)))
    )

    assert table == {
        "db.example.com": Answer(("10.0.0.5",), ("fd00::5",)),
        # An override without an IPv6 address has none, rather than asking elsewhere.
        "v4only.example.com": Answer(("10.0.0.7",), ()),
    }


def test_a_hosts_file_gives_each_name_its_addresses_per_family(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "# comment line\n"
        "127.0.0.1 localhost Local.Example # trailing comment\n"
        "::1 localhost ip6-localhost\n"
        "fe80::1%eth0 linklocal\n"
        "10.0.0.1 twice\n"
        "10.0.0.2 twice\n"
        "not-an-address ignored\n"
        "10.0.0.3\n"
    )

    assert hosts_table(str(hosts)) == {
        "localhost": Answer(("127.0.0.1",), ("::1",)),
        "local.example": Answer(("127.0.0.1",), ()),
        "ip6-localhost": Answer((), ("::1",)),
        "linklocal": Answer((), ("fe80::1%eth0",)),
        "twice": Answer(("10.0.0.1", "10.0.0.2"), ()),
    }
    assert hosts_table(str(tmp_path / "missing")) == {}


# -- the stub in socket.getaddrinfo ------------------------------------------------------


def test_getaddrinfo_answers_overrides_for_a_and_aaaa_only_within_the_scope() -> None:
    before = socket.getaddrinfo

    with resolving(OVERRIDES):
        assert addresses("db.example.com", socket.AF_INET) == ["10.0.0.5"]
        assert addresses("db.example.com", socket.AF_INET6) == ["fd00::5"]
        assert sorted(addresses("DB.example.com.")) == ["10.0.0.5", "fd00::5"]
        assert addresses("v4only.example.com") == ["10.0.0.7"]

    assert socket.getaddrinfo is before
    assert fails("db.example.com", socket.AF_INET)


def test_an_override_answers_its_name_completely(fake_system: dict[str, Answer]) -> None:
    with resolving(OVERRIDES):
        # The system knows an IPv6 address for it; the override has none.
        assert fails("v4only.example.com", socket.AF_INET6)
        assert addresses("db.example.com", socket.AF_INET) == ["10.0.0.5"]


def test_other_names_fall_through_to_the_system_resolver(fake_system: dict[str, Answer]) -> None:
    with resolving(OVERRIDES) as resolution:
        assert addresses("api.example.com", socket.AF_INET) == ["192.0.2.8"]
        assert addresses("api.example.com", socket.AF_INET6) == ["2001:db8::8"]
        assert fails("nowhere.example.com")

    assert resolution.resolver is not None
    assert [str(n) for n in resolution.resolver.nameservers] == ["consign-table", "hosts-file", "fake-system"]


def test_a_block_that_resolves_nothing_makes_no_resolver() -> None:
    real = socket.getaddrinfo
    with resolving(OVERRIDES) as resolution:
        assert socket.getaddrinfo is not real
    assert resolution.resolver is None
    assert socket.getaddrinfo is real


def test_every_socket_lookup_goes_through_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consign_dns, "hosts_table", dict)
    with resolving(OVERRIDES) as resolution:
        assert socket.gethostbyname("db.example.com") == "10.0.0.5"
        assert resolution.resolver is not None
        assert addresses("db.example.com", socket.AF_INET6) == ["fd00::5"]


def test_offline_no_system_name_server_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def read_resolv_conf(self: dns.resolver.Resolver, f: object) -> None:
        raise AssertionError("read /etc/resolv.conf while offline")

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", read_resolv_conf)

    with resolving(OVERRIDES) as resolution:
        assert addresses("db.example.com", socket.AF_INET) == ["10.0.0.5"]
        assert fails("api.example.com")

    assert resolution.resolver is not None
    assert [str(n) for n in resolution.resolver.nameservers] == ["consign-table", "hosts-file"]


def test_the_table_answers_before_the_hosts_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        consign_dns,
        "hosts_table",
        lambda: {
            "db.example.com": Answer(("127.0.0.5",), ()),
            "files.example.com": Answer(("127.0.0.6",), ()),
        },
    )

    with resolving(OVERRIDES):
        assert addresses("db.example.com", socket.AF_INET) == ["10.0.0.5"]
        assert addresses("files.example.com", socket.AF_INET) == ["127.0.0.6"]


def test_pinned_answers_are_preferred_over_the_system(fake_system: dict[str, Answer]) -> None:
    pinned = {
        "api.example.com": Answer(("10.1.1.8",), None),
        "gone.example.com": Answer((), None),
    }

    with resolving(pinned):
        assert addresses("api.example.com", socket.AF_INET) == ["10.1.1.8"]
        # A family the build never asked for is the system's to answer.
        assert addresses("api.example.com", socket.AF_INET6) == ["2001:db8::8"]
        # The build found no address: neither does the host.
        assert fails("gone.example.com", socket.AF_INET)


def test_an_address_resolves_through_the_overrides() -> None:
    with resolving(OVERRIDES):
        address = Address("db.example.com:5432", require_v6=True)
        optional = Address("v4only.example.com", 80, require_v6="optional")

    assert str(address.listen) == "10.0.0.5:5432"
    assert str(address.listen_v6) == "[fd00::5]:5432"
    assert str(optional.listen) == "10.0.0.7:80"
    assert optional.listen_v6 is None


def test_the_recorder_notes_every_answer_per_family_and_no_literal() -> None:
    recorder = Recorder()

    with resolving(OVERRIDES, recorder):
        socket.getaddrinfo("db.example.com", 80, socket.AF_INET)
        socket.getaddrinfo("DB.example.com.", 80, socket.AF_INET6)
        socket.getaddrinfo("v4only.example.com", 80)
        assert fails("nowhere.example.com", socket.AF_INET)
        socket.getaddrinfo("10.0.0.1", 80)
        socket.getaddrinfo("::1", 80)
        with recording(None):
            socket.getaddrinfo("db.example.com", 80)

    assert recorder.answers == {
        "db.example.com": Answer(("10.0.0.5",), ("fd00::5",)),
        "v4only.example.com": Answer(("10.0.0.7",), ()),
        "nowhere.example.com": Answer((), None),
    }


# -- pinned in the build, used on the host ------------------------------------------------

RESOLVING = """
    from batou.component import Component
    from batou.utils import Address

    class Web(Component):
        def configure(self):
            self.db = Address("db.example.com:5432")
            self.cache = Address("Cache.Example.com", 11211, require_v6=True)
            self.missing = Address("missing.example.com:80", require_v4="optional")
    """

SHOWING = """
    import os
    import socket
    from batou.component import Component, UpdateNeeded
    from batou.utils import Address

    class Show(Component):
        def configure(self):
            self.api = Address("api.example.com:443", require_v4="optional")

        def verify(self):
            if not os.path.exists(self.map("resolved")):
                raise UpdateNeeded()

        def update(self):
            lines = []
            for name in ("db.example.com", "api.example.com", "elsewhere.example.com"):
                try:
                    found = socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)
                    lines.append(name + " " + ",".join(info[4][0] for info in found))
                except socket.gaierror:
                    lines.append(name + " -")
            with open(self.map("resolved"), "w") as f:
                f.write("\\n".join(lines) + "\\n")
    """

ENV = """
    [environment]
    target_directory = /srv/shop

    [hosts]
    web1 = web
    web2 = show

    [resolver]
    db.example.com = 10.0.0.5
        fd00::5
    cache.example.com = 10.0.0.6
        fd00::6
    """


def dns_deployment(root: Path, environment: str = ENV) -> Path:
    return deployment(
        root, components={"web": RESOLVING, "show": SHOWING}, environments={"prod": environment}
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = dns_deployment(tmp_path_factory.mktemp("dns") / "repo")
    build_bundles("prod", repo)
    return repo


def test_a_build_pins_every_name_configure_resolved_into_that_hosts_model(built: Path) -> None:
    web1 = model_of(built / "bundles/prod/web1.bundle")

    assert web1.dns == (
        # Only the families configure asked for: require_v6 is False by default.
        DnsRecord("cache.example.com", ("10.0.0.6",), ("fd00::6",)),
        DnsRecord("db.example.com", ("10.0.0.5",), None),
        # Nothing resolved, and the host will not find more.
        DnsRecord("missing.example.com", (), None),
    )
    assert web1.resolver == (
        ("cache.example.com", ("10.0.0.6", "fd00::6")),
        ("db.example.com", ("10.0.0.5", "fd00::5")),
    )
    # Each host pins what its own roots resolved.
    web2 = model_of(built / "bundles/prod/web2.bundle")
    assert web2.dns == (DnsRecord("api.example.com", (), None),)


def test_the_environment_family_defaults_decide_what_the_build_asks(tmp_path: Path) -> None:
    repo = dns_deployment(
        tmp_path / "repo",
        ENV.replace("[environment]", "[environment]\n    require_v6 = optional"),
    )
    build_bundles("prod", repo)

    web1 = model_of(repo / "bundles/prod/web1.bundle")
    assert web1.environment.require_v6 == "optional"
    assert DnsRecord("db.example.com", ("10.0.0.5",), ("fd00::5",)) in web1.dns
    assert DnsRecord("missing.example.com", (), ()) in web1.dns


def test_bundle_diff_shows_a_changed_override_as_a_dns_change(tmp_path: Path) -> None:
    repo = dns_deployment(tmp_path / "repo")
    build_bundles("prod", repo, serial=1)
    old = tmp_path / "old.bundle"
    shutil.copy(repo / "bundles/prod/web1.bundle", old)
    cfg = repo / "environments/prod/environment.cfg"
    cfg.write_text(cfg.read_text().replace("db.example.com = 10.0.0.5", "db.example.com = 10.0.0.50"))
    build_bundles("prod", repo, serial=2)

    diff = diff_bundles(old, repo / "bundles/prod/web1.bundle")

    assert diff.model == (
        Change("dns.db.example.com.v4", ["10.0.0.5"], ["10.0.0.50"]),
        Change("resolver.db.example.com", ["10.0.0.5", "fd00::5"], ["10.0.0.50", "fd00::5"]),
    )
    # The environment file itself stays on the builder; the model shows the change.
    assert diff.files_changed == ()


def test_the_apply_resolves_through_the_same_stub(built: Path, tmp_path: Path) -> None:
    result = apply_bundle(apply_options(built / "bundles/prod/web2.bundle", tmp_path, host="web2"))

    assert result.status is ApplyStatus.OK, result.error
    resolved = (tmp_path / "target/work/show/resolved").read_text().splitlines()
    # The override; names the build never saw are the host's to resolve.
    assert resolved[0] == "db.example.com 10.0.0.5"


def test_the_apply_asks_no_name_server_while_consign_dns_is_offline(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "probe": """
                import os
                import socket
                import dns.resolver
                from batou.component import Component, UpdateNeeded

                class Probe(Component):
                    def verify(self):
                        if not os.path.exists(self.map("servers")):
                            raise UpdateNeeded()

                    def update(self):
                        # The first lookup installs consign's resolver ...
                        try:
                            socket.getaddrinfo("probe.invalid", 80)
                        except OSError:
                            pass
                        # ... and dnspython keeps the resolver that
                        # override_system_resolver installed here.
                        servers = [str(s) for s in dns.resolver._resolver.nameservers]
                        with open(self.map("servers"), "w") as f:
                            f.write(" ".join(servers) + "\\n")
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = probe\n"},
    )
    build_bundles("prod", repo)

    result = apply_bundle(apply_options(repo / "bundles/prod/web1.bundle", tmp_path))

    assert result.status is ApplyStatus.OK, result.error
    assert (tmp_path / "target/work/probe/servers").read_text() == "consign-table hosts-file\n"


def test_on_the_host_pinned_answers_win_and_unseen_names_ask_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The builder's network says one thing ...
    with monkeypatch.context() as building:
        install_fake_system(building, {"api.example.com": Answer(("192.0.2.8",), ())})
        repo = dns_deployment(tmp_path / "repo")
        build_bundles("prod", repo)
    model = verified(repo / "bundles/prod/web2.bundle").read("model", 1 << 26)
    assert model_of(repo / "bundles/prod/web2.bundle").dns == (
        DnsRecord("api.example.com", ("192.0.2.8",), None),
    )
    # ... the host's another (SYSTEM): the build's answer wins, and names the
    # build never saw are the host's.
    install_fake_system(monkeypatch, SYSTEM)
    target = tmp_path / "target"

    report = run_child(
        RunRequest(
            model=model,
            host="web2",
            environment="prod",
            repository=str(repo),
            target_directory=str(target),
            dry_run=False,
            timeout=None,
            report="",
        )
    )

    assert report.error is None, report.error
    assert (target / "work/show/resolved").read_text() == (
        "db.example.com 10.0.0.5\n"
        "api.example.com 192.0.2.8\n"
        "elsewhere.example.com 192.0.2.9\n"
    )
