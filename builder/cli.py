"""``bundle``: the command line where bundles are built (parse, call, render)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from executor.console import guarded, print_note, size, stdout, version_callback

from .build import BuildOptions, BuildResult, build
from .check import check_reproducible
from .signing import generate_or_read_key

app = typer.Typer(
    name="bundle",
    help="Build signed, reproducible per-host bundles from a deployment repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback("bundle"), is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Build signed, reproducible per-host bundles from a deployment repository."""


def render_build(result: BuildResult) -> None:
    for note in result.notes:
        print_note(note)
    for host in result.hosts:
        roots = ", ".join(host.roots) or "(no components)"
        stdout.print(f"[green]built[/]    {escape(host.name)}: {escape(str(host.path))} ({size(host.size)}; {escape(roots)})")
        for skipped in host.skipped:
            stdout.print(f"  [yellow]skipped[/]  {escape(skipped.name)}: {escape(skipped.reason)}")
    for path in result.removed:
        stdout.print(f"[yellow]removed[/]  {escape(str(path))}: its host is not built any more")
    for skipped_host in result.skipped_hosts:
        stdout.print(f"[yellow]skipped[/]  {escape(skipped_host.name)}: {escape(skipped_host.reason)}")
    for signer in result.signers:
        stdout.print(f"[green]signed[/]   by {escape(signer)}")
    source = result.source
    state = "dirty working tree" if source.dirty else "clean"
    stdout.print(f"serial {result.serial}, commit {source.commit or '(none)'} ({state})")
    count = len(result.hosts)
    stdout.print(f"[bold green]ok[/]: {count} bundle{'s' if count != 1 else ''} for environment {escape(result.environment)} in {escape(str(result.out))}")


@app.command("build")
def build_command(
    environment: Annotated[str, typer.Argument(help="The environment to build, e.g. prod.")],
    repository: Annotated[
        Path, typer.Option("-C", "--repository", help="The deployment repository.")
    ] = Path("."),
    out: Annotated[
        Path | None, typer.Option("--out", help="Write bundles below this directory [default: REPOSITORY/bundles].")
    ] = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Build only this host (repeatable).")
    ] = None,
    skip_host: Annotated[
        list[str] | None, typer.Option("--skip-host", help="Do not build this host (repeatable).")
    ] = None,
    skip_component: Annotated[
        list[str] | None,
        typer.Option("--skip-component", help="Leave this component out on every host (repeatable)."),
    ] = None,
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="Platform for hosts that do not set their own."),
    ] = None,
    sign_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--sign-key",
            help="Sign with this key (repeatable): an OpenSSH private key file, or the .pub "
            "file of a key in ssh-agent [default: CONSIGN_SIGN_KEY, then [environment] sign_key].",
        ),
    ] = None,
    dirty: Annotated[
        bool,
        typer.Option("--dirty", help="Build a working tree with uncommitted changes (not reproducible)."),
    ] = False,
    serial: Annotated[
        int | None,
        typer.Option("--serial", min=0, help="The bundles' serial [default: the commit time]."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Then rebuild in a temporary clone and compare the bytes."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks of errors in deployment code.")
    ] = False,
) -> None:
    """Evaluate ENVIRONMENT once and write one signed bundle per host."""
    options = BuildOptions(
        environment=environment,
        repository=repository,
        out=out,
        hosts=tuple(host or ()),
        skip_hosts=tuple(skip_host or ()),
        skip_components=tuple(skip_component or ()),
        platform=platform,
        dirty=dirty,
        serial=serial,
        sign_keys=tuple(sign_key or ()),
    )
    result = guarded(lambda: build(options), verbose=verbose)
    render_build(result)
    if check:
        report = guarded(lambda: check_reproducible(options, result))
        stdout.print(f"[bold green]reproducible[/]: {escape(report)}")


keys = typer.Typer(help="Signing keys.", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("generate")
def keys_generate(
    path: Annotated[Path, typer.Argument(help="Write the private key here, the public key to PATH.pub.")],
    principal: Annotated[
        str, typer.Option(help="The name hosts know the key by in allowed_signers.")
    ] = "builder",
    comment: Annotated[str, typer.Option(help="The key's comment.")] = "consign builder",
    exist_ok: Annotated[
        bool,
        typer.Option("--exist-ok", help="If PATH exists, keep it and print its allowed_signers line."),
    ] = False,
) -> None:
    """Make an ed25519 signing key; print the line hosts put in their allowed_signers."""
    line = guarded(lambda: generate_or_read_key(path, principal, comment, exist_ok))
    stdout.print(escape(line))


def main() -> Any:
    return app()
