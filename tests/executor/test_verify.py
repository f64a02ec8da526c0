"""accept_bundle: whether this host takes a bundle, decided before anything is touched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builder.signing import generate_key, read_public_key
from executor.apply import apply_bundle
from executor.bundle import read_envelope
from executor.errors import RefusedError, RollbackError, SignatureError, TrustError, WrongTargetError
from executor.sshsig import Signature
from executor.state import HostState, load_state, save_state
from executor.verify import Acceptance, VerifyOptions, accept_bundle
from tests.deployments import apply_options, build_bundles, deployment
from tests.keys import signing_key

APP = """
    from batou.component import Component
    from batou.lib.file import File

    class App(Component):
        def configure(self):
            self += File("app.conf", content="{{host.name}}\\n")
    """

PROD = """
    [environment]
    host_domain = example.com

    [host:web1]
    components = app

    [host:web2]
    components = app
    """

STAGING = """
    [environment]
    host_domain = staging.example.com

    [host:web1]
    components = app
    """


@dataclass(frozen=True)
class Built:
    """Bundles of one deployment, by name, built once for the module."""

    root: Path
    other_key: Path

    def __call__(self, name: str, host: str = "web1") -> Path:
        return self.root / name / f"{host}.bundle"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("verify")
    repo = deployment(
        root / "repo", components={"app": APP}, environments={"prod": PROD, "staging": STAGING}
    )
    other = root / "keys" / "other"
    generate_key(other, comment="")
    builds: dict[str, dict[str, Any]] = {
        "prod-100": {"environment": "prod", "serial": 100},
        "prod-200": {"environment": "prod", "serial": 200},
        "staging-300": {"environment": "staging", "serial": 300},
        "other-key": {"environment": "prod", "serial": 200, "sign_keys": (other,)},
        "both-keys": {"environment": "prod", "serial": 200, "sign_keys": (other, signing_key().private)},
    }
    for name, options in builds.items():
        environment = options.pop("environment")
        build_bundles(environment, repo, out=root / "out" / name, **options)
        shutil.copytree(root / "out" / name / environment, root / name)
    return Built(root, other)


def options(bundle: Path, tmp_path: Path, **kw: Any) -> VerifyOptions:
    kw.setdefault("host", "web1")
    kw.setdefault("trust_file", str(signing_key().trust))
    kw.setdefault("state_directory", str(tmp_path / "state"))
    return VerifyOptions(bundle=str(bundle), **kw)


def refused(bundle: Path, tmp_path: Path, *, keep_state: bool = False, **kw: Any) -> RefusedError:
    """The refusal; unless the test made a state, none appears."""
    with pytest.raises(RefusedError) as caught:
        accept_bundle(options(bundle, tmp_path, **kw))
    assert keep_state or not (tmp_path / "state").exists()
    return caught.value


def fingerprint(key: Path) -> str:
    return read_public_key(key).fingerprint()


def trust_file(tmp_path: Path, text: str, name: str = "allowed_signers", mode: int = 0o644) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


TEST_KEY_LINE = signing_key().trust.read_text().strip()


# -- accepted ------------------------------------------------------------------


def test_a_bundle_signed_by_a_trusted_key_for_this_host_is_accepted(built: Built, tmp_path: Path) -> None:
    acceptance = accept_bundle(options(built("prod-200"), tmp_path))

    assert isinstance(acceptance, Acceptance)
    assert acceptance.bundle.manifest.host == "web1"
    assert acceptance.bundle.manifest.serial == 200
    assert acceptance.bundle.signer.principals == ("builder",)
    assert acceptance.bundle.signer.key.fingerprint() == fingerprint(signing_key().private)
    assert acceptance.state == HostState()
    assert acceptance.downgrade_from is None
    assert acceptance.notes == ()
    # Checking touches nothing: no state directory appears.
    assert not (tmp_path / "state").exists()


def test_the_fqdn_names_the_host_too(built: Built, tmp_path: Path) -> None:
    acceptance = accept_bundle(options(built("prod-200"), tmp_path, host="web1.example.com"))

    assert acceptance.bundle.manifest.fqdn == "web1.example.com"


def test_one_trusted_signature_among_others_suffices(built: Built, tmp_path: Path) -> None:
    acceptance = accept_bundle(options(built("both-keys"), tmp_path))

    assert len(acceptance.bundle.envelope.signatures) == 2
    assert acceptance.bundle.signer.key.fingerprint() == fingerprint(signing_key().private)


# -- signatures and trust ------------------------------------------------------


def test_a_bundle_signed_by_an_untrusted_key_is_refused(built: Built, tmp_path: Path) -> None:
    error = refused(built("other-key"), tmp_path)

    assert isinstance(error, SignatureError)
    assert error.message == (
        f"{built('other-key')} has no signature this host trusts: "
        f"{fingerprint(built.other_key)}: the key is not in the allowed signers"
    )


def test_a_bundle_signed_by_a_revoked_key_is_refused(built: Built, tmp_path: Path) -> None:
    revoked = trust_file(tmp_path, read_public_key(signing_key().private).openssh() + "\n", "revoked")

    error = refused(built("prod-200"), tmp_path, revoked_file=str(revoked))

    assert isinstance(error, SignatureError)
    assert error.message == (
        f"{built('prod-200')} has no signature this host trusts: "
        f"{fingerprint(signing_key().private)}: the key is revoked"
    )


@pytest.mark.parametrize(
    ("window", "now", "reason", "inside"),
    [
        ('valid-before="20200101Z"', 1_600_000_000,
         "it was valid only until 2020-01-01 00:00:00 UTC", 1_500_000_000),
        ('valid-after="20300101Z"', 1_600_000_000,
         "it is valid only after 2030-01-01 00:00:00 UTC", 1_900_000_000),
        ('valid-after="20200101Z",valid-before="20210101Z"', 1_500_000_000,
         "it is valid only after 2020-01-01 00:00:00 UTC", 1_590_000_000),
    ],
)  # fmt: skip
def test_a_key_outside_its_validity_window_is_refused(
    built: Built, tmp_path: Path, window: str, now: int, reason: str, inside: int
) -> None:
    key = read_public_key(signing_key().private).openssh()
    trust = trust_file(tmp_path, f'builder namespaces="consign-bundle",{window} {key}\n')

    error = refused(built("prod-200"), tmp_path, trust_file=str(trust), now=now)

    assert error.message == (
        f"{built('prod-200')} has no signature this host trusts: "
        f"{fingerprint(signing_key().private)}: allowed signers line 1: {reason}"
    )
    # Within the window the same bundle is accepted.
    accept_bundle(options(built("prod-200"), tmp_path, trust_file=str(trust), now=inside))


def test_a_signature_for_another_namespace_is_refused(built: Built, tmp_path: Path) -> None:
    bundle = built("prod-200")
    envelope = read_envelope(str(bundle))
    key = tmp_path / "builder"
    shutil.copy(signing_key().private, key)
    manifest = tmp_path / "manifest"
    manifest.write_bytes(envelope.manifest_bytes)
    signed = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", "git", str(manifest)],
        capture_output=True,
        timeout=30,
    )
    assert signed.returncode == 0, signed.stderr
    entry = Signature.from_armored((tmp_path / "manifest.sig").read_text()).encode()
    data = bundle.read_bytes()
    m = len(envelope.manifest_bytes)
    block = len(entry).to_bytes(4, "big") + entry
    spliced = data[: 14 + m] + len(block).to_bytes(4, "big") + block + data[envelope.blobs_offset :]
    path = tmp_path / "web1.bundle"
    path.write_bytes(spliced)

    error = refused(path, tmp_path)

    assert error.message == (
        f"{path} has no signature this host trusts: {fingerprint(signing_key().private)}: "
        "signed for namespace 'git', not 'consign-bundle'"
    )


def test_a_key_whose_line_excludes_the_namespace_is_refused(built: Built, tmp_path: Path) -> None:
    key = read_public_key(signing_key().private).openssh()
    trust = trust_file(tmp_path, f'builder namespaces="git,file" {key}\n')

    error = refused(built("prod-200"), tmp_path, trust_file=str(trust))

    assert error.message.endswith(
        "allowed signers line 1: its namespaces (git,file) do not include consign-bundle"
    )


BAD_TRUST: dict[str, tuple[str | None, int, str]] = {
    "missing": (None, 0o644, "there is no allowed signers file at {path}"),
    "group-writable": (TEST_KEY_LINE, 0o664, "the allowed signers file {path} is writable by others (mode 664)"),
    "world-writable": (TEST_KEY_LINE, 0o646, "the allowed signers file {path} is writable by others (mode 646)"),
    "naming no key": ("# nobody yet\n", 0o644, "{path} names no ed25519 key, so no bundle can be trusted"),
    "naming only an RSA key": (
        "builder ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7\n", 0o644,
        "{path} names no ed25519 key, so no bundle can be trusted",
    ),
    "a bad line": ("builder ssh-ed25519\n", 0o644, "{path}: line 1: expected 'principals [options] key-type key'"),
    "not UTF-8": ("\udcff", 0o644, "the allowed signers file {path} is not UTF-8 text"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_TRUST, ids=list(BAD_TRUST))
def test_a_trust_file_that_cannot_be_used_refuses_every_bundle(
    built: Built, tmp_path: Path, case: str
) -> None:
    text, mode, message = BAD_TRUST[case]
    path = tmp_path / "allowed_signers"
    if text is not None:
        path.write_bytes(text.encode("utf-8", errors="surrogateescape"))
        path.chmod(mode)

    error = refused(built("prod-200"), tmp_path, trust_file=str(path))

    assert isinstance(error, TrustError)
    assert error.message == message.format(path=path)


def test_a_trust_file_owned_by_another_user_is_refused(built: Built, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file away")
    path = trust_file(tmp_path, TEST_KEY_LINE + "\n")
    os.chown(path, 12345, 12345)

    error = refused(built("prod-200"), tmp_path, trust_file=str(path))

    assert error.message == f"the allowed signers file {path} belongs to uid 12345, not to root"


def test_a_trust_file_that_is_no_regular_file_is_refused(built: Built, tmp_path: Path) -> None:
    fifo = tmp_path / "allowed_signers"
    os.mkfifo(fifo)

    error = refused(built("prod-200"), tmp_path, trust_file=str(fifo))

    assert error.message == f"the allowed signers file {fifo} is not a regular file"


def test_skipped_trust_lines_come_back_as_notes(built: Built, tmp_path: Path) -> None:
    path = trust_file(tmp_path, f"old ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7\n{TEST_KEY_LINE}\n")

    acceptance = accept_bundle(options(built("prod-200"), tmp_path, trust_file=str(path)))

    assert acceptance.notes == (
        f"{path} line 1: skipped (ssh-rsa keys do not sign bundles; only ssh-ed25519)",
    )


def test_a_revoked_keys_file_is_held_to_the_same_rules(built: Built, tmp_path: Path) -> None:
    revoked = trust_file(tmp_path, "ssh-ed25519 ???\n", "revoked", mode=0o644)
    error = refused(built("prod-200"), tmp_path, revoked_file=str(revoked))
    assert error.message == f"{revoked}: line 1: the key is not valid base64"

    revoked.chmod(0o666)
    error = refused(built("prod-200"), tmp_path, revoked_file=str(revoked))
    assert error.message == f"the revoked keys file {revoked} is writable by others (mode 666)"


# -- target ----------------------------------------------------------------------


def test_a_bundle_for_another_host_is_refused(built: Built, tmp_path: Path) -> None:
    error = refused(built("prod-200", "web2"), tmp_path)

    assert isinstance(error, WrongTargetError)
    assert error.message == (
        "this bundle is for host 'web2' (web2.example.com), but this host is 'web1'"
    )


def test_without_host_the_machine_s_name_is_used(built: Built, tmp_path: Path) -> None:
    error = refused(built("prod-200"), tmp_path, host=None)

    assert error.message == (
        f"this bundle is for host 'web1' (web1.example.com), but this host is {socket.gethostname()!r}"
    )


def test_the_host_remembers_its_environment(built: Built, tmp_path: Path) -> None:
    save_state(str(tmp_path / "state"), HostState("prod", 200, "a" * 64))

    error = refused(built("staging-300"), tmp_path, keep_state=True)

    assert isinstance(error, WrongTargetError)
    assert error.message == (
        "this bundle is for environment 'staging', but this host belongs to 'prod'"
    )
    assert error.hint is not None and "--environment staging" in error.hint


def test_the_environment_option_moves_the_host(built: Built, tmp_path: Path) -> None:
    save_state(str(tmp_path / "state"), HostState("prod", 200, "a" * 64))

    acceptance = accept_bundle(options(built("staging-300"), tmp_path, environment="staging"))

    assert acceptance.bundle.manifest.environment == "staging"
    error = refused(built("prod-200"), tmp_path, environment="staging", keep_state=True)
    assert error.message == (
        "this bundle is for environment 'prod', but this host belongs to 'staging'"
    )


def test_a_new_host_takes_the_environment_of_its_first_bundle(built: Built, tmp_path: Path) -> None:
    assert accept_bundle(options(built("staging-300"), tmp_path)).state.environment is None

    result = apply_bundle(apply_options(built("staging-300"), tmp_path))

    assert result.error is None
    assert load_state(str(tmp_path / "state")).environment == "staging"
    error = refused(built("prod-200"), tmp_path, keep_state=True)
    assert isinstance(error, WrongTargetError)
    assert error.message == (
        "this bundle is for environment 'prod', but this host belongs to 'staging'"
    )


# -- freshness -------------------------------------------------------------------


def test_an_older_serial_is_refused(built: Built, tmp_path: Path) -> None:
    save_state(str(tmp_path / "state"), HostState("prod", 200, "a" * 64))

    error = refused(built("prod-100"), tmp_path, keep_state=True)

    assert isinstance(error, RollbackError)
    assert error.message == (
        "this bundle has serial 100, older than serial 200 which this host accepted before"
    )
    assert error.hint == (
        "apply a newer bundle; to roll back on purpose, pass --allow-downgrade "
        "(the downgrade is recorded)"
    )


def test_an_equal_serial_is_accepted(built: Built, tmp_path: Path) -> None:
    save_state(str(tmp_path / "state"), HostState("prod", 200, "a" * 64))

    acceptance = accept_bundle(options(built("prod-200"), tmp_path))

    assert acceptance.downgrade_from is None


def test_allow_downgrade_accepts_an_older_serial_and_apply_records_it(
    built: Built, tmp_path: Path
) -> None:
    first = apply_bundle(apply_options(built("prod-200"), tmp_path, now=1_800_000_000))
    assert first.error is None

    acceptance = accept_bundle(options(built("prod-100"), tmp_path, allow_downgrade=True))
    assert acceptance.downgrade_from == 200

    result = apply_bundle(
        apply_options(built("prod-100"), tmp_path, allow_downgrade=True, now=1_800_000_100)
    )
    assert result.error is None
    assert any("downgrade allowed: serial 200 -> 100" in entry.message for entry in result.log)
    state = load_state(str(tmp_path / "state"))
    assert state.highest_serial == 200
    [downgrade] = state.downgrades
    assert (downgrade.time, downgrade.from_serial, downgrade.to_serial) == (1_800_000_100, 200, 100)
    assert downgrade.bundle == result.bundle_digest
    # The bypass was for that one apply: without the flag the same bundle is refused.
    error = refused(built("prod-100"), tmp_path, keep_state=True)
    assert isinstance(error, RollbackError)
    assert error.message == (
        "this bundle has serial 100, older than serial 200 which this host accepted before"
    )


# -- the order of the checks -----------------------------------------------------


def test_the_signature_is_checked_before_the_target(built: Built, tmp_path: Path) -> None:
    error = refused(built("other-key", "web2"), tmp_path)

    assert isinstance(error, SignatureError)


def test_the_target_is_checked_before_the_serial_and_the_serial_before_the_blobs(
    built: Built, tmp_path: Path
) -> None:
    save_state(str(tmp_path / "state"), HostState("prod", 500, "a" * 64))
    damaged = tmp_path / "web2.bundle"
    data = built("prod-100", "web2").read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))

    assert isinstance(refused(damaged, tmp_path, keep_state=True), WrongTargetError)
    assert isinstance(refused(damaged, tmp_path, host="web2", keep_state=True), RollbackError)
    blob_error = refused(damaged, tmp_path, host="web2", allow_downgrade=True, keep_state=True)
    assert "blob 'model' does not match its sha256" in blob_error.message
