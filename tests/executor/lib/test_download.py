"""Download: checksummed, streamed, atomic downloads over file:// and loopback HTTP.

Every successful case applies twice: the second run only hashes the file
and changes nothing (and asks the server nothing).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component
from executor.configure import ConfiguredRoot
from executor.deploy import deploy_roots
from executor.errors import ConfigurationError, DeployError
from executor.lib.download import Download
from executor.model import RootRecord
from executor.outcome import DeployOutcome
from executor.redact import mask_url
from executor.run import RunContext
from tests.faulty_http import Delay, FaultyServer, Status, Trickle, Truncate

from .helpers import ROOT_NAME, apply_twice, configure, deploy, workdir

DATA = b"consign release\n" * 1000
SHA256 = hashlib.sha256(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()
WRONG = "0" * 64


def root_with(make: Callable[[], Component]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            self += make()

    return Root


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".consign-*"))


def run_log(run: RunContext) -> str:
    return "\n".join(f"{entry.component}: {entry.message}" for entry in run.log)


def deploy_in(
    factory: Callable[[], Component], tmp_path: Path, run: RunContext
) -> DeployOutcome:
    component = configure(factory, tmp_path)
    return deploy_roots([ConfiguredRoot(RootRecord(ROOT_NAME), component)], run)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[FaultyServer]:
    root = tmp_path / "served"
    (root / "dist").mkdir(parents=True)
    (root / "dist" / "app.tar.gz").write_bytes(DATA)
    with FaultyServer(root) as server:
        yield server


@pytest.fixture
def local_file(tmp_path: Path) -> Path:
    path = tmp_path / "mirror" / "app.tar.gz"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Redirector:
    """A loopback server answering every GET with a redirect to `location`,
    recording the request headers."""

    def __init__(self, location: str, code: int = 302) -> None:
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.headers.append(dict(self.headers.items()))
                self.send_response(code)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Redirector:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


# -- normal use --------------------------------------------------------------


def test_a_file_url_is_copied_once_and_then_only_verified(
    tmp_path: Path, local_file: Path
) -> None:
    uri = f"file://{local_file}"
    first, run = apply_twice(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    target = workdir(tmp_path) / "app.tar.gz"
    assert target.read_bytes() == DATA
    assert first.changed == (f"Root > Download('{uri}')",)
    assert "sha256 matches" in run_log(run)
    assert leftovers(workdir(tmp_path)) == []


def test_http_downloads_stream_to_the_target_and_a_second_run_asks_nothing(
    tmp_path: Path, served: FaultyServer
) -> None:
    uri = f"{served.url}/dist/app.tar.gz"
    apply_twice(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    assert (workdir(tmp_path) / "app.tar.gz").read_bytes() == DATA
    assert [r.status for r in served.requests] == [200]


def test_sha512_and_an_explicit_target(tmp_path: Path, served: FaultyServer) -> None:
    uri = f"{served.url}/dist/app.tar.gz"
    target = tmp_path / "elsewhere" / "release.tgz"
    target.parent.mkdir()

    apply_twice(
        root_with(lambda: Download(uri, target=str(target), checksum=f"SHA512:{SHA512.upper()}")),
        tmp_path,
    )

    assert target.read_bytes() == DATA
    assert not (workdir(tmp_path) / "app.tar.gz").exists()


def test_a_relative_target_lands_in_the_workdir(tmp_path: Path, local_file: Path) -> None:
    (workdir(tmp_path) / "downloads").mkdir(parents=True)

    apply_twice(
        root_with(
            lambda: Download(
                f"file://{local_file}", target="downloads/x.tgz", checksum=f"sha256:{SHA256}"
            )
        ),
        tmp_path,
    )

    assert (workdir(tmp_path) / "downloads" / "x.tgz").read_bytes() == DATA


def test_a_changed_target_is_downloaded_again(tmp_path: Path, served: FaultyServer) -> None:
    uri = f"{served.url}/dist/app.tar.gz"
    factory = root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}"))
    apply_twice(factory, tmp_path)
    target = workdir(tmp_path) / "app.tar.gz"
    target.write_bytes(b"tampered")
    os.chmod(target, 0o600)

    outcome, _ = deploy(factory, tmp_path)

    assert outcome.error is None
    assert outcome.changed == (f"Root > Download('{uri}')",)
    assert target.read_bytes() == DATA
    # Replaced like write_atomic replaces: the file keeps its mode.
    assert target.stat().st_mode & 0o777 == 0o600
    assert len(served.requests) == 2


def test_a_dry_run_reports_the_download_and_fetches_nothing(
    tmp_path: Path, served: FaultyServer
) -> None:
    uri = f"{served.url}/dist/app.tar.gz"

    outcome, _ = deploy(
        root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path, predicting=True
    )

    assert outcome.error is None
    assert outcome.changed == (f"Root > Download('{uri}')",)
    assert served.requests == []
    assert not workdir(tmp_path).exists()


def test_redirects_to_http_are_followed(tmp_path: Path, served: FaultyServer) -> None:
    with Redirector(f"{served.url}/dist/app.tar.gz") as redirector:
        uri = f"{redirector.url}/latest"
        apply_twice(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    assert (workdir(tmp_path) / "latest").read_bytes() == DATA


def test_a_parents_checksum_still_works_with_a_download_child(
    tmp_path: Path, local_file: Path
) -> None:
    root = configure(
        root_with(lambda: Download(f"file://{local_file}", checksum=f"sha256:{SHA256.upper()}")),
        tmp_path,
    )
    download = root.sub_components[0]
    assert isinstance(download, Download)

    assert download.checksum == f"sha256:{SHA256}"
    assert len(root.checksum()) == 64
    assert download.checksum() == download.checksum()


def test_batou_import_path() -> None:
    from batou.lib.download import Download as BatouDownload

    assert BatouDownload is Download


# -- credentials ---------------------------------------------------------------


def test_a_password_with_an_unencoded_at_sign_is_sent_and_never_shown(
    tmp_path: Path, served: FaultyServer
) -> None:
    # The host follows the last "@".
    uri = served.url.replace("http://", "http://deploy:s3@cr@t@") + "/dist/app.tar.gz"
    masked = served.url.replace("http://", "http://deploy:***@") + "/dist/app.tar.gz"

    first, run = apply_twice(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    (request,) = served.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"deploy:s3@cr@t"
    ).decode()
    assert first.changed == (f"Root > Download('{masked}')",)
    assert masked in run_log(run)
    assert "cr@t" not in run_log(run)
    root = configure(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)
    assert repr(root.sub_components[0]) == f"<Download('{masked}')>"


@pytest.mark.parametrize("password", ["ab/cd", "ab#cd", "ab?cd"])
def test_a_password_that_breaks_the_url_is_a_configuration_error(
    tmp_path: Path, password: str
) -> None:
    uri = f"https://deploy:{password}@example.com/a.tgz"

    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    error = info.value
    assert error.message == (
        "cannot parse the URL 'https://deploy:***@example.com/a.tgz': "
        "cannot tell its user name and password from its host"
    )
    assert error.hint is not None and error.hint.endswith(
        "percent-encode / # ? @ in the password (%2F, %23, %3F, %40)"
    )
    assert error.where == "Root > Download('https://deploy:***@example.com/a.tgz')"
    assert "cd" not in str(error)


def test_an_at_sign_in_the_path_is_no_password(tmp_path: Path, served: FaultyServer) -> None:
    (served.root / "@scope").mkdir()
    (served.root / "@scope" / "pkg.tgz").write_bytes(DATA)
    uri = f"{served.url}/@scope/pkg.tgz"

    apply_twice(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    (request,) = served.requests
    assert "Authorization" not in request.headers
    assert (workdir(tmp_path) / "pkg.tgz").read_bytes() == DATA


def test_credentials_are_sent_as_basic_auth_and_never_shown(
    tmp_path: Path, served: FaultyServer
) -> None:
    uri = served.url.replace("http://", "http://deploy:s%40cret@") + "/dist/app.tar.gz"
    masked = served.url.replace("http://", "http://deploy:***@") + "/dist/app.tar.gz"

    first, run = apply_twice(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    (request,) = served.requests
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"deploy:s@cret"
    ).decode()
    assert first.changed == (f"Root > Download('{masked}')",)
    assert masked in run_log(run)
    assert "cret" not in run_log(run)
    root = configure(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)
    assert "cret" not in repr(root.sub_components[0])


@pytest.mark.parametrize("password", ["hunter2", "hun@ter2", "hun%2Fter2", "hun%23ter%3F2"])
def test_credentials_are_masked_in_errors(
    tmp_path: Path, served: FaultyServer, password: str
) -> None:
    uri = served.url.replace("http://", f"http://deploy:{password}@") + "/missing.tgz"

    outcome, run = deploy(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"cannot download {served.url.replace('http://', 'http://deploy:***@')}/missing.tgz: "
        "HTTP 404 Not Found"
    )
    for shown in (str(error), run_log(run), "".join(outcome.changed)):
        assert "ter" not in shown


def test_credentials_do_not_follow_a_redirect_to_another_server(
    tmp_path: Path, served: FaultyServer
) -> None:
    with Redirector(f"{served.url}/dist/app.tar.gz") as redirector:
        uri = redirector.url.replace("http://", "http://u:pw@") + "/latest"
        apply_twice(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    assert "Authorization" in redirector.headers[0]
    (request,) = served.requests
    assert "Authorization" not in request.headers


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checksum", "message"),
    [
        (None, "Download of 'https://u:***@example.com/a.tgz' needs a checksum, got none"),
        ("", "Download of 'https://u:***@example.com/a.tgz' needs a checksum, got none"),
        (SHA256, f"checksum must be '<algorithm>:<hex digest>', got '{SHA256}'"),
        (
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "checksum algorithm 'md5' is not supported; Download accepts sha256, sha512",
        ),
        ("sha256:abc", "sha256 checksum must be 64 hex digits, got 'abc'"),
        (f"sha256:{'g' * 64}", f"sha256 checksum must be 64 hex digits, got '{'g' * 64}'"),
        (f"sha512:{SHA256}", f"sha512 checksum must be 128 hex digits, got '{SHA256}'"),
    ],
)
def test_a_missing_or_bad_checksum_is_a_configuration_error(
    tmp_path: Path, checksum: str | None, message: str
) -> None:
    uri = "https://u:pw@example.com/a.tgz"
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Download(uri, checksum=checksum)), tmp_path)

    assert info.value.message == message
    assert info.value.hint is not None and "sha256:" in info.value.hint
    assert info.value.where == "Root > Download('https://u:***@example.com/a.tgz')"
    assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "ftp://u:pw@example.com/a.tgz",
            "Download supports http://, https:// and file:// URLs, got ftp:// "
            "in 'ftp://u:***@example.com/a.tgz'",
        ),
        (
            "example.com/a.tgz",
            "Download supports http://, https:// and file:// URLs, got no scheme "
            "in 'example.com/a.tgz'",
        ),
        ("https://example.com/dist/", "cannot name the target after 'https://example.com/dist/': "
         "its path has no file name"),
        ("https://example.com/..", "cannot name the target after 'https://example.com/..': "
         "its path has no file name"),
        ("file://relative/a.tgz", "file URL 'file://relative/a.tgz' names no absolute path on "
         "this host"),
        ("https:///a.tgz", "URL 'https:///a.tgz' names no host"),
        (
            "https://example.com:99999/a.tgz",
            "cannot parse the URL 'https://example.com:99999/a.tgz': "
            "Port out of range 0-65535",
        ),
    ],
)
def test_bad_urls_are_configuration_errors(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    assert info.value.message == message
    assert info.value.hint
    assert info.value.where == f"Root > Download({mask_url(uri)!r})"


def test_a_bad_timeout_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(
                lambda: Download("https://example.com/a", checksum=f"sha256:{SHA256}", timeout=0)
            ),
            tmp_path,
        )

    assert info.value.message == "Download.timeout must be a positive number of seconds, got 0"
    assert info.value.where == "Root > Download('https://example.com/a')"


def test_a_checksum_mismatch_leaves_the_old_target_and_no_temporary_file(
    tmp_path: Path, served: FaultyServer
) -> None:
    uri = served.url.replace("http://", "http://u:pw@") + "/dist/app.tar.gz"
    masked = mask_url(uri)
    target = workdir(tmp_path) / "app.tar.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old release\n")

    outcome, _ = deploy(root_with(lambda: Download(uri, checksum=f"sha256:{WRONG}")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"checksum mismatch for {masked}: expected sha256:{WRONG}, got sha256:{SHA256}"
    )
    assert error.hint is not None and f"nothing was written to {target}" in error.hint
    assert error.where == f"Root > Download('{masked}')"
    assert "pw@" not in str(error)
    assert target.read_bytes() == b"old release\n"
    assert leftovers(workdir(tmp_path)) == []


def test_a_connection_refused_names_the_url_and_the_reason(tmp_path: Path) -> None:
    port = closed_port()
    uri = f"http://127.0.0.1:{port}/app.tar.gz"

    outcome, _ = deploy(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"cannot download {uri}: connection refused by 127.0.0.1:{port}"
    assert error.hint is not None and "server is running" in error.hint
    assert f"Root > Download('{uri}')" in str(error)
    assert not (workdir(tmp_path) / "app.tar.gz").exists()


@pytest.mark.parametrize(
    ("status", "reason", "hint"),
    [(404, "Not Found", "no such file"), (500, "Internal Server Error", "try again later")],
)
def test_an_http_error_status_names_the_url_and_the_status(
    tmp_path: Path, served: FaultyServer, status: int, reason: str, hint: str
) -> None:
    uri = f"{served.url}/dist/app.tar.gz"
    served.always("/dist/app.tar.gz", Status(status))

    outcome, _ = deploy(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"cannot download {uri}: HTTP {status} {reason}"
    assert error.hint is not None and hint in error.hint
    assert error.where == f"Root > Download('{uri}')"
    assert leftovers(workdir(tmp_path)) == []
    assert not (workdir(tmp_path) / "app.tar.gz").exists()


def test_a_server_that_does_not_answer_times_out(tmp_path: Path, served: FaultyServer) -> None:
    uri = f"{served.url}/dist/app.tar.gz"
    served.always("/dist/app.tar.gz", Delay(10))

    started = time.monotonic()
    outcome, _ = deploy(
        root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}", timeout=0.3)), tmp_path
    )

    assert time.monotonic() - started < 5
    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"cannot download {uri}: no data for 0.3s"
    assert error.hint is not None and "timeout" in error.hint
    assert error.where == f"Root > Download('{uri}')"


def test_the_runs_command_limit_bounds_a_slow_download(
    tmp_path: Path, served: FaultyServer
) -> None:
    uri = f"{served.url}/dist/app.tar.gz"
    served.always("/dist/app.tar.gz", Trickle(step=100, interval=0.05))

    started = time.monotonic()
    outcome = deploy_in(
        root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")),
        tmp_path,
        RunContext(command_timeout=0.4),
    )

    assert time.monotonic() - started < 5
    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message.startswith(f"cannot download {uri}: timed out after 0.4s (")
    assert error.where == f"Root > Download('{uri}')"
    assert leftovers(workdir(tmp_path)) == []
    assert not (workdir(tmp_path) / "app.tar.gz").exists()


def test_a_truncated_body_is_an_error_and_leaves_nothing(
    tmp_path: Path, served: FaultyServer
) -> None:
    uri = f"{served.url}/dist/app.tar.gz"
    served.always("/dist/app.tar.gz", Truncate(after=100))

    outcome, _ = deploy(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"cannot download {uri}: the connection closed early, after 100 of {len(DATA)} bytes"
    )
    assert leftovers(workdir(tmp_path)) == []
    assert not (workdir(tmp_path) / "app.tar.gz").exists()


@pytest.mark.parametrize(
    "location",
    [
        "http://u:s3cret@127.0.0.1:9/app.tar.gz",
        "http://s3cret@127.0.0.1:9/app.tar.gz",
        # Unencoded: urllib would take "u" for the host and "ab" for a port.
        "http://u:ab/s3cret@127.0.0.1:9/app.tar.gz",
    ],
)
def test_a_redirect_that_carries_credentials_is_refused(tmp_path: Path, location: str) -> None:
    with Redirector(location) as redirector:
        uri = f"{redirector.url}/latest"
        outcome, run = deploy(
            root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path
        )

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"cannot download {uri}: the server redirected to {mask_url(location)}, "
        "which carries credentials"
    )
    assert "***@127.0.0.1:9/app.tar.gz" in error.message
    assert error.hint is not None and "final URL" in error.hint
    assert "s3cret" not in str(error) and "ab" not in error.message
    assert "s3cret" not in run_log(run)
    assert not (workdir(tmp_path) / "latest").exists()


def test_after_a_redirect_a_refused_connection_names_the_url_requested(tmp_path: Path) -> None:
    port = closed_port()
    location = f"http://127.0.0.1:{port}/app.tar.gz"
    with Redirector(location) as redirector:
        uri = redirector.url.replace("http://", "http://u:pw@") + "/latest"
        outcome, _ = deploy(
            root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path
        )

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"cannot download {mask_url(uri)} (redirected to {location}): "
        f"connection refused by 127.0.0.1:{port}"
    )
    assert "pw@" not in str(error)


def test_after_a_redirect_an_http_error_names_the_url_requested(
    tmp_path: Path, served: FaultyServer
) -> None:
    location = f"{served.url}/dist/missing.tar.gz"
    with Redirector(location) as redirector:
        uri = f"{redirector.url}/latest"
        outcome, _ = deploy(
            root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path
        )

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"cannot download {uri} (redirected to {location}): HTTP 404 Not Found"
    assert error.where == f"Root > Download('{uri}')"


def test_after_a_redirect_an_unknown_host_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "mirror.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    location = "http://mirror.invalid/app.tar.gz"
    with Redirector(location) as redirector:
        uri = f"{redirector.url}/latest"
        outcome, _ = deploy(
            root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path
        )

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"cannot download {uri} (redirected to {location}): cannot resolve the host mirror.invalid"
    )


@pytest.mark.parametrize("scheme", ["file", "ftp", "data"])
def test_a_redirect_to_another_scheme_is_refused(tmp_path: Path, scheme: str) -> None:
    location = {
        "file": "file:///etc/passwd",
        "ftp": "ftp://a:secret@example.com/x",
        "data": "data:,hello",
    }[scheme]
    with Redirector(location) as redirector:
        uri = f"{redirector.url}/latest"
        outcome, _ = deploy(
            root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path
        )

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == (
        f"cannot download {uri}: the server redirected to {mask_url(location)}, "
        "which is not http(s)"
    )
    assert "secret" not in str(error)
    assert error.where == f"Root > Download('{uri}')"
    assert not (workdir(tmp_path) / "latest").exists()


def test_a_missing_file_url_is_an_error(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/no-such.tgz"

    outcome, _ = deploy(root_with(lambda: Download(uri, checksum=f"sha256:{SHA256}")), tmp_path)

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"cannot download {uri}: No such file or directory"
    assert error.where == f"Root > Download('{uri}')"


def test_a_directory_at_the_target_is_an_error(tmp_path: Path, local_file: Path) -> None:
    (workdir(tmp_path) / "app.tar.gz").mkdir(parents=True)

    outcome, _ = deploy(
        root_with(lambda: Download(f"file://{local_file}", checksum=f"sha256:{SHA256}")),
        tmp_path,
    )

    error = outcome.error
    assert isinstance(error, DeployError)
    target = workdir(tmp_path) / "app.tar.gz"
    assert error.message == f"{target} is a directory, expected the downloaded file"
    assert error.where == f"Root > Download('file://{local_file}')"


def test_a_missing_target_directory_is_an_error(tmp_path: Path, local_file: Path) -> None:
    target = tmp_path / "missing" / "app.tgz"

    outcome, _ = deploy(
        root_with(
            lambda: Download(
                f"file://{local_file}", target=str(target), checksum=f"sha256:{SHA256}"
            )
        ),
        tmp_path,
    )

    error = outcome.error
    assert isinstance(error, DeployError)
    assert error.message == f"directory {target.parent} does not exist"
    assert error.where == f"Root > Download('file://{local_file}')"
