"""SSHSIG signatures and allowed_signers files, read as OpenSSH reads them."""

from __future__ import annotations

import base64
import calendar
import datetime
import hashlib
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from executor.sshsig import (
    NAMESPACE,
    AllowedSigner,
    PublicKey,
    Signature,
    SignatureFormatError,
    Trust,
    TrustFileError,
    parse_allowed_signers,
    parse_revoked_keys,
    signed_data,
    verify,
)

MESSAGE = b"manifest bytes \x00\xff\n"


def ssh_keygen(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh-keygen", *args], input=stdin, capture_output=True, timeout=30)


@dataclass(frozen=True)
class SshKey:
    """A key pair made by ssh-keygen itself."""

    path: Path
    public: PublicKey
    line: str  # "ssh-ed25519 AAAA... comment"

    def sign(self, message: bytes, namespace: str = NAMESPACE, *options: str) -> Signature:
        directory = self.path.parent
        data = directory / "message"
        data.write_bytes(message)
        signature_path = directory / "message.sig"
        signature_path.unlink(missing_ok=True)
        result = ssh_keygen("-Y", "sign", "-f", str(self.path), "-n", namespace, *options, str(data))
        assert result.returncode == 0, result.stderr
        return Signature.from_armored(signature_path.read_text())


def make_key(directory: Path, name: str = "key") -> SshKey:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    result = ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", f"{name} comment", "-f", str(path))
    assert result.returncode == 0, result.stderr
    line = (directory / f"{name}.pub").read_text().strip()
    return SshKey(path, PublicKey.from_openssh(line), line)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[SshKey, SshKey]:
    root = tmp_path_factory.mktemp("sshsig")
    return make_key(root / "a", "alice"), make_key(root / "b", "bob")


# -- keys and signatures -------------------------------------------------------


def test_a_public_key_reads_and_prints_as_openssh_does(keys: tuple[SshKey, SshKey]) -> None:
    key = keys[0]
    listed = ssh_keygen("-l", "-f", f"{key.path}.pub").stdout.decode().split()

    assert key.public.openssh() == " ".join(key.line.split()[:2])
    assert key.public.fingerprint() == listed[1]
    assert PublicKey.from_blob(key.public.blob) == key.public


def test_signatures_made_by_ssh_keygen_verify(keys: tuple[SshKey, SshKey]) -> None:
    for options in ((), ("-O", "hashalg=sha256")):
        signature = keys[0].sign(MESSAGE, NAMESPACE, *options)

        assert signature.key == keys[0].public
        assert signature.hash_algorithm == ("sha256" if options else "sha512")
        assert verify(signature, MESSAGE)
        assert not verify(signature, MESSAGE + b"x")
        assert not verify(signature, MESSAGE, namespace="git")


def test_a_signature_for_another_namespace_verifies_only_there(keys: tuple[SshKey, SshKey]) -> None:
    signature = keys[0].sign(MESSAGE, "git")

    assert signature.namespace == "git"
    assert not verify(signature, MESSAGE)
    assert verify(signature, MESSAGE, namespace="git")


def test_armored_signatures_round_trip(keys: tuple[SshKey, SshKey]) -> None:
    signature = keys[0].sign(MESSAGE)
    text = signature.armored()
    lines = text.splitlines()

    assert Signature.from_armored(text) == signature
    assert Signature.decode(signature.encode()) == signature
    assert lines[0] == "-----BEGIN SSH SIGNATURE-----"
    assert lines[-1] == "-----END SSH SIGNATURE-----"
    assert all(len(line) <= 70 for line in lines[1:-1])
    # What ssh-keygen wrote is what we write.
    assert text == (keys[0].path.parent / "message.sig").read_text()


def test_signed_data_is_what_protocol_sshsig_says() -> None:
    assert signed_data(MESSAGE) == (
        b"SSHSIG" + _string(b"consign-bundle") + _string(b"") + _string(b"sha512")
        + _string(hashlib.sha512(MESSAGE).digest())
    )  # fmt: skip


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _blob(
    *,
    magic: bytes = b"SSHSIG",
    version: int = 1,
    key: bytes | None = None,
    sig_type: bytes = b"ssh-ed25519",
    sig: bytes = b"\1" * 64,
    tail: bytes = b"",
) -> bytes:
    key = _string(_string(b"ssh-ed25519") + _string(b"\2" * 32)) if key is None else key
    return (
        magic + struct.pack(">I", version) + key + _string(NAMESPACE.encode()) + _string(b"")
        + _string(b"sha512") + _string(_string(sig_type) + _string(sig)) + tail
    )  # fmt: skip


BAD_SIGNATURES: dict[str, tuple[bytes, str]] = {
    "too large": (b"\0" * 4097, "4097 bytes is too large for a signature"),
    "no magic": (_blob(magic=b"SSHSIX"), "missing the SSHSIG magic"),
    "version 2": (_blob(version=2), "SSHSIG version 2 is not supported"),
    "an RSA key": (
        _blob(key=_string(_string(b"ssh-rsa") + _string(b"\1" * 32))),
        "key type 'ssh-rsa' is not ssh-ed25519",
    ),
    "a short key": (
        _blob(key=_string(_string(b"ssh-ed25519") + _string(b"\1" * 31))),
        "an ed25519 key has 32 bytes",
    ),
    "an RSA signature": (_blob(sig_type=b"rsa-sha2-512"), "signature type b'rsa-sha2-512' is not ssh-ed25519"),
    "a short signature": (_blob(sig=b"\1" * 63), "an ed25519 signature has 64 bytes"),
    "trailing bytes": (_blob(tail=b"\0"), "1 bytes of trailing data"),
    "cut short": (_blob()[:40], "truncated"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_SIGNATURES, ids=list(BAD_SIGNATURES))
def test_a_malformed_signature_blob_is_refused(case: str) -> None:
    data, message = BAD_SIGNATURES[case]

    with pytest.raises(SignatureFormatError) as caught:
        Signature.decode(data)

    assert str(caught.value) == message


def test_armor_that_is_not_a_signature_is_refused(keys: tuple[SshKey, SshKey]) -> None:
    with pytest.raises(SignatureFormatError, match="^not an armored SSH signature$"):
        Signature.from_armored("-----BEGIN SSH SIGNATURE-----\n")
    with pytest.raises(SignatureFormatError, match="^the armored signature is not valid base64$"):
        Signature.from_armored("-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----\n")


# -- allowed_signers -------------------------------------------------------------


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwf1r7dPmUiGrYYC3X9D2pU+9bg1V6nJfbpsl2rX0ng"
KEY_RAW = base64.b64decode(KEY.split()[1])[-32:]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return calendar.timegm(datetime.datetime(year, month, day, hour, minute, second).timetuple())


# A zone east of UTC by a quarter-hour offset: local times read as UTC, or
# the offset applied the wrong way, or rounded to the hour, all show. POSIX
# form, so that no time zone database is needed.
ZONE = "NPT-05:45"
# 2024-01-01 00:00:00 in ZONE.
LOCAL_2024 = utc(2023, 12, 31, 18, 15)


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is ZONE, for consign and for the ssh-keygen it runs."""
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@dataclass(frozen=True)
class Line:
    """An allowed_signers line ({key} for the key) and what it means."""

    text: str
    principals: tuple[str, ...] = ("builder",)
    namespaces: tuple[str, ...] | None = None
    valid_after: int | None = None
    valid_before: int | None = None

    def moments(self) -> list[int]:
        """Seconds either side of each bound; now when there is none."""
        if self.valid_after is None and self.valid_before is None:
            return [int(time.time())]
        moments = []
        if self.valid_after is not None:
            moments += [self.valid_after - 1, self.valid_after]
        if self.valid_before is not None:
            moments += [self.valid_before, self.valid_before + 1]
        return moments


GOOD_LINES: dict[str, Line] = {
    "plain": Line("builder {key}"),
    "a comment after the key": Line("builder {key} ci key 2024"),
    "a principals list": Line("alice@example.com,bob {key}", ("alice@example.com", "bob")),
    "quoted principals": Line('"alice,bob" {key}', ("alice", "bob")),
    "namespaces with a comma inside quotes": Line(
        'builder namespaces="consign-bundle,git" {key}', namespaces=("consign-bundle", "git")
    ),
    "option names in any case": Line('builder NAMESPACES="consign-*" {key}', namespaces=("consign-*",)),
    "a date in UTC and a local one": Line(
        'builder valid-after="20240101",valid-before="20250101Z" {key}',
        valid_after=LOCAL_2024,
        valid_before=utc(2025, 1, 1),
    ),
    "a local time with minutes and seconds": Line(
        'builder valid-before="20240101001530" {key}', valid_before=LOCAL_2024 + 15 * 60 + 30
    ),
    "minutes": Line('builder valid-after="202401011230Z" {key}', valid_after=utc(2024, 1, 1, 12, 30)),
    "seconds, and a lowercase z": Line(
        'builder valid-before="20240101123045z" {key}', valid_before=utc(2024, 1, 1, 12, 30, 45)
    ),
    "all options": Line(
        'builder namespaces="consign-bundle",valid-after="20240101000000Z",'
        'valid-before="20260101Z" {key}',
        namespaces=("consign-bundle",),
        valid_after=utc(2024, 1, 1),
        valid_before=utc(2026, 1, 1),
    ),
}


@pytest.mark.parametrize("case", GOOD_LINES, ids=list(GOOD_LINES))
def test_allowed_signers_lines_are_read_as_ssh_keygen_reads_them(
    keys: tuple[SshKey, SshKey], tmp_path: Path, local_zone: None, case: str
) -> None:
    spec, key = GOOD_LINES[case], keys[0]
    line = spec.text.format(key=key.public.openssh())
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(line + "\n")
    armored = tmp_path / "sig"
    armored.write_text(key.sign(MESSAGE).armored())

    entries, notes = parse_allowed_signers(line + "\n")

    assert entries == [
        AllowedSigner(
            spec.principals, key.public, spec.namespaces, spec.valid_after, spec.valid_before, line=1
        )
    ]
    assert notes == []
    for principal in spec.principals:
        for moment in spec.moments():
            theirs = ssh_keygen(
                "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", NAMESPACE,
                "-s", str(armored), "-Overify-time=" + time.strftime("%Y%m%d%H%M%SZ", time.gmtime(moment)),
                stdin=MESSAGE,
            )  # fmt: skip
            ours = entries[0].refusal(NAMESPACE, moment)
            assert (ours is None) == (theirs.returncode == 0), (principal, moment, ours, theirs.stderr)
    if spec.valid_after is not None or spec.valid_before is not None:
        # Each bound was tested from both sides: once in, once out.
        outcomes = {entries[0].refusal(NAMESPACE, moment) is None for moment in spec.moments()}
        assert outcomes == {True, False}


def test_comments_and_blank_lines_are_skipped_and_lines_keep_their_numbers() -> None:
    text = f"# trusted builders\n\n   \nbuilder {KEY}\n  # old key\nops {KEY}\n"

    entries, notes = parse_allowed_signers(text)

    assert [(e.principals, e.line) for e in entries] == [(("builder",), 4), (("ops",), 6)]
    assert notes == []


def test_certificate_authorities_and_other_key_types_are_skipped_with_a_note() -> None:
    rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"
    ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY="
    text = f"*@example.com cert-authority {KEY}\nold {rsa}\nold2 {ecdsa}\nbuilder {KEY}\n"

    entries, notes = parse_allowed_signers(text)

    assert [e.line for e in entries] == [4]
    assert notes == [
        "line 1: skipped (a certificate authority; consign trusts plain ssh-ed25519 keys, "
        "not certificates)",
        "line 2: skipped (ssh-rsa keys do not sign bundles; only ssh-ed25519)",
        "line 3: skipped (ecdsa-sha2-nistp256 keys do not sign bundles; only ssh-ed25519)",
    ]


RSA_BLOB_KEY = "ssh-ed25519 " + base64.b64encode(_string(b"ssh-rsa") + _string(b"\1" * 32)).decode()

BAD_LINES: dict[str, tuple[str, str]] = {
    "a principal only": ("builder", "line 1: expected 'principals [options] key-type key'"),
    "no key": ("builder ssh-ed25519", "line 1: expected 'principals [options] key-type key'"),
    "options but no key": (
        'builder namespaces="x" ssh-ed25519',
        "line 1: missing key type or key",
    ),
    "a key that is no base64": ("builder ssh-ed25519 !!!!", "line 1: the key is not valid base64"),
    "a key cut short": ("builder ssh-ed25519 AAAA", "line 1: truncated"),
    "a key of another type inside": (
        f"builder {RSA_BLOB_KEY}",
        "line 1: key type 'ssh-rsa' is not ssh-ed25519",
    ),
    "an unknown option": (f'builder foo="x" {KEY}', "line 1: unknown option 'foo'"),
    "an unquoted value": (
        f"builder valid-before=20240101 {KEY}",
        "line 1: the value of 'valid-before' must be in double quotes (valid-before=\"...\")",
    ),
    "an option twice": (
        f'builder namespaces="a",namespaces="consign-bundle" {KEY}',
        "line 1: option 'namespaces' appears twice",
    ),
    "a short time": (
        f'builder valid-after="2024" {KEY}',
        "line 1: valid-after: time '2024' is not YYYYMMDD[HHMM[SS]][Z]",
    ),
    "ten digits": (
        f'builder valid-after="2024010100" {KEY}',
        "line 1: valid-after: time '2024010100' is not YYYYMMDD[HHMM[SS]][Z]",
    ),
    "month 13": (
        f'builder valid-before="20241301" {KEY}',
        "line 1: valid-before: time '20241301' is not a valid date and time",
    ),
    "minute 60": (
        f'builder valid-before="202401011260" {KEY}',
        "line 1: valid-before: time '202401011260' is not a valid date and time",
    ),
    "not digits": (
        f'builder valid-before="2024-01-01" {KEY}',
        "line 1: valid-before: time '2024-01-01' is not YYYYMMDD[HHMM[SS]][Z]",
    ),
}


@pytest.mark.parametrize("case", BAD_LINES, ids=list(BAD_LINES))
def test_a_bad_allowed_signers_line_is_an_error_naming_the_line(case: str) -> None:
    line, message = BAD_LINES[case]

    with pytest.raises(TrustFileError) as caught:
        parse_allowed_signers(line + "\n")

    assert str(caught.value) == message


def test_revoked_keys_are_public_keys_one_per_line() -> None:
    keys = parse_revoked_keys(f"# retired 2024\n\n{KEY} old builder\n")
    assert keys == {PublicKey(KEY_RAW)}

    with pytest.raises(TrustFileError, match="^line 2: the key is not valid base64$"):
        parse_revoked_keys(f"{KEY}\nssh-ed25519 ???\n")


# -- what a trusted signer may sign, and when ------------------------------------


NAMESPACE_PATTERNS = {
    "consign-bundle": True,
    "consign-*": True,
    "consign-bundl?": True,
    "*": True,
    "git,consign-bundle": True,
    "git": False,
    "consign-bundle-x": False,
    "*,!consign-bundle": False,
    "!git": False,
    "[c]onsign-bundle": False,
}


@pytest.mark.parametrize("patterns", NAMESPACE_PATTERNS)
def test_namespace_patterns_match_as_in_ssh_keygen(
    keys: tuple[SshKey, SshKey], tmp_path: Path, patterns: str
) -> None:
    key = keys[0]
    line = f'builder namespaces="{patterns}" {key.line}'
    [entry], _notes = parse_allowed_signers(line)
    signature = key.sign(MESSAGE)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(line + "\n")
    armored = tmp_path / "sig"
    armored.write_text(signature.armored())

    ours = entry.refusal(NAMESPACE, int(time.time()))
    theirs = ssh_keygen(
        "-Y", "verify", "-f", str(allowed), "-I", "builder", "-n", NAMESPACE, "-s", str(armored),
        stdin=MESSAGE,
    )  # fmt: skip

    assert (ours is None) == NAMESPACE_PATTERNS[patterns] == (theirs.returncode == 0)
    if ours is not None:
        assert ours == f"its namespaces ({patterns}) do not include consign-bundle"


WINDOW = 'builder valid-after="20240101000000Z",valid-before="20250101000000Z"'


@pytest.mark.parametrize(
    ("moment", "reason"),
    [
        ("20231231235959Z", "it is valid only after 2024-01-01 00:00:00 UTC"),
        ("20240101000000Z", None),
        ("20240601000000Z", None),
        ("20250101000000Z", None),  # the valid-before second itself, as in ssh-keygen
        ("20250101000001Z", "it was valid only until 2025-01-01 00:00:00 UTC"),
    ],
)
def test_validity_windows_hold_at_the_same_seconds_as_in_ssh_keygen(
    keys: tuple[SshKey, SshKey], tmp_path: Path, moment: str, reason: str | None
) -> None:
    key = keys[0]
    line = f"{WINDOW} {key.line}"
    [entry], _notes = parse_allowed_signers(line)
    now = calendar.timegm(time.strptime(moment, "%Y%m%d%H%M%SZ"))
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(line + "\n")
    armored = tmp_path / "sig"
    armored.write_text(key.sign(MESSAGE).armored())

    theirs = ssh_keygen(
        "-Y", "verify", "-f", str(allowed), "-I", "builder", "-n", NAMESPACE, "-s", str(armored),
        f"-Overify-time={moment}", stdin=MESSAGE,
    )  # fmt: skip

    assert entry.refusal(NAMESPACE, now) == reason
    assert (theirs.returncode == 0) == (reason is None), theirs.stderr


def _trust(text: str, revoked: set[PublicKey] | None = None) -> Trust:
    entries, _notes = parse_allowed_signers(text)
    return Trust(tuple(entries), frozenset(revoked or ()))


def test_trust_check_says_why_each_signature_is_refused(keys: tuple[SshKey, SshKey]) -> None:
    alice, bob = keys
    good = alice.sign(MESSAGE)
    other_namespace = alice.sign(MESSAGE, "git")
    stranger = bob.sign(MESSAGE)
    tampered = Signature(good.key, good.namespace, good.hash_algorithm, bytes(64))
    sha1 = Signature(good.key, good.namespace, "sha1", good.signature)
    fingerprint_a, fingerprint_b = alice.public.fingerprint(), bob.public.fingerprint()
    trust = _trust(f'builder valid-before="20200101Z" {alice.line}\n')

    signer, reasons = trust.check(
        [other_namespace, tampered, sha1, stranger, good], MESSAGE, int(time.time())
    )

    assert signer is None
    assert reasons == [
        f"{fingerprint_a}: signed for namespace 'git', not 'consign-bundle'",
        f"{fingerprint_a}: the signature does not match the manifest",
        f"{fingerprint_a}: the signature does not match the manifest",
        f"{fingerprint_b}: the key is not in the allowed signers",
        f"{fingerprint_a}: allowed signers line 1: it was valid only until 2020-01-01 00:00:00 UTC",
    ]


def test_a_revoked_key_is_refused_even_when_allowed(keys: tuple[SshKey, SshKey]) -> None:
    alice, _bob = keys
    trust = _trust(f"builder {alice.line}\n", revoked={alice.public})

    signer, reasons = trust.check([alice.sign(MESSAGE)], MESSAGE, int(time.time()))

    assert signer is None
    assert reasons == [f"{alice.public.fingerprint()}: the key is revoked"]


def test_any_one_good_signature_suffices_and_later_lines_of_a_key_count(
    keys: tuple[SshKey, SshKey],
) -> None:
    alice, bob = keys
    # Rotation: bob's old line has expired, a later one renews it.
    trust = _trust(
        f"alice {alice.line}\n"
        f'bob valid-before="20200101Z" {bob.line}\n'
        f'bob valid-after="20200101Z" {bob.line}\n'
    )

    signer, reasons = trust.check([bob.sign(MESSAGE)], MESSAGE, utc(2024, 6, 1))
    assert signer is not None and signer.line == 3
    assert reasons == [
        f"{bob.public.fingerprint()}: allowed signers line 2: "
        "it was valid only until 2020-01-01 00:00:00 UTC"
    ]

    signer, reasons = trust.check([alice.sign(MESSAGE, "git"), alice.sign(MESSAGE)], MESSAGE, 0)
    assert signer is not None and signer.principals == ("alice",)
    assert len(reasons) == 1
