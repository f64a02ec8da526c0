"""batou.utils: Address, NetLoc, hash, dict_merge."""

from __future__ import annotations

import builtins
import hashlib
import socket
from pathlib import Path

import pytest

from batou.utils import Address, NetLoc, dict_merge, hash
from executor.errors import ConfigurationError
from executor.utils import family_defaults


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Answers for socket.getaddrinfo; this machine has no DNS."""
    answers: dict[str, list[str]] = {
        "db.example.com": ["10.0.0.5", "10.0.0.6", "fe80::1", "fd00::5"],
        "v4only.example.com": ["10.0.0.7"],
    }

    def getaddrinfo(host: str, port: object, family: int = 0, *args: object) -> list[tuple[object, ...]]:
        result: list[tuple[object, ...]] = []
        for address in answers.get(host, []):
            is_v6 = ":" in address
            if family == socket.AF_INET6 and is_v6 or family == socket.AF_INET and not is_v6:
                fam = socket.AF_INET6 if is_v6 else socket.AF_INET
                result.append((fam, socket.SOCK_STREAM, 6, "", (address, 0)))
        if not result:
            raise socket.gaierror(socket.EAI_NONAME, "not found")
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_address_forms_and_resolution(fake_dns: dict[str, list[str]]) -> None:
    a = Address("db.example.com:5432", require_v6=True)
    b = Address("db.example.com", 5432, require_v6=True)

    assert str(a.connect) == "db.example.com:5432"
    assert a == b
    assert str(a.listen) == "10.0.0.5:5432"
    # The link-local address is skipped.
    assert str(a.listen_v6) == "[fd00::5]:5432"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("db.example.com",), "address 'db.example.com' has no port"),
        (("db.example.com:",), "address 'db.example.com:' has no port"),
        (("db.example.com:http",), "port 'http' is not a number from 1 to 65535"),
        (("db.example.com", 70000), "port 70000 is not a number from 1 to 65535"),
        (("nowhere.example.com:80",), "'nowhere.example.com' has no IPv4 address"),
    ],
)
def test_bad_addresses_are_configuration_errors(
    fake_dns: dict[str, list[str]], args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Address(*args)  # type: ignore[arg-type]
    assert message in caught.value.message


def test_family_requirements(fake_dns: dict[str, list[str]]) -> None:
    optional = Address("v4only.example.com:80", require_v6="optional")
    assert optional.listen_v6 is None

    disabled = Address("v4only.example.com:80")
    with pytest.raises(ConfigurationError, match="IPv6 is disabled for this address"):
        _ = disabled.listen_v6

    with pytest.raises(ConfigurationError, match="has no IPv6 address"):
        Address("v4only.example.com:80", require_v6=True)

    with pytest.raises(ConfigurationError, match="require_v4 must be True, False or 'optional'"):
        Address("v4only.example.com:80", require_v4="maybe")


def test_environment_defaults_apply_while_configuring(fake_dns: dict[str, list[str]]) -> None:
    with family_defaults(False, "optional"):
        address = Address("v4only.example.com:80")
    assert address.require_v4 is False
    assert address.listen_v6 is None
    with pytest.raises(ConfigurationError):
        _ = address.listen


def test_bracketed_v6_literal_with_port() -> None:
    address = Address("[::1]:8080", require_v4="optional", require_v6=True)
    assert str(address.connect) == "[::1]:8080"
    assert address.listen is None
    assert str(address.listen_v6) == "[::1]:8080"


def test_netloc_formats_and_orders_as_its_string() -> None:
    assert str(NetLoc("fd00::5", 80)) == "[fd00::5]:80"
    assert str(NetLoc("10.0.0.1", "80")) == "10.0.0.1:80"
    assert str(NetLoc("example.com")) == "example.com"
    assert sorted([NetLoc("b", 1), NetLoc("a", 2)]) == [NetLoc("a", 2), NetLoc("b", 1)]
    assert len({NetLoc("a", 1), NetLoc("a", "1")}) == 1


def test_hash_and_dict_merge(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"content")
    assert hash(str(path)) == hashlib.sha512(b"content").hexdigest()
    assert hash(str(path), "sha256") == hashlib.sha256(b"content").hexdigest()
    assert dict_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": 3}, "e": 4}) == {
        "a": {"b": 1, "c": 3},
        "d": 1,
        "e": 4,
    }


# -- Address and NetLoc: the rest of batou's contract --------------------------------------


def test_batou_utils_exports_consigns_address_and_netloc() -> None:
    import executor.utils

    assert Address is executor.utils.Address
    assert NetLoc is executor.utils.NetLoc


@pytest.mark.parametrize(
    "args",
    [("db.example.com:5432",), ("db.example.com", 5432), ("db.example.com", "5432")],
    ids=["host:port", "host-and-int", "host-and-str"],
)
def test_the_port_may_be_written_either_way(
    fake_dns: dict[str, list[str]], args: tuple[object, ...]
) -> None:
    address = Address(*args)  # type: ignore[arg-type]

    assert str(address.connect) == "db.example.com:5432"
    assert address.connect.port == "5432"
    assert str(address) == "db.example.com:5432"
    assert repr(address) == "<Address db.example.com:5432>"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fd00::5:80",), "address 'fd00::5:80' has no port"),
        (("[fd00::5]",), "address '[fd00::5]' has no port"),
        (("db.example.com", ""), "address 'db.example.com' has no port"),
        (("db.example.com:0",), "address 'db.example.com:0': port '0' is not a number from 1 to 65535"),
        (("db.example.com:65536",), "port '65536' is not a number from 1 to 65535"),
        (("db.example.com:-1",), "port '-1' is not a number from 1 to 65535"),
    ],
    ids=["bare-v6-with-port", "bracketed-v6-without-port", "empty-port", "zero", "too-big", "negative"],
)
def test_more_addresses_without_a_usable_port(
    fake_dns: dict[str, list[str]], args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Address(*args)  # type: ignore[arg-type]

    assert message in caught.value.message


def test_a_missing_port_says_how_to_write_one(fake_dns: dict[str, list[str]]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Address("db.example.com")

    assert caught.value.message == "address 'db.example.com' has no port"
    assert caught.value.hint == "write host:port, or pass the port: Address('host', 8080)"


def test_the_highest_port_is_a_port(fake_dns: dict[str, list[str]]) -> None:
    assert str(Address("db.example.com", 65535).listen) == "10.0.0.5:65535"


def test_a_v6_literal_with_a_separate_port_is_bracketed() -> None:
    address = Address("fd00::5", 80, require_v4="optional", require_v6=True)

    assert str(address.connect) == "[fd00::5]:80"
    assert address.connect.host == "fd00::5"
    assert str(address.listen_v6) == "[fd00::5]:80"


def test_a_v4_literal_listens_on_itself() -> None:
    address = Address("10.0.0.1:80")

    assert str(address.listen) == "10.0.0.1:80"
    assert address.listen == NetLoc("10.0.0.1", 80)


def test_listen_takes_the_first_address_in_resolver_order(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["db.example.com"] = ["10.0.0.9", "10.0.0.5", "10.0.0.9", "fd00::9", "fd00::5"]

    address = Address("db.example.com:80", require_v6=True)

    assert str(address.listen) == "10.0.0.9:80"
    assert str(address.listen_v6) == "[fd00::9]:80"


def test_only_link_local_v6_addresses_count_as_none(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["ll.example.com"] = ["10.0.0.8", "fe80::1", "fe80::2"]

    optional = Address("ll.example.com:80", require_v6="optional")
    assert optional.listen_v6 is None
    with pytest.raises(ConfigurationError) as caught:
        Address("ll.example.com:80", require_v6=True)
    assert caught.value.message == "'ll.example.com' has no IPv6 address"
    assert caught.value.hint == "fix the name or DNS, or declare require_v6 = optional"


def test_a_v6_only_name_with_optional_v4(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["v6only.example.com"] = ["fd00::7"]

    address = Address("v6only.example.com:80", require_v4="optional", require_v6=True)

    assert address.listen is None
    assert str(address.listen_v6) == "[fd00::7]:80"
    with pytest.raises(ConfigurationError) as caught:
        Address("v6only.example.com:80")
    assert caught.value.message == "'v6only.example.com' has no IPv4 address"
    assert caught.value.hint == "fix the name or DNS, or declare require_v4 = optional"


def test_a_disabled_family_is_never_looked_up_and_asking_for_it_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_lookups(*args: object, **kw: object) -> object:
        raise AssertionError("looked up a disabled family")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookups)
    address = Address("nowhere.example.com:80", require_v4=False, require_v6=False)

    assert str(address.connect) == "nowhere.example.com:80"
    with pytest.raises(ConfigurationError) as v4:
        _ = address.listen
    with pytest.raises(ConfigurationError) as v6:
        _ = address.listen_v6
    assert v4.value.message == (
        "nowhere.example.com:80: IPv4 is disabled for this address (require_v4 = False)"
    )
    assert v6.value.message == (
        "nowhere.example.com:80: IPv6 is disabled for this address (require_v6 = False)"
    )
    assert v6.value.hint == "enable the family in [environment] or on the Address"


@pytest.mark.parametrize("value", ["yes", 1, 0, "True", ""])
def test_family_requirements_are_true_false_or_optional(
    fake_dns: dict[str, list[str]], value: object
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Address("db.example.com:80", require_v6=value)  # type: ignore[arg-type]

    assert caught.value.message == f"require_v6 must be True, False or 'optional', got {value!r}"


def test_an_address_argument_wins_over_the_environment_default(
    fake_dns: dict[str, list[str]],
) -> None:
    with family_defaults("optional", True):
        default = Address("db.example.com:80")
        explicit = Address("v4only.example.com:80", require_v6=False)

    assert (default.require_v4, default.require_v6) == ("optional", True)
    assert str(default.listen_v6) == "[fd00::5]:80"
    assert (explicit.require_v4, explicit.require_v6) == ("optional", False)
    with family_defaults(True, "optional"):
        # None is no value of its own: the environment's default.
        assert Address("db.example.com:80", require_v6=None).require_v6 == "optional"
    # Outside configure, batou's defaults.
    outside = Address("v4only.example.com:80")
    assert (outside.require_v4, outside.require_v6) == (True, False)


def test_addresses_compare_hash_and_sort_by_what_was_written(
    fake_dns: dict[str, list[str]],
) -> None:
    a = Address("db.example.com:5432")
    b = Address("db.example.com", "5432")
    c = Address("v4only.example.com:80")

    assert a == b and builtins.hash(a) == builtins.hash(b)
    assert a != c
    assert a != "db.example.com:5432"
    assert sorted([c, a]) == [a, c]
    assert len({a, b, c}) == 2


def test_netlocs_format_compare_and_refuse_other_types() -> None:
    assert repr(NetLoc("fd00::5", 80)) == "<NetLoc [fd00::5]:80>"
    assert str(NetLoc("fd00::5")) == "[fd00::5]"
    assert str(NetLoc("db.example.com", 5432)) == "db.example.com:5432"
    assert NetLoc("db", 1).port == "1"
    assert NetLoc("db").port is None
    assert NetLoc("db", 1) != "db:1"
    assert NetLoc("10.0.0.2", 80) > NetLoc("10.0.0.10", 80)  # as strings, like batou
    assert sorted([NetLoc("db", 80), NetLoc("db", 443)]) == [NetLoc("db", 443), NetLoc("db", 80)]
    with pytest.raises(TypeError):
        _ = NetLoc("a", 1) < "b"
