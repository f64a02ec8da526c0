"""What a host remembers: environment, the serial floor, downgrades and resets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from executor import canonical
from executor.errors import StateError
from executor.state import (
    MAX_HISTORY,
    MAX_STATE_BYTES,
    STATE_FILE,
    HostState,
    SerialChange,
    load_state,
    reset_serial,
    save_state,
    state_to_data,
)

DIGEST_A, DIGEST_B = "a" * 64, "b" * 64


def downgrade(time: int, from_serial: int, to_serial: int, bundle: str) -> SerialChange:
    return SerialChange("downgrade", time, from_serial, to_serial, bundle)


def reset(time: int, from_serial: int, to_serial: int, bundle: str) -> SerialChange:
    return SerialChange("reset", time, from_serial, to_serial, bundle)


def test_a_host_that_never_accepted_a_bundle_has_an_empty_state(tmp_path: Path) -> None:
    assert load_state(str(tmp_path / "missing")) == HostState()
    assert load_state(str(tmp_path)) == HostState()


def test_state_round_trips_as_canonical_msgpack_only_root_can_read(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    state = HostState(
        environment="prod",
        highest_serial=1_700_000_000,
        bundle=DIGEST_A,
        history=(
            downgrade(1_700_000_100, 1_700_000_000, 1_600_000_000, DIGEST_B),
            reset(1_700_000_200, 1_700_000_000, 1_650_000_000, DIGEST_B),
        ),
    )

    save_state(str(directory), state)

    assert load_state(str(directory)) == state
    data = (directory / STATE_FILE).read_bytes()
    assert canonical.unpack(data) == state_to_data(state)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / STATE_FILE).stat().st_mode) == 0o600
    assert sorted(os.listdir(directory)) == [STATE_FILE]


def test_saving_again_replaces_the_file_whole(tmp_path: Path) -> None:
    save_state(str(tmp_path), HostState("prod", 1, DIGEST_A))
    save_state(str(tmp_path), HostState("prod", 2, DIGEST_B))

    assert load_state(str(tmp_path)) == HostState("prod", 2, DIGEST_B)
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]


def _packed(**fields: object) -> bytes:
    data = state_to_data(HostState("prod", 5, DIGEST_A))
    data.update(fields)
    return canonical.pack(data)


DAMAGED: dict[str, tuple[bytes, str]] = {
    "not msgpack": (b"\xc1garbage", "malformed msgpack: reserved type byte at offset 0"),
    "truncated": (_packed()[:-3], "truncated msgpack data"),
    "empty": (b"", "truncated msgpack data"),
    "not canonical": (_packed()[:-1] + b"\xcd\x00\x01", "not canonical: re-encoding gives different bytes"),
    "another version": (_packed(version=3), "state.version: expected one of [1, 2], got 3"),
    "a failed digest not text": (_packed(failed=[1]), "state.failed[0]: expected str, got int"),
    "generation zero": (_packed(current=0), "state.current: expected at least 1, got 0"),
    "a serial below zero": (_packed(highest_serial=-1), "state.highest_serial: expected at least 0, got -1"),
    "a serial as text": (_packed(highest_serial="5"), "state.highest_serial: expected int, got str"),
    "an unknown field": (_packed(lock="x"), "state: unexpected field 'lock'"),
    "the old downgrades field": (
        _packed(downgrades=[]),
        "state: unexpected field 'downgrades'",
    ),
    "a record without its bundle": (
        _packed(history=[{"kind": "downgrade", "time": 1, "from": 2, "to": 1}]),
        "state.history[0].bundle: missing",
    ),
    "a record of an unknown kind": (
        _packed(history=[{"kind": "undo", "time": 1, "from": 2, "to": 1, "bundle": DIGEST_A}]),
        "state.history[0].kind: expected 'downgrade', 'reset' or 'rollback', got 'undo'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_state_file_is_an_error_not_an_empty_state(tmp_path: Path, case: str) -> None:
    data, reason = DAMAGED[case]
    path = tmp_path / STATE_FILE
    path.write_bytes(data)

    with pytest.raises(StateError) as caught:
        load_state(str(tmp_path))

    assert caught.value.message == f"{path} is damaged: {reason}"
    assert caught.value.hint is not None and "older bundles would be accepted again" in caught.value.hint


def test_a_state_file_over_the_limit_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    path.write_bytes(b"\0" * (MAX_STATE_BYTES + 10))

    with pytest.raises(StateError) as caught:
        load_state(str(tmp_path))

    assert caught.value.message == (
        f"{path} is damaged: {MAX_STATE_BYTES + 1} bytes exceed the limit of {MAX_STATE_BYTES}"
    )


def test_a_state_file_that_cannot_be_read_says_so(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()

    with pytest.raises(StateError) as caught:
        load_state(str(tmp_path))

    assert caught.value.message == f"cannot read {tmp_path / STATE_FILE}: Is a directory"


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777])
def test_a_state_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "state"
    save_state(str(directory), HostState("prod", 5, DIGEST_A))
    before = (directory / STATE_FILE).read_bytes()
    directory.chmod(mode)

    for action in (lambda: load_state(str(directory)), lambda: save_state(str(directory), HostState())):
        with pytest.raises(StateError) as caught:
            action()
        assert caught.value.message == (
            f"the state directory {directory} is writable by others (mode {mode:o})"
        )
    assert (directory / STATE_FILE).read_bytes() == before
    directory.chmod(0o700)
    assert load_state(str(directory)) == HostState("prod", 5, DIGEST_A)


def test_a_state_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory away")
    directory = tmp_path / "state"
    save_state(str(directory), HostState("prod", 5, DIGEST_A))
    os.chown(directory, 12345, 12345)

    with pytest.raises(StateError) as caught:
        load_state(str(directory))

    assert caught.value.message == (
        f"the state directory {directory} belongs to uid 12345, not to the executor's uid 0"
    )


def test_accepting_raises_the_highest_serial_and_remembers_the_environment() -> None:
    first = HostState().accept("prod", 100, DIGEST_A, now=1)
    assert first == HostState("prod", 100, DIGEST_A)

    newer = first.accept("prod", 200, DIGEST_B, now=2)
    assert newer == HostState("prod", 200, DIGEST_B)

    same = newer.accept("prod", 200, DIGEST_A, now=3)
    assert same == HostState("prod", 200, DIGEST_A)
    assert same.downgrades == ()

    moved = same.accept("staging", 300, DIGEST_B, now=4)
    assert moved.environment == "staging"


def test_an_allowed_downgrade_is_recorded_and_the_floor_stays() -> None:
    state = HostState("prod", 200, DIGEST_A).accept("prod", 150, DIGEST_B, now=1_000)

    assert state.downgrades == (downgrade(1_000, 200, 150, DIGEST_B),)
    assert state.history == state.downgrades
    # A one-time bypass: what runs is 150, what the host accepts stays 200 and up.
    assert state.highest_serial == 200
    assert state.bundle == DIGEST_B


def test_after_a_downgrade_only_serials_above_the_old_floor_raise_it() -> None:
    state = HostState().accept("prod", 300, DIGEST_A, now=1)
    state = state.accept("prod", 100, DIGEST_B, now=2)
    state = state.accept("prod", 400, DIGEST_A, now=3)

    assert state.highest_serial == 400
    assert state.downgrades == (downgrade(2, 300, 100, DIGEST_B),)


def test_downgrade_records_are_bounded_keeping_the_latest(tmp_path: Path) -> None:
    state = HostState("prod", 10_000, DIGEST_A)
    for step in range(MAX_HISTORY + 20):
        state = state.accept("prod", 10_000 - step - 1, DIGEST_B, now=step)

    assert len(state.history) == MAX_HISTORY
    assert state.history[0].time == 20
    assert state.history[-1] == downgrade(MAX_HISTORY + 19, 10_000, 9_880, DIGEST_B)
    assert state.highest_serial == 10_000
    save_state(str(tmp_path), state)
    assert load_state(str(tmp_path)) == state


def test_reset_serial_lowers_the_floor_and_records_it(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    save_state(str(directory), HostState("prod", 9_000_000_000, DIGEST_A))

    state = reset_serial(str(directory), 1_700_000_000, now=1_700_000_500)

    assert state == HostState(
        "prod", 1_700_000_000, DIGEST_A, (reset(1_700_000_500, 9_000_000_000, 1_700_000_000, DIGEST_A),)
    )
    assert load_state(str(directory)) == state
    assert state.downgrades == ()
    # From the new floor on, rollback protection holds as before.
    assert state.accept("prod", 1_700_000_001, DIGEST_B, now=1).downgrades == ()
    assert state.accept("prod", 1_600_000_000, DIGEST_B, now=1).highest_serial == 1_700_000_000


def test_reset_serial_keeps_the_earlier_records(tmp_path: Path) -> None:
    earlier = HostState("prod", 300, DIGEST_B, (downgrade(5, 300, 100, DIGEST_B),))
    save_state(str(tmp_path), earlier)

    state = reset_serial(str(tmp_path), 200, now=6)

    assert state.history == (downgrade(5, 300, 100, DIGEST_B), reset(6, 300, 200, DIGEST_B))


def test_reset_serial_refuses_a_state_directory_others_can_write(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    save_state(str(directory), HostState("prod", 300, DIGEST_A))
    before = (directory / STATE_FILE).read_bytes()
    directory.chmod(0o777)

    with pytest.raises(StateError) as caught:
        reset_serial(str(directory), 100, now=1)

    assert caught.value.message == f"the state directory {directory} is writable by others (mode 777)"
    assert (directory / STATE_FILE).read_bytes() == before


def test_a_version_1_state_reads_as_one_without_generations(tmp_path: Path) -> None:
    data = state_to_data(HostState("prod", 5, DIGEST_A))
    for key in ("current", "previous", "failed"):
        del data[key]
    data["version"] = 1
    (tmp_path / STATE_FILE).write_bytes(canonical.pack(data))
    tmp_path.chmod(0o700)

    assert load_state(str(tmp_path)) == HostState("prod", 5, DIGEST_A)


def test_switching_generations_keeps_the_one_before_and_failures_are_bounded() -> None:
    state = HostState("prod", 5, DIGEST_A).switched(1).switched(2)
    assert (state.current, state.previous) == (2, 1)
    # Switching to the current one changes nothing.
    assert state.switched(2) == state
    assert (state.switched(1).current, state.switched(1).previous) == (1, 2)

    for n in range(150):
        state = state.failure(f"{n:064x}")
    assert len(state.failed) == 100 and state.failed[-1] == f"{149:064x}"
    # Failing again moves a digest to the end; success forgets it.
    again = state.failure(f"{60:064x}")
    assert again.failed[-1] == f"{60:064x}" and len(again.failed) == 100
    assert f"{60:064x}" not in again.succeeded(f"{60:064x}").failed
