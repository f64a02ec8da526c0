from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from executor.canonical import CanonicalError, pack
from executor.decode import DecodeError
from executor.model import (
    MODEL_VERSION,
    EnvironmentRecord,
    HostModel,
    HostRecord,
    RootRecord,
    SkippedRoot,
    VfsMode,
    VfsRules,
    decode_model,
    encode_model,
    model_from_data,
    model_to_data,
)

RICH = HostModel(
    environment=EnvironmentRecord(
        name="prod",
        target_directory="/srv/app",
        service_user="app",
        host_domain="example.com",
        platform="debian",
        timeout=30,
        jobs=4,
        require_v4="optional",
        require_v6=True,
        vfs=VfsRules(
            mode=VfsMode.MAP,
            rules=(("/srv", "/tmp/work/srv"), ("/etc", "/tmp/work/etc")),
        ),
    ),
    host=HostRecord(
        name="web1",
        fqdn="web1.example.com",
        platform="ubuntu",
        data=(("alias", "www"), ("n", "1")),
    ),
    roots=(
        RootRecord(
            name="nginx",
            features=("tls", "http2"),
            overrides=(("port", "443"), ("workers", "8")),
            tree=("nginx", "nginx > File('nginx.conf')"),
        ),
        RootRecord(name="app"),
    ),
    skipped=(SkippedRoot(name="backup", reason="not on this platform"),),
)

MINIMAL = HostModel(
    environment=EnvironmentRecord(name="dev", target_directory="/work"),
    host=HostRecord(name="localhost", fqdn="localhost"),
)


@pytest.mark.parametrize("model", [RICH, MINIMAL], ids=["rich", "minimal"])
def test_a_model_survives_encoding_and_decoding(model: HostModel) -> None:
    data = encode_model(model)

    assert decode_model(data) == model
    assert encode_model(decode_model(data)) == data


def test_encoding_is_deterministic() -> None:
    assert encode_model(RICH) == encode_model(copy.deepcopy(RICH))


@pytest.mark.parametrize(
    ("v4", "v6"), [(True, False), (False, True), ("optional", "optional")]
)
def test_address_family_requirements_round_trip(v4: Any, v6: Any) -> None:
    model = HostModel(
        environment=EnvironmentRecord(
            name="e", target_directory="/t", require_v4=v4, require_v6=v6
        ),
        host=HostRecord(name="h", fqdn="h"),
    )

    decoded = decode_model(encode_model(model))

    assert (decoded.environment.require_v4, decoded.environment.require_v6) == (v4, v6)


@pytest.mark.parametrize("mode", list(VfsMode))
def test_every_vfs_mode_round_trips(mode: VfsMode) -> None:
    model = HostModel(
        environment=EnvironmentRecord(
            name="e", target_directory="/t", vfs=VfsRules(mode=mode, rules=(("/a", "/b"),))
        ),
        host=HostRecord(name="h", fqdn="h"),
    )

    assert decode_model(encode_model(model)).environment.vfs == model.environment.vfs


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            HostModel(
                environment=MINIMAL.environment,
                host=HostRecord(name="h", fqdn="h", data=(("n", "1"), ("n", "2"))),
            ),
            "host 'h' data has the key 'n' twice",
        ),
        (
            HostModel(
                environment=MINIMAL.environment,
                host=MINIMAL.host,
                roots=(RootRecord(name="app", overrides=(("a", "1"), ("b", "2"), ("a", "3"))),),
            ),
            "root 'app' overrides has the key 'a' twice",
        ),
    ],
    ids=["host-data", "overrides"],
)
def test_encoding_refuses_a_key_twice_instead_of_dropping_a_value(
    model: HostModel, message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        encode_model(model)

    assert str(caught.value) == message


def test_decoded_pairs_are_sorted() -> None:
    model = HostModel(
        environment=MINIMAL.environment,
        host=HostRecord(name="h", fqdn="h", data=(("z", "1"), ("a", "2"))),
    )

    assert decode_model(encode_model(model)).host.data == (("a", "2"), ("z", "1"))


def test_decode_model_refuses_bytes_that_are_not_canonical() -> None:
    data = encode_model(MINIMAL) + b"\x00"

    with pytest.raises(CanonicalError) as caught:
        decode_model(data)

    assert str(caught.value) == "1 bytes of trailing data"


# --- decoding errors name the path of the first bad field --------------------

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Edit:
    """An edit that sets the field at a dotted path (integers index arrays)."""

    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return edit


def _delete(path: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return edit


BAD_MODELS: list[tuple[str, Edit, str]] = [
    ("host-name-int", _set("host.name", 1), "model.host.name: expected str, got int"),
    ("host-fqdn-nil", _set("host.fqdn", None), "model.host.fqdn: expected str, got nil"),
    (
        "host-platform-int",
        _set("host.platform", 3),
        "model.host.platform: expected str or nil, got int",
    ),
    (
        "host-data-value",
        _set("host.data", {"n": 1}),
        "model.host.data['n']: expected str, got int",
    ),
    ("host-data-array", _set("host.data", []), "model.host.data: expected a map, got array"),
    ("host-missing", _delete("host"), "model.host: missing"),
    ("host-not-a-map", _set("host", "web1"), "model.host: expected a map, got str"),
    ("host-extra-field", _set("host.ip", "1.2.3.4"), "model.host: unexpected field 'ip'"),
    (
        "root-override-value",
        _set("roots.0.overrides", {"x": b"1"}),
        "model.roots[0].overrides['x']: expected str, got bin",
    ),
    (
        "root-feature-int",
        _set("roots.0.features", ["tls", 2]),
        "model.roots[0].features[1]: expected str, got int",
    ),
    (
        "root-tree-not-array",
        _set("roots.1.tree", {"a": "b"}),
        "model.roots[1].tree: expected an array, got map",
    ),
    ("root-name-missing", _delete("roots.1.name"), "model.roots[1].name: missing"),
    ("root-extra-field", _set("roots.1.x", 1), "model.roots[1]: unexpected field 'x'"),
    ("root-not-a-map", _set("roots.1", "app"), "model.roots[1]: expected a map, got str"),
    ("roots-not-array", _set("roots", "nginx"), "model.roots: expected an array, got str"),
    (
        "skipped-reason",
        _set("skipped.0.reason", None),
        "model.skipped[0].reason: expected str, got nil",
    ),
    ("unexpected-top-field", _set("extra", 1), "model: unexpected field 'extra'"),
    ("version-newer", _set("version", 2), "model.version: expected 1, got 2"),
    ("version-str", _set("version", "1"), "model.version: expected int, got str"),
    ("version-bool", _set("version", True), "model.version: expected int, got bool"),
    ("version-missing", _delete("version"), "model.version: missing"),
    (
        "vfs-mode-unknown",
        _set("environment.vfs.mode", "magic"),
        "model.environment.vfs.mode: expected one of 'none', 'developer', 'map', got 'magic'",
    ),
    (
        "vfs-mode-int",
        _set("environment.vfs.mode", 1),
        "model.environment.vfs.mode: expected str, got int",
    ),
    (
        "vfs-rule-not-a-pair",
        _set("environment.vfs.rules", [["/a", "/b", "/c"]]),
        "model.environment.vfs.rules[0]: expected a [prefix, target] pair, got 3 items",
    ),
    (
        "vfs-rule-not-an-array",
        _set("environment.vfs.rules", ["/a"]),
        "model.environment.vfs.rules[0]: expected a [prefix, target] pair, got '/a'",
    ),
    (
        "vfs-rule-target-int",
        _set("environment.vfs.rules", [["/a", 1]]),
        "model.environment.vfs.rules[0][1]: expected str, got int",
    ),
    (
        "vfs-extra-field",
        _set("environment.vfs.strict", True),
        "model.environment.vfs: unexpected field 'strict'",
    ),
    (
        "require-v4-str",
        _set("environment.require_v4", "yes"),
        "model.environment.require_v4: expected true, false or 'optional', got 'yes'",
    ),
    (
        "require-v4-int",
        _set("environment.require_v4", 1),
        "model.environment.require_v4: expected true, false or 'optional', got 1",
    ),
    (
        "require-v4-long",
        _set("environment.require_v4", "y" * 100),
        "model.environment.require_v4: expected true, false or 'optional', got "
        f"'{'y' * 56}...",
    ),
    (
        "require-v6-nil",
        _set("environment.require_v6", None),
        "model.environment.require_v6: expected true, false or 'optional', got None",
    ),
    (
        "jobs-zero",
        _set("environment.jobs", 0),
        "model.environment.jobs: expected at least 1, got 0",
    ),
    (
        "timeout-zero",
        _set("environment.timeout", 0),
        "model.environment.timeout: expected at least 1, got 0",
    ),
    (
        "timeout-str",
        _set("environment.timeout", "30"),
        "model.environment.timeout: expected int, got str",
    ),
    ("timeout-missing", _delete("environment.timeout"), "model.environment.timeout: missing"),
    (
        "target-directory-bin",
        _set("environment.target_directory", b"/srv"),
        "model.environment.target_directory: expected str, got bin",
    ),
    (
        "environment-extra-field",
        _set("environment.hosts", []),
        "model.environment: unexpected field 'hosts'",
    ),
]


@pytest.mark.parametrize(
    ("edit", "message"),
    [(edit, message) for _id, edit, message in BAD_MODELS],
    ids=[case[0] for case in BAD_MODELS],
)
def test_decoding_names_the_path_of_the_first_bad_field(edit: Edit, message: str) -> None:
    data = model_to_data(RICH)
    edit(data)

    with pytest.raises(DecodeError) as caught:
        decode_model(pack(data))

    assert str(caught.value) == message


def test_a_model_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_model(pack([1]))

    assert str(caught.value) == "model: expected a map, got array"
    assert caught.value.path == "model"


def test_model_from_data_takes_the_path_prefix() -> None:
    data = model_to_data(MINIMAL)
    data["host"]["name"] = 1

    with pytest.raises(DecodeError) as caught:
        model_from_data(data, "bundle.model")

    assert str(caught.value) == "bundle.model.host.name: expected str, got int"


def test_the_model_version_is_written() -> None:
    assert model_to_data(MINIMAL)["version"] == MODEL_VERSION
