"""``executor``: the command line on a target host (parse, call, render)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .apply import ApplyOptions
from .console import (
    exit_on_sigterm,
    guarded,
    print_error,
    print_json,
    print_note,
    refused_json,
    stdout,
    version_callback,
)
from .errors import ExitCode, HostConfigError
from .hostconfig import DEFAULT_CONFIG_FILE, HostConfig, load_host_config
from .lock import DEFAULT_WAIT_SECONDS
from .manifest import MAX_SERIAL
from .state import DEFAULT_STATE_DIR
from .verify import (
    DEFAULT_REVOKED_FILE,
    DEFAULT_TRUST_FILE,
    VerifyOptions,
    accept_bundle,
    revoked_file,
)


app = typer.Typer(
    name="executor",
    help="Verify and apply consign bundles on this host.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback("executor"), is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Verify and apply consign bundles on this host."""


# Options of both apply and verify. Those left out come from the executor
# config (/etc/consign/executor.toml, see executor.hostconfig), then defaults.
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CONSIGN_CONFIG",
        help=f"The executor config [default: {DEFAULT_CONFIG_FILE} when it exists].",
    ),
]
BundleArgument = Annotated[Path, typer.Argument(help="The bundle file.")]
HostOption = Annotated[
    str | None,
    typer.Option("--host", help="This host's name [default: config, else the machine's hostname]."),
]
EnvironmentOption = Annotated[
    str | None,
    typer.Option(
        "--environment",
        help="The environment this host belongs to (default: the one it accepted before).",
    ),
]
StateOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="CONSIGN_STATE_DIR",
        help=f"The executor's state directory [default: config, else {DEFAULT_STATE_DIR}].",
    ),
]
TrustOption = Annotated[
    Path | None,
    typer.Option(
        "--trust",
        envvar="CONSIGN_TRUST",
        help=f"Allowed signers file (OpenSSH format) [default: config, else {DEFAULT_TRUST_FILE}].",
    ),
]
RevokedOption = Annotated[
    Path | None,
    typer.Option(
        "--revoked",
        envvar="CONSIGN_REVOKED",
        help=f"Revoked public keys, one per line [default: {DEFAULT_REVOKED_FILE} when it exists].",
    ),
]
DowngradeOption = Annotated[
    bool,
    typer.Option(
        "--allow-downgrade", help="Accept a bundle older than the newest accepted (recorded)."
    ),
]
TargetOption = Annotated[
    Path | None,
    typer.Option(
        "--target-dir",
        help="Deploy here instead of the environment's target_directory [default: config].",
    ),
]
RuntimeOption = Annotated[
    Path | None,
    typer.Option(
        "--runtime-dir",
        envvar="CONSIGN_RUNTIME_DIR",
        help="Where runtime environments are made [default: config, else STATE_DIR/runtimes].",
    ),
]
WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        help="Wait this long for another apply to finish, then give up (exit 5).",
    ),
]
TimeoutOption = Annotated[
    float | None, typer.Option(min=0.001, help="Stop the whole run after this many seconds.")
]
VerboseOption = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Also show commands run, every change and diff (not only the first 50 and 20), and tracebacks of failures."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
IdentityOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--identity",
        "-i",
        help="The key that decrypts the bundle's secrets; repeatable "
        "[default: config, else /etc/ssh/ssh_host_ed25519_key].",
    ),
]


def _config(path: Path | None) -> HostConfig:
    return guarded(lambda: load_host_config(None if path is None else str(path)))


def _pick(given: Path | str | None, configured: str | None, default: str | None) -> str | None:
    """An option's value: given on the command line (or its variable), else
    the executor config's, else the default."""
    if given is not None:
        return str(given)
    return configured if configured is not None else default


def _state(given: Path | None, config: HostConfig) -> str:
    return _pick(given, config.state_dir, DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR


# The keys of each command's --json output, with what a refusal reports.
APPLY_KEYS: dict[str, Any] = {
    "dry_run": None,
    "changed": [],
    "skipped": [],
    "roots": [],
    "diffs": [],
    "log": [],
    "target_directory": None,
    "duration_s": 0.0,
    "generation": None,
    "kind": "apply",
}
VERIFY_KEYS: dict[str, Any] = {
    "serial": None,
    "signer": None,
    "downgrade_from": None,
    "notes": [],
    # None: the bundle has no secrets; else how many values they hold.
    "secrets": None,
}


def _apply_options(
    config: HostConfig,
    bundle: str,
    host: str | None,
    environment: str | None,
    target_dir: Path | None,
    state_dir: Path | None,
    runtime_dir: Path | None,
    trust: Path | None,
    revoked: Path | None,
    identity: list[Path] | None,
    **rest: Any,
) -> ApplyOptions:
    from .sealed import identity_paths

    return ApplyOptions(
        bundle=bundle,
        host=_pick(host, config.host, None),
        environment=_pick(environment, config.environment, None),
        target_directory=_pick(target_dir, config.target_dir, None),
        state_directory=_state(state_dir, config),
        trust_file=_pick(trust, config.trust, DEFAULT_TRUST_FILE) or DEFAULT_TRUST_FILE,
        revoked_file=revoked_file(_pick(revoked, config.revoked, None)),
        runtime_directory=_pick(runtime_dir, config.runtime_dir, None),
        metrics_path=config.metrics,
        report_url=config.report,
        identities=identity_paths([str(p) for p in identity or ()], config.identity),
        **rest,
    )


def _run_apply(options: ApplyOptions, json_output: bool, verbose: bool) -> None:
    # Only apply needs the component machinery; verify starts faster without it.
    from .apply import ApplyStatus, apply_bundle
    from .render import render_result

    result = guarded(
        lambda: apply_bundle(options),
        json_error=refused_json(options.host, options.bundle, {**APPLY_KEYS, "kind": options.kind})
        if json_output
        else None,
        verbose=verbose,
    )
    if json_output:
        print_json(result.to_json())
    else:
        render_result(result, verbose)
    if result.status is not ApplyStatus.OK:
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def apply(
    bundle: BundleArgument,
    host: HostOption = None,
    environment: EnvironmentOption = None,
    target_dir: TargetOption = None,
    state_dir: StateOption = None,
    runtime_dir: RuntimeOption = None,
    trust: TrustOption = None,
    revoked: RevokedOption = None,
    allow_downgrade: DowngradeOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only verify: report what would change, change nothing.")
    ] = False,
    timeout: TimeoutOption = None,
    wait: WaitOption = DEFAULT_WAIT_SECONDS,
    identity: IdentityOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Verify a bundle and apply it to this host."""
    options = _apply_options(
        _config(config),
        str(bundle),
        host,
        environment,
        target_dir,
        state_dir,
        runtime_dir,
        trust,
        revoked,
        identity,
        allow_downgrade=allow_downgrade,
        dry_run=dry_run,
        timeout=timeout,
        wait=wait,
    )
    _run_apply(options, json_output, verbose)


@app.command()
def pull(
    base_url: Annotated[
        str, typer.Argument(help="Where 'bundle publish' output is served, e.g. https://deploy.example.com/prod.")
    ],
    host: HostOption = None,
    environment: EnvironmentOption = None,
    target_dir: TargetOption = None,
    state_dir: StateOption = None,
    runtime_dir: RuntimeOption = None,
    trust: TrustOption = None,
    revoked: RevokedOption = None,
    timeout: TimeoutOption = None,
    wait: WaitOption = DEFAULT_WAIT_SECONDS,
    splay: Annotated[
        float, typer.Option("--splay", min=0, help="First sleep a random time up to this many seconds.")
    ] = 0.0,
    deadline: Annotated[
        float, typer.Option("--deadline", min=1, help="Give up downloading after this many seconds.")
    ] = 900.0,
    min_rate: Annotated[
        float,
        typer.Option("--min-rate", min=1, help="Bytes per second below which a download is retried."),
    ] = 4096.0,
    identity: IdentityOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Fetch this host's pointer from BASE_URL; download, verify and apply a new bundle."""
    from .apply import ApplyStatus
    from .pull import PullOptions
    from .pull import pull as run_pull
    from .render import render_pull

    settings = _config(config)
    apply_options = _apply_options(
        settings,
        "",
        host,
        environment,
        target_dir,
        state_dir,
        runtime_dir,
        trust,
        revoked,
        identity,
        timeout=timeout,
        wait=wait,
    )
    options = PullOptions(base_url, apply_options, splay=splay, deadline=deadline, min_rate=min_rate)
    result = guarded(
        lambda: run_pull(options),
        json_error=refused_json(apply_options.host, base_url, {**APPLY_KEYS, "kind": "pull"})
        if json_output
        else None,
        verbose=verbose,
    )
    if json_output:
        print_json(result.to_json())
    else:
        render_pull(result, verbose)
    if result.applied is not None and result.applied.status is not ApplyStatus.OK:
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def rollback(
    generation: Annotated[
        int | None,
        typer.Argument(min=1, help="The generation to go to [default: the previous one]."),
    ] = None,
    host: HostOption = None,
    target_dir: TargetOption = None,
    state_dir: StateOption = None,
    runtime_dir: RuntimeOption = None,
    trust: TrustOption = None,
    revoked: RevokedOption = None,
    timeout: TimeoutOption = None,
    wait: WaitOption = DEFAULT_WAIT_SECONDS,
    identity: IdentityOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Apply a kept generation again (the previous one, or GENERATION); recorded as a rollback."""
    options = _apply_options(
        _config(config),
        f"generation {generation if generation is not None else 'previous'}",
        host,
        None,
        target_dir,
        state_dir,
        runtime_dir,
        trust,
        revoked,
        identity,
        rollback=True,
        rollback_to=generation,
        timeout=timeout,
        wait=wait,
    )
    _run_apply(options, json_output, verbose)


@app.command()
def verify(
    bundle: BundleArgument,
    host: HostOption = None,
    environment: EnvironmentOption = None,
    state_dir: StateOption = None,
    trust: TrustOption = None,
    revoked: RevokedOption = None,
    allow_downgrade: DowngradeOption = False,
    identity: IdentityOption = None,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check a bundle as apply would, without applying or recording anything."""
    from .sealed import check_secrets, identity_paths

    settings = _config(config)
    options = VerifyOptions(
        bundle=str(bundle),
        host=_pick(host, settings.host, None),
        environment=_pick(environment, settings.environment, None),
        trust_file=_pick(trust, settings.trust, DEFAULT_TRUST_FILE) or DEFAULT_TRUST_FILE,
        revoked_file=revoked_file(_pick(revoked, settings.revoked, None)),
        state_directory=_state(state_dir, settings),
        allow_downgrade=allow_downgrade,
    )
    json_error = refused_json(options.host, str(bundle), VERIFY_KEYS) if json_output else None
    acceptance = guarded(lambda: accept_bundle(options), json_error=json_error)
    # As apply would: this host must be able to read the bundle's secrets.
    identities = identity_paths([str(p) for p in identity or ()], settings.identity)
    secrets = guarded(lambda: check_secrets(acceptance.bundle, identities), json_error=json_error)
    if json_output:
        print_json({**acceptance.to_json(), "secrets": secrets})
        return
    manifest = acceptance.bundle.manifest
    signer = acceptance.bundle.signer
    for note in acceptance.notes:
        print_note(note)
    stdout.print(
        f"[bold green]ok[/]: {escape(acceptance.bundle.path)} is a valid bundle for "
        f"{escape(manifest.host)} ({escape(manifest.environment)}), serial {manifest.serial}, "
        f"signed by {escape(','.join(signer.principals))} ({signer.key.fingerprint()})"
    )
    if acceptance.downgrade_from is not None:
        stdout.print(
            f"[yellow]downgrade[/]: older than serial {acceptance.downgrade_from}, which this host "
            "accepted before"
        )
    if secrets is not None:
        stdout.print(f"secrets: this host's identity decrypts them ({secrets} values to hide)")


@app.command()
def status(
    state_dir: StateOption = None,
    config: ConfigOption = None,
    recent: Annotated[
        int, typer.Option("--recent", min=0, help="Also show this many runs of the audit log.")
    ] = 0,
    json_output: JsonOption = False,
) -> None:
    """What this host runs: current generation, last run, last success."""
    from .host import host_status
    from .render import render_status

    report = guarded(lambda: host_status(_state(state_dir, _config(config)), recent))
    if json_output:
        data = report.to_json()
        if recent:
            data["recent"] = list(report.recent)
        print_json(data)
    else:
        render_status(report)


@app.command()
def gc(
    keep: Annotated[
        int, typer.Option("--keep", min=0, help="Keep this many generations besides current and previous.")
    ] = 3,
    state_dir: StateOption = None,
    runtime_dir: RuntimeOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    wait: WaitOption = DEFAULT_WAIT_SECONDS,
    config: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove old generations and the store entries and runtimes nothing kept uses."""
    from .host import collect_garbage
    from .render import render_gc

    settings = _config(config)
    result = guarded(
        lambda: collect_garbage(
            _state(state_dir, settings),
            keep,
            _pick(runtime_dir, settings.runtime_dir, None),
            dry_run=dry_run,
            wait=wait,
        )
    )
    if json_output:
        print_json(result.to_json())
    else:
        render_gc(result)


@app.command()
def init(
    host: Annotated[str, typer.Option("--host", help="This host's name in the environment.")],
    trust: Annotated[
        Path, typer.Option("--trust", help="The allowed signers file bundles are checked against.")
    ] = Path(DEFAULT_TRUST_FILE),
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="The executor's state directory.")
    ] = Path(DEFAULT_STATE_DIR),
    target_dir: Annotated[
        Path | None, typer.Option("--target-dir", help="Deploy here instead of the environment's.")
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option("--metrics", help="Write Prometheus metrics here after every run."),
    ] = None,
    config: Annotated[
        Path, typer.Option("--config", envvar="CONSIGN_CONFIG", help="Where to write the config.")
    ] = Path(DEFAULT_CONFIG_FILE),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing config.")] = False,
    timer: Annotated[
        str | None,
        typer.Option("--timer", help="Also install systemd units that pull from this URL."),
    ] = None,
    interval: Annotated[
        str, typer.Option("--interval", help="With --timer: how often (5min ... 12h).")
    ] = "15min",
    unit_dir: Annotated[
        Path, typer.Option("--unit-dir", help="With --timer: where the units go.")
    ] = Path("/etc/systemd/system"),
) -> None:
    """Write this host's executor config and create its state directory."""
    from .host import initialise
    from .units import install_units, render_units

    units = None
    if timer is not None:
        units = guarded(lambda: render_units(timer, interval, config=str(config)))

    for name, value in (("--trust", trust), ("--state-dir", state_dir), ("--metrics", metrics),
                        ("--target-dir", target_dir)):
        if value is not None and not value.is_absolute():
            print_error(HostConfigError(f"{name} must be an absolute path, got {value}"))
            raise typer.Exit(ExitCode.USAGE)
    settings = HostConfig(
        host=host,
        trust=str(trust),
        state_dir=str(state_dir),
        target_dir=None if target_dir is None else str(target_dir),
        metrics=None if metrics is None else str(metrics),
    )
    result = guarded(lambda: initialise(settings, str(config), force=force))
    for note in result.notes:
        print_note(note)
    stdout.print(f"[green]wrote[/] {escape(result.config_path)}:")
    stdout.print(escape(settings.to_toml().rstrip()), style="dim")
    if result.host_key:
        stdout.print("this host's SSH host key (a recipient for its secrets):")
        stdout.print(escape(result.host_key))
    if units is not None:
        written = guarded(lambda: install_units(units, str(unit_dir)))
        for path in written:
            stdout.print(f"[green]wrote[/] {escape(path)}")
        stdout.print("enable it with: systemctl daemon-reload && systemctl enable --now consign-pull.timer")


@app.command("systemd-units")
def systemd_units(
    url: Annotated[str, typer.Argument(help="The URL 'executor pull' fetches from.")],
    interval: Annotated[
        str, typer.Option("--interval", help="How often: 5min, 10min, 15min, ... 1h ... 12h.")
    ] = "15min",
    executor_command: Annotated[
        str | None,
        typer.Option("--executor", help="The command that runs the executor [default: this one]."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Print a systemd service and timer that run 'executor pull URL' on a schedule."""
    from .units import render_units

    units = guarded(
        lambda: render_units(url, interval, executor_command, None if config is None else str(config))
    )
    for name, text in units.items():
        sys.stdout.write(f"# /etc/systemd/system/{name}\n{text}\n")


@app.command("reset-serial")
def reset_serial_command(
    serial: Annotated[int, typer.Argument(min=0, max=MAX_SERIAL, help="The new serial floor.")],
    state_dir: StateOption = None,
    config: ConfigOption = None,
    wait: WaitOption = DEFAULT_WAIT_SECONDS,
) -> None:
    """Set the serial floor of rollback protection (after a key compromise); recorded."""
    from .host import reset_serial_floor

    directory = _state(state_dir, _config(config))
    state = guarded(lambda: reset_serial_floor(directory, serial, wait))
    change = state.history[-1]
    stdout.print(
        f"[yellow]serial floor reset[/]: {change.from_serial} -> {change.to_serial} "
        f"(recorded in {escape(directory)})"
    )


@app.command("inspect-platform")
def inspect_platform() -> None:
    """Print this host's Python as a complete platform file (JSON) for the builder."""
    from .platform import complete_platform

    sys.stdout.write(json.dumps(complete_platform(), indent=1, sort_keys=True) + "\n")


def main() -> Any:
    exit_on_sigterm()
    return app()
