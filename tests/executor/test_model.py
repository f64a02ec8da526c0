from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.apply import ApplyStatus, apply_bundle
from executor.canonical import CanonicalError, pack
from executor.decode import DecodeError
from executor.model import (
    MODEL_VERSION,
    DnsRecord,
    EnvironmentRecord,
    HostModel,
    HostRecord,
    RequirementRecord,
    RootRecord,
    SkippedRoot,
    VfsMode,
    VfsRules,
    decode_model,
    encode_model,
    model_from_data,
    model_to_data,
)
from tests.deployments import apply_options, build_bundles, deployment, model_of

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
            requires=(
                RequirementRecord(
                    key="app:http",
                    host=None,
                    values=(
                        {"$": "netloc", "host": "10.0.0.9", "port": "8080"},
                        "plain",
                        [1, {"$": "float", "value": "1.5"}],
                    ),
                ),
                RequirementRecord(key="cache", host="web2"),
            ),
            provides=("frontend",),
            after=("web1/app", "web2/app"),
        ),
        RootRecord(name="app"),
    ),
    skipped=(SkippedRoot(name="backup", reason="not on this platform"),),
    resolver=(("db.example.com", ("10.0.0.5", "fd00::5")), ("v4.example.com", ("10.0.0.7",))),
    dns=(
        DnsRecord("db.example.com", ("10.0.0.5",), None),
        DnsRecord("gone.example.com", (), ()),
        DnsRecord("v6.example.com", None, ("fd00::6", "fd00::7")),
    ),
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


_GONE = object()


def _at(*path: str | int, value: object = _GONE) -> Edit:
    """An edit of the field at `path` (keys that contain dots, like DNS names);
    without a value it deletes the field."""

    def edit(data: dict[str, Any]) -> None:
        *parents, last = path
        target: Any = data
        for part in parents:
            target = target[part]
        if value is _GONE:
            del target[last]
        else:
            target[last] = value

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
    (
        "requires-not-array",
        _set("roots.0.requires", {"key": "db"}),
        "model.roots[0].requires: expected an array, got map",
    ),
    (
        "requirement-key-missing",
        _delete("roots.0.requires.0.key"),
        "model.roots[0].requires[0].key: missing",
    ),
    (
        "requirement-host-int",
        _set("roots.0.requires.1.host", 2),
        "model.roots[0].requires[1].host: expected str or nil, got int",
    ),
    (
        "requirement-values-map",
        _set("roots.0.requires.0.values", {}),
        "model.roots[0].requires[0].values: expected an array, got {}",
    ),
    (
        "requirement-extra-field",
        _set("roots.0.requires.0.strict", True),
        "model.roots[0].requires[0]: unexpected field 'strict'",
    ),
    (
        "provides-int",
        _set("roots.0.provides", ["frontend", 1]),
        "model.roots[0].provides[1]: expected str, got int",
    ),
    ("after-missing", _delete("roots.1.after"), "model.roots[1].after: missing"),
    ("resolver-array", _set("resolver", []), "model.resolver: expected a map, got []"),
    (
        "resolver-addresses-str",
        _at("resolver", "db.example.com", value="10.0.0.5"),
        "model.resolver['db.example.com']: expected an array, got '10.0.0.5'",
    ),
    (
        "resolver-address-int",
        _at("resolver", "v4.example.com", value=[7]),
        "model.resolver['v4.example.com'][0]: expected str, got int",
    ),
    ("resolver-missing", _delete("resolver"), "model.resolver: missing"),
    ("dns-missing", _delete("dns"), "model.dns: missing"),
    (
        "dns-family-missing",
        _at("dns", "gone.example.com", "v6"),
        "model.dns['gone.example.com'].v6: missing",
    ),
    (
        "dns-extra-field",
        _at("dns", "gone.example.com", "ttl", value=300),
        "model.dns['gone.example.com']: unexpected field 'ttl'",
    ),
    (
        "dns-not-a-map",
        _at("dns", "gone.example.com", value=["10.0.0.1"]),
        "model.dns['gone.example.com']: expected a map, got array",
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


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        pytest.param(
            _at("resolver", "x.example.com", value=None),
            "model.resolver['x.example.com']",
            id="resolver-nil",
        ),
        pytest.param(
            _at("resolver", "db.example.com", value=["db-host"]),
            "model.resolver['db.example.com'][0]",
            id="resolver-not-an-address",
        ),
        pytest.param(
            _at("dns", "db.example.com", "v4", value=["10.0.0.256"]),
            "model.dns['db.example.com'].v4[0]",
            id="dns-not-an-address",
        ),
        pytest.param(
            _at("roots", 0, "requires", 0, "values", value=[{"$": "socket"}]),
            "model.roots[0].requires[0].values[0]",
            id="requirement-unknown-frozen-value",
        ),
    ],
)
def test_decoding_refuses_what_the_host_could_not_use(edit: Edit, path: str) -> None:
    # Each of these decodes today, and fails the host later: the resolver
    # with a bare ValueError that reads as a bug in consign.
    data = model_to_data(RICH)
    edit(data)

    with pytest.raises(DecodeError) as caught:
        decode_model(pack(data))

    assert caught.value.path == path


# -- the tree the model records, and the host's check of it -------------------------------


def test_the_host_checks_every_roots_tree_before_any_update(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    repo = deployment(
        tmp_path / "repo",
        components={
            "early": """
                from batou.component import Component
                from batou.lib.file import File

                class Early(Component):
                    def configure(self):
                        self += File("early")
                """,
            "sneaky": f"""
                import os
                from batou.component import Component
                from batou.lib.file import File

                class Sneaky(Component):
                    def configure(self):
                        self.db = self.require_one("db")
                        if os.path.exists({str(flag)!r}):
                            self += File("extra")
                """,
            "db": """
                from batou.component import Component

                class Db(Component):
                    def configure(self):
                        self.provide("db", "10.0.0.5:5432")
                """,
        },
        environments={
            "prod": "[environment]\ntarget_directory = /srv/x\n[hosts]\nweb1 = early, sneaky, db\n"
        },
    )
    build_bundles("prod", repo)
    model = model_of(repo / "bundles/prod/web1.bundle")
    assert [(root.name, root.tree) for root in model.roots] == [
        (
            "early",
            (
                "Early",
                "Early > File('{target}/work/early/early')",
                "Early > File('{target}/work/early/early') > Presence('{target}/work/early/early')",
            ),
        ),
        ("db", ("Db",)),
        ("sneaky", ("Sneaky",)),
    ]
    flag.write_text("")

    result = apply_bundle(apply_options(repo / "bundles/prod/web1.bundle", tmp_path))

    assert result.status is ApplyStatus.FAILED
    assert result.error is not None
    assert result.error.message == (
        "configure on this host built another tree than the build did: this host configures "
        "\"Sneaky > File('{target}/work/sneaky/extra')\", which the build did not"
    )
    assert result.error.where == "sneaky"
    assert not (tmp_path / "target/work/early").exists()
