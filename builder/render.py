"""Rendering the builder's results for people (only the command line calls this)."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.markup import escape
from rich.status import Status

from executor.console import print_note, size, stderr, stdout
from executor.errors import count

from .build import BuildResult
from .fleet import FleetRow
from .inspect import BundleDiff, Inspection
from .publish import PublishResult
from .push import HostPush, PushResult
from .runtime import Step
from .secrets import EditResult, Reencrypted, SecretsSummary


def render_build(result: BuildResult) -> None:
    for note in result.notes:
        print_note(note)
    for host in result.hosts:
        roots = ", ".join(host.roots) or "(no components)"
        stdout.print(f"[green]built[/]    {escape(host.name)}: {escape(str(host.path))} ({size(host.size)}; {escape(roots)})")
        for skipped in host.skipped:
            stdout.print(f"  [yellow]skipped[/]  {escape(skipped.name)}: {escape(skipped.reason)}")
        if host.secrets:
            stdout.print(f"  secrets  {escape(', '.join(host.secrets))} (sealed to its recipient)")
    for path in result.removed:
        stdout.print(f"[yellow]removed[/]  {escape(str(path))}: its host is not built any more")
    for skipped_host in result.skipped_hosts:
        stdout.print(f"[yellow]skipped[/]  {escape(skipped_host.name)}: {escape(skipped_host.reason)}")
    if len(result.waves) > 1:
        stdout.print("waves    hosts that provide for other hosts apply first (push in this order):")
        for number, wave in enumerate(result.waves, 1):
            stdout.print(f"  {number}. {escape(', '.join(wave))}")
    for signer in result.signers:
        stdout.print(f"[green]signed[/]   by {escape(signer)}")
    source = result.source
    state = "dirty working tree" if source.dirty else "clean"
    stdout.print(f"serial {result.serial}, commit {source.commit or '(none)'} ({state})")
    count = len(result.hosts)
    stdout.print(f"[bold green]ok[/]: {count} bundle{'s' if count != 1 else ''} for environment {escape(result.environment)} in {escape(str(result.out))}")


def render_inspection(inspection: Inspection) -> None:
    m = inspection.manifest
    when = datetime.fromtimestamp(m["build_time"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    source = m["source"]
    commit = source["commit"] or "(no commit)"
    stdout.print(f"[bold]{escape(inspection.path)}[/] ({size(inspection.size)}, digest {inspection.digest[:16]})")
    stdout.print(f"  host         {escape(m['host'])} ({escape(m['fqdn'])}), environment {escape(m['environment'])}")
    stdout.print(f"  serial       {m['serial']}, built {when}")
    stdout.print(f"  source       {commit}{' (dirty working tree)' if source['dirty'] else ''}")
    stdout.print(f"  consign      {escape(m['consign_version'])}, platform {escape(str(m['target']['platform']))}")
    stdout.print(f"  roots        {escape(', '.join(inspection.roots) or '(none)')}")
    for skipped in inspection.skipped:
        stdout.print(f"  skipped      {escape(skipped)}")
    target = m["target"]
    python = f"Python {target['python']}" if target["python"] else "Python (not recorded)"
    if target["complete_platform"]:
        python += f", complete platform {target['complete_platform'][:16]}"
    stdout.print(f"  runtime      {escape(python)}")
    if inspection.distributions:
        listed = ", ".join(f"{name} {version}" for name, version in inspection.distributions)
        stdout.print(f"  packages     {escape(listed)}")
    if inspection.depends_on:
        stdout.print(f"  applies after {escape(', '.join(inspection.depends_on))} (other hosts)")
    if inspection.pinned_names:
        count = len(inspection.pinned_names)
        stdout.print(f"  dns pinned   {count} name{'s' if count != 1 else ''}: {escape(', '.join(inspection.pinned_names))}")
    for blob in m["blobs"]:
        stdout.print(
            f"  blob {blob['name']:<8}{size(blob['size']):>10} stored, {size(blob['raw_size']):>10} raw "
            f"({blob['compression']}), sha256 {blob['sha256'][:16]}"
        )
    for signature in inspection.signatures:
        state = "valid" if signature.valid else "[red]does not match the manifest[/]"
        line = f"  signature    {signature.fingerprint} ({escape(signature.namespace)}): {state}"
        if inspection.trust_checked:
            line += ", [green]trusted[/]" if signature.trusted is None else f", [red]not trusted[/]: {escape(signature.trusted)}"
        stdout.print(line)
    if not inspection.signatures:
        stdout.print("  signature    [red]none: no host accepts this bundle[/]")


def render_diff(diff: BundleDiff) -> None:
    if diff.empty:
        stdout.print(f"{escape(diff.host)}: no differences")
        return
    for title, changes in (("manifest", diff.manifest), ("model", diff.model), ("runtime", diff.runtime)):
        for change in changes:
            stdout.print(f"  {title:<9}{escape(change.path)}: {escape(repr(change.old))} -> {escape(repr(change.new))}")
    for label, paths, style in (
        ("added", diff.files_added, "green"),
        ("removed", diff.files_removed, "red"),
        ("changed", diff.files_changed, "yellow"),
    ):
        for path in paths:
            stdout.print(f"  [{style}]file {label:<8}[/]{escape(path)}")


class LiveProgress:
    """What long build steps are doing, on stderr: on a terminal one spinner
    line that follows the current step, elsewhere one line per step.

    Results (`Step.final`) stay on screen. Only steps that do real work
    report, so a build that changes nothing shows nothing here.
    """

    def __init__(self) -> None:
        self.status: Status | None = None

    def __call__(self, step: Step) -> None:
        text = escape(step.message)
        if step.final:
            stderr.print(f"[green]{text}[/]")
        elif not stderr.is_terminal:
            stderr.print(f"[cyan]{text}[/]")
        elif self.status is None:
            self.status = stderr.status(f"[cyan]{text}[/]", spinner="dots")
            self.status.start()
        else:
            self.status.update(f"[cyan]{text}[/]")

    def __enter__(self) -> LiveProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


_PUSH_STYLES = {"ok": "green", "skipped": "yellow", "locked": "yellow"}


def render_push_host(result: HostPush) -> None:
    """One line per host, as its result arrives."""
    style = _PUSH_STYLES.get(result.status, "red")
    changed = len(result.changed)
    if result.ok:
        what = f"{changed} component{'s' if changed != 1 else ''} changed"
        if result.generation is not None:
            what += f", generation {result.generation}"
    else:
        what = result.message
    extra = f" (installed {', '.join(result.bootstrapped)})" if result.bootstrapped else ""
    stdout.print(
        f"[{style}]{result.status:<11}[/] {escape(result.host)}: {escape(what)}"
        f" [dim]({result.duration_s:.1f}s){escape(extra)}[/]"
    )


def render_push_summary(result: PushResult) -> None:
    if len(result.waves) > 1:
        listed = "; ".join(f"{n}. {', '.join(w)}" for n, w in enumerate(result.waves, 1))
        stdout.print(f"waves    {escape(listed)}")
    failed = result.failed
    count = len(result.hosts)
    if not failed:
        stdout.print(
            f"[bold green]ok[/]: {count} host{'s' if count != 1 else ''} of "
            f"{escape(result.environment)} applied in {result.duration_s:.1f}s"
        )
        return
    names = ", ".join(f"{h.host} ({h.status})" for h in failed)
    stdout.print(
        f"[bold red]failed[/]: {len(failed)} of {count} host{'s' if count != 1 else ''} "
        f"did not apply: {escape(names)}"
    )


def render_publish(result: PublishResult) -> None:
    for host in result.hosts:
        expires = datetime.fromtimestamp(host.expires, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        if result.refresh:
            what = "re-signed"
        else:
            what = f"{len(host.written)} new file{'s' if len(host.written) != 1 else ''}, {size(host.written_bytes)}"
        stdout.print(
            f"[green]published[/] {escape(host.host)}: serial {host.serial}, bundle "
            f"{host.manifest[:12]} ({what}); expires {expires}"
        )
    count = len(result.hosts)
    stdout.print(
        f"[bold green]ok[/]: {count} pointer{'s' if count != 1 else ''} for "
        f"{escape(result.environment)} in {escape(str(result.destination))}"
    )


_FLEET_STYLES = {"ok": "green", "lagging": "yellow", "stale": "yellow", "failed": "red", "silent": "red"}


def _age(moment: float | None) -> str:
    if moment is None:
        return "never"
    seconds = max(int(datetime.now(tz=UTC).timestamp() - moment), 0)
    for unit, size_s in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size_s:
            return f"{seconds // size_s}{unit} ago"
    return f"{seconds}s ago"


def render_fleet(rows: list[FleetRow]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("host", "state", "published", "applied", "gen", "last run", "when", "last success"):
        table.add_column(column)
    for row in rows:
        style = _FLEET_STYLES.get(row.state, "red")
        table.add_row(
            escape(row.host),
            f"[{style}]{row.state}[/]",
            "-" if row.published_serial is None else str(row.published_serial),
            "-" if row.applied_serial is None else str(row.applied_serial),
            "-" if row.generation is None else str(row.generation),
            escape(row.last_run or "-") + (f" ({escape(row.error)})" if row.error and row.state != "silent" else ""),
            _age(row.last_run_time),
            _age(row.last_success_time),
        )
    stdout.print(table)
    standing_out = [row.host for row in rows if row.state != "ok"]
    if standing_out:
        stdout.print(f"[bold yellow]{len(standing_out)} of {len(rows)} hosts stand out[/]: {escape(', '.join(standing_out))}")
    else:
        stdout.print(f"[bold green]ok[/]: all {len(rows)} hosts applied what was published")


def render_secrets_summary(summary: SecretsSummary) -> None:
    stdout.print(f"secrets of {escape(str(summary.directory))}")
    stdout.print("members:")
    for member in summary.members:
        stdout.print(f"  {escape(member)}")
    for name, keys in summary.sections:
        if name == "batou":
            continue
        stdout.print(f"\\[{escape(name)}]: {escape(', '.join(keys)) or '(no keys)'}")
    if summary.files:
        stdout.print(f"files: {escape(', '.join(summary.files))}")


def render_reencrypted(result: Reencrypted) -> None:
    for path in result.written:
        stdout.print(f"[green]encrypted[/] {escape(str(path))}")
    for path in result.unchanged:
        stdout.print(f"unchanged {escape(str(path))}: already encrypted to the members")
    stdout.print(f"to {count(len(result.members), 'member')}")


def render_secrets_edit(result: EditResult) -> None:
    if result.resumed:
        print_note(f"continued the rejected edit of {result.path}")
    if not result.changed:
        stdout.print(f"unchanged {escape(str(result.path))}")
        return
    verb = "created" if result.created else "encrypted"
    stdout.print(f"[green]{verb}[/] {escape(str(result.path))}")
    for path in result.reencrypted:
        stdout.print(f"[green]encrypted[/] {escape(str(path))} (the members changed)")
