"""The age format of the secrets blob: interoperable with the age tool and
pyrage both ways, deterministic by seed, and strict about damage."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest

from executor import age
from tests.keys import ssh_keypair

needs_age = pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is not installed")
SIZES = (0, 1, 65535, 65536, 65537, 200_000)
SEED = bytes(range(32))


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ssh_keypair(tmp_path_factory.mktemp("ssh") / "host")


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    identity = pyrage.x25519.Identity.generate()
    path = tmp_path_factory.mktemp("age") / "key.txt"
    path.write_text(f"# a comment\n{identity}\n")
    return path, str(identity.to_public())


def recipients(ssh_key: Path, age_key: tuple[Path, str]) -> list[tuple[str, Path]]:
    return [(ssh_key.with_suffix(".pub").read_text(), ssh_key), (age_key[1], age_key[0])]


@needs_age
@pytest.mark.parametrize("size", SIZES)
def test_the_age_tool_reads_what_we_write_and_we_read_what_it_writes(
    size: int, ssh_key: Path, age_key: tuple[Path, str]
) -> None:
    plaintext = bytes(i % 251 for i in range(size))
    for text, identity in recipients(ssh_key, age_key):
        recipient = age.Recipient.parse(text)
        ciphertext = age.encrypt(plaintext, recipient, SEED)
        completed = subprocess.run(["age", "-d", "-i", str(identity)], input=ciphertext, capture_output=True, check=False)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout == plaintext
        theirs = subprocess.run(["age", "-r", text.strip()], input=plaintext, capture_output=True, check=True).stdout
        keys = age.read_identities(identity.read_bytes())
        assert age.decrypt(theirs, keys) == plaintext
        assert age.decrypt(ciphertext, keys) == plaintext


def test_pyrage_interoperates(ssh_key: Path, age_key: tuple[Path, str]) -> None:
    public = ssh_key.with_suffix(".pub").read_text().strip()
    theirs = pyrage.encrypt(b"from pyrage", [pyrage.ssh.Recipient.from_str(public)])
    assert age.decrypt(theirs, age.read_identities(ssh_key.read_bytes())) == b"from pyrage"
    ours = age.encrypt(b"to pyrage", age.Recipient.parse(age_key[1]), SEED)
    identity = pyrage.x25519.Identity.from_str(age_key[0].read_text().splitlines()[1])
    assert pyrage.decrypt(ours, [identity]) == b"to pyrage"


def test_equal_seeds_give_equal_bytes_other_seeds_other_bytes(ssh_key: Path) -> None:
    recipient = age.Recipient.parse(ssh_key.with_suffix(".pub").read_text())
    one = age.encrypt(b"secret", recipient, SEED)
    assert age.encrypt(b"secret", recipient, SEED) == one
    assert age.encrypt(b"secret", recipient, bytes(32)) != one
    with pytest.raises(ValueError, match="at least 32 bytes"):
        age.encrypt(b"secret", recipient, b"short")


def test_another_key_does_not_match(ssh_key: Path, age_key: tuple[Path, str], tmp_path: Path) -> None:
    other = ssh_keypair(tmp_path / "other")
    ciphertext = age.encrypt(b"secret", age.Recipient.parse(ssh_key.with_suffix(".pub").read_text()), SEED)
    with pytest.raises(age.NoIdentityMatches):
        age.decrypt(ciphertext, age.read_identities(other.read_bytes()))
    with pytest.raises(age.NoIdentityMatches):
        age.decrypt(ciphertext, age.read_identities(age_key[0].read_bytes()))
    tag = age.recipient_kinds(ciphertext)
    assert len(tag) == 1 and tag[0].startswith("ssh-ed25519 key tagged ")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d[:-1], "payload was changed or truncated"),
        (lambda d: d + b"x", "payload was changed or truncated"),
        (lambda d: d.replace(b"age-encryption.org/v1", b"age-encryption.org/v2"), "not an age file"),
        (lambda d: d.replace(b"\n--- ", b"\n---"), "MAC line is malformed"),
        (lambda d: d[:30], "truncated or too long"),
    ],
)
def test_damage_is_refused(ssh_key: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    keys = age.read_identities(ssh_key.read_bytes())
    ciphertext = age.encrypt(b"x" * 70_000, age.Recipient.parse(ssh_key.with_suffix(".pub").read_text()), SEED)
    with pytest.raises(age.AgeError, match=message):
        age.decrypt(change(ciphertext), keys)


def test_a_changed_header_fails_its_mac(ssh_key: Path) -> None:
    keys = age.read_identities(ssh_key.read_bytes())
    ciphertext = age.encrypt(b"x", age.Recipient.parse(ssh_key.with_suffix(".pub").read_text()), SEED)
    header_end = ciphertext.index(b"\n--- ")
    # A grease stanza added: the file key still unwraps, the MAC does not match.
    changed = ciphertext[:header_end] + b"\n-> grease\n" + ciphertext[header_end:]
    with pytest.raises(age.AgeError, match="MAC does not match"):
        age.decrypt(changed, keys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"found '\(empty\)'"),
        ("ssh-rsa AAAAB3NzaC1yc2E", "found 'ssh-rsa'"),
        ("age1qqqq", "the age key"),
        ("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8q", "bad checksum"),
        ("ssh-ed25519 !!!", "ssh-ed25519 key is invalid"),
    ],
)
def test_bad_recipients(text: str, message: str) -> None:
    with pytest.raises(age.AgeError, match=message):
        age.Recipient.parse(text)


def test_bad_identity_files(tmp_path: Path) -> None:
    with pytest.raises(age.AgeError, match="expected an OpenSSH private key or AGE-SECRET-KEY-1"):
        age.read_identities(b"hello\n")
    with pytest.raises(age.AgeError, match="holds no key"):
        age.read_identities(b"# only a comment\n")
    encrypted = ssh_keypair(tmp_path / "encrypted", passphrase="pass")
    with pytest.raises(age.AgeError, match="it is encrypted"):
        age.read_identities(encrypted.read_bytes())
    rsa = ssh_keypair(tmp_path / "rsa", kind="rsa")
    with pytest.raises(age.AgeError, match="not an ed25519 key"):
        age.read_identities(rsa.read_bytes())


def test_one_seed_for_two_plaintexts_gives_two_file_keys(ssh_key: Path) -> None:
    recipient = age.Recipient.parse(ssh_key.with_suffix(".pub").read_text())
    one, two = (age.encrypt(text, recipient, SEED) for text in (b"one", b"two"))
    # The stanza (ephemeral share and wrapped file key) differs, not only the payload.
    assert one.split(b"\n")[1] != two.split(b"\n")[1]


def test_the_tag_in_messages_is_the_one_in_the_header(ssh_key: Path) -> None:
    ciphertext = age.encrypt(b"x", age.Recipient.parse(ssh_key.with_suffix(".pub").read_text()), SEED)
    stanza = ciphertext.split(b"\n")[1].split(b" ")
    assert age.recipient_kinds(ciphertext) == [f"ssh-ed25519 key tagged {stanza[2].decode()}"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # The same share, padded: age refuses padding.
        (lambda header: header.replace(b"X25519 ", b"X25519 =", 1), "padding or spaces"),
        # Body of exactly 64 columns without the final empty line: truncated.
        (lambda header: header + b"A" * 64 + b"\n", "neither a stanza nor the MAC"),
    ],
)
def test_malformed_headers_are_refused(age_key: tuple[Path, str], change, message: str) -> None:  # type: ignore[no-untyped-def]
    ciphertext = age.encrypt(b"x", age.Recipient.parse(age_key[1]), SEED)
    header, rest = ciphertext.split(b"\n---", 1)
    lines = header.split(b"\n")
    changed = change(b"\n".join(lines[:2])) + b"\n" + b"\n".join(lines[2:]) + b"\n---" + rest
    with pytest.raises(age.AgeError, match=message):
        age.decrypt(changed, age.read_identities(age_key[0].read_bytes()))


def test_an_empty_last_chunk_after_a_full_one_is_refused(age_key: tuple[Path, str]) -> None:
    keys = age.read_identities(age_key[0].read_bytes())
    ciphertext = age.encrypt(b"y" * age.CHUNK, age.Recipient.parse(age_key[1]), SEED)
    # A reader that saw a full chunk marked last is fine; one more empty chunk is not.
    assert age.decrypt(ciphertext, keys) == b"y" * age.CHUNK
    with pytest.raises(age.AgeError):
        age.decrypt(ciphertext + bytes(age.TAG), keys)
