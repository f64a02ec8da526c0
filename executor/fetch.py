"""HTTP(S) downloads for ``executor pull``, bounded in every direction.

Every request has a byte cap (the signed size of what it fetches), an
overall deadline shared by the whole pull, and a minimum transfer rate (a
server that trickles bytes to stall updates is cut off). Transient
failures (connection refused or reset, timeouts, 5xx, 408, 429, a body
shorter than announced) are retried with capped exponential backoff and
jitter, within the deadline. TLS is used when the URL says https, but it is
never what makes a download trusted: everything fetched is checked against
signatures and digests afterwards.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from . import __version__
from .errors import ConsignError

_CHUNK = 64 << 10
# A new connection or a quiet server: how long one read may block.
_READ_TIMEOUT = 30.0
_BACKOFF_BASE, _BACKOFF_CAP = 0.5, 10.0
_RETRIED_STATUS = {408, 429, 500, 502, 503, 504}


class FetchError(ConsignError):
    """A download that failed for good (after its retries)."""

    code = "fetch-failed"


class _Transient(Exception):
    """A failure worth another attempt."""


@dataclass
class Fetched:
    status: int
    headers: Mapping[str, str]
    size: int = 0


@dataclass
class Fetcher:
    """Downloads within one deadline; counts what crossed the wire."""

    deadline: float
    min_rate: float = 4096.0
    # Seconds before the minimum rate applies (connection set-up, slow start).
    grace: float = 5.0
    attempts: int = 5
    requests: int = 0
    received: int = 0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def get(
        self, url: str, limit: int, out: IO[bytes], headers: Mapping[str, str] | None = None
    ) -> Fetched:
        """GET `url` into `out` (at most `limit` bytes); a 304 writes nothing.

        `out` is truncated before each attempt, so a retried download never
        mixes bytes of two responses.
        """
        last: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                delay = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if time.monotonic() + delay >= self.deadline:
                    break
                self.sleep(delay)
            out.seek(0)
            out.truncate()
            try:
                return self._once(url, limit, out, headers or {})
            except _Transient as exc:
                last = exc
                if time.monotonic() >= self.deadline:
                    break
        raise FetchError(
            f"cannot download {url}: {last}",
            hint="the server or the network failed repeatedly; the next pull tries again, "
            "and nothing was applied",
        )

    def _once(self, url: str, limit: int, out: IO[bytes], headers: Mapping[str, str]) -> Fetched:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(
                f"cannot download {url}: the pull's deadline passed",
                hint="raise --deadline, or check the server's speed",
            )
        request = urllib.request.Request(
            url, headers={"User-Agent": f"consign-executor/{__version__}", **headers}
        )
        self.requests += 1
        try:
            response = urllib.request.urlopen(request, timeout=min(_READ_TIMEOUT, remaining))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304:
                return Fetched(304, dict(exc.headers.items()))
            if exc.code in _RETRIED_STATUS:
                raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
            raise FetchError(
                f"cannot download {url}: HTTP {exc.code} {exc.reason}",
                hint="is it published there? ('bundle publish ENV DEST' writes hosts/, "
                "manifests/ and blobs/)"
                if exc.code == 404
                else "check the URL and the server's configuration",
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Transient(str(reason)) from None
        with response:
            announced = _length(response.headers.get("Content-Length"))
            if announced is not None and announced > limit:
                raise FetchError(
                    f"cannot download {url}: the server announces {announced} bytes, "
                    f"more than the {limit} it may have",
                    hint="the file on the server is not what was signed; publish again",
                )
            started = time.monotonic()
            size = 0
            try:
                while True:
                    now = time.monotonic()
                    if now >= self.deadline:
                        raise FetchError(
                            f"cannot download {url}: the pull's deadline passed after {size} bytes",
                            hint="raise --deadline, or check the server's speed",
                        )
                    elapsed = now - started
                    if elapsed > self.grace and size / elapsed < self.min_rate:
                        raise _Transient(
                            f"slower than {self.min_rate:g} bytes/s ({size} bytes in {elapsed:.1f} s)"
                        )
                    # Never more than one byte past the cap, on the wire too.
                    chunk = response.read1(min(_CHUNK, limit + 1 - size))
                    if not chunk:
                        break
                    size += len(chunk)
                    self.received += len(chunk)
                    if size > limit:
                        raise FetchError(
                            f"cannot download {url}: more than the {limit} bytes it may have",
                            hint="the file on the server is not what was signed; publish again",
                        )
                    out.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(f"the connection broke after {size} bytes: {exc}") from None
            if announced is not None and size != announced:
                raise _Transient(f"the body ended after {size} of {announced} bytes")
            out.flush()
            os.fsync(out.fileno())
            return Fetched(response.status, dict(response.headers.items()), size)


def _length(header: str | None) -> int | None:
    """A Content-Length of ASCII digits, else None (ignored, as http.client does)."""
    if header is None or not re.fullmatch(r"[0-9]{1,19}", header.strip()):
        return None
    return int(header.strip())


REPORT_TIMEOUT = 10.0


def put_json(url: str, data: dict[str, object], timeout: float = REPORT_TIMEOUT) -> str | None:
    """PUT `data` as JSON to `url` once; None when it worked, else why not.
    (Reporting is best effort: the run's own result never depends on it.)"""
    body = json.dumps(data, sort_keys=True).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="PUT",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"consign-executor/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1 << 16)
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        return str(getattr(exc, "reason", exc))
    return None
