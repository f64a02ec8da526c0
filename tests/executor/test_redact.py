"""Hiding secrets in what a run shows (executor.redact)."""

from __future__ import annotations

import pytest

from executor.redact import mask_url, redact


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:secret@host/x.tgz", "https://user:***@host/x.tgz"),
        # Unencoded "/", "#", "?" or "@" in a password: still hidden whole.
        ("https://user:ab/cd+ef==@host/x.tgz", "https://user:***@host/x.tgz"),
        ("https://u:p@ss@host/x", "https://u:***@host/x"),
        ("https://u:a#b?c@host/x", "https://u:***@host/x"),
        # A lone user name over http(s)/ftp(s) is a token; over ssh it is not.
        ("https://TOKEN@host/x", "https://***@host/x"),
        ("ssh://git@github.com/a/b", "ssh://git@github.com/a/b"),
        ("git@github.com:a/b", "git@github.com:a/b"),
        # Every URL of a text, and nothing else of it.
        ("from https://u:pw@h/x and http://a:bb@c/d.", "from https://u:***@h/x and http://a:***@c/d."),
        ("https://host/path", "https://host/path"),
        # An "@" in the path is no credential.
        ("https://registry.npmjs.org/@scope/pkg.tgz", "https://registry.npmjs.org/@scope/pkg.tgz"),
        # ... but after a port it cannot be told from "user:12/34@host": masked.
        ("https://host:8080/@scope/pkg", "https://host:***@scope/pkg"),
        ("no url at all", "no url at all"),
    ],
)
def test_mask_url_hides_credentials(text: str, shown: str) -> None:
    assert mask_url(text) == shown


def test_redact_replaces_every_secret_longest_first() -> None:
    text = "password=hunter2secret, prefix hunter2, again hunter2secret"
    assert redact(text, ["hunter2", "hunter2secret"]) == "password=***, prefix ***, again ***"


def test_redact_leaves_short_values_alone() -> None:
    # A one-character value would blank out every digit of the output.
    assert redact("exit 1 after 10s", ["1", "abc"]) == "exit 1 after 10s"
