"""What several library components share.

- :func:`split_credentials` takes a URL's user name and password apart from
  the rest of it (Download sends them as HTTP basic auth, Clone through
  git's environment, neither ever shows them).
- :func:`tool_reason` picks the lines worth showing of what a tool (git,
  pip, python) said when it failed.
- :func:`swap_tree` puts a tree built in a work directory (a clone, a venv)
  in place of what is at its path.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
import urllib.parse
from collections.abc import Collection

from executor.redact import mask_url

#: What to do about a password that breaks the URL's syntax.
CREDENTIALS_HINT = "percent-encode / # ? @ in the password (%2F, %23, %3F, %40)"
UNSEPARABLE = "cannot tell its user name and password from its host"


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`url` without its user name and password, and those two
    (percent-decoded; None when absent). A URL without them comes back as
    it is, and so does the rest of a URL with them (no normalising).

    Raises ValueError, with a message that shows no secret, when the URL
    cannot be parsed. A password with an unencoded ``/``, ``#`` or ``?``
    ends the host part early: ``https://user:ab/cd@host`` reads as host
    ``user`` with port ``ab``, which is refused; ``https://user:12/cd@host``
    though is a valid URL (host ``user``, port 12, an "@" in its path) and
    comes back as it is, like ``https://host/@scope/pkg``. (A caller for
    whom an "@" in the path cannot be right checks
    ``mask_url(url) != url``.) A password with an unencoded ``@`` is fine:
    the host follows the last one.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        if mask_url(url) != url:
            # N.B. not urllib's message: it quotes the "port", which is then
            # a piece of the password.
            raise ValueError(UNSEPARABLE) from None
        raise ValueError(str(exc)) from None
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    start = url.index("//") + 2
    bare = url[:start] + host + url[start + len(parts.netloc) :]
    user, colon, password = userinfo.partition(":")
    return (
        bare,
        urllib.parse.unquote(user),
        urllib.parse.unquote(password) if colon else None,
    )


def tool_reason(output: str, lines: int) -> str:
    """What a tool said went wrong, on one line, credentials in URLs
    hidden: its first error lines (``fatal:``, ``error:``, ``ERROR:``),
    else its last lines."""
    said = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in said if line.lower().startswith(("error:", "fatal:"))]
    return mask_url(" | ".join(errors[:lines] if errors else said[-lines:]))


def swap_tree(work: str, path: str, *, last: str, replace: Collection[str] | None = None) -> None:
    """Put the tree built in `work` at `path`; `work` is gone afterwards.

    With nothing at `path`, `work` is renamed there. An existing directory
    (the workdir, say) keeps its inode, as processes may be in it: its
    entries the new tree has, and those named in `replace` (all of them
    when None), are moved out of the way, then the new tree's entries are
    moved in, `last` last: the entry that makes the tree look complete
    (``.git``, ``bin``), so an interrupted swap never leaves a half tree
    that looks whole. What is moved out of the way goes into `work` and is
    removed with it, so a killed run leaves it where the next run's
    :func:`executor.fs.make_work_directory` removes it.
    """
    if not os.path.lexists(path):
        os.rename(work, path)
        return
    trash = tempfile.mkdtemp(prefix=".consign-old.", dir=work)
    new = sorted(
        (entry for entry in os.listdir(work) if entry != posixpath.basename(trash)),
        key=lambda entry: (entry == last, entry),
    )
    old = set(os.listdir(path) if replace is None else replace).union(new)
    for entry in sorted(old):
        if os.path.lexists(posixpath.join(path, entry)):
            os.rename(posixpath.join(path, entry), posixpath.join(trash, entry))
    for entry in new:
        os.rename(posixpath.join(work, entry), posixpath.join(path, entry))
    shutil.rmtree(work, ignore_errors=True)
