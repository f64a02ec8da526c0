"""Signing keys: generated, loaded from files or ssh-agent, checked by real OpenSSH."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder import signing
from builder.errors import SigningKeyError
from builder.signing import (
    AgentSigner,
    FileSigner,
    allowed_signers_line,
    generate_key,
    load_signer,
    load_signers,
    read_public_key,
    sign_all,
)
from executor.sshsig import NAMESPACE, PublicKey, Signature, parse_allowed_signers, verify

MESSAGE = b"a manifest\x00with \xff bytes\n"


def run(*command: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, input=stdin, capture_output=True, timeout=30, check=False, env=env
    )


def ssh_keygen_key(path: Path, *options: str) -> Path:
    """A key made by ssh-keygen: ed25519 and no passphrase unless `options` say otherwise."""
    result = run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test key", *options, "-f", str(path))
    assert result.returncode == 0, result.stderr
    return path


def ssh_keygen_verifies(tmp_path: Path, signature: Signature, message: bytes) -> str:
    """Check `signature` with ``ssh-keygen -Y verify``; return what it said."""
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(allowed_signers_line(signature.key, comment="from the test") + "\n")
    armored = tmp_path / "message.sig"
    armored.write_text(signature.armored())
    result = run(
        "ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "builder", "-n", NAMESPACE,
        "-s", str(armored), stdin=message,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    return result.stdout.decode()


def message_of(error: pytest.ExceptionInfo[SigningKeyError]) -> str:
    return str(error.value)


# -- generate_key ----------------------------------------------------------------


def test_generate_key_writes_private_0600_and_public_0644_in_new_0700_directories(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys" / "ci" / "builder"
    previous = os.umask(0)  # the modes must not depend on the umask
    try:
        key = generate_key(path)
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = path.with_name("builder.pub")
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "keys" / "ci").stat().st_mode) == 0o700
    assert public.read_text() == f"{key.openssh()} consign builder\n"
    assert path.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["builder", "builder.pub"]


def test_ssh_keygen_reads_a_generated_key(tmp_path: Path) -> None:
    path = tmp_path / "builder"
    key = generate_key(path, comment="ci@example")

    listed = run("ssh-keygen", "-l", "-f", str(path))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().split()[1] == key.fingerprint()
    # -y derives the public key from the private file alone, comment included.
    derived = run("ssh-keygen", "-y", "-f", str(path))
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.decode() == f"{key.openssh()} ci@example\n"
    assert derived.stdout.decode() == path.with_name("builder.pub").read_text()
    assert read_public_key(path) == key
    assert read_public_key(path.with_name("builder.pub")) == key


def test_generate_key_without_comment_writes_a_bare_public_key(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k", comment="")
    assert (tmp_path / "k.pub").read_text() == f"{key.openssh()}\n"
    assert run("ssh-keygen", "-y", "-f", str(tmp_path / "k")).stdout.decode() == f"{key.openssh()}\n"


@pytest.mark.parametrize("existing", ["builder", "builder.pub"])
def test_generate_key_refuses_to_overwrite_an_existing_key_file(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("the old key\n")

    with pytest.raises(SigningKeyError) as error:
        generate_key(tmp_path / "builder")

    assert f"{tmp_path / existing} already exists; refusing to overwrite a key" in message_of(error)
    assert error.value.code == "signing-key"
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "the old key\n"


def test_generate_key_refuses_a_comment_with_a_line_break(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="must be one line"):
        generate_key(tmp_path / "k", comment="two\nlines")
    assert list(tmp_path.iterdir()) == []


def test_generate_key_makes_a_different_key_each_time(tmp_path: Path) -> None:
    assert generate_key(tmp_path / "a") != generate_key(tmp_path / "b")


# -- signing with a key file ----------------------------------------------------


def test_file_signature_is_accepted_by_ssh_keygen_and_sshsig_verify(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "builder")
    signer = load_signer(tmp_path / "builder")
    assert isinstance(signer, FileSigner)
    assert signer.key == key
    assert signer.source == str(tmp_path / "builder")

    signature = signer.sign(MESSAGE)

    assert (signature.namespace, signature.hash_algorithm) == (NAMESPACE, "sha512")
    said = ssh_keygen_verifies(tmp_path, signature, MESSAGE)
    assert f'Good "{NAMESPACE}" signature for builder' in said
    assert verify(signature, MESSAGE)
    assert not verify(signature, MESSAGE + b"!")


def test_key_made_by_ssh_keygen_signs_exactly_as_ssh_keygen_does(tmp_path: Path) -> None:
    path = ssh_keygen_key(tmp_path / "id_ed25519")
    (tmp_path / "message").write_bytes(MESSAGE)
    made = run("ssh-keygen", "-Y", "sign", "-f", str(path), "-n", NAMESPACE, str(tmp_path / "message"))
    assert made.returncode == 0, made.stderr

    signature = load_signer(path).sign(MESSAGE)

    # ed25519 is deterministic and SSHSIG canonical: the bytes are the same.
    assert signature.armored() == (tmp_path / "message.sig").read_text()
    ssh_keygen_verifies(tmp_path, signature, MESSAGE)


def test_file_signatures_are_deterministic(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    first = load_signer(tmp_path / "k").sign(MESSAGE)
    second = load_signer(tmp_path / "k").sign(MESSAGE)
    assert first.encode() == second.encode()


def test_sign_all_signs_with_every_key_in_order(tmp_path: Path) -> None:
    keys = [generate_key(tmp_path / name) for name in ("new", "old")]
    signers = load_signers([tmp_path / "new", tmp_path / "old"])

    signatures = sign_all(signers, MESSAGE)

    assert [s.key for s in signatures] == keys
    assert all(verify(s, MESSAGE) for s in signatures)


def test_sign_all_without_signers_is_an_error() -> None:
    with pytest.raises(SigningKeyError, match="no signing key"):
        sign_all([], MESSAGE)


def test_read_public_key_reads_an_encrypted_private_key_without_its_passphrase(tmp_path: Path) -> None:
    path = ssh_keygen_key(tmp_path / "k", "-N", "secret")
    expected = PublicKey.from_openssh(path.with_name("k.pub").read_text())
    assert read_public_key(path) == expected


# -- bad inputs ----------------------------------------------------------------


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes"
    path.write_text("remember the milk\n")
    return path


def _binary_file(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(b"\x89PNG\x00\xff")
    return path


def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.touch()
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir()
    return path


def _rsa_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_rsa"
    assert run("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path)).returncode == 0
    return path


def _ecdsa_key(tmp_path: Path) -> Path:
    path = tmp_path / "id_ecdsa"
    assert run("ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-f", str(path)).returncode == 0
    return path


def _pem_rsa_key(tmp_path: Path) -> Path:
    path = tmp_path / "legacy"
    result = run("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(path))
    assert result.returncode == 0
    return path


def _encrypted_key(tmp_path: Path) -> Path:
    return ssh_keygen_key(tmp_path / "id_ed25519", "-N", "secret")


def _encrypted_key_without_pub(tmp_path: Path) -> Path:
    path = ssh_keygen_key(tmp_path / "id_ed25519", "-N", "secret")
    path.with_name("id_ed25519.pub").unlink()
    return path


def _readable_by_others(tmp_path: Path) -> Path:
    path = ssh_keygen_key(tmp_path / "id_ed25519")
    path.chmod(0o644)
    return path


def _readable_by_group(tmp_path: Path) -> Path:
    path = ssh_keygen_key(tmp_path / "id_ed25519")
    path.chmod(0o640)
    return path


def _truncated_key(tmp_path: Path) -> Path:
    path = ssh_keygen_key(tmp_path / "id_ed25519")
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][:40], lines[-1]]) + "\n")
    return path


def _public_key_without_suffix(tmp_path: Path) -> Path:
    path = ssh_keygen_key(tmp_path / "id_ed25519")
    copy = tmp_path / "builder-key"
    copy.write_text(path.with_name("id_ed25519.pub").read_text())
    return copy


def _missing_pub(tmp_path: Path) -> Path:
    return tmp_path / "absent.pub"


def _rsa_pub(tmp_path: Path) -> Path:
    return _rsa_key(tmp_path).with_name("id_rsa.pub")


def _garbage_pub(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pub"
    path.write_text("ssh-ed25519 AAAA!!!not-base64\n")
    return path


def _text_pub(tmp_path: Path) -> Path:
    path = tmp_path / "text.pub"
    path.write_text("hello\n")
    return path


def _private_key_named_pub(tmp_path: Path) -> Path:
    path = ssh_keygen_key(tmp_path / "id_ed25519")
    renamed = tmp_path / "wrong.pub"
    path.rename(renamed)
    return renamed


BAD_INPUTS: list[tuple[str, Callable[[Path], Path], str, str]] = [
    # (case, make the input, expected message with {path}, expected hint text)
    ("missing file", lambda t: t / "nope", "signing key {path} does not exist", "bundle keys generate"),
    ("directory", _directory, "signing key {path} is a directory", "key file itself"),
    ("text file", _text_file, "{path} is not an OpenSSH private key: it holds text that is not a key", "ssh-keygen -t ed25519"),
    ("binary file", _binary_file, "{path} is not an OpenSSH private key: it holds binary data", ""),
    ("empty file", _empty_file, "{path} is not an OpenSSH private key: it holds an empty file", ""),
    ("public key without .pub", _public_key_without_suffix, "it holds a public key (ssh-ed25519)", "with a .pub suffix"),
    ("PEM key", _pem_rsa_key, "{path} is not an OpenSSH private key: it holds a PEM private key (RSA PRIVATE KEY)", "ssh-keygen -p -f {path}"),
    ("RSA key", _rsa_key, "{path} is an RSA key (ssh-rsa); consign signs with ed25519 keys only", "ssh-keygen -t ed25519"),
    ("ECDSA key", _ecdsa_key, "{path} is an ECDSA key (ecdsa-sha2-nistp256)", ""),
    ("encrypted key", _encrypted_key, "signing key {path} is encrypted with a passphrase", "`ssh-add {path}` and pass {path}.pub"),
    ("encrypted key, no .pub", _encrypted_key_without_pub, "is encrypted with a passphrase", "ssh-keygen -y -f {path} > {path}.pub"),
    ("private key 0644", _readable_by_others, "permissions 0644 for {path} are too open", "chmod 600 {path}"),
    ("private key 0640", _readable_by_group, "permissions 0640 for {path} are too open", "chmod 600 {path}"),
    ("truncated key", _truncated_key, "signing key {path} is a damaged OpenSSH private key", "backup"),
    ("missing .pub", _missing_pub, "signing key {path} does not exist", "ssh-add -L"),
    ("RSA .pub", _rsa_pub, "{path} is an RSA key (ssh-rsa)", ""),
    ("garbage .pub", _garbage_pub, "{path} is not a valid ed25519 public key", ""),
    ("text .pub", _text_pub, "{path} is not an OpenSSH public key: it holds text that is not a key", ""),
    ("private key named .pub", _private_key_named_pub, "{path} is not an OpenSSH public key: it holds an OpenSSH private key", "name without .pub"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message", "hint"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_load_signer_refuses_bad_input_naming_the_path(
    tmp_path: Path, make: Callable[[Path], Path], message: str, hint: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(SigningKeyError) as error:
        load_signer(path)
    assert message.format(path=path) in error.value.message
    assert str(path) in error.value.message
    assert hint.format(path=path) in (error.value.hint or "")
    assert error.value.code == "signing-key"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_load_signer_refuses_an_unreadable_file(tmp_path: Path) -> None:
    path = ssh_keygen_key(tmp_path / "id_ed25519")
    path.chmod(0)
    with pytest.raises(SigningKeyError, match="cannot read signing key .*: Permission denied"):
        load_signer(path)


def test_load_signers_refuses_the_same_key_twice(tmp_path: Path) -> None:
    first = ssh_keygen_key(tmp_path / "a")
    copy = tmp_path / "b"
    copy.write_bytes(first.read_bytes())
    copy.chmod(0o600)
    key = read_public_key(first)

    with pytest.raises(SigningKeyError) as error:
        load_signers([first, copy])

    assert (
        f"signing keys {first} and {copy} are the same key ({key.fingerprint()})"
        in error.value.message
    )


# -- allowed_signers ---------------------------------------------------------------


def test_allowed_signers_line_limits_the_key_to_bundles(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k")

    line = allowed_signers_line(key, comment="ci 2024")

    assert line == f'builder namespaces="consign-bundle" {key.openssh()} ci 2024'
    assert allowed_signers_line(key, "ops") == f'ops namespaces="consign-bundle" {key.openssh()}'
    entries, notes = parse_allowed_signers(line + "\n")
    assert notes == []
    assert [(e.principals, e.key, e.namespaces) for e in entries] == [
        (("builder",), key, ("consign-bundle",))
    ]


def test_ssh_keygen_refuses_another_namespace_under_the_allowed_signers_line(tmp_path: Path) -> None:
    generate_key(tmp_path / "k")
    (tmp_path / "message").write_bytes(MESSAGE)
    assert run("ssh-keygen", "-Y", "sign", "-f", str(tmp_path / "k"), "-n", "file", str(tmp_path / "message")).returncode == 0
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(allowed_signers_line(read_public_key(tmp_path / "k")) + "\n")

    result = run(
        "ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "builder", "-n", "file",
        "-s", str(tmp_path / "message.sig"), stdin=MESSAGE,
    )  # fmt: skip

    assert result.returncode != 0


@pytest.mark.parametrize("principal", ["", "two words", 'quo"te', "#comment", "line\nbreak"])
def test_allowed_signers_line_refuses_a_principal_that_would_break_the_line(
    tmp_path: Path, principal: str
) -> None:
    key = generate_key(tmp_path / "k")
    with pytest.raises(SigningKeyError, match="cannot stand in an allowed_signers line"):
        allowed_signers_line(key, principal)


# -- ssh-agent ---------------------------------------------------------------------


@dataclass
class Agent:
    socket: Path

    def add(self, key: Path, *options: str, env: dict[str, str] | None = None) -> None:
        environment = {**os.environ, **(env or {}), "SSH_AUTH_SOCK": str(self.socket)}
        result = run("ssh-add", *options, str(key), env=environment)
        assert result.returncode == 0, result.stderr

    def remove_all(self) -> None:
        result = run("ssh-add", "-D", env={**os.environ, "SSH_AUTH_SOCK": str(self.socket)})
        assert result.returncode == 0, result.stderr


@pytest.fixture
def agent(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Agent]:
    """A real ssh-agent on its own socket, and SSH_AUTH_SOCK pointing at it."""
    # N.B. a short directory: a unix socket path has at most 107 bytes.
    path = tmp_path_factory.mktemp("agent") / "sock"
    # A confirmation prompt (ssh-add -c) is answered "no" by an askpass that fails.
    env = {**os.environ, "SSH_ASKPASS": "/bin/false", "SSH_ASKPASS_REQUIRE": "force"}
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert process.poll() is None, "ssh-agent exited"
            assert time.monotonic() < deadline, "ssh-agent did not create its socket"
            time.sleep(0.01)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(path))
        yield Agent(path)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_agent_signature_is_accepted_by_ssh_keygen_and_equals_the_file_signature(
    tmp_path: Path, agent: Agent
) -> None:
    key = generate_key(tmp_path / "builder")
    agent.add(tmp_path / "builder")

    signer = load_signer(tmp_path / "builder.pub")
    assert isinstance(signer, AgentSigner)
    assert signer.key == key
    assert signer.source == f"{tmp_path / 'builder.pub'} (agent)"
    signature = signer.sign(MESSAGE)

    assert f'Good "{NAMESPACE}" signature for builder' in ssh_keygen_verifies(tmp_path, signature, MESSAGE)
    assert verify(signature, MESSAGE)
    assert signature == load_signer(tmp_path / "builder").sign(MESSAGE)


def test_agent_signatures_are_deterministic(tmp_path: Path, agent: Agent) -> None:
    ssh_keygen_key(tmp_path / "k")
    agent.add(tmp_path / "k")
    signer = load_signer(tmp_path / "k.pub")
    assert signer.sign(MESSAGE).encode() == signer.sign(MESSAGE).encode()


def test_agent_signs_with_an_encrypted_key_added_with_its_passphrase(tmp_path: Path, agent: Agent) -> None:
    path = ssh_keygen_key(tmp_path / "k", "-N", "secret")
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho secret\n")
    askpass.chmod(0o700)
    agent.add(path, env={"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"})

    signature = load_signer(tmp_path / "k.pub").sign(MESSAGE)

    ssh_keygen_verifies(tmp_path, signature, MESSAGE)


def test_agent_and_file_signers_mix_and_the_same_key_twice_is_refused(
    tmp_path: Path, agent: Agent
) -> None:
    ssh_keygen_key(tmp_path / "a")
    ssh_keygen_key(tmp_path / "b")
    agent.add(tmp_path / "b")
    signers = load_signers([tmp_path / "a", tmp_path / "b.pub"])
    assert all(verify(s, MESSAGE) for s in sign_all(signers, MESSAGE))

    with pytest.raises(SigningKeyError) as error:
        load_signers([tmp_path / "b.pub", tmp_path / "b"])
    assert f"signing keys {tmp_path / 'b.pub'} (agent) and {tmp_path / 'b'} are the same key" in error.value.message


def test_agent_without_the_key_is_an_error(tmp_path: Path, agent: Agent) -> None:
    ssh_keygen_key(tmp_path / "other")
    agent.add(tmp_path / "other")
    key = generate_key(tmp_path / "builder")

    with pytest.raises(SigningKeyError) as error:
        load_signer(tmp_path / "builder.pub")

    assert (
        f"ssh-agent at {agent.socket} does not hold the key of {tmp_path / 'builder.pub'} "
        f"({key.fingerprint()}); it holds 1 other key"
    ) in error.value.message
    assert f"ssh-add {tmp_path / 'builder'}" in (error.value.hint or "")


def test_agent_that_dropped_the_key_refuses_to_sign(tmp_path: Path, agent: Agent) -> None:
    ssh_keygen_key(tmp_path / "k")
    agent.add(tmp_path / "k")
    signer = load_signer(tmp_path / "k.pub")
    agent.remove_all()

    with pytest.raises(SigningKeyError, match=f"ssh-agent at {agent.socket} refused to sign with"):
        signer.sign(MESSAGE)


def test_agent_refuses_when_the_user_declines_confirmation(tmp_path: Path, agent: Agent) -> None:
    ssh_keygen_key(tmp_path / "k")
    agent.add(tmp_path / "k", "-c")
    signer = load_signer(tmp_path / "k.pub")

    with pytest.raises(SigningKeyError) as error:
        signer.sign(MESSAGE)
    assert "refused to sign" in error.value.message
    assert "ssh-add -c" in (error.value.hint or "")


def test_agent_socket_missing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_keygen_key(tmp_path / "k")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(tmp_path / "gone.sock"))

    with pytest.raises(SigningKeyError) as error:
        load_signer(tmp_path / "k.pub")

    assert (
        f"cannot sign with {tmp_path / 'k.pub'} (agent): ssh-agent at {tmp_path / 'gone.sock'} "
        "(SSH_AUTH_SOCK) cannot be reached: there is no such socket"
    ) in error.value.message
    assert "is the agent running?" in (error.value.hint or "")


def test_agent_socket_nobody_listens_on_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_keygen_key(tmp_path / "k")
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(stale))  # bound, never listening: what a dead agent leaves
    monkeypatch.setenv("SSH_AUTH_SOCK", str(stale))

    with pytest.raises(SigningKeyError, match="cannot be reached: nothing listens there"):
        load_signer(tmp_path / "k.pub")


def test_ssh_auth_sock_unset_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_keygen_key(tmp_path / "k")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    with pytest.raises(SigningKeyError) as error:
        load_signer(tmp_path / "k.pub")

    assert f"cannot sign with {tmp_path / 'k.pub'} through ssh-agent: SSH_AUTH_SOCK is not set" in error.value.message
    assert f"or pass the private key file {tmp_path / 'k'} instead" in (error.value.hint or "")


# Sockets that are no ssh-agent: what each does with a request.
def _silent(conn: socket.socket) -> None:
    conn.recv(1024)
    time.sleep(2)


def _huge(conn: socket.socket) -> None:
    conn.recv(1024)
    conn.sendall(b"\x7f\xff\xff\xff")


def _trickle(conn: socket.socket) -> None:
    conn.recv(1024)
    for byte in b"\x00\x00\x00\x05\x0c\x00\x00\x00\x00":
        conn.sendall(bytes([byte]))
        time.sleep(0.2)


def _hangs_up(conn: socket.socket) -> None:
    conn.recv(1024)
    conn.sendall(b"\x00\x00")


def _wrong_answer(conn: socket.socket) -> None:
    conn.recv(1024)
    conn.sendall(b"\x00\x00\x00\x01\x06")  # SSH_AGENT_SUCCESS to a list request


def _lying_count(conn: socket.socket) -> None:
    conn.recv(1024)
    conn.sendall(b"\x00\x00\x00\x05\x0c\xff\xff\xff\xff")


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (_silent, "did not answer within 0.5 s"),
        (_trickle, "did not answer within 0.5 s"),
        (_huge, "announced an answer of 2147483647 bytes"),
        (_hangs_up, "closed the connection before it answered"),
        (_wrong_answer, "answered a request for its keys with message 6"),
        (_lying_count, "sent a malformed list of keys (truncated)"),
    ],
    ids=["silent", "trickle", "huge", "hangs up", "wrong answer", "lying count"],
)
def test_a_socket_that_is_no_agent_fails_within_the_timeout(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    behaviour: Callable[[socket.socket], None],
    expected: str,
) -> None:
    directory = tmp_path_factory.mktemp("fake")
    ssh_keygen_key(directory / "k")
    path = directory / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        # The client hangs up at its deadline; what the fake does then is moot.
        with conn, contextlib.suppress(OSError):
            behaviour(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("SSH_AUTH_SOCK", str(path))
    monkeypatch.setattr(signing, "AGENT_TIMEOUT", 0.5)
    try:
        started = time.monotonic()
        with pytest.raises(SigningKeyError) as error:
            load_signer(directory / "k.pub")
        assert time.monotonic() - started < 1.5
        assert expected in error.value.message
        assert "is SSH_AUTH_SOCK the socket of an ssh-agent?" in (error.value.hint or "")
    finally:
        thread.join(timeout=5)
        server.close()
