"""Properties of the model decoder (issue 11, fuzzing): any bytes, and a
valid model with any field replaced by any value, give a model or a
DecodeError / CanonicalError naming the path; valid models round-trip."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from executor import canonical
from executor.canonical import CanonicalError
from executor.decode import DecodeError
from executor.model import (
    DnsRecord,
    EnvironmentRecord,
    HostModel,
    HostRecord,
    RequirementRecord,
    RootRecord,
    decode_model,
    encode_model,
    model_to_data,
)
from executor.secrets import HostSecrets, decode_secrets, encode_secrets

names = st.text(st.characters(codec="utf-8"), max_size=12)
frozen = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)
pairs = st.dictionaries(names, names, max_size=4).map(lambda d: tuple(sorted(d.items())))
models = st.builds(
    HostModel,
    environment=st.builds(
        EnvironmentRecord,
        name=names,
        target_directory=names,
        jobs=st.integers(1, 64),
        timeout=st.one_of(st.none(), st.integers(1, 10**6)),
        require_v6=st.sampled_from([True, False, "optional"]),
    ),
    host=st.builds(HostRecord, name=names, fqdn=names, data=pairs),
    roots=st.lists(
        st.builds(
            RootRecord,
            name=names,
            features=st.lists(names, max_size=3).map(tuple),
            overrides=pairs,
            tree=st.lists(names, max_size=3).map(tuple),
            requires=st.lists(
                st.builds(RequirementRecord, key=names, host=st.one_of(st.none(), names),
                          values=st.lists(frozen, max_size=3).map(tuple)),
                max_size=2,
            ).map(tuple),
        ),
        max_size=3,
    ).map(tuple),
    dns=st.lists(
        st.builds(DnsRecord, name=names, v4=st.one_of(st.none(), st.just(("192.0.2.1",)))),
        max_size=2,
        unique_by=lambda d: d.name,
    ).map(lambda records: tuple(sorted(records, key=lambda d: d.name))),
)
any_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=10),
              st.binary(max_size=10), st.floats(allow_nan=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)


@given(models)
def test_valid_models_round_trip(model: HostModel) -> None:
    assert decode_model(encode_model(model)) == model


@given(st.binary(max_size=4096))
def test_any_bytes_decode_or_fail_with_a_decode_error(data: bytes) -> None:
    try:
        decode_model(data)
    except (DecodeError, CanonicalError):
        pass


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


@given(models, st.data())
def test_any_field_replaced_by_any_value_decodes_or_names_its_path(model: HostModel, data: st.DataObject) -> None:
    tree = model_to_data(model)
    path = data.draw(st.sampled_from(_paths(tree)[1:]))
    value = data.draw(any_value)
    target = tree
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    try:
        packed = canonical.pack(tree)
    except (CanonicalError, ValueError, TypeError, OverflowError):
        return  # not encodable canonically: a host never sees it
    try:
        decoded = decode_model(packed)
    except DecodeError as error:
        # The error names where: a path into the model.
        assert error.path.startswith("model"), error.path
        return
    except CanonicalError as error:
        assert str(error)
        return
    assert decode_model(encode_model(decoded)) == decoded


@given(st.binary(max_size=2048))
def test_any_bytes_as_a_secrets_selection_fail_cleanly(data: bytes) -> None:
    try:
        decode_secrets(data)
    except (DecodeError, CanonicalError):
        pass


@pytest.mark.parametrize("selection", [HostSecrets(), HostSecrets(data=(("k", "value"),), names=("a",))])
def test_selections_round_trip(selection: HostSecrets) -> None:
    assert decode_secrets(encode_secrets(selection)) == selection
