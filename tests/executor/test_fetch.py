"""The pull's downloader: byte caps, a deadline, a minimum rate, and retries
with capped, jittered backoff, against a server that fails on purpose."""

from __future__ import annotations

import email.utils
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from executor import __version__
from executor.fetch import Fetcher, FetchError
from tests.faulty_http import (
    Announce,
    Delay,
    Endless,
    FaultyServer,
    Reset,
    Status,
    Trickle,
    Truncate,
    etag_of,
)

DATA = bytes(range(256)) * 16
RETRY_HINT = (
    "the server or the network failed repeatedly; the next pull tries again, "
    "and nothing was applied"
)
DEADLINE_HINT = "raise --deadline, or check the server's speed"
NOT_SIGNED_HINT = "the file on the server is not what was signed; publish again"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FaultyServer]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "file").write_bytes(DATA)
    with FaultyServer(root) as running:
        yield running


@pytest.fixture
def out(tmp_path: Path) -> Iterator[BinaryIO]:
    with open(tmp_path / "out", "w+b") as f:
        yield f


@pytest.fixture
def delays() -> list[float]:
    """What the fetcher would have slept: retries take no time in tests."""
    return []


def fetcher(delays: list[float], *, deadline: float = 60.0, **kw: Any) -> Fetcher:
    return Fetcher(deadline=time.monotonic() + deadline, sleep=delays.append, **kw)


def content(out: BinaryIO) -> bytes:
    out.seek(0)
    return out.read()


def test_a_file_is_downloaded_whole_with_its_validators(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    downloader = fetcher(delays)

    fetched = downloader.get(f"{server.url}/file", len(DATA), out)

    assert (fetched.status, fetched.size) == (200, len(DATA))
    assert fetched.headers["ETag"] == etag_of(DATA)
    assert content(out) == DATA
    assert (downloader.requests, downloader.received) == (1, len(DATA))
    (request,) = server.requests
    assert request.headers["User-Agent"] == f"consign-executor/{__version__}"
    assert delays == []


@pytest.mark.parametrize("validator", ["If-None-Match", "If-Modified-Since"])
def test_a_conditional_request_answered_304_writes_nothing(
    server: FaultyServer, out: BinaryIO, delays: list[float], validator: str
) -> None:
    downloader = fetcher(delays)
    first = downloader.get(f"{server.url}/file", len(DATA), out)
    header = {"If-None-Match": "ETag", "If-Modified-Since": "Last-Modified"}[validator]

    again = downloader.get(f"{server.url}/file", len(DATA), out, {validator: first.headers[header]})

    assert (again.status, again.size) == (304, 0)
    assert again.headers["ETag"] == etag_of(DATA)
    assert content(out) == b""
    assert (downloader.requests, downloader.received) == (2, len(DATA))
    assert [(r.status, r.sent) for r in server.requests] == [(200, len(DATA)), (304, 0)]
    assert server.requests[1].headers[validator] == first.headers[header]


@pytest.mark.parametrize(
    "headers",
    [
        {"If-None-Match": '"another-version"'},
        {"If-Modified-Since": email.utils.formatdate(1_000_000_000, usegmt=True)},
    ],
    ids=["other-etag", "older-date"],
)
def test_a_conditional_request_for_a_changed_file_gets_the_file(
    server: FaultyServer, out: BinaryIO, delays: list[float], headers: dict[str, str]
) -> None:
    fetched = fetcher(delays).get(f"{server.url}/file", len(DATA), out, headers)

    assert (fetched.status, fetched.size) == (200, len(DATA))
    assert content(out) == DATA


def test_server_errors_are_retried_after_growing_jittered_delays(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.script("/file", Status(500), Status(503), Status(429))
    downloader = fetcher(delays)

    fetched = downloader.get(f"{server.url}/file", len(DATA), out)

    assert fetched.status == 200
    assert content(out) == DATA
    assert [r.status for r in server.requests] == [500, 503, 429, 200]
    assert downloader.requests == 4
    # Base 0.5 s doubling, each scaled by a random factor in [0.5, 1].
    assert len(delays) == 3
    assert 0.25 <= delays[0] <= 0.5
    assert 0.5 <= delays[1] <= 1.0
    assert 1.0 <= delays[2] <= 2.0


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
def test_each_transient_status_is_retried(
    server: FaultyServer, out: BinaryIO, delays: list[float], code: int
) -> None:
    server.script("/file", Status(code))

    fetcher(delays).get(f"{server.url}/file", len(DATA), out)

    assert [r.status for r in server.requests] == [code, 200]
    assert content(out) == DATA


def test_the_backoff_is_capped_and_jittered_and_the_last_failure_is_reported(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Status(503))
    downloader = fetcher(delays, attempts=8)

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    assert caught.value.message == f"cannot download {server.url}/file: HTTP 503 Service Unavailable"
    assert caught.value.hint == RETRY_HINT
    assert downloader.requests == len(server.requests) == 8
    nominal = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert len(delays) == len(nominal)
    ratios = [delay / base for delay, base in zip(delays, nominal, strict=True)]
    assert all(0.5 <= ratio <= 1.0 for ratio in ratios), delays
    assert max(delays) <= 10.0
    # Jitter: hosts that failed together do not retry in step.
    assert len(set(ratios)) > 1


@pytest.mark.parametrize(
    ("code", "reason", "hint"),
    [
        (
            404,
            "Not Found",
            "is it published there? ('bundle publish ENV DEST' writes hosts/, manifests/ and blobs/)",
        ),
        (403, "Forbidden", "check the URL and the server's configuration"),
    ],
)
def test_a_client_error_is_not_retried_and_names_the_url(
    server: FaultyServer, out: BinaryIO, delays: list[float], code: int, reason: str, hint: str
) -> None:
    server.always("/file", Status(code))
    downloader = fetcher(delays)

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    assert caught.value.message == f"cannot download {server.url}/file: HTTP {code} {reason}"
    assert caught.value.hint == hint
    assert downloader.requests == len(server.requests) == 1
    assert delays == []


def test_a_missing_file_is_a_404(server: FaultyServer, out: BinaryIO, delays: list[float]) -> None:
    with pytest.raises(FetchError) as caught:
        fetcher(delays).get(f"{server.url}/nothing-here", 100, out)

    assert caught.value.message == f"cannot download {server.url}/nothing-here: HTTP 404 Not Found"
    assert [r.status for r in server.requests] == [404]


@pytest.mark.parametrize("fault", [Reset(100), Truncate(100)], ids=["reset", "truncated"])
def test_a_broken_body_is_downloaded_again(
    server: FaultyServer, out: BinaryIO, delays: list[float], fault: Reset | Truncate
) -> None:
    server.script("/file", fault)
    downloader = fetcher(delays)

    fetched = downloader.get(f"{server.url}/file", len(DATA), out)

    assert (fetched.status, fetched.size) == (200, len(DATA))
    assert content(out) == DATA
    assert [(r.status, r.sent) for r in server.requests] == [(200, 100), (200, len(DATA))]
    assert downloader.received == 100 + len(DATA)
    assert len(delays) == 1


@pytest.mark.parametrize(
    ("fault", "last"),
    [
        (Reset(100), "the connection broke after 100 bytes: [Errno 104] Connection reset by peer"),
        (Truncate(100), f"the body ended after 100 of {len(DATA)} bytes"),
    ],
    ids=["reset", "truncated"],
)
def test_after_the_last_attempt_the_error_says_what_happened_last(
    server: FaultyServer, out: BinaryIO, delays: list[float], fault: Reset | Truncate, last: str
) -> None:
    # Other failures first: the error reports the last one, not the first.
    server.script("/file", Status(503), Truncate(7) if isinstance(fault, Reset) else Reset(7))
    server.always("/file", fault)
    downloader = fetcher(delays, attempts=4)

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    assert caught.value.message == f"cannot download {server.url}/file: {last}"
    assert caught.value.hint == RETRY_HINT
    assert downloader.requests == len(server.requests) == 4
    assert len(delays) == 3


def test_a_refused_connection_is_retried_and_reported(out: BinaryIO, delays: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file"
    downloader = fetcher(delays, attempts=3)

    with pytest.raises(FetchError) as caught:
        downloader.get(url, 100, out)

    assert caught.value.message == f"cannot download {url}: [Errno 111] Connection refused"
    assert downloader.requests == 3
    assert len(delays) == 2


def test_an_announced_length_over_the_cap_fails_at_once_without_reading(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Announce(len(DATA)))
    downloader = fetcher(delays)

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA) - 1, out)

    assert caught.value.message == (
        f"cannot download {server.url}/file: the server announces {len(DATA)} bytes, "
        f"more than the {len(DATA) - 1} it may have"
    )
    assert caught.value.hint == NOT_SIGNED_HINT
    assert (downloader.requests, downloader.received) == (1, 0)
    assert content(out) == b""
    assert delays == []


@pytest.mark.parametrize("length", ["abc", "\u00b2"], ids=["letters", "superscript-two"])
def test_a_content_length_that_is_no_number_is_ignored(
    server: FaultyServer, out: BinaryIO, delays: list[float], length: str
) -> None:
    # http.client ignores it and reads to the end of the connection; the
    # fetcher must not stumble over it either ("²" is a digit to
    # str.isdigit, but no number to int).
    server.always("/file", Announce(length))

    fetched = fetcher(delays).get(f"{server.url}/file", len(DATA), out)

    assert (fetched.status, fetched.size) == (200, len(DATA))
    assert content(out) == DATA


def test_an_endless_body_fails_past_the_cap_and_is_not_retried(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Endless())
    downloader = fetcher(delays)

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", 10_000, out)

    assert caught.value.message == (
        f"cannot download {server.url}/file: more than the 10000 bytes it may have"
    )
    assert caught.value.hint == NOT_SIGNED_HINT
    assert downloader.requests == 1
    assert len(content(out)) <= 10_000
    assert delays == []


def test_an_endless_body_is_read_no_further_than_one_byte_past_the_cap(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Endless())
    downloader = fetcher(delays)

    with pytest.raises(FetchError):
        downloader.get(f"{server.url}/file", 10_000, out)

    # One byte past the cap proves the body is too long; reading on is what
    # the cap is there to prevent.
    assert downloader.received == 10_001


_SLOW = re.compile(r"slower than 2000 bytes/s \((\d+) bytes in (\d+\.\d) s\)")


def test_a_trickle_below_the_minimum_rate_is_cut_off_retried_and_fails(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Trickle(step=16, interval=0.05))
    downloader = fetcher(delays, min_rate=2000, grace=0.3, attempts=2)
    started = time.monotonic()

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    prefix = f"cannot download {server.url}/file: "
    assert caught.value.message.startswith(prefix)
    reason = _SLOW.fullmatch(caught.value.message[len(prefix) :])
    assert reason is not None, caught.value.message
    size, elapsed = int(reason[1]), float(reason[2])
    assert elapsed >= 0.3 and 0 < size < 2000 * elapsed
    assert downloader.requests == len(server.requests) == 2
    assert len(delays) == 1
    # Each attempt ends soon after the grace, not when the trickle would.
    assert time.monotonic() - started < 2.0


def test_a_server_faster_than_the_minimum_rate_is_not_cut_off(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Trickle(step=1024, interval=0.05))
    downloader = fetcher(delays, min_rate=2000, grace=0.05)

    fetched = downloader.get(f"{server.url}/file", len(DATA), out)

    assert fetched.size == len(DATA)
    assert content(out) == DATA
    assert downloader.requests == 1


def test_the_deadline_stops_a_download_in_the_middle(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    # Fast enough for the minimum rate, too slow for the deadline.
    server.always("/file", Trickle(step=256, interval=0.05))
    downloader = fetcher(delays, deadline=0.4, min_rate=1000, grace=0.1)
    started = time.monotonic()

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    assert re.fullmatch(
        rf"cannot download {re.escape(server.url)}/file: the pull's deadline passed after \d+ bytes",
        caught.value.message,
    ), caught.value.message
    assert caught.value.hint == DEADLINE_HINT
    assert downloader.requests == 1
    assert delays == []
    assert time.monotonic() - started < 1.0


def test_a_deadline_that_passed_stops_before_any_request(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    downloader = fetcher(delays, deadline=-1.0)

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    assert caught.value.message == f"cannot download {server.url}/file: the pull's deadline passed"
    assert caught.value.hint == DEADLINE_HINT
    assert downloader.requests == 0
    assert server.requests == []


def test_no_retry_is_started_that_the_deadline_would_cut(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Status(503))
    # The first delay is at least 0.25 s: past this deadline.
    downloader = fetcher(delays, deadline=0.2)

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    assert caught.value.message == f"cannot download {server.url}/file: HTTP 503 Service Unavailable"
    assert downloader.requests == 1
    assert delays == []


def test_a_server_that_does_not_answer_is_given_up_at_the_deadline(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    server.always("/file", Delay(5.0))
    downloader = fetcher(delays, deadline=0.3)
    started = time.monotonic()

    with pytest.raises(FetchError) as caught:
        downloader.get(f"{server.url}/file", len(DATA), out)

    assert caught.value.message == f"cannot download {server.url}/file: timed out"
    assert downloader.requests == 1
    assert time.monotonic() - started < 1.0


def test_a_retry_never_keeps_bytes_of_the_failed_attempt(
    server: FaultyServer, out: BinaryIO, delays: list[float]
) -> None:
    # The failed attempt writes more than the good one: left-overs would show.
    junk = b"J" * 6000
    server.script("/file", Truncate(len(junk), body=junk, length=8000))
    downloader = fetcher(delays)

    fetched = downloader.get(f"{server.url}/file", 10_000, out)

    assert fetched.size == len(DATA)
    assert content(out) == DATA
    assert out.seek(0, 2) == len(DATA)
    assert [r.sent for r in server.requests] == [len(junk), len(DATA)]
