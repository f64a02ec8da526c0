"""``bundle``: the command line where bundles are built (parse, call, render)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from executor import __version__
from executor.cli import guarded, stderr, stdout

from .build import BuildOptions, BuildResult, build

app = typer.Typer(
    name="bundle",
    help="Build signed, reproducible per-host bundles from a deployment repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"consign bundle {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Build signed, reproducible per-host bundles from a deployment repository."""


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def render_build(result: BuildResult) -> None:
    for note in result.notes:
        stderr.print(f"[yellow]note:[/] {escape(note)}")
    for host in result.hosts:
        roots = ", ".join(host.roots) or "(no components)"
        stdout.print(f"[green]built[/]    {escape(host.name)}: {escape(str(host.path))} ({_size(host.size)}; {escape(roots)})")
        for skipped in host.skipped:
            stdout.print(f"  [yellow]skipped[/]  {escape(skipped.name)}: {escape(skipped.reason)}")
    for skipped_host in result.skipped_hosts:
        stdout.print(f"[yellow]skipped[/]  {escape(skipped_host.name)}: {escape(skipped_host.reason)}")
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
) -> None:
    """Evaluate ENVIRONMENT once and write one bundle per host."""
    options = BuildOptions(
        environment=environment,
        repository=repository,
        out=out,
        hosts=tuple(host or ()),
        skip_hosts=tuple(skip_host or ()),
        skip_components=tuple(skip_component or ()),
        platform=platform,
    )
    render_build(guarded(lambda: build(options)))


def main() -> Any:
    return app()
