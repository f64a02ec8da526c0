"""Rendering for both command lines: consoles, errors, exit codes.

Only the two ``cli.py`` modules and this one print. Domain code returns
results or raises :class:`ConsignError`; :func:`guarded` turns those into
messages and exit codes in one place.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__
from .errors import ConsignError, ExitCode, LockedError, RefusedError, exit_code_for

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

T = TypeVar("T")


def print_error(error: ConsignError, *, verbose: bool = False) -> None:
    """An error, or each error of a collection; with `verbose`, the traceback
    of the exception in deployment code that caused it."""
    parts = error.parts()
    for part in parts:
        stderr.print(f"[bold red]error:[/] {escape(part.render())}")
        cause = part.__cause__
        detail = getattr(part, "detail", None)
        if verbose and detail:
            # A traceback the runtime reported from its own process.
            stderr.print(escape(str(detail).rstrip()), style="dim")
        elif verbose and cause is not None:
            text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
            stderr.print(escape(text.rstrip()), style="dim")
    if parts != [error]:
        stderr.print(f"[bold red]{escape(error.message)}[/]")


def print_note(text: str) -> None:
    stderr.print(f"[yellow]note:[/] {escape(text)}")


def print_json(data: dict[str, Any]) -> None:
    """One JSON object on one line of stdout."""
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def guarded(
    action: Callable[[], T],
    *,
    json_error: Callable[[ConsignError], dict[str, Any]] | None = None,
    verbose: bool = False,
) -> T:
    """Run `action`; turn errors into messages and exit codes, in one place.

    With `json_error`, a user error is printed as the JSON it returns
    instead of text on stderr.
    """
    try:
        return action()
    except ConsignError as error:
        if json_error is not None:
            print_json(json_error(error))
        else:
            for note in getattr(error, "notes", ()):
                print_note(note)
            print_error(error, verbose=verbose)
        raise typer.Exit(exit_code_for(error)) from None
    except KeyboardInterrupt:
        stderr.print("[red]interrupted[/]")
        raise typer.Exit(ExitCode.FAILED) from None
    except typer.Exit:
        raise
    except Exception:  # noqa: BLE001 - the last line of defence
        stderr.print("[bold red]internal error:[/] this is a bug in consign; please report it:")
        stderr.print(escape(traceback.format_exc()))
        raise typer.Exit(ExitCode.INTERNAL) from None


def exit_on_sigterm() -> None:
    """Turn SIGTERM (systemd stop, timeout(1)) into an orderly exit, so that
    the runtime is killed and temporary files are removed on the way out."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def version_callback(program: str) -> Callable[[bool], None]:
    """A --version option callback that prints `program`'s version."""

    def show(value: bool) -> None:
        if value:
            stdout.print(f"consign {program} {__version__}")
            raise typer.Exit()

    return show


def size(value: int) -> str:
    """1536 -> '1.5 KiB'."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def refused_json(
    host: str | None, bundle: str, keys: dict[str, Any]
) -> Callable[[ConsignError], dict[str, Any]]:
    """The --json shape of a refused bundle: the command's usual keys (`keys`
    with their empty values), status "refused", and the error."""

    def shape(error: ConsignError) -> dict[str, Any]:
        return {
            **keys,
            "host": host,
            "environment": None,
            "bundle": bundle,
            "status": "refused"
            if isinstance(error, RefusedError)
            else "locked"
            if isinstance(error, LockedError)
            else "failed",
            "error": error.to_json(),
        }

    return shape
