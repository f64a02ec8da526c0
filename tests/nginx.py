"""A real nginx on 127.0.0.1 for tests, serving one directory.

The server is one process of the test's user (``daemon off``, no master,
so no workers switching to another user that could not read the test's
private temporary directories), with its own prefix, config, pid file,
temporary paths and error log: nothing of the system's nginx is read or
written. Its access log has one JSON object per request (method, path,
status, bytes sent with and without headers, and the conditional request
headers), so that tests can assert exactly what a client fetched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.sshd import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

LOG_FORMAT = (
    '{"method":"$request_method","path":"$uri","status":$status,'
    '"bytes_sent":$bytes_sent,"body_bytes_sent":$body_bytes_sent,'
    '"if_none_match":"$http_if_none_match","if_modified_since":"$http_if_modified_since",'
    '"user_agent":"$http_user_agent"}'
)


def nginx_unavailable() -> str | None:
    """Why a real nginx cannot run here, or None."""
    if not os.path.exists(NGINX):
        return "nginx is not installed (Debian: nginx-light or nginx; .ci/run installs it)"
    return None


@dataclass(frozen=True)
class Request:
    """One line of the access log."""

    method: str
    path: str
    status: int
    bytes_sent: int
    body_bytes_sent: int
    if_none_match: str
    if_modified_since: str
    user_agent: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        return cls(**data)


@dataclass(frozen=True)
class Nginx:
    port: int
    directory: Path
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    def mark(self) -> int:
        """Where the access log ends now: requests after it are the next ones."""
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def requests(self, since: int = 0, *, at_least: int = 0, settle: float = 2.0) -> list[Request]:
        """The requests logged after `since` (a :meth:`mark`). nginx logs a
        request after it has sent the response, so wait (up to `settle`
        seconds) until at least `at_least` are there."""
        deadline = time.monotonic() + settle
        while True:
            with open(self.access_log, "rb") as f:
                f.seek(since)
                lines = f.read().decode().splitlines()
            found = [Request.from_json(json.loads(line)) for line in lines if line.strip()]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def _config(port: int, directory: Path, root: Path) -> str:
    temp = directory / "temp"
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;

events {{
    worker_connections 64;
}}

http {{
    default_type application/octet-stream;
    log_format consign escape=json '{LOG_FORMAT}';
    access_log {directory / "access.log"} consign;
    client_body_temp_path {temp / "client"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    sendfile on;
    keepalive_timeout 5;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {root};
        autoindex off;
    }}
}}
"""


@contextlib.contextmanager
def running_nginx(directory: Path, root: Path) -> Iterator[Nginx]:
    """nginx serving `root` on a free port; its files live in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = directory / "nginx.conf"
    config.write_text(_config(port, directory, root))
    error_log = directory / "error.log"
    # -e: the log for errors before the config is read (else /var/log/nginx).
    command = [NGINX, "-p", str(directory), "-c", str(config), "-e", str(error_log)]
    with open(directory / "nginx.out", "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                output = (directory / "nginx.out").read_text(errors="replace")
                errors = error_log.read_text(errors="replace") if error_log.exists() else ""
                raise RuntimeError(f"nginx did not start: {output}\n{errors}")
            time.sleep(0.05)
        yield Nginx(port, directory, root)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
