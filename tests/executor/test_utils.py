"""batou.utils: Address, NetLoc, hash, dict_merge."""

from __future__ import annotations

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
