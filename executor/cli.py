"""``executor``: the command line on a target host (parse, call, render)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .console import (
    exit_on_sigterm,
    guarded,
    print_json,
    print_note,
    refused_json,
    stdout,
    version_callback,
)
from .errors import ExitCode
from .manifest import MAX_SERIAL
from .state import DEFAULT_STATE_DIR, reset_serial
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


# Options of both apply and verify.
BundleArgument = Annotated[Path, typer.Argument(help="The bundle file.")]
HostOption = Annotated[
    str | None, typer.Option("--host", help="This host's name (default: the machine's hostname).")
]
EnvironmentOption = Annotated[
    str | None,
    typer.Option(
        "--environment",
        help="The environment this host belongs to (default: the one it accepted before).",
    ),
]
StateOption = Annotated[
    Path,
    typer.Option("--state-dir", envvar="CONSIGN_STATE_DIR", help="The executor's state directory."),
]
TrustOption = Annotated[
    Path,
    typer.Option(
        "--trust", envvar="CONSIGN_TRUST", help="Allowed signers file (OpenSSH format)."
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
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


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
}
VERIFY_KEYS: dict[str, Any] = {"serial": None, "signer": None, "downgrade_from": None, "notes": []}


@app.command()
def apply(
    bundle: BundleArgument,
    host: HostOption = None,
    environment: EnvironmentOption = None,
    target_dir: Annotated[
        Path | None,
        typer.Option("--target-dir", help="Deploy here instead of the environment's target_directory."),
    ] = None,
    state_dir: StateOption = Path(DEFAULT_STATE_DIR),
    runtime_dir: Annotated[
        Path | None,
        typer.Option(
            "--runtime-dir",
            envvar="CONSIGN_RUNTIME_DIR",
            help="Where runtime environments are made [default: STATE_DIR/runtimes].",
        ),
    ] = None,
    trust: TrustOption = Path(DEFAULT_TRUST_FILE),
    revoked: RevokedOption = None,
    allow_downgrade: DowngradeOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only verify: report what would change, change nothing.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(min=0.001, help="Stop the whole run after this many seconds.")
    ] = None,
    json_output: JsonOption = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Also show commands run, and tracebacks of failures."),
    ] = False,
) -> None:
    """Verify a bundle and apply it to this host."""
    # Only apply needs the component machinery; verify starts faster without it.
    from .apply import ApplyOptions, ApplyStatus, apply_bundle
    from .render import render_result

    options = ApplyOptions(
        bundle=str(bundle),
        host=host,
        environment=environment,
        target_directory=str(target_dir) if target_dir is not None else None,
        state_directory=str(state_dir),
        trust_file=str(trust),
        revoked_file=revoked_file(revoked),
        allow_downgrade=allow_downgrade,
        dry_run=dry_run,
        timeout=timeout,
        runtime_directory=None if runtime_dir is None else str(runtime_dir),
    )
    result = guarded(
        lambda: apply_bundle(options),
        json_error=refused_json(host, str(bundle), APPLY_KEYS) if json_output else None,
    )
    if json_output:
        print_json(result.to_json())
    else:
        render_result(result, verbose)
    if result.status is not ApplyStatus.OK:
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def verify(
    bundle: BundleArgument,
    host: HostOption = None,
    environment: EnvironmentOption = None,
    state_dir: StateOption = Path(DEFAULT_STATE_DIR),
    trust: TrustOption = Path(DEFAULT_TRUST_FILE),
    revoked: RevokedOption = None,
    allow_downgrade: DowngradeOption = False,
    json_output: JsonOption = False,
) -> None:
    """Check a bundle as apply would, without applying or recording anything."""
    options = VerifyOptions(
        bundle=str(bundle),
        host=host,
        environment=environment,
        trust_file=str(trust),
        revoked_file=revoked_file(revoked),
        state_directory=str(state_dir),
        allow_downgrade=allow_downgrade,
    )
    acceptance = guarded(
        lambda: accept_bundle(options),
        json_error=refused_json(host, str(bundle), VERIFY_KEYS) if json_output else None,
    )
    if json_output:
        print_json(acceptance.to_json())
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


@app.command("reset-serial")
def reset_serial_command(
    serial: Annotated[int, typer.Argument(min=0, max=MAX_SERIAL, help="The new serial floor.")],
    state_dir: StateOption = Path(DEFAULT_STATE_DIR),
) -> None:
    """Set the serial floor of rollback protection (after a key compromise); recorded."""
    state = guarded(lambda: reset_serial(str(state_dir), serial, int(time.time())))
    change = state.history[-1]
    stdout.print(
        f"[yellow]serial floor reset[/]: {change.from_serial} -> {change.to_serial} "
        f"(recorded in {escape(str(state_dir))})"
    )


@app.command("inspect-platform")
def inspect_platform() -> None:
    """Print this host's Python as a complete platform file (JSON) for the builder."""
    from .platform import complete_platform

    sys.stdout.write(json.dumps(complete_platform(), indent=1, sort_keys=True) + "\n")


def main() -> Any:
    exit_on_sigterm()
    return app()
