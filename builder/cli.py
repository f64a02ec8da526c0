"""``bundle``: the command line where bundles are built (parse, call, render)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from executor.console import guarded, print_note, size, stdout, version_callback

from .build import BuildOptions, BuildResult, build

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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks of errors in deployment code.")
    ] = False,
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
    render_build(guarded(lambda: build(options), verbose=verbose))


def main() -> Any:
    return app()
