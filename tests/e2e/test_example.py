"""The example deployment through the real console scripts, as a user runs them."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.deployments import git_commit
from tests.executor.lib.helpers import FAKE_SYSTEMCTL
from tests.keys import signing_key

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


# The console scripts of the installation that runs the tests.
BIN = Path(sys.executable).parent
ENV = {
    **os.environ,
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "CONSIGN_SIGN_KEY": str(signing_key().private),
}


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, check=False, env=ENV
    )
    if check and completed.returncode != 0:
        raise AssertionError(f"{args} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}")
    return completed


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake systemctl first on the console scripts' PATH; returns its
    state directory (``calls`` lists every invocation)."""
    state = tmp_path / "systemctl"
    state.mkdir()
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL)
    script.chmod(0o755)
    monkeypatch.setitem(ENV, "PATH", f"{bin_dir}{os.pathsep}{ENV['PATH']}")
    monkeypatch.setitem(ENV, "FAKE_SYSTEMCTL", str(state))
    return state


@pytest.fixture
def example(tmp_path: Path, systemctl: Path) -> Path:
    """A fresh clone-like copy of the example deployment in this repository."""
    for tool in ("bundle", "executor"):
        assert (BIN / tool).exists(), f"console script {tool!r} is not installed beside {sys.executable}"
    repo = tmp_path / "example"
    for name in ("components", "environments"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "requirements.txt", repo / "requirements.txt")
    shutil.copy(ROOT / "README.md", repo / "README.md")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    # prod writes /etc/example/app.env and a systemd unit for real, and
    # downloads the tool's release; in tests all of it stays in tmp_path: the
    # sandbox maps the paths (and says systemd runs), the release comes from
    # the repository's copy.
    (tmp_path / "run-systemd/system").mkdir(parents=True)
    prod = repo / "environments/prod/environment.cfg"
    prod.write_text(
        prod.read_text()
        + f"\n[vfs]\nsandbox = Map\n/etc/example = {tmp_path}/etc-example\n"
        + f"/etc/systemd/system = {tmp_path}/systemd-units\n/run/systemd = {tmp_path}/run-systemd\n"
        + f"\n[component:tool]\nurl = file://{repo}/components/tool/example-tool-1.0.tar.gz\n"
    )
    git_commit(repo)
    return repo


def apply_json(repo: Path, host: str, target: Path, *extra: str) -> dict[str, object]:
    completed = run(
        "executor", "apply", f"bundles/prod/{host}.bundle", "--host", host,
        "--target-dir", str(target), "--state-dir", str(target.parent / f"{host}-state"),
        "--trust", str(signing_key().trust),
        "--json", *extra, cwd=repo,
    )
    data: dict[str, object] = json.loads(completed.stdout)
    return data


def test_the_readme_quick_start_runs_and_a_second_apply_changes_nothing(example: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```sh\n(python3 -m venv [^\n]+)\n```", readme)
    assert command, "the README's quick start command is missing"
    # Creating the venv and installing is what CI did already; the rest
    # runs exactly as written, with this installation's scripts.
    marker = ". .venv/bin/activate && "
    assert marker in command.group(1)
    main_job = command.group(1).split(marker, 1)[1]

    first = run("bash", "-c", main_job, cwd=example)
    assert "ok: 1 bundle for environment local" in first.stdout
    assert "ok: 10 components changed" in first.stdout
    target = example / ".consign/target/work"
    assert (target / "frontend/upstreams.conf").read_text().endswith(
        "server app.example.local:8080 ipv4 127.0.0.1 ipv6 ::1\n"
    )
    assert (target / "test/i-am-ubuntu").exists()
    assert "alias = example.local" in (target / "app/app.conf").read_text()
    assert (target / "_/etc/example/app.env").read_text() == "ALIAS=example.local\n"

    second = run("bash", "-c", main_job, cwd=example)
    assert "ok: 0 components changed" in second.stdout


def test_prod_builds_and_each_host_gets_its_platform(example: Path, tmp_path: Path) -> None:
    built = run("bundle", "build", "prod", cwd=example)
    assert built.stdout.count("built ") == 3
    # web2's frontend requires the apps of web1 and web3: they go first.
    assert "  1. web1, web3\n  2. web2\n" in built.stdout
    inspected = run("bundle", "inspect", "bundles/prod/web2.bundle", cwd=example).stdout
    assert "  applies after web1/app, web3/app (other hosts)\n" in inspected

    for host, platform in (("web1", "ubuntu"), ("web2", "ubuntu"), ("web3", "nixos")):
        target = tmp_path / host / "target"
        result = apply_json(example, host, target)
        assert result["status"] == "ok"
        work = target / "work"
        assert (work / "test/base-component").exists()
        assert (work / f"test/i-am-{platform}").exists()
        other = "nixos" if platform == "ubuntu" else "ubuntu"
        assert not (work / f"test/i-am-{other}").exists()
        conf = (work / "app/app.conf").read_text()
        assert f"listen = {host}.example.com:9090" in conf
        # The [resolver] overrides: web3 has an IPv4 address only.
        number = host[-1]
        assert f"bind = 192.0.2.1{number}:9090\n" in conf
        assert (f"bind = [2001:db8::1{number}]:9090\n" in conf) == (host != "web3")
        assert "workers = 8" in conf
        assert ("store = /nix/store" in conf) == (platform == "nixos")

        again = apply_json(example, host, target)
        assert again["changed"] == []

    assert "alias = shop.example.com" in (tmp_path / "web3/target/work/app/app.conf").read_text()
    # web2's bundle brought the other hosts' frozen addresses, nothing else of theirs.
    assert (tmp_path / "web2/target/work/frontend/upstreams.conf").read_text() == (
        "# Generated by consign for web2.example.com: one line per app server.\n"
        "server web1.example.com:9090 ipv4 192.0.2.11 ipv6 2001:db8::11\n"
        "server web2.example.com:9090 ipv4 192.0.2.12 ipv6 2001:db8::12\n"
        "server web3.example.com:9090 ipv4 192.0.2.13\n"
    )
    assert not (tmp_path / "web1/target/work/frontend").exists()
    assert (tmp_path / "etc-example/app.env").read_text() == "ALIAS=shop.example.com\n"


def test_prod_installs_the_tool_release_and_runs_it_under_systemd(
    example: Path, tmp_path: Path, systemctl: Path
) -> None:
    run("bundle", "build", "prod", "--host", "web1", cwd=example)
    target = tmp_path / "web1/target"

    first = apply_json(example, "web1", target)

    assert first["status"] == "ok", first
    tool = target / "work/tool"
    # Downloaded (checksum checked), unpacked without its top directory,
    # installed by the release's own script, and run by systemd.
    assert (tool / "example-tool-1.0.tar.gz").stat().st_size == 446
    assert (tool / "release/install.sh").exists()
    assert (tool / "installed/bin/example-tool").read_bytes() == (
        tool / "release/bin/example-tool"
    ).read_bytes()
    unit = (tmp_path / "systemd-units/example-tool.service").read_text()
    assert f"ExecStart={tool}/installed/bin/example-tool\n" in unit
    assert "Environment=EXAMPLE_TOOL_PORT=7000\n" in unit
    calls = (systemctl / "calls").read_text().splitlines()
    assert [c for c in calls if c.split()[0] in ("daemon-reload", "enable", "start", "restart")] == [
        "daemon-reload", "enable example-tool.service", "start example-tool.service",
    ]  # fmt: skip

    # Nothing to do the second time: no download, no install, no systemctl action.
    again = apply_json(example, "web1", target)
    assert again["changed"] == []
    later = (systemctl / "calls").read_text().splitlines()[len(calls):]
    assert not [c for c in later if c.split()[0] in ("daemon-reload", "enable", "start", "restart")]

    # A broken installation is repaired by the installer, then the service restarts.
    before = len((systemctl / "calls").read_text().splitlines())
    (tool / "installed/bin/example-tool").write_text("#!/bin/sh\nexit 1\n")
    repaired = apply_json(example, "web1", target)
    assert repaired["status"] == "ok"
    assert any("Command(" in str(c) for c in repaired["changed"])  # type: ignore[union-attr]
    actions = [
        c for c in (systemctl / "calls").read_text().splitlines()[before:]
        if c.split()[0] in ("daemon-reload", "enable", "start", "restart")
    ]  # fmt: skip
    assert actions == ["restart example-tool.service"]


def test_an_edited_file_is_named_by_dry_run_and_restored_by_apply(example: Path, tmp_path: Path) -> None:
    run("bundle", "build", "prod", "--host", "web1", cwd=example)
    target = tmp_path / "target"
    apply_json(example, "web1", target)
    conf = target / "work/app/app.conf"
    original = conf.read_text()
    conf.write_text("tampered\n")

    predicted = apply_json(example, "web1", target, "--dry-run")
    assert predicted["changed"] == [
        f"App > File('{conf}') > Content('{conf}')",
        "App > Restart",
    ]
    assert conf.read_text() == "tampered\n"

    applied = apply_json(example, "web1", target)
    assert applied["changed"] == predicted["changed"]
    assert conf.read_text() == original


def test_exit_codes_of_the_console_scripts(example: Path, tmp_path: Path) -> None:
    run("bundle", "build", "prod", cwd=example)
    refused = run(
        "executor", "apply", "bundles/prod/web1.bundle", "--host", "web2",
        "--trust", str(signing_key().trust),
        "--state-dir", str(tmp_path / "state"), cwd=example, check=False,
    )
    assert refused.returncode == 3
    assert "this bundle is for host 'web1'" in refused.stderr

    missing = run("bundle", "build", "nowhere", cwd=example, check=False)
    assert missing.returncode == 1
    assert "local, prod" in missing.stderr

    usage = run("executor", "apply", cwd=example, check=False)
    assert usage.returncode == 2


def test_a_bundle_holds_nothing_of_other_hosts_beyond_the_values_it_requires(
    example: Path,
) -> None:
    from executor.bundle import open_unverified

    run("bundle", "build", "prod", cwd=example)
    web2 = open_unverified(str(example / "bundles/prod/web2.bundle"))
    repo = b"".join(web2.raw_chunks("repo"))
    model = b"".join(web2.raw_chunks("model"))
    with tarfile.open(fileobj=io.BytesIO(repo)) as tar:
        names = tar.getnames()

    # The environment definitions stay on the builder; the model carries
    # what this host needs of them.
    assert not [n for n in names if n == "environments" or n.startswith("environments/")]
    assert "components/frontend/component.py" in names
    # web3's host data (data-alias) is in no byte of web2's bundle, though
    # web2 requires web3's app address, which is.
    assert b"shop.example.com" not in repo + model
    assert b"192.0.2.13" in model
