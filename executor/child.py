"""The bundle's runtime: configure and deploy this host's roots.

Runs in the runtime environment the executor made from the bundle's pex
(``python -I -u -m executor.child REQUEST``), reads a :class:`RunRequest`
from the file REQUEST and writes a :class:`RunReport` to the file the
request names. The executor
enforces the overall time limit from outside and survives anything that
happens in here.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import template
from .configure import configure_for_host
from .deploy import deploy_roots
from .dns import Answer, overrides_table, resolving
from .outcome import DeployOutcome, RootOutcome, RootStatus
from .environment import Environment
from .errors import ConsignError, RunTimeoutError
from .canonical import CanonicalError
from .decode import DecodeError
from .model import HostModel, decode_model
from .protocol import RUNTIME_READY, RunReport, RunRequest, redact_report
from .redact import redact
from .secrets import HostSecrets, decode_secrets
from .run import DeadlineReached, RunContext, alarm, interruptible


class InternalError(ConsignError):
    code = "internal-error"


class ModelError(ConsignError):
    code = "bad-model"


def _model(request: RunRequest) -> HostModel:
    try:
        model = decode_model(request.model)
    except (CanonicalError, DecodeError) as exc:
        raise ModelError(
            f"the bundle's model is invalid: {exc}",
            hint="the model is signed, so the builder wrote it this way: rebuild the bundle",
        ) from None
    if (model.host.name, model.environment.name) != (request.host, request.environment):
        raise ModelError(
            f"the bundle's manifest names host {request.host!r} in {request.environment!r}, "
            f"its model host {model.host.name!r} in {model.environment.name!r}",
            hint="the bundle was assembled from different builds; build it again",
        )
    return model


def _secrets(data: bytes | None) -> HostSecrets:
    if data is None:
        return HostSecrets()
    try:
        return decode_secrets(data)
    except (CanonicalError, DecodeError) as exc:
        raise ModelError(
            f"the bundle's secrets are invalid: {exc}",
            hint="the secrets are signed with the bundle, so the builder wrote them this way: "
            "rebuild the bundle",
        ) from None


def run(request: RunRequest, secrets_data: bytes | None = None) -> RunReport:
    """Configure and deploy; `secrets_data` is the decrypted secrets blob."""
    started = time.monotonic()
    try:
        model = _model(request)
        secrets = _secrets(secrets_data)
    except ModelError as exc:
        return RunReport((), (), (), exc, request.target_directory or "")
    report = _run(request, model, secrets, started)
    return redact_report(report, secrets.values())


def _run(request: RunRequest, model: HostModel, secrets: HostSecrets, started: float) -> RunReport:
    template.withhold_from_cache(secrets.values())
    deadline = started + request.timeout if request.timeout else None
    context = RunContext(
        predicting=request.dry_run,
        deadline=deadline,
        command_timeout=model.environment.timeout,
        secrets=secrets.values(),
    )
    target = request.target_directory
    target_directory = Environment(model.environment, target_directory=target).target_directory
    skipped = [(s.name, s.reason) for s in model.skipped]
    # The build's answers first, then the host's own resolver for the rest.
    table = {
        record.name: Answer(record.v4, record.v6) for record in model.dns
    } | overrides_table(model.resolver)
    with resolving(table), alarm(request.timeout):
        try:
            with interruptible():
                configured, error = configure_for_host(
                    model, request.repository, target, secrets
                )
        except DeadlineReached:
            error = RunTimeoutError(
                "the run exceeded its time limit while configuring", hint="raise --timeout"
            )
        if error is None:
            outcome = deploy_roots(configured, context, skipped=skipped)
        else:
            not_run = [
                RootOutcome(r.name, RootStatus.NOT_RUN, reason="configure failed")
                for r in model.roots
            ]
            skips = [RootOutcome(n, RootStatus.SKIPPED, reason=why) for n, why in skipped]
            outcome = DeployOutcome(tuple(not_run + skips), error)
    return RunReport(
        outcome.roots, tuple(context.log), tuple(context.diffs), outcome.error, target_directory
    )


def _write_report(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix=".report-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.rename(temporary, path)


def _hidden(data: bytes | None) -> frozenset[str]:
    try:
        return _secrets(data).values()
    except ModelError:
        return frozenset()


def _read_secrets() -> bytes:
    """The decrypted secrets from standard input, which then becomes
    /dev/null: no command deployment code starts inherits them."""
    data = sys.stdin.buffer.read()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return data


def _stop(signum: int, _frame: object) -> None:
    # SIGTERM from the executor (stopping, or past the time limit): unwind,
    # so that temporary directories and files are removed on the way out.
    raise SystemExit(128 + signum)


def template_cache(prefix: str, base_prefix: str) -> Path | None:
    """Where this runtime keeps compiled templates: beside its venv in a
    runtime the executor prepared (STATE/runtimes/<sha256>/venv), which is
    private to the executor's user and one per runtime (Python, Jinja2,
    consign). Any other Python (a developer's venv) caches nothing."""
    entry = Path(prefix).parent
    if prefix != base_prefix and (entry / RUNTIME_READY).is_file():
        return entry / "template-cache"
    return None


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    template.use_code_cache(template_cache(sys.prefix, sys.base_prefix))
    with open(sys.argv[1], encoding="utf-8") as f:
        request = RunRequest.from_json(f.read())
    secrets_data = _read_secrets() if request.secrets else None
    try:
        report = run(request, secrets_data)
    except Exception as exc:  # noqa: BLE001 - reported as a bug, with its traceback
        error = InternalError(f"the runtime failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        hidden = _hidden(secrets_data)
        report = redact_report(RunReport((), (), (), error, ""), hidden)
        print(redact(traceback.format_exc(), hidden), file=sys.stderr)
    _write_report(request.report, report.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
