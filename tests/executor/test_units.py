"""systemd units for pulling on a schedule."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from executor.cli import app
from executor.units import SERVICE, TIMER, UnitError, install_units, render_units

runner = CliRunner()


def parsed(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_the_service_runs_pull_and_the_timer_spreads_and_catches_up() -> None:
    units = render_units(
        "https://deploy.example.com/prod", "15min", "/usr/local/bin/executor", "/etc/consign/x.toml"
    )

    service, timer = parsed(units[SERVICE]), parsed(units[TIMER])
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"] == (
        "/usr/local/bin/executor pull https://deploy.example.com/prod --config /etc/consign/x.toml"
    )
    assert service["Service"]["SuccessExitStatus"] == "5"
    assert service["Unit"]["After"] == "network-online.target"
    assert timer["Timer"]["OnCalendar"] == "*-*-* *:00/15:00"
    assert timer["Timer"]["RandomizedDelaySec"] == "5min"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.parametrize(
    ("interval", "calendar"),
    [("5min", "*-*-* *:00/5:00"), ("1h", "*-*-* 00/1:00:00"), ("6h", "*-*-* 00/6:00:00")],
)
def test_intervals_become_calendar_steps(interval: str, calendar: str) -> None:
    timer = parsed(render_units("http://x", interval, "executor")[TIMER])
    assert timer["Timer"]["OnCalendar"] == calendar


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        ("15", "--interval must be minutes or hours like 15min or 1h, got '15'"),
        ("7min", "--interval 7min does not divide an hour"),
        ("5h", "--interval 5h does not divide a day"),
        ("0min", "--interval must be minutes or hours like 15min or 1h, got '0min'"),
    ],
)
def test_bad_intervals_are_refused(interval: str, message: str) -> None:
    with pytest.raises(UnitError) as caught:
        render_units("http://x", interval, "executor")
    assert caught.value.message == message


def test_a_url_with_shell_characters_is_quoted() -> None:
    service = parsed(render_units("http://x/a b;rm -rf /", "15min", "executor")[SERVICE])
    assert service["Service"]["ExecStart"] == "executor pull 'http://x/a b;rm -rf /'"


def test_systemd_units_prints_both_files() -> None:
    result = runner.invoke(
        app, ["systemd-units", "http://deploy.example.com/prod", "--executor", "executor"]
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# /etc/systemd/system/consign-pull.service\n[Unit]\n")
    assert "# /etc/systemd/system/consign-pull.timer\n" in result.stdout


def test_init_with_a_timer_installs_the_units(tmp_path: Path) -> None:
    trust = tmp_path / "allowed_signers"
    trust.write_text("")
    result = runner.invoke(
        app,
        [
            "init", "--host", "web1", "--trust", str(trust), "--state-dir", str(tmp_path / "state"),
            "--config", str(tmp_path / "executor.toml"), "--timer", "http://deploy.example.com/prod",
            "--unit-dir", str(tmp_path / "units"),
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    service = (tmp_path / "units" / SERVICE).read_text()
    assert f"pull http://deploy.example.com/prod --config {tmp_path / 'executor.toml'}" in service
    assert (tmp_path / "units" / TIMER).stat().st_mode & 0o777 == 0o644
    assert "systemctl enable --now consign-pull.timer" in result.stdout


def test_installing_where_nothing_can_be_written_says_so(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UnitError) as caught:
        install_units({"x.service": "[Unit]\n"}, str(blocked / "units"))
    assert caught.value.message.startswith(
        f"cannot write the systemd units into {blocked / 'units'}: "
    )
