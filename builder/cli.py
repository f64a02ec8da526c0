"""``bundle``: the command line where bundles are built (parse, call, render)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from executor.manifest import MAX_SERIAL
from executor.console import (
    guarded,
    print_error,
    print_json,
    size,
    stderr,
    stdout,
    version_callback,
)
from executor.errors import ConsignError, ExitCode

from .build import BuildOptions, build
from .check import check_possible, check_reproducible
from .inspect import diff_bundles, inspect_bundle, write_signed_parts
from .render import render_build, render_diff, render_inspection, LiveProgress
from .runtime import build_executor_pex, cache_directory, target_for
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


# Options several commands share.
RepositoryOption = Annotated[
    Path, typer.Option("-C", "--repository", help="The deployment repository.")
]
BuiltOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Where 'bundle build --out' wrote the bundles [default: REPOSITORY/bundles]."
    ),
]


IdentityOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--identity",
        "-i",
        help="Decrypt with this age identity file or OpenSSH private key (repeatable) "
        "[default: CONSIGN_AGE_IDENTITIES, BATOU_AGE_IDENTITIES, then ~/.ssh/id_ed25519, id_rsa].",
    ),
]


@app.command("build")
def build_command(
    environment: Annotated[str, typer.Argument(help="The environment to build, e.g. prod.")],
    repository: RepositoryOption = Path("."),
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
        typer.Option(
            "--serial", min=0, max=MAX_SERIAL, help="The bundles' serial [default: the commit time]."
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Then rebuild in a temporary clone and compare the bytes."),
    ] = False,
    identity: IdentityOption = None,
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
        identities=tuple(identity or ()),
    )
    if check:
        guarded(lambda: check_possible(options))
    with LiveProgress() as progress:
        result = guarded(lambda: build(replace(options, progress=progress)), verbose=verbose)
    render_build(result)
    if check:
        report = guarded(lambda: check_reproducible(options, result))
        stdout.print(f"[bold green]reproducible[/]: {escape(report)}")


@app.command("inspect")
def inspect_command(
    bundle: Annotated[Path, typer.Argument(help="The bundle file.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the manifest and signatures as JSON.")] = False,
    trust: Annotated[
        Path | None, typer.Option("--trust", help="Also say whether a host with this allowed_signers file accepts it.")
    ] = None,
    revoked: Annotated[Path | None, typer.Option("--revoked", help="Revoked public keys (with --trust).")] = None,
    manifest_out: Annotated[
        Path | None, typer.Option("--manifest-out", help="Write the signed manifest bytes here.")
    ] = None,
    signature_out: Annotated[
        Path | None, typer.Option("--signature-out", help="Write the first signature here (armored).")
    ] = None,
) -> None:
    """Show what a bundle holds and who signed it."""
    inspection = guarded(lambda: inspect_bundle(bundle, trust, revoked))
    if json_output:
        print_json(inspection.to_json())
    else:
        render_inspection(inspection)
    if manifest_out is not None or signature_out is not None:
        command = guarded(lambda: write_signed_parts(bundle, manifest_out, signature_out))
        stderr.print(f"check by hand: {escape(command)}")


@app.command("diff")
def diff_command(
    old: Annotated[Path, typer.Argument(help="The older bundle.")],
    new: Annotated[Path, typer.Argument(help="The newer bundle of the same host.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the differences as JSON.")] = False,
) -> None:
    """What changed between two bundles of one host: manifest, model, repository files."""
    diff = guarded(lambda: diff_bundles(old, new))
    if json_output:
        print_json(diff.to_json())
    else:
        render_diff(diff)


@app.command("publish")
def publish_command(
    environment: Annotated[str, typer.Argument(help="The environment to publish, e.g. prod.")],
    destination: Annotated[Path, typer.Argument(help="The directory a web server serves.")],
    repository: RepositoryOption = Path("."),
    out: BuiltOption = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Publish only this host (repeatable).")
    ] = None,
    sign_key: Annotated[
        list[Path] | None,
        typer.Option("--sign-key", help="Sign the pointers with this key (repeatable), as for build."),
    ] = None,
    expires_in: Annotated[
        str,
        typer.Option("--expires-in", help="How long pointers stay valid: seconds, or 30m, 12h, 7d."),
    ] = "7d",
    refresh: Annotated[
        bool,
        typer.Option("--refresh", help="Only re-sign the published pointers with a new expiry."),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write the static layout hosts pull from: pointers, manifests, blobs."""
    from .publish import PublishOptions, publish, parse_duration
    from .render import render_publish

    options = PublishOptions(
        environment=environment,
        destination=destination,
        repository=repository,
        out=out,
        hosts=tuple(host or ()),
        sign_keys=tuple(sign_key or ()),
        expires_in=guarded(lambda: parse_duration(expires_in, "--expires-in")),
        refresh=refresh,
    )
    result = guarded(lambda: publish(options))
    if json_output:
        print_json(result.to_json())
    else:
        render_publish(result)


@app.command("status")
def status_command(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    source: Annotated[
        str,
        typer.Option("--from", help="Where hosts report to (the executors' 'report' URL), or a directory."),
    ],
    published: Annotated[
        str | None,
        typer.Option("--published", help="The 'bundle publish' directory or URL, to compare serials."),
    ] = None,
    repository: RepositoryOption = Path("."),
    stale_after: Annotated[
        str, typer.Option("--stale-after", help="A last success older than this stands out.")
    ] = "1d",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The fleet as its hosts report it: serials, last run, result, age."""
    from .fleet import fleet_status
    from .publish import parse_duration
    from .render import render_fleet

    stale = guarded(lambda: parse_duration(stale_after, "--stale-after"))
    rows = guarded(lambda: fleet_status(environment, repository, source, published, None, stale))
    if json_output:
        print_json({"environment": environment, "hosts": [row.to_json() for row in rows]})
    else:
        render_fleet(rows)
    if any(row.state != "ok" for row in rows):
        raise typer.Exit(ExitCode.FAILED)


@app.command("push")
def push_command(
    environment: Annotated[str, typer.Argument(help="The environment to push, e.g. prod.")],
    repository: RepositoryOption = Path("."),
    out: BuiltOption = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Push only this host (repeatable).")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=1, help="Hosts to push at once (within a wave).")
    ] = 8,
    bootstrap: Annotated[
        bool,
        typer.Option(
            "--bootstrap",
            help="First copy executor.pex and the allowed signers to hosts that lack them.",
        ),
    ] = False,
    trust: Annotated[
        Path | None,
        typer.Option(
            "--trust",
            help="The allowed signers --bootstrap installs [default: the keys that signed the bundles].",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="Give up on a host after this many seconds."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Copy each host's bundle with scp and apply it there through ssh, wave by wave."""
    from .push import PushOptions, push
    from .render import render_push_host, render_push_summary

    options = PushOptions(
        environment=environment,
        repository=repository,
        out=out,
        hosts=tuple(host or ()),
        jobs=jobs,
        bootstrap=bootstrap,
        trust=trust,
        timeout=timeout,
    )
    result = guarded(lambda: push(options, None if json_output else render_push_host))
    if json_output:
        print_json(result.to_json())
    else:
        render_push_summary(result)
    if result.failed:
        raise typer.Exit(ExitCode.FAILED)


@app.command("executor-pex")
def executor_pex_command(
    out: Annotated[Path, typer.Option("--out", help="Write the executor here.")] = Path(
        "executor.pex"
    ),
    python: Annotated[
        str | None, typer.Option("--python", help="The hosts' Python (X.Y) [default: this one].")
    ] = None,
    complete_platform: Annotated[
        Path | None,
        typer.Option("--complete-platform", help="A host's 'executor inspect-platform' output."),
    ] = None,
) -> None:
    """Build the host executor as one pex that runs with a stock python3."""
    with LiveProgress() as progress:
        path = guarded(
            lambda: build_executor_pex(
                out, target_for(python, complete_platform), cache_directory(None), progress
            )
        )
    stdout.print(f"[green]built[/] {escape(str(path))} ({size(path.stat().st_size)})")


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
    trust_file: Annotated[
        Path | None,
        typer.Option("--trust-file", help="Also write the allowed_signers line to this file (0644)."),
    ] = None,
) -> None:
    """Make an ed25519 signing key; print the line hosts put in their allowed_signers."""
    line = guarded(lambda: generate_or_read_key(path, principal, comment, exist_ok, trust_file))
    stdout.print(escape(line))


secrets = typer.Typer(
    help="The environment's age-encrypted secrets (see docs/secrets.md).", no_args_is_help=True
)
app.add_typer(secrets, name="secrets")

EnvironmentArgument = Annotated[str, typer.Argument(help="The environment, e.g. prod.")]


@secrets.command("edit")
def secrets_edit(
    environment: EnvironmentArgument,
    file: Annotated[
        str | None,
        typer.Argument(help="Edit secret-FILE.age instead of secrets.cfg.age (created if absent)."),
    ] = None,
    repository: RepositoryOption = Path("."),
    identity: IdentityOption = None,
) -> None:
    """Decrypt into a private temporary file, run $EDITOR, check, re-encrypt."""
    from .render import render_secrets_edit
    from .secrets import edit, find_identities

    def again(error: ConsignError) -> bool:
        print_error(error)
        try:
            return typer.confirm("edit again? (no: keep the edit encrypted as .rejected)", default=True)
        except typer.Abort:
            # No answer (no terminal, end of input): keep the edit rather than guess.
            return False

    identities = guarded(lambda: find_identities(tuple(identity or ())))
    result = guarded(lambda: edit(repository, environment, file, identities, again))
    render_secrets_edit(result)


@secrets.command("summary")
def secrets_summary(
    environment: EnvironmentArgument,
    repository: RepositoryOption = Path("."),
    identity: IdentityOption = None,
) -> None:
    """Members, files, sections and keys of the secrets (never their values)."""
    from .render import render_secrets_summary
    from .secrets import find_identities, summarize

    summary = guarded(
        lambda: summarize(repository, environment, find_identities(tuple(identity or ())))
    )
    render_secrets_summary(summary)


@secrets.command("add")
def secrets_add(
    environment: EnvironmentArgument,
    recipient: Annotated[
        str, typer.Argument(help="An age1... key or an ssh-ed25519/ssh-rsa public key line.")
    ],
    repository: RepositoryOption = Path("."),
    identity: IdentityOption = None,
) -> None:
    """Add a member and re-encrypt every secret file of the environment."""
    from .render import render_reencrypted
    from .secrets import change_members, find_identities

    result = guarded(
        lambda: change_members(
            repository, environment, find_identities(tuple(identity or ())), add=[recipient]
        )
    )
    render_reencrypted(result)


@secrets.command("remove")
def secrets_remove(
    environment: EnvironmentArgument,
    recipient: Annotated[str, typer.Argument(help="The member to remove, as listed in members.")],
    repository: RepositoryOption = Path("."),
    identity: IdentityOption = None,
) -> None:
    """Remove a member and re-encrypt every secret file of the environment."""
    from .render import render_reencrypted
    from .secrets import change_members, find_identities

    result = guarded(
        lambda: change_members(
            repository, environment, find_identities(tuple(identity or ())), remove=[recipient]
        )
    )
    render_reencrypted(result)


@secrets.command("reencrypt")
def secrets_reencrypt(
    environment: EnvironmentArgument,
    force: Annotated[
        bool, typer.Option("--force", help="Re-encrypt every file, needed or not.")
    ] = False,
    repository: RepositoryOption = Path("."),
    identity: IdentityOption = None,
) -> None:
    """Re-encrypt the files whose recipients differ from the members."""
    from .render import render_reencrypted
    from .secrets import find_identities, reencrypt

    result = guarded(
        lambda: reencrypt(repository, environment, find_identities(tuple(identity or ())), force)
    )
    render_reencrypted(result)


@secrets.command("decrypt-to-stdout")
def secrets_decrypt_to_stdout(
    file: Annotated[Path, typer.Argument(help="An age-encrypted file.")],
    identity: IdentityOption = None,
) -> None:
    """Write the plaintext of FILE to stdout (for git diff's textconv)."""
    from .secrets import decrypt_file, find_identities

    data = guarded(lambda: decrypt_file(file, find_identities(tuple(identity or ()))))
    typer.echo(data, nl=False)


def main() -> Any:
    return app()
