"""Service discovery in the build: provide / require, the configure fixpoint,
its errors, the order of roots and the waves of hosts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from builder import discovery
from builder.build import BuildResult
from builder.errors import BuildFailed
from executor.frozen import thaw
from executor.model import HostModel
from executor.utils import Address
from tests.deployments import build_bundles, deployment, model_of, verified

HEADER = "from batou.component import Component, Attribute\nfrom batou.lib.file import File\n"


def component(body: str) -> str:
    """A component file: the imports on lines 1-2, `body` from line 3 on."""
    return HEADER + body


def build_env(
    tmp_path: Path, components: Mapping[str, str], environment: str, **kw: object
) -> tuple[BuildResult, dict[str, HostModel]]:
    repo = deployment(
        tmp_path / "repo", components=components, environments={"prod": environment}
    )
    result = build_bundles("prod", repo, **kw)
    return result, {host.name: model_of(host.path) for host in result.hosts}


def build_failure(tmp_path: Path, components: Mapping[str, str], environment: str) -> BuildFailed:
    repo = deployment(
        tmp_path / "repo", components=components, environments={"prod": environment}
    )
    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo)
    assert not (repo / "bundles").exists()
    return caught.value


def summary(failure: BuildFailed) -> list[tuple[str, str | None, tuple[str, ...]]]:
    return [(e.message, e.where, e.hosts) for e in failure.errors]


PROVIDES_DB = component(
    """
class Db(Component):
    def configure(self):
        self.provide("db", self.host.name)
"""
)

UNSATISFIED_HINT = (
    "add a component that calls provide() with this key to the environment, "
    "or require it with strict=False"
)


# -- errors --------------------------------------------------------------------------


def test_a_strict_require_nobody_provides_names_the_key_the_root_and_the_line(
    tmp_path: Path,
) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.db = self.require("db")
"""
            )
        },
        "[hosts]\nweb1 = web\n",
    )

    [error] = failure.errors
    assert error.message == "requires 'db', which no component provides"
    assert error.where == "Web (components/web/component.py:6)"
    assert error.hosts == ("web1",)
    assert error.hint == UNSATISFIED_HINT
    assert error.code == "unsatisfied"


def test_a_require_from_one_host_names_that_host_when_it_provides_nothing(
    tmp_path: Path,
) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.db = self.require_one("db", host="web3")
"""
            ),
            "db": PROVIDES_DB,
        },
        "[hosts]\nweb1 = web\nweb2 = db\nweb3 =\n",
    )

    assert summary(failure) == [
        (
            "requires 'db' on host 'web3', which no component provides",
            "Web (components/web/component.py:6)",
            ("web1",),
        )
    ]


def test_the_same_unsatisfied_require_on_several_hosts_reads_once(tmp_path: Path) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db")
"""
            )
        },
        "[hosts]\nweb1 = web\nweb2 = web\nweb3 = web\n",
    )

    assert summary(failure) == [
        (
            "requires 'db', which no component provides",
            "Web (components/web/component.py:6)",
            ("web1", "web2", "web3"),
        )
    ]
    assert "  on web1, web2, web3" in failure.render()


def test_a_provided_key_nobody_requires_is_an_error(tmp_path: Path) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db", strict=False)
"""
            ),
            "app": component(
                """
class App(Component):
    def configure(self):
        self.provide("dbb", "postgres")
"""
            ),
        },
        "[hosts]\nweb1 = web\nweb2 = app\n",
    )

    [error] = failure.errors
    assert error.message == "provides 'dbb', which no component requires"
    assert error.where == "App on web2"
    assert error.hosts == ("web2",)
    assert error.hint == (
        "remove the provide(), or require the key where it is needed "
        "(a misspelt key shows here too)"
    )


CYCLE_HINT = (
    "break the cycle: one of the requires can take dirty=True (no ordering), or reverse=True"
)


def test_roots_requiring_each_others_keys_are_a_cycle(tmp_path: Path) -> None:
    failure = build_failure(
        tmp_path,
        {
            "a": component(
                """
class A(Component):
    def configure(self):
        self.provide("a", 1)
        self.require("b", strict=False)
"""
            ),
            "b": component(
                """
class B(Component):
    def configure(self):
        self.provide("b", 1)
        self.require("a")
"""
            ),
        },
        "[hosts]\nweb1 = a\nweb2 = b\n",
    )

    [error] = failure.errors
    assert error.message == (
        "these roots require each other's keys in a cycle: a on web1 -> b on web2 -> a on web1"
    )
    assert error.where == "A on web1"
    assert error.hosts == ("web1",)
    assert error.hint == CYCLE_HINT


def test_mutual_strict_requires_are_reported_as_a_cycle(tmp_path: Path) -> None:
    # batou's classic cycle: both provide, then strictly require the other's
    # key. Each key *is* provided, so "which no component provides" is wrong.
    failure = build_failure(
        tmp_path,
        {
            "a": component(
                """
class A(Component):
    def configure(self):
        self.provide("a", 1)
        self.require("b")
"""
            ),
            "b": component(
                """
class B(Component):
    def configure(self):
        self.provide("b", 1)
        self.require("a")
"""
            ),
        },
        "[hosts]\nweb1 = a\nweb2 = b\n",
    )

    assert summary(failure) == [
        (
            "these roots require each other's keys in a cycle: a on web1 -> b on web2 -> a on web1",
            "A on web1",
            ("web1",),
        )
    ]


def restless_components(log: Path) -> dict[str, str]:
    """A and B each provide how often they were configured, and require the
    other's value: every configure changes what the other one sees."""
    return {
        "a": component(
            f"""
class A(Component):
    rounds = 0

    def configure(self):
        A.rounds += 1
        with open({str(log)!r}, "a") as f:
            f.write("a\\n")
        self.require("b", strict=False)
        self.provide("a", A.rounds)
"""
        ),
        "b": component(
            f"""
class B(Component):
    rounds = 0

    def configure(self):
        B.rounds += 1
        with open({str(log)!r}, "a") as f:
            f.write("b\\n")
        self.require("a", dirty=True)
        self.provide("b", B.rounds)
"""
        ),
    }


def test_provisions_that_never_settle_stop_after_max_configures(tmp_path: Path) -> None:
    log = tmp_path / "configured"
    failure = build_failure(tmp_path, restless_components(log), "[hosts]\nweb1 = a, b\n")

    [error] = failure.errors
    assert error.message == (
        f"configure did not settle: after {discovery.MAX_CONFIGURES + 2} rounds the values this "
        "root provides still change every time the roots it requires configure again"
    )
    assert error.where == "A on web1"
    assert error.hosts == ("web1",)
    assert error.hint == (
        "provide values that do not depend on what other roots provide in return, "
        "or break the loop with dirty=True"
    )
    rounds = log.read_text().split()
    # The limit: MAX_CONFIGURES changes beyond one per root (two here).
    assert rounds.count("a") == discovery.MAX_CONFIGURES + 2


def test_max_configures_bounds_how_often_one_root_configures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discovery, "MAX_CONFIGURES", 3)
    log = tmp_path / "configured"
    failure = build_failure(tmp_path, restless_components(log), "[hosts]\nweb1 = a, b\n")

    assert [e.message.split(":")[0] for e in failure.errors] == ["configure did not settle"]
    assert "after 5 rounds" in failure.errors[0].message
    # A and B take turns, each change of one configures the other again.
    assert log.read_text().split() == ["a", "b"] * 5


def test_many_providers_and_consumers_settle_however_often_consumers_configure(
    tmp_path: Path,
) -> None:
    # Every host provides an address and a consumer on every host requires
    # them all: consumers configure again for each provider that arrives
    # after them, far more than MAX_CONFIGURES times, and that is fine.
    hosts = [f"web{n:02d}" for n in range(1, 21)]
    repo = deployment(
        tmp_path / "repo",
        components={
            "provider": component(
                """
class Provider(Component):
    def configure(self):
        self.provide("endpoint", self.host.name)
"""
            ),
            "consumer": component(
                """
class Consumer(Component):
    def configure(self):
        self.endpoints = self.require("endpoint")
"""
            ),
        },
        environments={
            "prod": "[hosts]\n" + "".join(f"{h} = consumer, provider\n" for h in hosts)
        },
    )

    result = build_bundles("prod", repo)

    assert len(result.hosts) == 20


def test_require_one_with_several_values_is_an_error(tmp_path: Path) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.db = self.require_one("db")
"""
            ),
            "db": PROVIDES_DB,
        },
        "[hosts]\nweb1 = web\nweb2 = db\nweb3 = db\n",
    )

    [error] = failure.errors
    assert error.message == "require_one('db') found 2 values, expected exactly one"
    assert error.where == "Web (components/web/component.py:6)"
    assert error.hosts == ("web1",)
    assert error.hint == "make one component provide it, or use require() to take them all"


def test_one_build_reports_every_discovery_error_with_the_other_errors(tmp_path: Path) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    workers = Attribute(int, default=2)

    def configure(self):
        self.require("cache")
"""
            ),
            "app": component(
                """
class App(Component):
    def configure(self):
        self.provide("metrics", 9100)
        raise KeyError("broken")
"""
            ),
            "db": component(
                """
class Db(Component):
    def configure(self):
        self.provide("dbb", 5432)
"""
            ),
        },
        "[hosts]\nweb1 = web, app\nweb2 = db\n\n[component:web]\nwrkers = 3\n",
    )

    messages = sorted(e.message for e in failure.errors)
    assert messages == [
        "[component:web] sets 'wrkers', which Web does not have",
        "configure raised KeyError: 'broken'",
        "provides 'dbb', which no component requires",
        "requires 'cache', which no component provides",
    ]
    rendered = failure.render()
    assert "Web (components/web/component.py:8): requires 'cache', which no component provides" in rendered
    assert "Db on web2: provides 'dbb', which no component requires" in rendered
    assert "App (components/app/component.py:7): configure raised KeyError: 'broken'" in rendered
    assert rendered.endswith("the build found 4 errors; nothing was written")


# -- the fixpoint -------------------------------------------------------------------


def test_a_root_configured_before_its_provider_gets_the_value_when_configured_again(
    tmp_path: Path,
) -> None:
    _result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.db = self.require_one("db")
        self += File("db-" + self.db)
"""
            ),
            "db": PROVIDES_DB,
        },
        "[environment]\ntarget_directory = /srv\n[hosts]\nweb1 = web, db\n",
    )

    web1 = models["web1"]
    assert [root.name for root in web1.roots] == ["db", "web"]
    web = web1.roots[1]
    assert web.requires[0].values == ("web1",)
    assert "Web > File('{target}/work/web/db-web1')" in web.tree
    assert web.after == ("web1/db",)
    assert web1.roots[0].provides == ("db",)


def test_values_that_change_between_rounds_configure_the_requirer_again(tmp_path: Path) -> None:
    log = tmp_path / "seen"
    _result, models = build_env(
        tmp_path,
        {
            "web": component(
                f"""
class Web(Component):
    def configure(self):
        self.backends = self.require("backend", strict=False)
        with open({str(log)!r}, "a") as f:
            f.write(",".join(self.backends) + "\\n")
"""
            ),
            "app": component(
                """
class App(Component):
    def configure(self):
        self.provide("backend", self.host.name + ":8080")
"""
            ),
        },
        "[hosts]\nweb1 = web\nweb2 = app\nweb3 = app\n",
    )

    # Each provider that publishes configures the requirer again.
    assert log.read_text().splitlines() == ["", "web2:8080", "web2:8080,web3:8080"]
    [requirement] = models["web1"].roots[0].requires
    assert (requirement.key, requirement.host) == ("backend", None)
    assert requirement.values == ("web2:8080", "web3:8080")
    assert models["web1"].roots[0].after == ("web2/app", "web3/app")


def test_a_root_whose_configure_fails_provides_nothing(tmp_path: Path) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db")
"""
            ),
            "db": component(
                """
class Db(Component):
    def configure(self):
        self.provide("db", 1)
        raise RuntimeError("disk full")
"""
            ),
        },
        "[hosts]\nweb1 = web\nweb2 = db\n",
    )

    assert sorted(summary(failure)) == [
        ("configure raised RuntimeError: disk full", "Db (components/db/component.py:7)", ("web2",)),
        ("requires 'db', which no component provides", "Web (components/web/component.py:6)", ("web1",)),
    ]


# -- host=, strict, reverse, dirty ----------------------------------------------------


def test_host_takes_only_the_values_of_that_host(tmp_path: Path) -> None:
    result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.db = self.require_one("db", host="web3")
        self.local = self.require("db", host=self.host, strict=False)
        assert self.db == "web3", self.db
        assert self.local == [], self.local
"""
            ),
            "db": PROVIDES_DB,
        },
        "[hosts]\nweb1 = web\nweb2 = db\nweb3 = db\n",
    )

    requires = models["web1"].roots[0].requires
    assert [(r.key, r.host, r.values) for r in requires] == [
        ("db", "web3", ("web3",)),
        ("db", "web1", ()),
    ]
    assert models["web1"].roots[0].after == ("web3/db",)
    assert result.waves == (("web2", "web3"), ("web1",))


def test_strict_false_gives_an_empty_list_and_none(tmp_path: Path) -> None:
    result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        assert self.require("db", strict=False) == []
        assert self.require_one("db", strict=False) is None
"""
            )
        },
        "[hosts]\nweb1 = web\n",
    )

    root = models["web1"].roots[0]
    assert [(r.key, r.values) for r in root.requires] == [("db", ()), ("db", ())]
    assert root.after == ()
    assert result.waves == (("web1",),)


def test_reverse_deploys_the_requirer_first(tmp_path: Path) -> None:
    result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db", reverse=True)
"""
            ),
            "db": PROVIDES_DB,
        },
        "[hosts]\nweb1 = db\nweb2 = web\n",
    )

    assert models["web1"].roots[0].after == ("web2/web",)
    assert models["web2"].roots[0].after == ()
    assert models["web2"].roots[0].requires[0].values == ("web1",)
    assert result.waves == (("web2",), ("web1",))


def test_dirty_takes_the_value_without_any_order(tmp_path: Path) -> None:
    result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db", dirty=True)
"""
            ),
            "db": PROVIDES_DB,
        },
        "[hosts]\nweb1 = web\nweb2 = db\n",
    )

    assert models["web1"].roots[0].requires[0].values == ("web2",)
    assert models["web1"].roots[0].after == ()
    assert models["web2"].roots[0].after == ()
    assert result.waves == (("web1", "web2"),)


def test_dirty_breaks_a_cycle(tmp_path: Path) -> None:
    # What the cycle error's hint advises: one require takes dirty=True.
    result, models = build_env(
        tmp_path,
        {
            "a": component(
                """
class A(Component):
    def configure(self):
        self.provide("a", 1)
        self.require("b", dirty=True)
"""
            ),
            "b": component(
                """
class B(Component):
    def configure(self):
        self.provide("b", 2)
        self.require("a")
"""
            ),
        },
        "[hosts]\nweb1 = a\nweb2 = b\n",
    )

    assert models["web1"].roots[0].after == ()
    assert models["web2"].roots[0].after == ("web1/a",)
    assert result.waves == (("web1",), ("web2",))


# -- order within a host, waves across hosts -------------------------------------------


def test_providers_deploy_first_and_ties_keep_the_environment_order(tmp_path: Path) -> None:
    result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db")
"""
            ),
            "db": PROVIDES_DB,
            "other": component("class Other(Component):\n    pass\n"),
            "first": component("class First(Component):\n    pass\n"),
        },
        "[hosts]\nweb1 = first, web, db, other\n",
    )

    assert [root.name for root in models["web1"].roots] == ["first", "db", "web", "other"]
    assert result.hosts[0].roots == ("first", "db", "web", "other")


def test_another_hosts_providers_do_not_reorder_a_hosts_own_roots(tmp_path: Path) -> None:
    # web waits for web2's db, which applies in an earlier wave: on web1 it
    # follows its own provider and keeps its place before 'other'.
    _result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db")
"""
            ),
            "db": PROVIDES_DB,
            "other": component("class Other(Component):\n    pass\n"),
        },
        "[hosts]\nweb1 = web, db, other\nweb2 = db\n",
    )

    assert [root.name for root in models["web1"].roots] == ["db", "web", "other"]
    assert models["web1"].roots[1].after == ("web1/db", "web2/db")


CHAIN = {
    "front": component(
        """
class Front(Component):
    def configure(self):
        self.require("app")
"""
    ),
    "app": component(
        """
class App(Component):
    def configure(self):
        self.provide("app", 1)
        self.require("db")
"""
    ),
    "db": PROVIDES_DB,
}


def test_three_hosts_in_a_chain_apply_in_three_waves(tmp_path: Path) -> None:
    result, models = build_env(tmp_path, CHAIN, "[hosts]\nweb1 = front\nweb2 = app\nweb3 = db\n")

    assert result.waves == (("web3",), ("web2",), ("web1",))
    assert models["web1"].roots[0].after == ("web2/app",)
    assert models["web2"].roots[0].after == ("web3/db",)
    assert models["web3"].roots[0].after == ()
    assert models["web2"].roots[0].provides == ("app",)


def test_a_host_without_dependencies_joins_the_first_wave(tmp_path: Path) -> None:
    components = {**CHAIN, "other": component("class Other(Component):\n    pass\n")}
    result, _models = build_env(
        tmp_path, components, "[hosts]\nweb1 = front\nweb2 = app\nweb3 = db\nweb4 = other\n"
    )

    assert result.waves == (("web3", "web4"), ("web2",), ("web1",))


def test_independent_hosts_are_one_wave(tmp_path: Path) -> None:
    result, _models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("db", host=self.host)
"""
            ),
            "db": PROVIDES_DB,
        },
        "[hosts]\nweb1 = web, db\nweb2 = web, db\nweb3 = web, db\n",
    )

    assert result.waves == (("web1", "web2", "web3"),)


def test_hosts_that_provide_for_each_other_share_a_wave(tmp_path: Path) -> None:
    result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.provide("web", 1)
        self.require("db")
"""
            ),
            "db": component(
                """
class Db(Component):
    def configure(self):
        self.provide("db", 1)
"""
            ),
            "monitor": component(
                """
class Monitor(Component):
    def configure(self):
        self.require("web")
"""
            ),
        },
        "[hosts]\nweb1 = web, monitor\nweb2 = db, monitor\n",
    )

    # web1/web needs web2/db; web2/monitor needs web1/web: no root cycle,
    # but no host order satisfies both.
    assert result.waves == (("web1", "web2"),)
    assert models["web2"].roots[1].after == ("web1/web",)


# -- across hosts ---------------------------------------------------------------------

CROSS_HOST = {
    "web": component(
        """
class Web(Component):
    def configure(self):
        self.app = self.require_one("app:http")
        self += File("upstream.conf", content="{{component.app.connect}} {{component.app.listen}}\\n")
"""
    ),
    "app": component(
        """
from batou.utils import Address

class App(Component):
    password = Attribute(str, default="none")

    def configure(self):
        self.address = Address("app.example.com:8080")
        self.provide("app:http", self.address)
"""
    ),
}

CROSS_HOST_ENV = """
[environment]
target_directory = /srv/shop

[host:web1]
components = web
data-alias = www.example.com

[host:web2]
components = app
data-secret = web2-only-data-value

[component:app]
password = web2-only-override-value

[resolver]
app.example.com = 10.0.0.9
"""


@pytest.fixture(scope="module")
def cross_host(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildResult]:
    repo = deployment(
        tmp_path_factory.mktemp("cross") / "repo",
        components=CROSS_HOST,
        environments={"prod": CROSS_HOST_ENV},
    )
    return repo, build_bundles("prod", repo)


FROZEN_APP_ADDRESS = {
    "$": "address",
    "host": "app.example.com",
    "port": "8080",
    "listen": "10.0.0.9",
    "listen_v6": None,
    "require_v4": True,
    "require_v6": False,
}


def test_a_value_from_another_host_is_frozen_into_the_requiring_hosts_model(
    cross_host: tuple[Path, BuildResult],
) -> None:
    repo, result = cross_host
    web1 = model_of(repo / "bundles/prod/web1.bundle")

    [root] = web1.roots
    assert root.name == "web"
    [requirement] = root.requires
    assert (requirement.key, requirement.host) == ("app:http", None)
    assert requirement.values == (FROZEN_APP_ADDRESS,)
    address = thaw(requirement.values[0])
    assert isinstance(address, Address)
    assert str(address.connect) == "app.example.com:8080"
    assert str(address.listen) == "10.0.0.9:8080"
    assert root.after == ("web2/app",)
    assert result.waves == (("web2",), ("web1",))

    web2 = model_of(repo / "bundles/prod/web2.bundle")
    assert web2.roots[0].provides == ("app:http",)
    assert web2.roots[0].requires == ()


def test_a_hosts_model_holds_nothing_of_another_hosts_roots_data_or_overrides(
    cross_host: tuple[Path, BuildResult],
) -> None:
    repo, _result = cross_host
    web1 = model_of(repo / "bundles/prod/web1.bundle")
    model_bytes = verified(repo / "bundles/prod/web1.bundle").read("model", 1 << 26)

    assert [root.name for root in web1.roots] == ["web"]
    assert web1.host.data == (("alias", "www.example.com"),)
    assert web1.skipped == ()
    assert b"web2-only-data-value" not in model_bytes
    assert b"web2-only-override-value" not in model_bytes
    assert b"password" not in model_bytes
    # web2's own model has them, of course.
    web2 = model_of(repo / "bundles/prod/web2.bundle")
    assert web2.host.data == (("secret", "web2-only-data-value"),)
    assert web2.roots[0].overrides == (("password", "web2-only-override-value"),)


def test_building_one_host_still_configures_its_providers_on_others(tmp_path: Path) -> None:
    result, models = build_env(tmp_path, CROSS_HOST, CROSS_HOST_ENV, hosts=("web1",))

    assert list(models) == ["web1"]
    assert models["web1"].roots[0].requires[0].values == (FROZEN_APP_ADDRESS,)
    assert [(s.name, s.reason) for s in result.skipped_hosts] == [
        ("web2", "not selected by --host")
    ]
    assert not (result.out / "web2.bundle").exists()


def test_removing_the_provider_leaves_an_unsatisfied_requirement(tmp_path: Path) -> None:
    without_app = CROSS_HOST_ENV.replace("components = app", "components =")
    failure = build_failure(tmp_path, CROSS_HOST, without_app)

    assert summary(failure) == [
        (
            "requires 'app:http', which no component provides",
            "Web (components/web/component.py:6)",
            ("web1",),
        )
    ]


def test_a_provided_component_is_a_read_only_snapshot_in_the_build_too(tmp_path: Path) -> None:
    _result, models = build_env(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        app = self.require_one("app")
        try:
            app.port = 1
        except AttributeError as exc:
            assert str(exc) == "App is a read-only snapshot of a provided component", exc
        else:
            raise AssertionError("a provided component could be changed")
        assert app.port == 8080
        assert not hasattr(app, "_token")
        assert app.host.name == "web2"
        self += File("port", content=str(app.port))
"""
            ),
            "app": component(
                """
class App(Component):
    port = Attribute(int, default=8080)

    def configure(self):
        self._token = "private"
        self.provide("app", self)
"""
            ),
        },
        "[hosts]\nweb1 = web\nweb2 = app\n",
    )

    [value] = models["web1"].roots[0].requires[0].values
    assert value["$"] == "component"
    assert value["attributes"] == {"port": 8080}
    assert "_token" not in str(value)


@pytest.mark.parametrize(
    ("provided", "type_name"),
    [
        pytest.param("closed(open(__file__))", "_io.TextIOWrapper", id="open-file"),
        pytest.param("lambda: 1", "builtins.function", id="lambda"),
        pytest.param("Thing()", "batou.c.app.Thing", id="user-class"),
    ],
)
def test_a_value_that_cannot_travel_is_refused_naming_key_component_and_type(
    tmp_path: Path, provided: str, type_name: str
) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("thing", strict=False)
"""
            ),
            "app": component(
                f"""
class Thing:
    pass

def closed(f):
    f.close()  # still a file, and no ResourceWarning
    return f

class App(Component):
    def configure(self):
        self.provide("thing", {provided})
"""
            ),
        },
        "[hosts]\nweb1 = web\nweb2 = app\n",
    )

    [error] = failure.errors
    assert error.message == (
        "provides 'thing' as a value that cannot travel to other hosts: the value of 'thing' "
        f"is a {type_name}, which cannot travel to another host"
    )
    assert error.where == "App"
    assert error.hosts == ("web2",)
    assert error.hint == (
        "provide strings, numbers, lists, dicts, Addresses, NetLocs or components whose "
        "public attributes are such values"
    )


def test_a_refused_value_names_where_it_sits_inside_the_provided_value(tmp_path: Path) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("hooks", strict=False)
"""
            ),
            "app": component(
                """
class App(Component):
    def configure(self):
        self.provide("hooks", {"before": [print]})
"""
            ),
        },
        "[hosts]\nweb1 = web\nweb2 = app\n",
    )

    [error] = failure.errors
    assert error.message == (
        "provides 'hooks' as a value that cannot travel to other hosts: the value of "
        "'hooks'['before'][0] is a builtins.builtin_function_or_method, which cannot travel "
        "to another host"
    )


def test_a_component_with_an_attribute_that_cannot_travel_names_the_attribute(
    tmp_path: Path,
) -> None:
    failure = build_failure(
        tmp_path,
        {
            "web": component(
                """
class Web(Component):
    def configure(self):
        self.require("app", strict=False)
"""
            ),
            "app": component(
                """
class App(Component):
    def configure(self):
        with open(__file__, "rb") as self.handle:
            pass
        self.provide("app", self)
"""
            ),
        },
        "[hosts]\nweb1 = web\nweb2 = app\n",
    )

    [error] = failure.errors
    assert error.message == (
        "provides 'app' as a value that cannot travel to other hosts: the value of "
        "'app'.handle is a _io.BufferedReader, which cannot travel to another host"
    )
