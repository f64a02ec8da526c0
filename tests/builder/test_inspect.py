"""bundle inspect and bundle diff: what a bundle holds, who signed it, what changed."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import shutil
import subprocess
import textwrap
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import zstandard
from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from builder.errors import BuildError
from builder.inspect import Change, diff_bundles, inspect_bundle, write_signed_parts
from builder.runtime import own_python, pins
from builder.signing import generate_key, read_public_key
from executor.errors import BundleError
from tests.bundles import doc_join, doc_split, flipped, with_blob, write
from tests.deployments import (
    DISCOVERY_DATABASE,
    DISCOVERY_ENVIRONMENT,
    DISCOVERY_WEB,
    build_bundles,
    deployment,
)
from tests.keys import signing_key

APP = """
    from batou.component import Component, Attribute
    from batou.lib.file import File

    class App(Component):
        workers = Attribute(int, default=2)

        def configure(self):
            self += File("app.conf", content="workers={{component.workers}}\\n")
    """

EXTRA = """
    from batou.component import Component

    class Extra(Component):
        pass
    """


def environment(workers: int) -> str:
    return textwrap.dedent(f"""
        [environment]
        host_domain = example.com

        [hosts]
        web1 = app, !extra
        web2 = app

        [component:app]
        workers = {workers}
        """).lstrip()


# Dirty builds take their time from the clock: pin it, so that only what a
# test changes differs between two builds.
CLOCK = 1_700_000_000


@dataclass(frozen=True)
class Builds:
    """web1's bundle of each build, built once for the module."""

    root: Path

    def __call__(self, name: str, host: str = "web1") -> Path:
        return self.root / name / "prod" / f"{host}.bundle"

    @property
    def other_key(self) -> Path:
        return self.root / "keys" / "other"


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    root = tmp_path_factory.mktemp("inspect")
    generate_key(root / "keys" / "other", comment="")
    repo = deployment(
        root / "repo",
        components={"app": APP, "extra": EXTRA},
        environments={"prod": environment(4)},
        files={"data/keep.txt": "kept\n", "data/gone.txt": "gone\n", "data/edit.txt": "one\n"},
    )
    built = Builds(root)

    def build(name: str, serial: int, **kw: object) -> None:
        build_bundles("prod", repo, out=root / name, serial=serial, clock=lambda: CLOCK, **kw)

    build("old", 100)
    build("old-again", 150)
    build("other-key", 100, sign_keys=(built.other_key,))
    (repo / "environments/prod/environment.cfg").write_text(environment(5))
    (repo / "data/gone.txt").unlink()
    (repo / "data/new.txt").write_text("new\n")
    (repo / "data/edit.txt").write_text("two\n")
    build("new", 200)
    return built


def version(name: str) -> str:
    return importlib.metadata.version(name)


def fingerprint(key: Path) -> str:
    return read_public_key(key).fingerprint()


def trust_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


# -- inspect ---------------------------------------------------------------------


def test_inspect_shows_the_manifest_roots_and_skipped_components(builds: Builds) -> None:
    path = builds("new")

    inspection = inspect_bundle(path)

    manifest = inspection.manifest
    assert (manifest["host"], manifest["fqdn"], manifest["environment"]) == (
        "web1", "web1.example.com", "prod"
    )  # fmt: skip
    assert (manifest["serial"], manifest["build_time"]) == (200, CLOCK)
    assert manifest["source"] == {"commit": None, "dirty": True}
    assert [blob["name"] for blob in manifest["blobs"]] == ["repo", "runtime", "model"]
    assert manifest["target"] == {
        "platform": "example.com", "python": own_python(), "complete_platform": None
    }  # fmt: skip
    assert inspection.path == str(path)
    assert inspection.size == path.stat().st_size
    assert inspection.digest == hashlib.sha256(doc_split(path.read_bytes()).manifest).hexdigest()
    assert inspection.roots == ("app",)
    assert inspection.skipped == (
        "extra (skipped in the environment (environments/prod/environment.cfg:5))",
    )


def test_inspect_says_each_signature_matches_without_judging_trust(builds: Builds) -> None:
    inspection = inspect_bundle(builds("new"))

    [signature] = inspection.signatures
    assert signature.fingerprint == fingerprint(signing_key().private)
    assert signature.namespace == "consign-bundle"
    assert signature.valid is True
    assert inspection.trust_checked is False
    assert inspection.accepted_by is None
    assert inspection.to_json()["signatures"] == [
        {
            "fingerprint": signature.fingerprint,
            "namespace": "consign-bundle",
            "valid": True,
            "trusted": None,
            "refused_because": None,
        }
    ]


def test_inspect_reports_a_signature_that_does_not_match(builds: Builds, tmp_path: Path) -> None:
    data = builds("new").read_bytes()
    parts = doc_split(data)
    # The last byte of the one signature entry is the last byte of the ed25519 signature.
    end = 18 + len(parts.manifest) + 4 + len(parts.entries[0])
    path = write(tmp_path / "web1.bundle", flipped(data, end - 1))

    inspection = inspect_bundle(path)

    [signature] = inspection.signatures
    assert signature.fingerprint == fingerprint(signing_key().private)
    assert signature.valid is False


def test_inspect_with_trust_accepts_a_trusted_signer(builds: Builds) -> None:
    inspection = inspect_bundle(builds("new"), trust_file=signing_key().trust)

    [signature] = inspection.signatures
    assert inspection.trust_checked is True
    assert signature.trusted is None
    assert inspection.accepted_by == "builder"
    data = inspection.to_json()
    assert data["accepted_by"] == "builder"
    assert (data["signatures"][0]["trusted"], data["signatures"][0]["refused_because"]) == (True, None)


def test_inspect_with_trust_says_why_a_signer_is_not_trusted(builds: Builds) -> None:
    inspection = inspect_bundle(builds("other-key"), trust_file=signing_key().trust)

    [signature] = inspection.signatures
    reason = f"{fingerprint(builds.other_key)}: the key is not in the allowed signers"
    assert signature.valid is True
    assert signature.trusted == reason
    assert inspection.accepted_by is None
    data = inspection.to_json()
    assert (data["signatures"][0]["trusted"], data["signatures"][0]["refused_because"]) == (False, reason)


def test_inspect_with_trust_honours_revocation_and_validity(builds: Builds, tmp_path: Path) -> None:
    key = read_public_key(signing_key().private)
    revoked = trust_file(tmp_path / "revoked", key.openssh() + "\n")
    later = trust_file(
        tmp_path / "allowed_signers",
        f'builder namespaces="consign-bundle",valid-after="20300101Z" {key.openssh()}\n',
    )

    [revoked_signature] = inspect_bundle(builds("new"), signing_key().trust, revoked).signatures
    [early_signature] = inspect_bundle(builds("new"), later, now=1_800_000_000).signatures

    assert revoked_signature.trusted == f"{key.fingerprint()}: the key is revoked"
    assert early_signature.trusted == (
        f"{key.fingerprint()}: allowed signers line 1: it is valid only after 2030-01-01 00:00:00 UTC"
    )


@pytest.mark.parametrize("blob", ["repo", "runtime", "model"])
def test_inspect_refuses_a_damaged_bundle(builds: Builds, tmp_path: Path, blob: str) -> None:
    data = builds("new").read_bytes()
    _start, end = doc_split(data).span(blob)
    path = write(tmp_path / "web1.bundle", flipped(data, end - 1))

    with pytest.raises(BundleError, match=rf"blob '{blob}' does not match its sha256"):
        inspect_bundle(path)


# -- the signed parts, for checking by hand ----------------------------------------


def test_the_signed_parts_are_what_ssh_keygen_verifies(builds: Builds, tmp_path: Path) -> None:
    manifest, signature = tmp_path / "manifest", tmp_path / "manifest.sig"

    command = write_signed_parts(builds("new"), manifest, signature)

    assert manifest.read_bytes() == doc_split(builds("new").read_bytes()).manifest
    assert signature.read_text().startswith("-----BEGIN SSH SIGNATURE-----\n")
    assert command == (
        "ssh-keygen -Y verify -f allowed_signers -I builder -n consign-bundle "
        f"-s {signature} < {manifest}"
    )
    allowed = tmp_path / "allowed_signers"
    shutil.copy(signing_key().trust, allowed)
    result = subprocess.run(
        command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('Good "consign-bundle" signature for builder')


@pytest.mark.parametrize("which", ["manifest", "signature"])
def test_an_output_path_that_cannot_be_written_is_an_error_naming_it(
    builds: Builds, tmp_path: Path, which: str
) -> None:
    unwritable = tmp_path / "no-such-directory" / which
    good = tmp_path / "good"
    outputs = (unwritable, good) if which == "manifest" else (good, unwritable)

    with pytest.raises(BuildError) as caught:
        write_signed_parts(builds("new"), *outputs)

    assert caught.value.message == f"cannot write {unwritable}: No such file or directory"


def test_an_unsigned_bundle_has_no_signature_to_write(builds: Builds, tmp_path: Path) -> None:
    parts = doc_split(builds("new").read_bytes())
    path = write(tmp_path / "unsigned.bundle", doc_join(replace(parts, entries=())))

    with pytest.raises(BuildError) as caught:
        write_signed_parts(path, tmp_path / "manifest", tmp_path / "manifest.sig")

    assert caught.value.message == f"{path} is not signed; there is no signature to write"
    write_signed_parts(path, tmp_path / "manifest", None)
    assert (tmp_path / "manifest").read_bytes() == parts.manifest


# -- diff ------------------------------------------------------------------------


def test_diff_lists_a_changed_override_with_its_old_and_new_value(builds: Builds) -> None:
    diff = diff_bundles(builds("old"), builds("new"))

    assert diff.host == "web1"
    assert diff.model == (Change("roots[app].overrides.workers", "4", "5"),)


def test_diff_lists_files_added_removed_and_changed_in_the_repository(builds: Builds) -> None:
    diff = diff_bundles(builds("old"), builds("new"))

    assert diff.files_added == ("data/new.txt",)
    assert diff.files_removed == ("data/gone.txt",)
    # environment.cfg changed too, but it is not in bundles (the model is).
    assert diff.files_changed == ("data/edit.txt",)
    assert diff.to_json()["files"] == {
        "added": ["data/new.txt"],
        "removed": ["data/gone.txt"],
        "changed": ["data/edit.txt"],
    }


def test_diff_of_two_builds_of_the_same_tree_shows_only_the_serial(builds: Builds) -> None:
    diff = diff_bundles(builds("old"), builds("old-again"))

    assert diff.manifest == (Change("serial", 100, 150),)
    assert (diff.model, diff.files_added, diff.files_removed, diff.files_changed) == ((), (), (), ())
    assert not diff.empty


def test_diff_of_a_newer_build_shows_the_serial_and_blob_digests(builds: Builds) -> None:
    diff = diff_bundles(builds("old"), builds("new"))

    paths = [change.path for change in diff.manifest]
    assert Change("serial", 100, 200) in diff.manifest
    assert "blobs[repo].sha256" in paths and "blobs[model].sha256" in paths
    assert "host" not in paths and "build_time" not in paths
    # The same requirements for the same Python: the very same runtime.
    assert not any(path.startswith(("blobs[runtime]", "target")) for path in paths)


def test_diff_of_identical_bundles_is_empty(builds: Builds, tmp_path: Path) -> None:
    copy = tmp_path / "web1.bundle"
    shutil.copy(builds("old"), copy)

    diff = diff_bundles(builds("old"), copy)

    assert diff.empty
    assert diff.to_json() == {
        "host": "web1",
        "manifest": [],
        "model": [],
        "runtime": [],
        "files": {"added": [], "removed": [], "changed": []},
    }


def test_diff_refuses_bundles_of_two_hosts(builds: Builds) -> None:
    old, new = builds("old"), builds("new", "web2")

    with pytest.raises(BuildError) as caught:
        diff_bundles(old, new)

    assert caught.value.message == f"{old} is for host 'web1', {new} for 'web2'"
    assert caught.value.hint == "bundle diff compares two bundles of the same host"


# -- the runtime's packages, other hosts, pinned names -------------------------------



@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    """Builds of one tree that differ in requirements.txt only: none, six
    1.16.0, six 1.17.0 (twice: the same runtime, another serial)."""
    root = tmp_path_factory.mktemp("runtimes")
    repo = deployment(
        root / "repo",
        components={"database": DISCOVERY_DATABASE, "web": DISCOVERY_WEB},
        environments={"prod": DISCOVERY_ENVIRONMENT},
    )
    requirements = repo / "requirements.txt"

    def build(name: str, serial: int, wanted: str | None) -> None:
        if wanted is None:
            requirements.unlink(missing_ok=True)
        else:
            requirements.write_text(f"{wanted}\n")
        build_bundles("prod", repo, out=root / name, serial=serial, clock=lambda: CLOCK)

    build("plain", 100, None)
    build("six-1.16", 200, "six==1.16.0")
    build("six-1.17", 300, "six==1.17.0")
    build("six-1.17-again", 400, "six==1.17.0")
    return Builds(root)


def consign_distributions() -> list[tuple[str, str]]:
    """What consign's pins put into every runtime, as PEX-INFO names them."""
    return [
        (canonicalize_name(Requirement(pin).name), next(iter(Requirement(pin).specifier)).version)
        for pin in pins()
    ]


def test_inspect_lists_the_runtime_s_distributions_and_versions(runtimes: Builds) -> None:
    plain = inspect_bundle(runtimes("plain"))
    with_six = inspect_bundle(runtimes("six-1.17"))

    assert plain.distributions == tuple(sorted(consign_distributions()))
    assert with_six.distributions == tuple(sorted([*consign_distributions(), ("six", "1.17.0")]))
    assert ("dnspython", version("dnspython")) in with_six.distributions
    assert ("jinja2", version("Jinja2")) in with_six.distributions


def test_inspect_names_the_roots_of_other_hosts_this_host_applies_after(runtimes: Builds) -> None:
    web = inspect_bundle(runtimes("plain", "web1"))
    database = inspect_bundle(runtimes("plain", "db1"))

    assert web.depends_on == ("db1/database",)
    # The provider waits for nobody.
    assert database.depends_on == ()


def test_inspect_names_the_names_whose_answers_the_build_pinned(runtimes: Builds) -> None:
    web = inspect_bundle(runtimes("plain", "web1"))
    database = inspect_bundle(runtimes("plain", "db1"))

    # Each host pins what its own configure resolved.
    assert web.pinned_names == ("cache.example.com", "queue.example.com")
    assert database.pinned_names == ("db1.example.com",)


def test_inspect_json_has_distributions_dependencies_and_pinned_names(runtimes: Builds) -> None:
    data = inspect_bundle(runtimes("six-1.16", "web1")).to_json()

    assert data["distributions"] == {**dict(consign_distributions()), "six": "1.16.0"}
    assert data["depends_on"] == ["db1/database"]
    assert data["pinned_names"] == ["cache.example.com", "queue.example.com"]


def pex_info(info: object) -> bytes:
    """A zip that holds a PEX-INFO with `info` (JSON unless bytes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("__main__.py", "")
        if info is not None:
            archive.writestr("PEX-INFO", info if isinstance(info, bytes) else json.dumps(info))
    return out.getvalue()


NOT_A_PEX: dict[str, tuple[bytes, str]] = {
    "not a zip": (b"#!/bin/sh\necho not a pex\n", "File is not a zip file"),
    "a zip without PEX-INFO": (
        pex_info(None), "\"There is no item named 'PEX-INFO' in the archive\""
    ),
    "PEX-INFO that is no JSON": (
        pex_info(b"{nope"),
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ),
    "PEX-INFO without distributions": (pex_info({"pex_path": []}), "'distributions'"),
    "PEX-INFO that is a list": (
        pex_info(["six-1.17.0-py2.py3-none-any.whl"]),
        "list indices must be integers or slices, not str",
    ),
    "distributions that are a number": (
        pex_info({"distributions": 7}), "PEX-INFO's distributions are not a map of wheel names"
    ),
}


def with_runtime(bundle: Path, raw: bytes, out: Path) -> Path:
    """`bundle` with another runtime blob, signed again by the test key: only
    what bundle inspect makes of the runtime's content can refuse it."""
    parts = doc_split(bundle.read_bytes())
    stored = zstandard.ZstdCompressor(level=3).compress(raw)
    return write(out, doc_join(with_blob(parts, "runtime", stored, raw=raw)))


@pytest.mark.parametrize("case", NOT_A_PEX, ids=list(NOT_A_PEX))
def test_a_runtime_that_is_no_pex_of_consign_s_is_refused_naming_the_bundle(
    runtimes: Builds, tmp_path: Path, case: str
) -> None:
    raw, reason = NOT_A_PEX[case]
    path = with_runtime(runtimes("plain"), raw, tmp_path / "web1.bundle")

    with pytest.raises(BundleError) as caught:
        inspect_bundle(path)

    assert caught.value.message == f"{path}: the runtime is not a pex consign made: {reason}"


def test_a_runtime_distribution_that_is_no_wheel_is_refused(
    runtimes: Builds, tmp_path: Path
) -> None:
    name = "six-1.17.0.tar.gz"
    path = with_runtime(
        runtimes("plain"), pex_info({"distributions": {name: "0" * 40}}), tmp_path / "web1.bundle"
    )
    with pytest.raises(InvalidWheelFilename) as expected:
        parse_wheel_filename(name)

    with pytest.raises(BundleError) as caught:
        inspect_bundle(path)

    assert caught.value.message == (
        f"{path}: the runtime is not a pex consign made: {expected.value}"
    )
    assert name in caught.value.message


def test_diff_refuses_a_runtime_that_is_no_pex(runtimes: Builds, tmp_path: Path) -> None:
    path = with_runtime(runtimes("plain"), b"no zip", tmp_path / "web1.bundle")

    with pytest.raises(BundleError) as caught:
        diff_bundles(runtimes("plain"), path)

    assert caught.value.message == (
        f"{path}: the runtime is not a pex consign made: File is not a zip file"
    )


def test_diff_lists_a_distribution_whose_version_changed(runtimes: Builds) -> None:
    diff = diff_bundles(runtimes("six-1.16"), runtimes("six-1.17"))

    assert diff.runtime == (Change("six", "1.16.0", "1.17.0"),)
    assert diff.to_json()["runtime"] == [{"path": "six", "old": "1.16.0", "new": "1.17.0"}]
    # The manifest shows the other runtime blob; the snapshot the edited file.
    paths = [change.path for change in diff.manifest]
    assert "blobs[runtime].sha256" in paths
    assert diff.files_changed == ("requirements.txt",)


def test_diff_lists_distributions_added_and_removed(runtimes: Builds) -> None:
    added = diff_bundles(runtimes("plain"), runtimes("six-1.17"))
    removed = diff_bundles(runtimes("six-1.16"), runtimes("plain"))

    assert added.runtime == (Change("six", None, "1.17.0"),)
    assert removed.runtime == (Change("six", "1.16.0", None),)


def test_diff_of_bundles_with_one_runtime_has_no_runtime_changes(runtimes: Builds) -> None:
    diff = diff_bundles(runtimes("six-1.17"), runtimes("six-1.17-again"))

    assert diff.runtime == ()
    assert diff.manifest == (Change("serial", 300, 400),)
    assert diff.to_json()["runtime"] == []
