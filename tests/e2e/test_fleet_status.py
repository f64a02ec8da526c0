"""Hosts report their status after each run; `bundle status` shows the fleet."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli import app as bundle_app
from builder.publish import PublishOptions, publish
from executor.apply import ApplyStatus
from executor.pull import PullOptions, pull
from tests.deployments import apply_options, build_bundles, deployment
from tests.faulty_http import FaultyServer
from tests.keys import signing_key

pytestmark = pytest.mark.e2e

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="{{host.name}}\\n")
    """
ENVIRONMENT = (
    "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\nweb2 = app\nweb3 = app\n"
)


class Receiver:
    """Accepts PUT /<name>.json into a directory, as a WebDAV server would."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - the http.server interface
                length = int(self.headers.get("Content-Length", "0"))
                name = self.path.rsplit("/", 1)[-1]
                (target / name).write_bytes(self.rfile.read(length))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/status/prod"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Path, Path, Path, Receiver, FaultyServer]]:
    repo = deployment(
        tmp_path / "repo", components={"app": APP}, environments={"prod": ENVIRONMENT}
    )
    build_bundles("prod", repo, serial=100)
    www = tmp_path / "www"
    publish(PublishOptions("prod", www, repository=repo, sign_keys=(signing_key().private,)))
    reports = tmp_path / "reports"
    with Receiver(reports) as receiver, FaultyServer(www) as server:
        yield repo, www, reports, receiver, server


def pull_host(tmp_path: Path, host: str, server: FaultyServer, report: str) -> None:
    settings = apply_options(Path(""), tmp_path / host, host=host, report_url=report)
    result = pull(PullOptions(server.url, settings))
    assert result.applied is not None and result.applied.status is ApplyStatus.OK


def test_hosts_report_and_the_fleet_table_shows_who_lags_and_who_is_silent(
    fleet: tuple[Path, Path, Path, Receiver, FaultyServer], tmp_path: Path
) -> None:
    repo, www, reports, receiver, server = fleet
    for host in ("web1", "web2"):
        pull_host(tmp_path, host, server, receiver.url)
    report = json.loads((reports / "web1.json").read_text())
    assert report["host"] == "web1"
    assert (report["last_run"]["kind"], report["last_run"]["result"]) == ("pull", "ok")
    assert report["last_success"]["serial"] == 100

    # A newer build for web2 is published, and web2 has not pulled it yet.
    (repo / "environments/prod/environment.cfg").write_text(ENVIRONMENT + "[component:app]\n")
    build_bundles("prod", repo, serial=200, hosts=("web2",))
    publish(
        PublishOptions(
            "prod", www, repository=repo, hosts=("web2",), sign_keys=(signing_key().private,)
        )
    )

    result = CliRunner().invoke(
        bundle_app,
        [
            "status",
            "prod",
            "-C",
            str(repo),
            "--from",
            str(reports),
            "--published",
            str(www),
            "--json",
        ],
    )

    assert result.exit_code == 1, result.output
    rows = {row["host"]: row for row in json.loads(result.stdout)["hosts"]}
    assert (
        rows["web1"]["state"],
        rows["web1"]["published_serial"],
        rows["web1"]["applied_serial"],
    ) == ("ok", 100, 100)
    assert (
        rows["web2"]["state"],
        rows["web2"]["published_serial"],
        rows["web2"]["applied_serial"],
    ) == ("lagging", 200, 100)
    assert (rows["web3"]["state"], rows["web3"]["error"]) == ("silent", "no report from this host")

    table = CliRunner().invoke(
        bundle_app,
        ["status", "prod", "-C", str(repo), "--from", str(reports), "--published", str(www)],
    )
    assert "2 of 3 hosts stand out: web2, web3" in table.stdout


def test_a_report_that_cannot_be_sent_is_a_note_and_the_run_stands(
    fleet: tuple[Path, Path, Path, Receiver, FaultyServer], tmp_path: Path
) -> None:
    _repo, _www, _reports, _receiver, server = fleet
    settings = apply_options(
        Path(""), tmp_path / "web1", host="web1", report_url="http://127.0.0.1:9/status"
    )

    result = pull(PullOptions(server.url, settings))

    assert result.applied is not None and result.applied.status is ApplyStatus.OK
    notes = [e.message for e in result.applied.log if e.component == ""]
    assert len(notes) == 1 and notes[0].startswith(
        "cannot report the status to http://127.0.0.1:9/status/web1.json: "
    )
