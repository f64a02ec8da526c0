"""Opening a bundle's secrets with the host's identity (executor.sealed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import pytest

from executor import age
from executor.bundle import VerifiedBundle
from executor.errors import BundleError, SecretsKeyError
from executor.secrets import HostSecrets, encode_secrets
from executor.sealed import check_secrets, open_secrets, secret_values
from tests.keys import ssh_keypair


class FakeBundle:
    """What open_secrets uses of a verified bundle: its manifest's blob
    entries and read()."""

    def __init__(self, data: bytes | None) -> None:
        self.data = data
        self.manifest = self

    def blob(self, name: str) -> object | None:
        return None if self.data is None or name != "secrets" else object()

    def read(self, name: str, limit: int) -> bytes:
        assert name == "secrets" and self.data is not None
        return self.data


def bundle(data: bytes | None) -> VerifiedBundle:
    return cast(VerifiedBundle, FakeBundle(data))


@pytest.fixture(scope="module")
def host_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ssh_keypair(tmp_path_factory.mktemp("host") / "ssh_host_ed25519_key")


def sealed_for(key: Path, selection: HostSecrets) -> bytes:
    return age.encrypt(encode_secrets(selection), age.Recipient.parse(key.with_suffix(".pub").read_text()), os.urandom(32))


def test_a_bundle_without_secrets_needs_no_identity() -> None:
    assert open_secrets(bundle(None), ["/nonexistent"]) is None
    assert check_secrets(bundle(None), ["/nonexistent"]) is None


def test_the_host_key_opens_its_selection(host_key: Path) -> None:
    selection = HostSecrets(data=(("token", "tok-123456"),))
    plaintext = open_secrets(bundle(sealed_for(host_key, selection)), [str(host_key)])
    assert secret_values(plaintext) == {"tok-123456"}
    assert check_secrets(bundle(sealed_for(host_key, selection)), [str(host_key)]) == 1


def test_an_unreadable_identity_says_why_and_what_to_do(host_key: Path, tmp_path: Path) -> None:
    blob = sealed_for(host_key, HostSecrets(data=(("token", "tok-123456"),)))
    with pytest.raises(SecretsKeyError) as raised:
        open_secrets(bundle(blob), [str(tmp_path / "missing")])
    assert "missing cannot be read: No such file or directory" in raised.value.message
    assert "ssh-ed25519 key tagged" in raised.value.message
    assert raised.value.hint is not None and "--identity" in raised.value.hint
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    with pytest.raises(SecretsKeyError, match="the identity .*junk is unusable"):
        open_secrets(bundle(blob), [str(junk)])


def test_another_key_is_refused_naming_both_keys(host_key: Path, tmp_path: Path) -> None:
    other = ssh_keypair(tmp_path / "other")
    blob = sealed_for(host_key, HostSecrets(data=(("token", "tok-123456"),)))
    with pytest.raises(SecretsKeyError) as raised:
        open_secrets(bundle(blob), [str(other)])
    message = raised.value.message
    assert "cannot decrypt the bundle's secrets" in message
    assert f"{other}: ssh-ed25519 " in message


def test_a_blob_that_is_no_age_file_or_holds_no_selection_is_refused(host_key: Path) -> None:
    with pytest.raises(BundleError, match="is not an age file"):
        open_secrets(bundle(b"plain text"), [str(host_key)])
    wrong = age.encrypt(b"\x01", age.Recipient.parse(host_key.with_suffix(".pub").read_text()), os.urandom(32))
    with pytest.raises(BundleError, match="decrypted secrets are invalid"):
        secret_values(open_secrets(bundle(wrong), [str(host_key)]))
