"""provide / require on a host: the values the build froze into the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from executor.apply import ApplyStatus, apply_bundle
from executor.component import Component
from executor.environment import Environment, Host
from executor.errors import ConfigurationError
from executor.frozen import FrozenComponent, freeze, thaw
from executor.model import EnvironmentRecord, HostRecord
from executor.outcome import RootStatus
from executor.resources import FrozenResources, NoResources, UnsatisfiedRequirement
from executor.utils import Address, NetLoc
from tests.deployments import apply_options, build_bundles, deployment, model_of

# -- the resources themselves ---------------------------------------------------------


def test_an_unsatisfied_requirement_names_the_key_and_the_host() -> None:
    anywhere = UnsatisfiedRequirement("db", None)
    on_web2 = UnsatisfiedRequirement("db", "web2")

    assert anywhere.message == "requires 'db', which no component provides"
    assert on_web2.message == "requires 'db' on host 'web2', which no component provides"
    assert (on_web2.key, on_web2.provider_host) == ("db", "web2")
    assert anywhere.code == "unsatisfied"
    assert isinstance(anywhere, ConfigurationError)
    assert anywhere.hint == (
        "add a component that calls provide() with this key to the environment, "
        "or require it with strict=False"
    )


def test_without_a_build_or_an_apply_there_is_no_service_discovery() -> None:
    resources = NoResources()

    with pytest.raises(ConfigurationError) as providing:
        resources.provide("web1", "app", "db", 1)
    with pytest.raises(ConfigurationError) as requiring:
        resources.require("web1", "app", "db", None, True, False, False)

    assert providing.value.message == (
        "provide() needs service discovery, which only a build or an apply has"
    )
    assert requiring.value.message == (
        "require() needs service discovery, which only a build or an apply has"
    )
    assert requiring.value.hint == "configure components through 'bundle build'"


def test_frozen_resources_answer_with_thawed_values_per_root_key_and_host() -> None:
    address = Address("10.0.0.9", 8080)
    resources = FrozenResources(
        {
            ("web", "app", None): [freeze(address), freeze(NetLoc("10.0.0.8", 80))],
            ("web", "app", "web2"): [freeze(address)],
            ("other", "app", None): [],
        }
    )

    values = resources.require("web1", "web", "app", None, True, False, False)
    assert values == [address, NetLoc("10.0.0.8", 80)]
    assert isinstance(values[0], Address)
    assert str(values[0].listen) == "10.0.0.9:8080"
    assert resources.require("web1", "web", "app", "web2", True, False, False) == [address]
    # strict, reverse and dirty were the build's business.
    assert resources.require("web1", "other", "app", None, True, True, True) == []
    # What a root provides went into other hosts' models already.
    resources.provide("web1", "web", "app", object())
    assert resources.require("web1", "web", "app", "web2", True, False, False) == [address]


@pytest.mark.parametrize(
    ("root", "host", "message"),
    [
        ("web", "web3", "requires 'app' on host 'web3', which the build did not record for this root"),
        ("cache", None, "requires 'app', which the build did not record for this root"),
    ],
)
def test_a_require_the_build_did_not_record_is_an_error(
    root: str, host: str | None, message: str
) -> None:
    resources = FrozenResources({("web", "app", None): []})

    with pytest.raises(ConfigurationError) as caught:
        resources.require("web1", root, "app", host, True, False, False)

    assert caught.value.message == message
    assert caught.value.hint == (
        "configure must require the same things on the host as in the builder; rebuild the bundle"
    )


class Web(Component):
    def configure(self) -> None:
        self.all = self.require("db", host=Host(HostRecord("web2", "web2"), None))
        self.one = self.require_one("db", host="web2")
        self.none = self.require_one("cache", strict=False)


def host_root(component: Component, recorded: dict[tuple[str, str, str | None], list[Any]]) -> Component:
    environment = Environment(EnvironmentRecord(name="prod", target_directory="/srv"))
    environment.resources = FrozenResources(recorded)
    component.prepare_root(
        name="web",
        host=Host(HostRecord("web1", "web1"), None),
        environment=environment,
        defdir="/nonexistent",
    )
    return component


def test_components_require_from_the_recorded_values_by_host_name() -> None:
    web = host_root(Web(), {("web", "db", "web2"): ["10.0.0.5"], ("web", "cache", None): []})

    assert isinstance(web, Web)
    assert (web.all, web.one, web.none) == (["10.0.0.5"], "10.0.0.5", None)


def test_require_one_without_a_value_on_the_host_is_an_error() -> None:
    class Strict(Component):
        def configure(self) -> None:
            self.require_one("db")

    with pytest.raises(ConfigurationError) as caught:
        host_root(Strict(), {("web", "db", None): []})

    assert caught.value.message == "require_one('db') found 0 values, expected exactly one"
    assert caught.value.where is not None and caught.value.where.startswith("Strict")


# -- applying a host that requires what another host provides --------------------------

REQUIRING = """
    from batou.component import Component
    from batou.lib.file import File

    class Web(Component):
        def configure(self):
            self.app = self.require_one("app")
            self.cache = self.require_one("cache", host=self.host)
            try:
                self.app.port = 1
            except AttributeError as exc:
                self.refused = str(exc)
            self.private = hasattr(self.app, "_token")
            self += File("upstream.conf")
    """

UPSTREAM_CONF = """\
connect {{component.app.address.connect}}
listen {{component.app.address.listen}}
port {{component.app.port}} on {{component.app.host.name}}
cache {{component.cache}}
refused: {{component.refused}}
private visible: {{component.private}}
"""

PROVIDING = """
    from batou.component import Component, Attribute
    from batou.lib.file import File
    from batou.utils import Address

    class App(Component):
        port = Attribute(int, default=8080)

        def configure(self):
            self._token = "never travels"
            self.address = Address("app.example.com", self.port)
            self.provide("app", self)
            self += File("app.conf", content="port={{component.port}}\\n")
    """

CACHE = """
    from batou.component import Component

    class Cache(Component):
        def configure(self):
            self.provide("cache", "localhost:11211")
    """

ENV = """
    [environment]
    target_directory = /srv/shop

    [hosts]
    web1 = web, cache
    web2 = app

    [component:app]
    port = 8081

    [resolver]
    app.example.com = 10.0.0.9
    """


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = deployment(
        tmp_path_factory.mktemp("resources") / "repo",
        components={"web": REQUIRING, "app": PROVIDING, "cache": CACHE},
        environments={"prod": ENV},
        files={"components/web/upstream.conf": UPSTREAM_CONF},
    )
    build_bundles("prod", repo)
    return repo / "bundles/prod"


def test_a_host_renders_what_another_host_provided_and_a_second_apply_changes_nothing(
    bundles: Path, tmp_path: Path
) -> None:
    first = apply_bundle(apply_options(bundles / "web1.bundle", tmp_path, host="web1"))

    assert first.status is ApplyStatus.OK, first.error
    conf = tmp_path / "target/work/web/upstream.conf"
    assert conf.read_text() == (
        "connect app.example.com:8081\n"
        "listen 10.0.0.9:8081\n"
        "port 8081 on web2\n"
        "cache localhost:11211\n"
        "refused: App is a read-only snapshot of a provided component\n"
        "private visible: False\n"
    )
    # Only this host's roots, providers on this host first.
    assert [(r.name, r.status) for r in first.roots] == [
        ("cache", RootStatus.OK),
        ("web", RootStatus.OK),
    ]
    assert not (tmp_path / "target/work/app").exists()

    second = apply_bundle(apply_options(bundles / "web1.bundle", tmp_path, host="web1"))
    assert second.status is ApplyStatus.OK
    assert second.changed == ()


def test_the_model_holds_the_provided_component_as_a_snapshot(bundles: Path) -> None:
    web1 = model_of(bundles / "web1.bundle")

    assert [root.name for root in web1.roots] == ["cache", "web"]
    web = web1.roots[1]
    assert [(r.key, r.host) for r in web.requires] == [("app", None), ("cache", "web1")]
    [app] = web.requires[0].values
    assert app["$"] == "component"
    assert app["attributes"]["port"] == 8081
    assert sorted(app["attributes"]) == ["address", "port"]
    assert web.after == ("web1/cache", "web2/app")
    assert web1.roots[0].provides == ("cache",)


def test_the_snapshot_thaws_read_only_on_the_host_too(bundles: Path) -> None:
    [app] = model_of(bundles / "web1.bundle").roots[1].requires[0].values
    snapshot = thaw(app)

    assert isinstance(snapshot, FrozenComponent)
    with pytest.raises(AttributeError):
        snapshot.port = 1
    with pytest.raises(AttributeError):
        _ = snapshot._token


def test_a_require_the_build_did_not_record_fails_the_apply_before_any_update(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "flag"
    repo = deployment(
        tmp_path / "repo",
        components={
            "web": f"""
                import os
                from batou.component import Component
                from batou.lib.file import File

                class Web(Component):
                    def configure(self):
                        self += File("first")
                        self.db = self.require("db", strict=False)
                        if os.path.exists({str(flag)!r}):
                            self.cache = self.require("cache", strict=False)
                """
        },
        environments={"prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = web\n"},
    )
    build_bundles("prod", repo)
    flag.write_text("")

    result = apply_bundle(apply_options(repo / "bundles/prod/web1.bundle", tmp_path))

    assert result.status is ApplyStatus.FAILED
    assert result.error is not None
    errors = result.error.parts()
    assert [e.message for e in errors] == [
        "requires 'cache', which the build did not record for this root"
    ]
    assert errors[0].where == "Web (components/web/component.py:10)"
    assert [(r.name, r.status) for r in result.roots] == [("web", RootStatus.NOT_RUN)]
    assert not (tmp_path / "target/work/web/first").exists()
