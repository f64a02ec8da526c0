"""A static HTTP server for tests that fails on purpose, path by path.

    with FaultyServer(published) as server:
        server.script("/blobs/abc", Status(503), Status(503))  # then served normally
        server.always("/blobs/def", Truncate(100))              # every request
        pull(..., base_url=server.url)
        assert [r.status for r in server.requests_for("/blobs/abc")] == [503, 503, 200]

It serves the files below a directory with ETag and Last-Modified, and
answers If-None-Match / If-Modified-Since with 304. Every request is
recorded (method, path, headers, status, body bytes sent) before anything
is answered, so a client that got a response always finds its request in
the log. It speaks HTTP/1.0: one request per connection, and a body
without Content-Length ends when the connection closes.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType


@dataclass(frozen=True)
class Status:
    """Answer with this status code and a short body."""

    code: int


@dataclass(frozen=True)
class Reset:
    """Announce the whole file, send `after` bytes of it, then reset the
    connection (RST, not a clean close)."""

    after: int


@dataclass(frozen=True)
class Truncate:
    """Announce `length` bytes (default: the file's size), send the first
    `after` bytes of `body` (default: the file), then close cleanly."""

    after: int
    body: bytes | None = None
    length: int | None = None


@dataclass(frozen=True)
class Endless:
    """No Content-Length; send `chunk` bytes at a time until the client leaves."""

    chunk: int = 4096


@dataclass(frozen=True)
class Trickle:
    """Announce the whole file, then send `step` bytes every `interval` seconds."""

    step: int = 1
    interval: float = 0.1


@dataclass(frozen=True)
class Announce:
    """Send Content-Length: `length` (a lie, or no number at all), then the
    file, then close."""

    length: int | str


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before the status line, then serve normally."""

    seconds: float


Behaviour = Status | Reset | Truncate | Endless | Trickle | Announce | Delay


@dataclass
class Request:
    """One request as the server saw it; `status` and `sent` fill in as it is answered."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None
    # Body bytes written to the socket.
    sent: int = 0
    behaviour: Behaviour | None = None


@dataclass
class _Scripts:
    once: dict[str, deque[Behaviour]] = field(default_factory=dict)
    always: dict[str, Behaviour] = field(default_factory=dict)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


class FaultyServer:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) serving `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.requests: list[Request] = []
        self._scripts = _Scripts()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._active = 0
        self._idle = threading.Condition(self._lock)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def serve(self, root: Path) -> None:
        """Serve another directory from now on (a publish to another place)."""
        self.root = root.resolve()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FaultyServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.wait_idle()

    # -- scripting -------------------------------------------------------------

    def script(self, path: str, *behaviours: Behaviour) -> None:
        """The next requests of `path` get these behaviours, one each, in order;
        later ones are served normally (or by `always`)."""
        with self._lock:
            self._scripts.once.setdefault(path, deque()).extend(behaviours)

    def always(self, path: str, behaviour: Behaviour) -> None:
        """Every request of `path` (after any scripted ones) gets `behaviour`."""
        with self._lock:
            self._scripts.always[path] = behaviour

    def _next(self, path: str) -> Behaviour | None:
        with self._lock:
            queued = self._scripts.once.get(path)
            if queued:
                return queued.popleft()
            return self._scripts.always.get(path)

    # -- the log ---------------------------------------------------------------

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being answered (endless bodies and trickles
        go on until the client leaves)."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._active == 0, timeout):
                raise AssertionError(f"the test server still answers {self._active} requests")

    # -- answering ---------------------------------------------------------------

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:  # noqa: N802 (the name http.server looks up)
                record = Request("GET", self.path, dict(self.headers.items()))
                with server._lock:
                    server.requests.append(record)
                    server._active += 1
                try:
                    server._answer(self, record)
                except (ConnectionError, TimeoutError):
                    pass  # the client left: what the faults are for
                finally:
                    with server._idle:
                        server._active -= 1
                        server._idle.notify_all()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _file(self, path: str) -> Path | None:
        candidate = (self.root / path.split("?", 1)[0].lstrip("/")).resolve()
        if candidate.is_relative_to(self.root) and candidate.is_file():
            return candidate
        return None

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, record: Request) -> None:
        behaviour = self._next(record.path)
        record.behaviour = behaviour
        if isinstance(behaviour, Delay):
            self._stopping.wait(behaviour.seconds)
            behaviour = None
        if isinstance(behaviour, Status):
            body = f"HTTP {behaviour.code}\n".encode()
            self._head(handler, record, behaviour.code, {"Content-Length": str(len(body))})
            self._send(handler, record, body)
            return
        path = self._file(record.path)
        if path is None:
            body = b"not found\n"
            self._head(handler, record, 404, {"Content-Length": str(len(body))})
            self._send(handler, record, body)
            return
        data = path.read_bytes()
        etag = etag_of(data)
        mtime = int(path.stat().st_mtime)
        validators = {"ETag": etag, "Last-Modified": email.utils.formatdate(mtime, usegmt=True)}
        if behaviour is None and _not_modified(handler, etag, mtime):
            self._head(handler, record, 304, validators)
            return
        if behaviour is None:
            self._head(handler, record, 200, {"Content-Length": str(len(data)), **validators})
            self._send(handler, record, data)
        elif isinstance(behaviour, Reset):
            self._head(handler, record, 200, {"Content-Length": str(len(data))})
            self._send(handler, record, data[: behaviour.after])
            # Let the bytes leave before the reset overtakes them.
            time.sleep(0.05)
            connection: socket.socket = handler.connection
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()
        elif isinstance(behaviour, Truncate):
            body = data if behaviour.body is None else behaviour.body
            length = len(data) if behaviour.length is None else behaviour.length
            self._head(handler, record, 200, {"Content-Length": str(length)})
            self._send(handler, record, body[: behaviour.after])
        elif isinstance(behaviour, Endless):
            self._head(handler, record, 200, {})
            chunk = b"x" * behaviour.chunk
            while not self._stopping.is_set():
                self._send(handler, record, chunk)
        elif isinstance(behaviour, Trickle):
            self._head(handler, record, 200, {"Content-Length": str(len(data))})
            for start in range(0, len(data), behaviour.step):
                self._send(handler, record, data[start : start + behaviour.step])
                if self._stopping.wait(behaviour.interval):
                    return
        elif isinstance(behaviour, Announce):
            self._head(handler, record, 200, {"Content-Length": str(behaviour.length)})
            self._send(handler, record, data)

    @staticmethod
    def _head(
        handler: http.server.BaseHTTPRequestHandler,
        record: Request,
        status: int,
        headers: dict[str, str],
    ) -> None:
        record.status = status
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.flush()

    @staticmethod
    def _send(handler: http.server.BaseHTTPRequestHandler, record: Request, data: bytes) -> None:
        handler.wfile.write(data)
        handler.wfile.flush()
        record.sent += len(data)


def _not_modified(handler: http.server.BaseHTTPRequestHandler, etag: str, mtime: int) -> bool:
    """RFC 9110 13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    match = handler.headers.get("If-None-Match")
    if match is not None:
        return match.strip() == "*" or etag in [tag.strip() for tag in match.split(",")]
    since = handler.headers.get("If-Modified-Since")
    if since is None:
        return False
    try:
        parsed = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    return mtime <= parsed.timestamp()

