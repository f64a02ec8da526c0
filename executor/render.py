"""Rendering the executor's results for people and for --json."""

from __future__ import annotations

import time

from rich.markup import escape

from .apply import ApplyResult, ApplyStatus
from .host import GcResult, HostStatus
from .pull import PullResult
from .console import print_error, print_note, size, stdout
from .outcome import RootStatus
from .run import Level


# Without -v, a run shows this many changed components and file changes.
SHOWN_CHANGES = 50
SHOWN_DIFFS = 20


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
    changed = result.changed if verbose else result.changed[:SHOWN_CHANGES]
    for crumbs in changed:
        stdout.print(f"  [green]{verb}[/]  {escape(crumbs)}")
    _more(len(result.changed) - len(changed), f"{verb} component")
    diffs = result.diffs if verbose else result.diffs[:SHOWN_DIFFS]
    for diff in diffs:
        if diff.diff is None:
            stdout.print(f"  [dim]{escape(diff.path)}: {escape(diff.note)}[/]")
        else:
            stdout.print(escape(diff.diff.rstrip("\n")), style="dim")
    _more(len(result.diffs) - len(diffs), "file change")
    for entry in result.log:
        if entry.level is Level.DEBUG and not verbose:
            continue
        stdout.print(f"  [blue]log[/]  {escape(entry.component)}: {escape(entry.message)}")
    count = len(result.changed)
    summary = f"{count} component{'s' if count != 1 else ''} {verb} in {result.duration_s:.2f}s"
    if result.status is ApplyStatus.OK:
        if result.generation is not None:
            what = "rolled back to" if result.kind == "rollback" else "now runs"
            summary += f"; {escape(result.host)} {what} generation {result.generation}"
        stdout.print(f"[bold green]ok[/]: {summary}")
    else:
        assert result.error is not None
        print_error(result.error, verbose=verbose)
        stdout.print(f"[bold red]failed[/]: {summary} before the failure")


def _more(hidden: int, what: str) -> None:
    if hidden > 0:
        stdout.print(
            f"  [dim]... and {hidden} more {what}{'s' if hidden != 1 else ''} "
            "(-v lists all; --json gives them to scripts)[/]"
        )


def _when(seconds: float | int | None) -> str:
    if not seconds:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def render_status(report: HostStatus) -> None:
    state = report.state
    current = report.generation(state.current)
    host = (current.host if current else None) or (report.status.last_run or {}).get("host") or "?"
    stdout.print(
        f"[bold]{escape(str(host))}[/] ({escape(state.environment or 'no environment yet')}), "
        f"state {escape(report.state_directory)}"
    )
    if current is None:
        stdout.print("  current      [yellow]none: no apply succeeded here yet[/]")
    else:
        source = current.commit or "(no commit)"
        stdout.print(
            f"  current      generation {current.number}: serial {current.serial}, "
            f"bundle {current.digest[:12]}, source {escape(source)}"
            f"{' (dirty)' if current.dirty else ''}"
        )
    if state.previous is not None:
        stdout.print(f"  previous     generation {state.previous}")
    stdout.print(f"  serial floor {state.highest_serial if state.highest_serial is not None else '-'}")
    run = report.status.last_run
    if run:
        changed = run.get("changed_count")
        if not isinstance(changed, int) or isinstance(changed, bool):
            changed = len(run.get("changed") or [])  # recorded before changed_count
        result = str(run.get("result"))
        style = "green" if result == "ok" else "red"
        stdout.print(
            f"  last run     [{style}]{escape(result)}[/] ({escape(str(run.get('kind')))}, "
            f"{_when(run.get('started'))}, {float(run.get('duration_s') or 0):.2f}s, "
            f"{changed} component{'s' if changed != 1 else ''} changed)"
        )
        error = run.get("error")
        if isinstance(error, dict):
            stdout.print(f"               {escape(str(error.get('message')))}")
        phases = run.get("phases") or {}
        if phases:
            order = ["lock", "verify", "unpack", "runtime", "run"]
            names = sorted(phases, key=lambda k: order.index(k) if k in order else len(order))
            listed = ", ".join(f"{k} {float(phases[k]):.2f}s" for k in names)
            stdout.print(f"               [dim]{escape(listed)}[/]")
    success = report.status.last_success
    stdout.print(
        "  last success "
        + (
            f"{_when(success.get('started'))} (generation {success.get('generation')})"
            if success
            else "never"
        )
    )
    if report.holder is not None:
        stdout.print(f"  [yellow]locked[/]       by {escape(report.holder.describe())}")
    if report.generations:
        stdout.print("  generations")
        for generation in report.generations:
            marks = [
                label
                for label, number in (("current", state.current), ("previous", state.previous))
                if number == generation.number
            ]
            failed = " [red]failed[/]" if generation.digest in state.failed else ""
            stdout.print(
                f"    {generation.number:>4}  serial {generation.serial}, bundle "
                f"{generation.digest[:12]}, received {_when(generation.received)}"
                f"{failed}{' (' + ', '.join(marks) + ')' if marks else ''}"
            )
    for entry in report.recent:
        stdout.print(
            f"  [dim]{_when(entry.get('started'))} {escape(str(entry.get('kind')))} "
            f"{escape(str(entry.get('result')))} {escape(str(entry.get('bundle_path')))}[/]"
        )


def render_gc(result: GcResult) -> None:
    verb = "would remove" if result.dry_run else "removed"
    for note in result.notes:
        print_note(note)
    for path in result.removed_paths:
        stdout.print(f"  [yellow]{verb}[/] {escape(path)}")
    kept = ", ".join(str(n) for n in result.kept) or "none"
    count = len(result.removed_generations)
    stdout.print(
        f"[bold green]ok[/]: {verb} {count} generation{'s' if count != 1 else ''} and "
        f"{len(result.removed_paths) - count} other entries, {size(result.freed_bytes)}; "
        f"kept generations {kept}"
    )


def render_pull(result: PullResult, verbose: bool) -> None:
    pointer = result.pointer
    fetched = (
        f"{result.requests} request{'s' if result.requests != 1 else ''}, "
        f"{size(result.received_bytes)}"
    )
    if result.applied is None:
        stdout.print(
            f"[bold green]ok[/]: {escape(result.host)} already runs serial {pointer.serial} "
            f"(bundle {pointer.manifest[:12]}); no change ({fetched})"
        )
        return
    stdout.print(
        f"[bold]pulled[/] serial {pointer.serial} (bundle {pointer.manifest[:12]}): "
        f"{len(result.downloaded)} file{'s' if len(result.downloaded) != 1 else ''} downloaded ({fetched})"
    )
    render_result(result.applied, verbose)
