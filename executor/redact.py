"""Keeping secrets out of what a run shows: messages, logs, breadcrumbs.

- :func:`mask_url` hides the credentials of every URL in a text
  (``https://user:secret@host`` becomes ``https://user:***@host``).
- :func:`redact` replaces given secret values (a command's environment,
  the bundle's secrets) wherever they appear in a text;
  :func:`redact_error` does so in an error and the errors it stands for.

Both over-mask rather than under-mask: what they return is for display,
never for use.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable

from .errors import ConsignError

# scheme://userinfo@ — the userinfo runs to the *last* "@" before the end of
# the URL (whitespace or a quote), so a password with an unencoded "/", "#",
# "?" or "@" is still hidden whole.
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*)@(?=[^\s'\"<>@]*(?:[\s'\"<>]|$))"
)
# What precedes an "@" that lies in the URL's path rather than its
# authority: a host followed by "/", e.g. "registry.npmjs.org/" in
# ".../@scope/pkg". With a port ("host:8080/") it cannot be told from a
# password ("user:12/34"), so that is masked.
_PATH_AT = re.compile(r"[^:/@]+/")
# A lone user name over these schemes is usually a token (https://TOKEN@host).
_TOKEN_SCHEMES = ("http://", "https://", "ftp://", "ftps://")

# Shorter values are too likely to occur by chance to be worth hiding, and
# hiding them would make output unreadable ("1" in every number).
MIN_SECRET_LENGTH = 4
MASK = "***"


def mask_url(text: str) -> str:
    """`text` with the credentials of every URL in it hidden.

    ``https://user:secret@host`` becomes ``https://user:***@host``; a lone
    user name over http(s) or ftp(s) (a token) becomes ``***``; an ssh user
    name (``ssh://git@host``) is no secret and stays.
    """

    def hide(match: re.Match[str]) -> str:
        scheme, userinfo = match.group("scheme"), match.group("userinfo")
        if _PATH_AT.match(userinfo):
            return match.group(0)  # an "@" in the path (npm's /@scope/), no credentials
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":" + MASK
        elif scheme.lower() in _TOKEN_SCHEMES:
            userinfo = MASK
        return f"{scheme}{userinfo}@"

    return _URL_CREDENTIALS.sub(hide, text)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (at least
    MIN_SECRET_LENGTH characters) replaced by ``***``, longest first."""
    # Longest first, then by text: the same result in every process.
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=lambda s: (-len(s), s)):
        text = text.replace(secret, MASK)
    return text


def redact_error(error: ConsignError, secrets: Iterable[str]) -> ConsignError:
    """`error` (and the errors it stands for, at any depth) with every secret
    value hidden in its message, place, hint and traceback; changed in
    place and returned. The exception that caused an error (whose message
    may quote a value) becomes a redacted traceback text, `detail`."""
    values = list(secrets)
    if not values:
        return error
    seen: set[int] = set()
    pending = [error]
    while pending:
        part = pending.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        part.message = redact(part.message, values)
        part.args = (part.message,)
        part.where = None if part.where is None else redact(part.where, values)
        part.hint = None if part.hint is None else redact(part.hint, values)
        detail = getattr(part, "detail", None)
        cause = part.__cause__
        if detail is None and cause is not None:
            detail = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        if isinstance(detail, str):
            setattr(part, "detail", redact(detail, values))
        part.__cause__ = None
        part.__context__ = None
        part.__suppress_context__ = True
        pending.extend(p for p in part.parts() if p is not part)
        pending.extend(getattr(part, "errors", ()))
    return error
