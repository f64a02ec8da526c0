"""The builder's command line: output and exit codes."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import stat
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from rich.console import Console
from rich.status import Status
from rich.text import Text
from typer.testing import CliRunner

import builder.render as render
from builder.cli import app
from builder.render import LiveProgress
from builder.runtime import Step, own_python, pins
from builder.signing import generate_key, read_public_key
from tests.bundles import doc_join, doc_split, flipped, with_blob, write
from tests.deployments import (
    DISCOVERY_DATABASE,
    DISCOVERY_ENVIRONMENT,
    DISCOVERY_WEB,
    build_bundles,
    deployment,
    git_commit,
)
from tests.keys import signing_key

runner = CliRunner()
# Test repositories are not committed; every build is signed.
SIGNED = ["--dirty", "--sign-key", str(signing_key().private)]

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="{{host.data['port']}}\\n")
    """


def version(name: str) -> str:
    return importlib.metadata.version(name)


PORTS = """
    [host:web1]
    components = app
    data-port = 80

    [host:web2]
    components = app
    data-port = 81
    """


def test_build_lists_bundles_and_skipped_hosts(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        components={"app": APP},
        environments={
            "prod": """
                [host:web1]
                components = app
                data-port = 80

                [host:web2]
                components = app
                data-port = 81
                """
        },
    )

    result = runner.invoke(app, ["build", "prod", "-C", str(repo), "--skip-host", "web2", *SIGNED])

    assert result.exit_code == 0, result.output
    assert "built    web1:" in result.stdout
    assert "skipped  web2: skipped by --skip-host" in result.stdout
    assert "ok: 1 bundle for environment prod" in result.stdout


def test_build_errors_exit_1_and_are_listed_each(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        components={"app": APP},
        environments={"prod": "[hosts]\nweb1 = app\nweb2 = app, nginx\n"},
    )

    result = runner.invoke(app, ["build", "prod", "-C", str(repo), *SIGNED])

    assert result.exit_code == 1
    assert result.stderr.count("error:") == 2
    assert "'port'" in result.stderr
    assert "on web1, web2" in result.stderr
    assert "environments/prod/environment.cfg:3: host 'web2' names component 'nginx'" in result.stderr
    assert "the build found 2 errors; nothing was written" in result.stderr


def test_a_missing_environment_exits_1_listing_the_known_ones(tmp_path: Path) -> None:
    repo = deployment(tmp_path, components={"app": APP}, environments={"prod": "[hosts]\nw = app\n"})

    result = runner.invoke(app, ["build", "staging", "-C", str(repo), *SIGNED])

    assert result.exit_code == 1
    assert "environment 'staging' not found; existing environments: prod" in result.stderr
    assert "pick one of the existing environments or create environments/staging/environment.cfg" in result.stderr


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])

    assert result.exit_code == 2
    assert "build" in result.output


def test_verbose_shows_the_traceback_of_deployment_code(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        components={
            "app": """
                from batou.component import Component

                def helper():
                    return {}["missing"]

                class App(Component):
                    def configure(self):
                        helper()
                """
        },
        environments={"prod": "[hosts]\nweb1 = app\n"},
    )

    quiet = runner.invoke(app, ["build", "prod", "-C", str(repo), *SIGNED])
    loud = runner.invoke(app, ["build", "prod", "-C", str(repo), "--verbose", *SIGNED])

    assert "App (components/app/component.py:4)" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert 'return {}["missing"]' in loud.stderr


# -- keys generate -----------------------------------------------------------------


def test_keys_generate_prints_the_line_hosts_trust(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "builder"

    result = runner.invoke(app, ["keys", "generate", str(key)])

    assert result.exit_code == 0, result.output
    public = read_public_key(key)
    assert result.stdout == (
        f'builder namespaces="consign-bundle" {public.openssh()} consign builder\n'
    )
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "keys" / "builder.pub").read_text() == f"{public.openssh()} consign builder\n"


def test_keys_generate_writes_the_trust_file_readable_by_all(tmp_path: Path) -> None:
    key, trust = tmp_path / "builder", tmp_path / "etc" / "allowed_signers"
    umask = os.umask(0o077)
    try:
        result = runner.invoke(
            app, ["keys", "generate", str(key), "--trust-file", str(trust), "--principal", "ci"]
        )
    finally:
        os.umask(umask)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('ci namespaces="consign-bundle" ssh-ed25519 ')
    assert trust.read_text() == result.stdout
    assert stat.S_IMODE(trust.stat().st_mode) == 0o644


def test_keys_generate_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    key = tmp_path / "builder"
    assert runner.invoke(app, ["keys", "generate", str(key)]).exit_code == 0
    before = key.read_bytes()

    result = runner.invoke(app, ["keys", "generate", str(key)])

    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"error: {key} already exists; refusing to overwrite a key" in result.stderr
    assert key.read_bytes() == before


def test_keys_generate_exist_ok_prints_the_line_of_the_key_there(tmp_path: Path) -> None:
    key = tmp_path / "builder"
    first = runner.invoke(app, ["keys", "generate", str(key)])
    before = key.read_bytes()

    again = runner.invoke(app, ["keys", "generate", str(key), "--exist-ok"])

    assert again.exit_code == 0, again.output
    assert again.stdout == first.stdout
    assert key.read_bytes() == before


# -- a signing key inside the repository ----------------------------------------------


@pytest.mark.parametrize("named_by", ["--sign-key", "[environment] sign_key"])
def test_a_signing_key_inside_the_repository_is_refused_naming_it(tmp_path: Path, named_by: str) -> None:
    environment = PORTS
    if named_by != "--sign-key":
        environment = "[environment]\nsign_key = keys/builder\n" + textwrap.dedent(PORTS)
    repo = deployment(tmp_path / "repo", components={"app": APP}, environments={"prod": environment})
    key = repo / "keys" / "builder"
    assert runner.invoke(app, ["keys", "generate", str(key)]).exit_code == 0
    options = ["--sign-key", str(key)] if named_by == "--sign-key" else []

    result = runner.invoke(
        app, ["build", "prod", "-C", str(repo), "--dirty", *options], env={"CONSIGN_SIGN_KEY": None}
    )

    assert result.exit_code == 1
    assert f"error: the signing key {key} lies inside the repository" in result.stderr
    assert "move the private key out of the repository" in result.stderr
    assert not (repo / "bundles").exists()


# -- inspect and diff ------------------------------------------------------------------


@dataclass(frozen=True)
class Bundles:
    """web1's and web2's bundles of two builds: serial 100, then 200 with
    web1's port changed and a file added."""

    root: Path

    def __call__(self, build: str, host: str = "web1") -> Path:
        return self.root / build / "prod" / f"{host}.bundle"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    root = tmp_path_factory.mktemp("bundle-cli")
    repo = deployment(root / "repo", components={"app": APP}, environments={"prod": PORTS})
    build_bundles("prod", repo, out=root / "old", serial=100)
    (repo / "environments/prod/environment.cfg").write_text(
        textwrap.dedent(PORTS).replace("data-port = 80", "data-port = 8080")
    )
    (repo / "README").write_text("new\n")
    build_bundles("prod", repo, out=root / "new", serial=200)
    return Bundles(root)


def test_inspect_summarises_host_serial_and_signature(bundles: Bundles) -> None:
    result = runner.invoke(app, ["inspect", str(bundles("new"))])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{bundles('new')} (")
    assert "  host         web1 (web1), environment prod" in lines
    assert any(line.startswith("  serial       200, built ") for line in lines)
    assert "  roots        app" in lines
    fingerprint = read_public_key(signing_key().private).fingerprint()
    assert f"  signature    {fingerprint} (consign-bundle): valid" in lines


def test_inspect_with_trust_says_whether_a_host_accepts_it(bundles: Bundles, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_key(other, comment="")
    untrusting = tmp_path / "allowed_signers"
    untrusting.write_text(f"builder {read_public_key(other).openssh()}\n")
    untrusting.chmod(0o644)
    fingerprint = read_public_key(signing_key().private).fingerprint()

    trusted = runner.invoke(app, ["inspect", str(bundles("new")), "--trust", str(signing_key().trust)])
    refused = runner.invoke(app, ["inspect", str(bundles("new")), "--trust", str(untrusting)])

    assert trusted.exit_code == refused.exit_code == 0
    assert f"  signature    {fingerprint} (consign-bundle): valid, trusted\n" in trusted.stdout
    assert (
        f"  signature    {fingerprint} (consign-bundle): valid, not trusted: "
        f"{fingerprint}: the key is not in the allowed signers\n"
    ) in refused.stdout


def test_inspect_json_has_the_manifest_and_signatures(bundles: Bundles) -> None:
    result = runner.invoke(app, ["inspect", str(bundles("new")), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["manifest"]["host"], data["manifest"]["serial"]) == ("web1", 200)
    assert [s["fingerprint"] for s in data["signatures"]] == [
        read_public_key(signing_key().private).fingerprint()
    ]
    assert data["signatures"][0]["valid"] is True
    assert data["roots"] == ["app"]


def test_inspect_writes_the_signed_parts_and_says_how_to_check_them(
    bundles: Bundles, tmp_path: Path
) -> None:
    manifest, signature = tmp_path / "web1.manifest", tmp_path / "web1.sig"

    result = runner.invoke(
        app,
        ["inspect", str(bundles("new")), "--manifest-out", str(manifest),
         "--signature-out", str(signature)],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert manifest.read_bytes() == doc_split(bundles("new").read_bytes()).manifest
    assert signature.read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    assert result.stderr == (
        "check by hand: ssh-keygen -Y verify -f allowed_signers -I builder -n consign-bundle "
        f"-s {signature} < {manifest}\n"
    )


def test_inspect_of_an_unwritable_output_exits_1_naming_it(bundles: Bundles, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "web1.manifest"

    result = runner.invoke(app, ["inspect", str(bundles("new")), "--manifest-out", str(target)])

    assert result.exit_code == 1
    assert f"error: cannot write {target}: No such file or directory" in result.stderr
    assert "internal error" not in result.stderr


def test_inspect_of_a_damaged_bundle_exits_3(bundles: Bundles, tmp_path: Path) -> None:
    data = bundles("new").read_bytes()
    damaged = write(tmp_path / "web1.bundle", flipped(data, len(data) - 1))

    result = runner.invoke(app, ["inspect", str(damaged)])

    assert result.exit_code == 3
    assert f"error: {damaged}: blob 'model' does not match its sha256" in result.stderr


def test_diff_lists_model_and_file_changes(bundles: Bundles) -> None:
    result = runner.invoke(app, ["diff", str(bundles("old")), str(bundles("new"))])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "  manifest serial: 100 -> 200" in lines
    assert "  model    host.data.port: '80' -> '8080'" in lines
    assert "  file added   README" in lines
    # The environment file stays on the builder: its change shows in the model.
    assert not [line for line in lines if "environments/" in line]


def test_diff_json_lists_the_same_changes(bundles: Bundles) -> None:
    result = runner.invoke(app, ["diff", str(bundles("old")), str(bundles("new")), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["host"] == "web1"
    assert data["model"] == [{"path": "host.data.port", "old": "80", "new": "8080"}]
    assert {"path": "serial", "old": 100, "new": 200} in data["manifest"]
    assert data["files"] == {"added": ["README"], "removed": [], "changed": []}


def test_diff_of_a_bundle_with_itself_says_there_is_no_difference(bundles: Bundles) -> None:
    result = runner.invoke(app, ["diff", str(bundles("new")), str(bundles("new"))])

    assert result.exit_code == 0, result.output
    assert result.stdout == "web1: no differences\n"


def test_diff_of_two_hosts_exits_1(bundles: Bundles) -> None:
    result = runner.invoke(app, ["diff", str(bundles("old")), str(bundles("new", "web2"))])

    assert result.exit_code == 1
    assert f"error: {bundles('old')} is for host 'web1', {bundles('new', 'web2')} for 'web2'" in (
        result.stderr
    )


# -- build --check ------------------------------------------------------------------


def test_build_check_of_a_committed_repository_says_it_is_reproducible(tmp_path: Path) -> None:
    repo = deployment(tmp_path / "repo", components={"app": APP}, environments={"prod": PORTS})
    git_commit(repo)

    result = runner.invoke(
        app, ["build", "prod", "-C", str(repo), "--check", "--sign-key", str(signing_key().private)]
    )

    assert result.exit_code == 0, result.output
    assert "reproducible: 2 bundles equal a rebuild of " in result.stdout


# -- the runtime, other hosts and pinned names in inspect and diff -------------------



@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """Three builds of two hosts: six 1.16.0 (serial 100), six 1.17.0 (200),
    six 1.17.0 again (300)."""
    root = tmp_path_factory.mktemp("bundle-cli-runtimes")
    repo = deployment(
        root / "repo",
        components={"database": DISCOVERY_DATABASE, "web": DISCOVERY_WEB},
        environments={"prod": DISCOVERY_ENVIRONMENT},
    )
    builds = (("old", 100, "1.16.0"), ("new", 200, "1.17.0"), ("again", 300, "1.17.0"))
    for name, serial, six in builds:
        (repo / "requirements.txt").write_text(f"six=={six}\n")
        # A pinned clock: only requirements.txt and the serial differ.
        build_bundles("prod", repo, out=root / name, serial=serial, clock=lambda: 1_700_000_000)
    return Bundles(root)


def packages(six: str) -> str:
    """The packages line's list: consign's pins and six, by name."""
    found = [(canonicalize_name(Requirement(pin).name), pin.split("==")[1]) for pin in pins()]
    return ", ".join(f"{name} {version}" for name, version in sorted([*found, ("six", six)]))


def test_inspect_shows_the_runtime_s_packages_other_hosts_and_pinned_names(
    runtimes: Bundles,
) -> None:
    web = runner.invoke(app, ["inspect", str(runtimes("new", "web1"))])
    database = runner.invoke(app, ["inspect", str(runtimes("new", "db1"))])

    assert web.exit_code == database.exit_code == 0, web.output + database.output
    lines = web.stdout.splitlines()
    assert f"  runtime      Python {own_python()}" in lines
    assert f"  packages     {packages('1.17.0')}" in lines
    assert "  applies after db1/database (other hosts)" in lines
    assert "  dns pinned   2 names: cache.example.com, queue.example.com" in lines
    # The order of the summary: runtime, packages, dependencies, names, then blobs.
    starts = [line.split()[0] for line in lines[6:11]]
    assert starts == ["runtime", "packages", "applies", "dns", "blob"]
    lines = database.stdout.splitlines()
    assert f"  packages     {packages('1.17.0')}" in lines
    assert not any(line.startswith("  applies after") for line in lines)
    assert "  dns pinned   1 name: db1.example.com" in lines


def test_inspect_json_has_packages_other_hosts_and_pinned_names(runtimes: Bundles) -> None:
    result = runner.invoke(app, ["inspect", str(runtimes("old", "web1")), "--json"])

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["distributions"]["six"] == "1.16.0"
    assert data["distributions"]["jinja2"] == version("Jinja2")
    assert sorted(data["distributions"]) == sorted(
        [canonicalize_name(Requirement(pin).name) for pin in pins()] + ["six"]
    )
    assert data["depends_on"] == ["db1/database"]
    assert data["pinned_names"] == ["cache.example.com", "queue.example.com"]


def test_diff_lists_the_runtime_s_changed_distributions(runtimes: Bundles) -> None:
    result = runner.invoke(app, ["diff", str(runtimes("old")), str(runtimes("new"))])
    data = runner.invoke(app, ["diff", str(runtimes("old")), str(runtimes("new")), "--json"])

    assert result.exit_code == data.exit_code == 0, result.output + data.output
    lines = result.stdout.splitlines()
    assert "  runtime  six: '1.16.0' -> '1.17.0'" in lines
    assert [line for line in lines if line.startswith("  runtime ")] == [
        "  runtime  six: '1.16.0' -> '1.17.0'"
    ]
    assert "  file changed requirements.txt" in lines
    assert json.loads(data.stdout)["runtime"] == [{"path": "six", "old": "1.16.0", "new": "1.17.0"}]


def test_diff_of_builds_with_one_runtime_lists_no_runtime_change(runtimes: Bundles) -> None:
    result = runner.invoke(app, ["diff", str(runtimes("new")), str(runtimes("again"))])

    assert result.exit_code == 0, result.output
    assert result.stdout == "  manifest serial: 200 -> 300\n"


def test_inspect_of_a_runtime_that_is_no_pex_exits_3(runtimes: Bundles, tmp_path: Path) -> None:
    raw = b"#!/bin/sh\n"
    parts = doc_split(runtimes("new").read_bytes())
    stored = zstandard.ZstdCompressor(level=3).compress(raw)
    path = write(tmp_path / "web1.bundle", doc_join(with_blob(parts, "runtime", stored, raw=raw)))

    result = runner.invoke(app, ["inspect", str(path)])

    assert result.exit_code == 3
    assert result.stderr.startswith(
        f"error: {path}: the runtime is not a pex consign made: File is not a zip file\n"
    )
    assert result.stdout == ""


# -- progress of long steps ------------------------------------------------------------


def console(terminal: bool) -> Console:
    """A console like the builder's stderr, with colours, writing to memory."""
    return Console(
        file=io.StringIO(), force_terminal=terminal, color_system="standard",
        highlight=False, soft_wrap=True,
    )  # fmt: skip


def written(target: Console) -> str:
    file = target.file
    assert isinstance(file, io.StringIO)
    return file.getvalue()


def test_progress_off_a_terminal_prints_a_line_per_step_and_results_in_green(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = console(terminal=False)
    monkeypatch.setattr(render, "stderr", target)

    def forbidden(*args: object, **kw: object) -> None:
        raise AssertionError("a spinner off a terminal")

    monkeypatch.setattr(target, "status", forbidden)
    with LiveProgress() as progress:
        progress(Step("Resolving six==1.17.0"))
        progress(Step("Downloading six-1.17.0-py2.py3-none-any.whl (11 kB)"))
        progress(Step("Built the runtime for Python 3.11 (1024 KiB, 2.0 s)", final=True))
        progress(Step("Resolving [bold]markup[/] is shown as written"))

    assert written(target) == (
        "\x1b[36mResolving six==1.17.0\x1b[0m\n"
        "\x1b[36mDownloading six-1.17.0-py2.py3-none-any.whl (11 kB)\x1b[0m\n"
        "\x1b[32mBuilt the runtime for Python 3.11 (1024 KiB, 2.0 s)\x1b[0m\n"
        "\x1b[36mResolving [bold]markup[/] is shown as written\x1b[0m\n"
    )


def test_progress_on_a_terminal_runs_one_spinner_from_the_first_step_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = console(terminal=True)
    monkeypatch.setattr(render, "stderr", target)
    events: list[tuple[str, str]] = []
    real_start, real_update, real_stop = Status.start, Status.update, Status.stop

    def text(status: Status) -> str:
        return status.renderable.text.plain if isinstance(status.renderable.text, Text) else ""

    def start(self: Status) -> None:
        events.append(("start", text(self)))
        real_start(self)

    def update(self: Status, *args: Any, **kw: Any) -> None:
        real_update(self, *args, **kw)
        events.append(("update", text(self)))

    def stop(self: Status) -> None:
        events.append(("stop", text(self)))
        real_stop(self)

    monkeypatch.setattr(Status, "start", start)
    monkeypatch.setattr(Status, "update", update)
    monkeypatch.setattr(Status, "stop", stop)

    with LiveProgress() as progress:
        progress(Step("Reused the runtime", final=True))
        assert progress.status is None
        progress(Step("Resolving six==1.17.0"))
        progress(Step("Installing six"))
        progress(Step("Built the runtime for Python 3.11 (1024 KiB, 2.0 s)", final=True))
        assert progress.status is not None
    assert progress.status is None

    assert events == [
        ("start", "Resolving six==1.17.0"),
        ("update", "Installing six"),
        ("stop", "Installing six"),
    ]
    output = written(target)
    # Results stay on screen, in green, the first one before any spinner.
    assert output.startswith("\x1b[32mReused the runtime\x1b[0m\n")
    assert "\x1b[32mBuilt the runtime for Python 3.11 (1024 KiB, 2.0 s)\x1b[0m" in output


def test_progress_without_steps_shows_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for terminal in (True, False):
        target = console(terminal)
        monkeypatch.setattr(render, "stderr", target)
        with LiveProgress() as progress:
            pass
        assert progress.status is None
        assert written(target) == ""


def test_a_build_with_a_fresh_cache_says_it_built_the_runtime_and_a_second_build_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = Path(os.environ["CONSIGN_CACHE_DIR"])
    monkeypatch.setenv(
        "CONSIGN_PEX_ROOT", os.environ.get("CONSIGN_PEX_ROOT") or str(shared / "pex-root")
    )
    monkeypatch.setenv("CONSIGN_CACHE_DIR", str(tmp_path / "cache"))
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP},
        environments={"prod": PORTS},
        files={"requirements.txt": "six==1.17.0\n"},
    )

    first = runner.invoke(app, ["build", "prod", "-C", str(repo), *SIGNED])
    second = runner.invoke(app, ["build", "prod", "-C", str(repo), *SIGNED])

    assert first.exit_code == second.exit_code == 0, first.output + second.output
    lines = first.stderr.splitlines()
    python = own_python()
    assert lines[0] == (
        f"Resolving the runtime for Python {python}: dnspython, Jinja2, MarkupSafe, msgpack, six"
    )
    assert "Resolving six==1.17.0" in lines
    built = [line for line in lines if line.startswith("Built the runtime")]
    assert len(built) == 1
    assert re.fullmatch(rf"Built the runtime for Python {python} \(\d+ KiB, \d+\.\d s\)", built[0])
    assert lines[-1] == built[0]
    assert "ok: 2 bundles for environment prod" in first.stdout
    # Nothing was resolved or built the second time: nothing is said.
    assert second.stderr == ""
    assert "ok: 2 bundles for environment prod" in second.stdout
