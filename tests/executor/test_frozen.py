"""Values that travel between hosts: freezing to plain data and thawing back."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import pytest

from executor.component import Attribute, Component
from executor.environment import Environment, Host
from executor.frozen import MAX_DEPTH, FreezeError, FrozenComponent, FrozenHost, freeze, thaw
from executor.model import EnvironmentRecord, HostRecord
from executor.utils import Address, NetLoc


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -7,
        2**70,
        "",
        "text",
        1.5,
        -0.25,
        b"\x00\xff",
        [],
        [1, "a", None],
        {"a": {"b": [1, 2.5]}, "c": b"x"},
        {"$": "netloc", "host": "not", "port": "a netloc"},
    ],
    ids=repr,
)
def test_plain_data_survives_freezing_and_thawing(value: Any) -> None:
    assert thaw(freeze(value)) == value


def test_frozen_values_are_tagged_plain_data() -> None:
    assert freeze(1.5) == {"$": "float", "value": "1.5"}
    assert freeze(b"ab") == {"$": "bytes", "value": b"ab"}
    assert freeze(bytearray(b"ab")) == {"$": "bytes", "value": b"ab"}
    assert freeze((1, (2, 3))) == [1, [2, 3]]
    # A user's dict with a "$" key stays a dict, never a tagged value.
    assert freeze({"$": "address"}) == {"$": "dict", "items": {"$": "address"}}
    assert freeze(NetLoc("fd00::5", 80)) == {"$": "netloc", "host": "fd00::5", "port": "80"}


class Thing:
    pass


def _closed_file(path: Path) -> Any:
    f = open(path, "rb")  # noqa: SIM115 - closed at once: still a file object
    f.close()
    return f


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "value is a builtins.float, which cannot travel to another host"),
        (math.inf, "value is a builtins.float, which cannot travel to another host"),
        ({1, 2}, "value is a builtins.set, which cannot travel to another host"),
        (object(), "value is a builtins.object, which cannot travel to another host"),
        (lambda: 1, "value is a builtins.function, which cannot travel to another host"),
        (Thing(), "value is a tests.executor.test_frozen.Thing, which cannot travel to another host"),
        ({1: "a"}, "value key 1 is a builtins.int, which cannot travel to another host"),
        (
            [{"a": (1, {"b": Thing})}],
            "value[0]['a'][1]['b'] is a builtins.type, which cannot travel to another host",
        ),
    ],
    ids=["nan", "inf", "set", "object", "lambda", "user-class", "int-key", "nested"],
)
def test_values_that_cannot_travel_are_refused_naming_path_and_type(
    value: Any, message: str
) -> None:
    with pytest.raises(FreezeError) as caught:
        freeze(value)

    assert str(caught.value) == message


def test_an_open_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")

    with pytest.raises(FreezeError) as caught:
        freeze({"log": _closed_file(tmp_path / "f")}, "the value of 'files'")

    assert str(caught.value) == (
        "the value of 'files'['log'] is a _io.BufferedReader, which cannot travel to another host"
    )
    assert caught.value.path == "the value of 'files'['log']"


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    value: Any = "leaf"
    for _ in range(MAX_DEPTH + 1):
        value = [value]

    with pytest.raises(FreezeError) as caught:
        freeze(value)

    assert caught.value.path == "value" + "[0]" * (MAX_DEPTH + 1)
    # One level less travels.
    assert thaw(freeze(value[0])) == value[0]


def test_thawing_an_unknown_tag_is_an_error() -> None:
    with pytest.raises(ValueError) as caught:
        thaw({"$": "socket"})

    assert str(caught.value) == "unknown frozen value 'socket'"


# -- Address and NetLoc -------------------------------------------------------------------


def test_an_address_thaws_as_the_provider_resolved_it_without_resolving_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address = Address("[fd00::5]:5432", require_v4="optional", require_v6=True)
    frozen = freeze(address)
    assert frozen == {
        "$": "address",
        "host": "fd00::5",
        "port": "5432",
        "listen": None,
        "listen_v6": "fd00::5",
        "require_v4": "optional",
        "require_v6": True,
    }

    def no_lookups(*args: object, **kw: object) -> object:
        raise AssertionError("a thawed address resolved its name again")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookups)
    thawed = thaw(frozen)

    assert isinstance(thawed, Address)
    assert thawed == address
    assert str(thawed.connect) == "[fd00::5]:5432"
    assert thawed.listen is None
    assert str(thawed.listen_v6) == "[fd00::5]:5432"
    assert (thawed.require_v4, thawed.require_v6) == ("optional", True)


def test_a_thawed_address_keeps_a_disabled_family_disabled() -> None:
    thawed = thaw(freeze(Address("10.0.0.5", 80)))

    assert str(thawed.listen) == "10.0.0.5:80"
    with pytest.raises(Exception, match="IPv6 is disabled for this address"):
        _ = thawed.listen_v6


def test_a_netloc_thaws_equal() -> None:
    thawed = thaw(freeze([NetLoc("db", 5432)]))

    assert thawed == [NetLoc("db", 5432)]
    assert isinstance(thawed[0], NetLoc)


# -- components and hosts -----------------------------------------------------------------


class Database(Component):
    port = Attribute(int, default=5432)
    password = Attribute(str)  # no value: nothing to snapshot

    def configure(self) -> None:
        self.address = Address("10.0.0.5", self.port)
        self.replicas = ["10.0.0.6", "10.0.0.7"]
        self._token = "private"


def configured(tmp_path: Path, component: Component | None = None) -> Component:
    db = component or Database()
    db.prepare_root(
        name="database",
        host=Host(
            HostRecord("db1", "db1.example.com", data=(("secret", "db1-only"),)), None
        ),
        environment=Environment(
            EnvironmentRecord(name="prod", target_directory="/srv/db"), base_dir=str(tmp_path)
        ),
        defdir=str(tmp_path),
    )
    return db


def test_a_component_freezes_to_its_public_data_attributes(tmp_path: Path) -> None:
    frozen = freeze(configured(tmp_path))

    assert frozen == {
        "$": "component",
        "class": "Database",
        "breadcrumb": "Database",
        "host": {"$": "host", "name": "db1", "fqdn": "db1.example.com"},
        "attributes": {
            "address": freeze(Address("10.0.0.5", 5432)),
            "port": 5432,
            "replicas": ["10.0.0.6", "10.0.0.7"],
        },
    }
    assert "db1-only" not in repr(frozen)


def test_a_provided_component_arrives_as_a_read_only_snapshot(tmp_path: Path) -> None:
    db = thaw(freeze(configured(tmp_path)))

    assert isinstance(db, FrozenComponent)
    assert db.port == 5432
    assert str(db.address.listen) == "10.0.0.5:5432"
    assert db.replicas == ["10.0.0.6", "10.0.0.7"]
    assert repr(db) == "<Database (frozen)>"

    with pytest.raises(AttributeError) as setting:
        db.port = 1
    assert str(setting.value) == "Database is a read-only snapshot of a provided component"
    assert db.port == 5432

    for name in ("_token", "password", "environment", "parent", "sub_components", "workdir"):
        with pytest.raises(AttributeError) as getting:
            getattr(db, name)
        assert str(getting.value) == (
            f"Database (provided on another host) has no data attribute {name!r}; "
            "only its public data attributes travel"
        )
    assert not hasattr(db, "configure")


def test_the_host_of_a_provided_component_travels_without_its_data(tmp_path: Path) -> None:
    db = thaw(freeze(configured(tmp_path)))

    assert isinstance(db.host, FrozenHost)
    assert (db.host.name, db.host.fqdn) == ("db1", "db1.example.com")
    assert repr(db.host) == "<Host db1 (frozen)>"
    with pytest.raises(AttributeError, match="does not travel"):
        _ = db.host.data


def test_a_snapshot_freezes_to_the_same_data_again(tmp_path: Path) -> None:
    frozen = freeze(configured(tmp_path))
    snapshot = thaw(frozen)

    # A root may pass on what it required: it travels unchanged.
    assert freeze(snapshot) == frozen
    assert freeze(snapshot.host) == frozen["host"]
    assert thaw(frozen) == snapshot
    assert hash(thaw(frozen)) == hash(snapshot)
    assert snapshot != frozen


def test_a_component_with_an_attribute_that_cannot_travel_names_it(tmp_path: Path) -> None:
    class Leaky(Component):
        def configure(self) -> None:
            self.callback = print

    with pytest.raises(FreezeError) as caught:
        freeze(configured(tmp_path, Leaky()), "the value of 'db'")

    assert str(caught.value) == (
        "the value of 'db'.callback is a builtins.builtin_function_or_method, "
        "which cannot travel to another host"
    )
