"""Downloading files with a mandatory checksum (``batou.lib.download``).

``Download`` fetches an ``http://``, ``https://`` or ``file://`` URL into a
file, hashing while it streams. The bytes go to a temporary file beside the
target, which replaces the target only when the checksum matches: a failed
or corrupted download never leaves a partial file behind. Credentials in the
URL are sent as HTTP basic auth and never shown.

Example::

    from batou.component import Component
    from batou.lib.download import Download
    from batou.lib.archive import Extract

    class App(Component):
        def configure(self):
            self += Download(
                "https://releases.example.com/app-1.4.tar.gz",
                checksum="sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            )
            self += Extract("app-1.4.tar.gz", strip=1)
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import http.client
import os
import posixpath
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, Protocol

from executor import run as _run
from executor.component import Attribute, Component, UpdateNeeded
from executor.errors import ConfigurationError, DeployError
from executor.fs import NotRegularFile, fsync_directory, open_regular, stage_file
from executor.lib._shared import CREDENTIALS_HINT, split_credentials
from executor.redact import mask_url

__all__ = ["ALGORITHMS", "Download"]

#: Checksum algorithms Download accepts, with the length of their hex digest.
ALGORITHMS = {"sha256": 64, "sha512": 128}
SCHEMES = ("http", "https", "file")
CHUNK = 1 << 20
# When neither the run nor the component limits a download, a connection
# that sends nothing for this long is given up (a stalled server must not
# hang the run for ever); a slow but steady download may take longer.
STALL_TIMEOUT = 120.0

_CHECKSUM_HINT = (
    "write checksum='sha256:<64 hex digits>' or 'sha512:<128 hex digits>' "
    "(sha256sum FILE prints the digest)"
)
_HEX = re.compile(r"[0-9a-f]+")


class ChecksumSpec(str):
    """A Download's ``checksum`` ("sha256:<hex>").

    N.B. every component has a ``checksum()`` method (a hash of its
    configuration) and a parent's calls its children's: calling this string
    still runs it, so Download keeps batou's ``checksum=`` keyword without
    breaking that.
    """

    _component: Component

    def __call__(self, value: str | bytes | None = None) -> str:
        return Component.checksum(self._component, value)


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _timeout_reason(limit: float | None) -> str:
    return f"no data for {limit:.1f}s" if limit is not None else "timed out"


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) URLs without credentials only; the
    request's own credentials go along only to the same scheme, host and
    port. Remembers the URL requested last, for errors."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.last_url = url

    def http_error_302(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any
    ) -> Any:
        # N.B. checked before urllib parses the location: it allows ftp://,
        # takes "user:password@host" for a host name to resolve, and puts
        # the unmasked location (or a piece of a password it took for a
        # port) into its errors.
        location = str(headers.get("location") or headers.get("uri") or "")
        refusal = _refusal(req.full_url, location)
        if refusal is not None:
            fp.close()
            raise _Refused(*refusal)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            self.last_url = new.full_url
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth is not None and _origin(new.full_url) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


class _Refused(Exception):
    """A redirect Download does not follow."""

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.hint = hint


_REDIRECT_HINT = "consign follows redirects to http:// and https:// only; use the final URL"


def _refusal(base: str, location: str) -> tuple[str, str] | None:
    """Why a redirect from `base` to `location` is not followed, and what
    to do (None: it is followed)."""
    try:
        url = urllib.parse.urljoin(base, location)
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:
        url, scheme = location, ""
    shown = f"the server redirected to {mask_url(url)}"
    if scheme not in ("http", "https"):
        what = "is not http(s)" if scheme else "is not a valid URL"
        return f"{shown}, which {what}", _REDIRECT_HINT
    try:
        credentials = split_credentials(url)[1] is not None
    except ValueError:
        # A password with an unencoded "/", say; or no password, a bad port.
        credentials = mask_url(url) != url
        if not credentials:
            return f"{shown}, which is not a valid URL", _REDIRECT_HINT
    if credentials:
        return (
            f"{shown}, which carries credentials",
            "consign does not follow a redirect that carries a user name or password; "
            "download from the final URL instead (with the credentials it needs)",
        )
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class Download(Component):
    """Download ``uri`` to ``target`` and check it against ``checksum``.

    ``uri`` is an ``http://``, ``https://`` or ``file://`` URL. ``target``
    defaults to the URL's last path segment, relative to the workdir.
    ``checksum`` is mandatory: ``"sha256:<hex>"`` or ``"sha512:<hex>"``.
    verify hashes the target (streamed); update downloads into a temporary
    file beside the target and renames it into place only when the
    checksum matches. ``timeout`` (seconds) bounds the download, as does
    the environment's ``timeout``; the smaller one applies.

    Credentials in the URL (``https://user:password@host/...``) are sent
    as HTTP basic auth, only to that host, and shown as ``user:***`` in
    every message, log line and breadcrumb; ``/``, ``#`` and ``?`` in a
    password are percent-encoded (``%2F``, ``%23``, ``%3F``). Redirects are
    followed to ``http``/``https`` URLs without credentials only; errors
    after a redirect name the URL requested last.

    Example::

        self += Download(
            f"https://deploy:{self.token}@files.example.com/app.tar.gz",
            target="downloads/app.tar.gz",
            checksum="sha512:...",
            timeout=300,
        )
    """

    namevar = "uri"
    uri: str
    target: str | None = None
    timeout = Attribute(float, default=None)

    # -- configuration -------------------------------------------------------

    @property
    def checksum(self) -> ChecksumSpec:
        spec = ChecksumSpec(self.__dict__.get("checksum") or "")
        spec._component = self
        return spec

    @checksum.setter
    def checksum(self, value: str | None) -> None:
        self.__dict__["checksum"] = value

    @property
    def masked_uri(self) -> str:
        """The URL as it may be shown: credentials replaced by ``***``."""
        return mask_url(str(self.__dict__.get("uri", "")))

    def configure(self) -> None:
        self.uri = str(self.uri)
        self._configure_checksum(self.__dict__.get("checksum"))
        parts, user, password = self._parse()
        self._scheme = parts.scheme.lower()
        self._auth: str | None = None
        self._requested: str | None = None
        path = urllib.parse.unquote(parts.path)
        if self._scheme == "file":
            if parts.hostname not in (None, "", "localhost") or not path.startswith("/"):
                raise ConfigurationError(
                    f"file URL {self.masked_uri!r} names no absolute path on this host",
                    hint="write file:///absolute/path (three slashes)",
                )
            self._path = path
        else:
            if not parts.hostname:
                raise ConfigurationError(
                    f"URL {self.masked_uri!r} names no host", hint="write https://host/path"
                )
            self._url = self._request_url(parts)
            if user is not None:
                # A lone user name is a token: sent with an empty password.
                token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
                self._auth = f"Basic {token}"
        if self.target is None:
            name = posixpath.basename(path)
            if name in ("", ".", ".."):
                raise ConfigurationError(
                    f"cannot name the target after {self.masked_uri!r}: "
                    "its path has no file name",
                    hint="pass target='name' (relative to the workdir, or absolute)",
                )
            self.target = name
        self.target = self.map(str(self.target))
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
        ):
            raise ConfigurationError(
                f"Download.timeout must be a positive number of seconds, got {timeout!r}",
                hint="pass timeout=300, say, or leave it out to use the environment's timeout",
            )
        self._written: tuple[int, int, int, int] | None = None

    def _configure_checksum(self, spec: Any) -> None:
        if not spec:
            raise ConfigurationError(
                f"Download of {self.masked_uri!r} needs a checksum, got none",
                hint=f"{_CHECKSUM_HINT}; a download is only accepted if it matches",
            )
        if not isinstance(spec, str) or ":" not in spec:
            raise ConfigurationError(
                f"checksum must be '<algorithm>:<hex digest>', got {spec!r}", hint=_CHECKSUM_HINT
            )
        algorithm, _, digest = spec.partition(":")
        algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
        if algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"checksum algorithm {algorithm!r} is not supported; "
                f"Download accepts {', '.join(sorted(ALGORITHMS))}",
                hint=_CHECKSUM_HINT,
            )
        length = ALGORITHMS[algorithm]
        if len(digest) != length or not _HEX.fullmatch(digest):
            raise ConfigurationError(
                f"{algorithm} checksum must be {length} hex digits, got {digest!r}",
                hint=_CHECKSUM_HINT,
            )
        self.algorithm = algorithm
        self.digest = digest
        self.checksum = f"{algorithm}:{digest}"

    def _parse(self) -> tuple[urllib.parse.SplitResult, str | None, str | None]:
        """The URL without credentials, in parts; the user name and password."""
        try:
            bare, user, password = split_credentials(self.uri)
            parts = urllib.parse.urlsplit(bare)
        except ValueError as exc:
            raise ConfigurationError(
                f"cannot parse the URL {self.masked_uri!r}: {exc}",
                hint="write scheme://host/path, e.g. https://example.com/app.tar.gz; "
                + CREDENTIALS_HINT,
            ) from None
        if parts.scheme.lower() not in SCHEMES:
            got = f"{parts.scheme}://" if parts.scheme else "no scheme"
            raise ConfigurationError(
                f"Download supports http://, https:// and file:// URLs, got {got} "
                f"in {self.masked_uri!r}",
                hint="download with one of those schemes, or fetch the file another way "
                "(a Command, say)",
            )
        return parts, user, password

    @staticmethod
    def _request_url(parts: urllib.parse.SplitResult) -> str:
        """The URL to request: no credentials, no fragment, and spaces or
        non-ASCII characters percent-encoded (escapes already there stay)."""
        safe = "/%:@!$&'()*+,;=-._~"
        path = urllib.parse.quote(parts.path or "/", safe=safe)
        query = urllib.parse.quote(parts.query, safe=safe + "?")
        return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc, path, query, ""))

    # -- verify ----------------------------------------------------------------

    def _hash_target(self) -> tuple[str, os.stat_result] | None:
        try:
            f, status = open_regular(self.target or "")
        except FileNotFoundError:
            return None
        except NotRegularFile as exc:
            raise DeployError(
                f"{self.target} is {exc.kind}, expected the downloaded file",
                hint="remove it, or download to another target=",
            ) from None
        except OSError as exc:
            raise DeployError(
                f"cannot read {self.target}: {exc.strerror}",
                hint="check the permissions of the file and its directory",
            ) from None
        identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        with f:
            if identity == self._written:
                # Written and hashed by update() moments ago: no need to read
                # a large file a second time.
                return self.digest, status
            digest = hashlib.new(self.algorithm)
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest(), status

    def verify(self) -> None:
        found = self._hash_target()
        if found is None:
            raise UpdateNeeded(f"{self.target} is missing")
        digest, _status = found
        if digest != self.digest:
            raise UpdateNeeded(
                f"{self.target} has {self.algorithm} {digest}, want {self.digest}"
            )

    # -- update ----------------------------------------------------------------

    def _limit(self) -> float | None:
        """Seconds the whole download may take (None: no limit)."""
        limits = [
            t for t in (_run.current().command_limit(), self.timeout) if t is not None
        ]
        return min(float(t) for t in limits) if limits else None

    def _fail(self, reason: str, hint: str) -> DeployError:
        """An error naming the URL, and the one requested last after redirects."""
        where = self.masked_uri
        if self._requested is not None and self._requested != self._url:
            where += f" (redirected to {mask_url(self._requested)})"
        return DeployError(f"cannot download {where}: {reason}", hint=hint)

    def update(self) -> None:
        target = str(self.target)
        directory = os.path.dirname(target) or "."
        if not os.path.isdir(directory):
            raise DeployError(
                f"directory {directory} does not exist",
                hint="create it first (a Directory before this component)",
            )
        if os.path.islink(target):
            # Replace the file the link points at, as write_atomic does.
            target = os.path.realpath(target)
        limit = self._limit()
        self.log("downloading %s to %s", self.masked_uri, target)
        digest = hashlib.new(self.algorithm)
        started = time.monotonic()
        with self._open(limit) as source:
            staged = stage_file(target, self._chunks(source, digest, limit, started))
        try:
            got = digest.hexdigest()
            if got != self.digest:
                raise DeployError(
                    f"checksum mismatch for {self.masked_uri}: expected {self.algorithm}:"
                    f"{self.digest}, got {self.algorithm}:{got}",
                    hint=f"nothing was written to {target}; if the file on the server "
                    "changed on purpose, check it and update checksum=",
                )
            os.rename(staged, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            raise
        fsync_directory(os.path.dirname(target) or ".")
        status = os.stat(target)
        self._written = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        self.log(
            "downloaded %s: %d bytes, %s matches", self.masked_uri, status.st_size, self.algorithm
        )

    @contextlib.contextmanager
    def _open(self, limit: float | None) -> Iterator[_Readable]:
        if self._scheme == "file":
            try:
                f, _status = open_regular(self._path)
            except NotRegularFile as exc:
                raise self._fail(exc.kind, "point the file:// URL at a regular file") from None
            except OSError as exc:
                raise self._fail(
                    exc.strerror or str(exc),
                    "check that the file exists on this host and is readable",
                ) from None
            with f:
                yield f
            return
        response = self._request(limit)
        with response:
            yield response

    def _request(self, limit: float | None) -> http.client.HTTPResponse:
        request = urllib.request.Request(self._url, headers={"User-Agent": "consign"})
        if self._auth is not None:
            # Unredirected: the redirect handler decides whether it goes along.
            request.add_unredirected_header("Authorization", self._auth)
        redirects = _RedirectHandler(self._url)
        opener = urllib.request.build_opener(redirects)
        try:
            try:
                response = opener.open(
                    request, timeout=limit if limit is not None else STALL_TIMEOUT
                )
            finally:
                # Errors from here on name the URL requested last.
                self._requested = redirects.last_url
        except _Refused as exc:
            raise self._fail(str(exc), exc.hint) from None
        except urllib.error.HTTPError as exc:
            exc.close()
            raise self._fail(f"HTTP {exc.code} {exc.reason}", _status_hint(exc.code)) from None
        except urllib.error.URLError as exc:
            raise self._fail(*_network_reason(exc.reason, limit, redirects.last_url)) from None
        except TimeoutError:
            raise self._fail(_timeout_reason(limit), _TIMEOUT_HINT) from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._fail(*_network_reason(exc, limit, redirects.last_url)) from None
        assert isinstance(response, http.client.HTTPResponse)
        return response

    def _chunks(
        self, source: _Readable, digest: Any, limit: float | None, started: float
    ) -> Iterator[bytes]:
        """The body in chunks, hashed on the way; errors name the URL."""
        read = getattr(source, "read1", source.read)
        received = 0
        while True:
            try:
                chunk = read(CHUNK)
            except TimeoutError:
                raise self._fail(
                    f"{_timeout_reason(limit)} after {received} bytes", _TIMEOUT_HINT
                ) from None
            except http.client.IncompleteRead as exc:
                raise self._fail(
                    f"the connection closed early, after {received + len(exc.partial)} bytes",
                    "try again; if it keeps happening, the server or a proxy cuts the transfer",
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                reason, hint = _network_reason(exc, limit, self._requested or self._url)
                raise self._fail(f"{reason} after {received} bytes", hint) from None
            if not chunk:
                break
            received += len(chunk)
            digest.update(chunk)
            yield chunk
            if limit is not None and time.monotonic() - started > limit:
                raise self._fail(
                    f"timed out after {limit:.1f}s ({received} bytes received)", _TIMEOUT_HINT
                )
        remaining = getattr(source, "length", None)
        if isinstance(source, http.client.HTTPResponse) and remaining:
            raise self._fail(
                f"the connection closed early, after {received} of {received + remaining} bytes",
                "try again; if it keeps happening, the server or a proxy cuts the transfer",
            )

    def last_updated(self, key: str = "st_mtime") -> float | None:
        try:
            return float(getattr(os.stat(str(self.target)), key))
        except FileNotFoundError:
            return None


_TIMEOUT_HINT = (
    "the server is slow or unreachable; raise the component's timeout= or the "
    "environment's timeout, or use a faster mirror"
)


def _status_hint(code: int) -> str:
    if code in (401, 403):
        return "check the credentials (https://user:password@host/...) and the server's access rules"
    if code in (404, 410):
        return "check the URL: the server has no such file"
    if code >= 500:
        return "the server failed; try again later, or download from another mirror"
    return "check the URL and what the server expects"


def _network_reason(reason: object, limit: float | None, url: str) -> tuple[str, str]:
    """What went wrong below HTTP at `url` (no credentials), and what to do about it."""
    parts = urllib.parse.urlsplit(url)
    where = f"{parts.hostname}:{parts.port or {'https': 443}.get(parts.scheme.lower(), 80)}"
    if isinstance(reason, TimeoutError):
        return _timeout_reason(limit), _TIMEOUT_HINT
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"connection refused by {where}",
            "check that the server is running and that the URL's host and port are right",
        )
    if isinstance(reason, socket.gaierror):
        return (
            f"cannot resolve the host {parts.hostname}",
            "check the host name in the URL and this host's DNS",
        )
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"the TLS certificate of {where} is not trusted: {reason.verify_message}",
            "install the CA certificate on this host, or fix the server's certificate",
        )
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed with {where}: {reason}", "check the server's TLS setup"
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{where} is unreachable: {reason.strerror}", "check the network route to the host"
    if isinstance(reason, OSError) and reason.strerror:
        return f"{reason.strerror} ({where})", "check the URL and the network"
    return mask_url(str(reason)) or type(reason).__name__, "check the URL and the network"

