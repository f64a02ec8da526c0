"""Rendering the executor's results for people and for --json."""

from __future__ import annotations

from rich.markup import escape

from .apply import ApplyResult, ApplyStatus
from .console import print_error, stdout
from .outcome import RootStatus
from .run import Level


def render_result(result: ApplyResult, verbose: bool) -> None:
    verb = "would change" if result.dry_run else "changed"
    mode = " (dry run)" if result.dry_run else ""
    stdout.print(
        f"[bold]{escape(result.host)}[/] ({escape(result.environment)}){mode}: "
        f"bundle {result.bundle_digest[:12]}, target {escape(result.target_directory)}"
    )
    for root in result.roots:
        if root.status is RootStatus.SKIPPED:
            stdout.print(f"  [yellow]skipped[/]  {escape(root.name)}: {escape(root.reason)}")
        elif root.status is RootStatus.NOT_RUN:
            stdout.print(f"  [yellow]not run[/]  {escape(root.name)}: {escape(root.reason)}")
    for crumbs in result.changed:
        stdout.print(f"  [green]{verb}[/]  {escape(crumbs)}")
    for diff in result.diffs:
        if diff.diff is None:
            stdout.print(f"  [dim]{escape(diff.path)}: {escape(diff.note)}[/]")
        else:
            stdout.print(escape(diff.diff.rstrip("\n")), style="dim")
    for entry in result.log:
        if entry.level is Level.DEBUG and not verbose:
            continue
        stdout.print(f"  [blue]log[/]  {escape(entry.component)}: {escape(entry.message)}")
    count = len(result.changed)
    summary = f"{count} component{'s' if count != 1 else ''} {verb} in {result.duration_s:.2f}s"
    if result.status is ApplyStatus.OK:
        stdout.print(f"[bold green]ok[/]: {summary}")
    else:
        assert result.error is not None
        print_error(result.error, verbose=verbose)
        stdout.print(f"[bold red]failed[/]: {summary} before the failure")
