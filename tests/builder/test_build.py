"""bundle build: configure every host, collect every error, write all or nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from builder.build import build
from builder.errors import BuildFailed, EnvironmentNotFound, RepositoryError, SigningKeyError
from builder.signing import generate_key, read_public_key
from executor.bundle import read_envelope
from executor.manifest import Manifest
from builder.repository import Repository
from tests.deployments import (
    build_bundles,
    build_options,
    deployment,
    git_commit,
    model_of,
    verified,
)
from tests.keys import signing_key

SEED_TEST = """
    import batou.component
    import batou.lib.file

    class Test(batou.component.Component):
        def configure(self):
            self += batou.lib.file.File('base-component')

    @batou.component.platform('nixos', Test)
    class TestNixos(batou.component.Component):
        def configure(self):
            self += batou.lib.file.File('i-am-nixos')

    @batou.component.platform('ubuntu', Test)
    class TestUbuntu(batou.component.Component):
        def configure(self):
            self += batou.lib.file.File('i-am-ubuntu')
    """

APP = """
    from batou.component import Component, Attribute
    from batou.lib.file import File

    class App(Component):
        workers = Attribute(int, default=2)

        def configure(self):
            self += File("app.conf", content="workers={{component.workers}} alias={{host.data.get('alias', '-')}}\\n")
    """

PROD = """
    [environment]
    host_domain = example.com
    platform = default-platform
    target_directory = /srv/app

    [hosts]
    web1 = test, app
    web2 = test

    [host:web3]
    components = test
    platform = nixos
    data-alias = shop.example.com

    [component:app]
    workers = 8
    """


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return deployment(
        tmp_path / "repo",
        components={"test": SEED_TEST, "app": APP},
        environments={"prod": PROD},
    )


def test_build_writes_one_bundle_per_host_with_its_model(repo: Path) -> None:
    result = build_bundles("prod", repo)

    assert [h.name for h in result.hosts] == ["web1", "web2", "web3"]
    web1 = model_of(repo / "bundles/prod/web1.bundle")
    assert web1.host.fqdn == "web1.example.com"
    assert web1.host.platform == "default-platform"
    assert [r.name for r in web1.roots] == ["test", "app"]
    assert web1.roots[1].overrides == (("workers", "8"),)
    web3 = model_of(repo / "bundles/prod/web3.bundle")
    assert web3.host.platform == "nixos"
    assert web3.host.data == (("alias", "shop.example.com"),)
    assert "Test > TestNixos" in web3.roots[0].tree
    assert not any("TestUbuntu" in crumb for crumb in web3.roots[0].tree)


def test_build_platform_option_applies_to_hosts_without_their_own(repo: Path) -> None:
    build_bundles("prod", repo, platform="ubuntu")

    assert model_of(repo / "bundles/prod/web1.bundle").host.platform == "ubuntu"
    assert model_of(repo / "bundles/prod/web3.bundle").host.platform == "nixos"
    assert "Test > TestUbuntu" in model_of(repo / "bundles/prod/web1.bundle").roots[0].tree


def test_build_out_option_chooses_the_directory(repo: Path, tmp_path: Path) -> None:
    result = build_bundles("prod", repo, out=tmp_path / "elsewhere")

    assert result.out == (tmp_path / "elsewhere" / "prod").resolve()
    assert (tmp_path / "elsewhere/prod/web2.bundle").is_file()
    assert not (repo / "bundles").exists()


def test_same_commit_builds_the_same_bytes_twice(repo: Path) -> None:
    git_commit(repo)
    build_bundles("prod", repo)
    first = (repo / "bundles/prod/web1.bundle").read_bytes()
    (repo / "bundles/prod/web1.bundle").unlink()
    build_bundles("prod", repo)

    assert (repo / "bundles/prod/web1.bundle").read_bytes() == first


def test_host_and_skip_options_select_and_report(repo: Path) -> None:
    result = build(
        build_options("prod", repo, hosts=("web1", "web3"), skip_hosts=("web3",),
                     skip_components=("app",))
    )

    assert [h.name for h in result.hosts] == ["web1"]
    assert [(s.name, s.reason) for s in result.skipped_hosts] == [
        ("web2", "not selected by --host"),
        ("web3", "skipped by --skip-host"),
    ]
    web1 = model_of(repo / "bundles/prod/web1.bundle")
    assert [r.name for r in web1.roots] == ["test"]
    assert [(s.name, s.reason) for s in web1.skipped] == [("app", "skipped by --skip-component")]
    assert not (repo / "bundles/prod/web2.bundle").exists()


def test_ignored_hosts_and_skipped_components_are_reported(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={"test": SEED_TEST, "app": APP},
        environments={
            "prod": """
                [hosts]
                web1 = test, !app
                !web2 = test

                [host:web3]
                components = test
                ignore = True
                """
        },
    )
    result = build_bundles("prod", repo)

    assert [h.name for h in result.hosts] == ["web1"]
    assert [s.name for s in result.skipped_hosts] == ["web2", "web3"]
    assert all("ignored in the environment" in s.reason for s in result.skipped_hosts)
    skipped = model_of(repo / "bundles/prod/web1.bundle").skipped
    assert [s.name for s in skipped] == ["app"]
    assert "skipped in the environment" in skipped[0].reason


def test_unknown_host_and_component_options_are_errors(repo: Path) -> None:
    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo, hosts=("web9",), skip_components=("nginx",))

    text = caught.value.render()
    assert "--host web9: environment 'prod' has no such host" in text
    assert "--skip-component nginx: no host of 'prod' has this component" in text


def test_errors_of_all_hosts_are_collected_merged_and_nothing_is_written(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "broken": """
                from batou.component import Component

                class Broken(Component):
                    def configure(self):
                        raise KeyError("missing")
                """,
            "app": APP,
        },
        environments={
            "prod": """
                [hosts]
                web1 = broken, app, nginx
                web2 = broken

                [component:app]
                wrkers = 3
                """
        },
    )
    (repo / "bundles/prod").mkdir(parents=True)
    (repo / "bundles/prod/web1.bundle").write_bytes(b"old")

    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo)

    errors = caught.value.errors
    rendered = [e.render() for e in errors]
    assert len(errors) == 3
    broken = next(e for e in errors if "KeyError" in e.message)
    assert broken.hosts == ("web1", "web2")
    assert "configure raised KeyError: 'missing'" in broken.message
    assert broken.where == "Broken (components/broken/component.py:5)"
    assert any(
        "environments/prod/environment.cfg:2" in r and "'nginx'" in r for r in rendered
    )
    override = next(e for e in errors if "wrkers" in e.message)
    assert override.where == "environments/prod/environment.cfg:6"
    assert override.hint == "did you mean 'workers'?"
    assert "the build found 3 errors; nothing was written" in caught.value.render()
    assert (repo / "bundles/prod/web1.bundle").read_bytes() == b"old"
    assert sorted(p.name for p in (repo / "bundles/prod").iterdir()) == ["web1.bundle"]


@pytest.mark.parametrize(
    ("code", "extra", "message", "where"),
    [
        pytest.param(
            "class Bad(Component):\n    def configure(self)\n        pass\n",
            {},
            "syntax error in component 'bad'",
            "components/bad/component.py:4",
            id="syntax-error",
        ),
        pytest.param(
            "raise RuntimeError('boom')\n",
            {},
            "loading component 'bad' raised RuntimeError: boom",
            "components/bad/component.py:3",
            id="exception-at-import",
        ),
        pytest.param(
            "class Bad(Component):\n    def configure(self):\n        self += File()\n",
            {},
            "File needs its 'path' as first argument",
            "Bad (components/bad/component.py:5)",
            id="missing-namevar",
        ),
        pytest.param(
            "class Bad(Component):\n    def configure(self):\n        self += File('x', colour='red', size=3)\n",
            {},
            "File does not accept 'colour', 'size'",
            "Bad (components/bad/component.py:5)",
            id="unacceptable-keywords",
        ),
        pytest.param(
            "class Bad(Component):\n    def configure(self):\n        self += File('x', mode='rwxrwxrwz')\n",
            {},
            "mode 'rwxrwxrwz' is neither octal nor rwx notation",
            "Bad > File('/srv/app/work/bad/x') > Mode('/srv/app/work/bad/x') "
            "(components/bad/component.py:5)",
            id="bad-mode",
        ),
        pytest.param(
            "class Bad(Component):\n    port = Attribute(int, default=1)\n",
            {"override": "port = eighty"},
            "cannot convert Bad.port = 'eighty' with int",
            "Bad, environments/prod/environment.cfg:8",
            id="conversion",
        ),
        pytest.param(
            "class Bad(Component):\n    def configure(self):\n        self += File('x.conf')\n",
            {"components/bad/x.conf": "one\n{{ nonsense }}\n"},
            "template uses an undefined name: 'nonsense' is undefined",
            "Bad > File('/srv/app/work/bad/x.conf') > Content('/srv/app/work/bad/x.conf') "
            "(components/bad/component.py:5), components/bad/x.conf:2",
            id="template-undefined-name",
        ),
    ],
)
def test_deployment_errors_name_file_and_line(
    tmp_path: Path, code: str, extra: dict[str, str], message: str, where: str
) -> None:
    override = extra.pop("override", "")
    header = "from batou.component import Component, Attribute\nfrom batou.lib.file import File\n"
    repo = deployment(
        tmp_path / "repo",
        components={"bad": header + code},
        environments={
            "prod": f"""
                [environment]
                target_directory = /srv/app

                [hosts]
                web1 = bad

                [component:bad]
                {override}
                """
        },
        files=extra,
    )

    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo)

    error = caught.value.errors[0]
    assert message in error.message
    assert error.where == where
    assert not (repo / "bundles").exists()


def test_missing_environment_lists_the_existing_ones(repo: Path) -> None:
    with pytest.raises(EnvironmentNotFound) as caught:
        build_bundles("staging", repo)

    assert "staging" in caught.value.message
    assert "prod" in caught.value.render()


def test_a_directory_without_environments_is_not_a_deployment(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError) as caught:
        build_bundles("prod", tmp_path)

    assert "is not a deployment repository: it has no environments/ directory" in caught.value.message
    assert caught.value.hint == "run bundle inside your deployment repository or pass -C PATH"


def test_snapshot_keeps_links_to_directories_and_refuses_escaping_links(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={"app": APP},
        environments={"prod": "[hosts]\nweb1 = app\n"},
    )
    (repo / "docs").symlink_to("components")

    assert "docs" in [f.name for f in Repository.open(repo).files()]
    build_bundles("prod", repo)

    (repo / "abs").symlink_to("/etc/hostname")
    (repo / "up").symlink_to("../..")
    with pytest.raises(RepositoryError) as caught:
        build_bundles("prod", repo)
    assert "abs -> /etc/hostname, up -> ../.." in caught.value.message


def test_a_whole_build_removes_bundles_of_hosts_it_no_longer_builds(repo: Path) -> None:
    build_bundles("prod", repo)
    (repo / "bundles/prod/web9.bundle").write_bytes(b"from a host that was removed")

    only_web1 = build_bundles("prod", repo, hosts=("web1",))
    assert only_web1.removed == ()
    assert (repo / "bundles/prod/web9.bundle").exists()

    result = build_bundles("prod", repo, skip_hosts=("web2",))
    assert [p.name for p in result.removed] == ["web2.bundle", "web9.bundle"]
    assert sorted(p.name for p in (repo / "bundles/prod").iterdir()) == ["web1.bundle", "web3.bundle"]


def test_the_builder_configures_what_hosts_receive_not_ignored_files(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path / "repo",
        components={
            "app": """
                from batou.component import Component
                from batou.lib.file import File

                class App(Component):
                    def configure(self):
                        self += File("x", source="local-only.txt")
                """
        },
        environments={"prod": "[hosts]\nweb1 = app\n"},
        files={"components/app/local-only.txt": "not in git\n", ".gitignore": "local-only.txt\n"},
    )
    git_commit(repo)

    with pytest.raises(BuildFailed) as caught:
        build_bundles("prod", repo)

    assert "source file" in caught.value.errors[0].message
    assert "local-only.txt does not exist" in caught.value.errors[0].message


def test_two_clones_with_different_homes_build_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundles = []
    for name in ("one", "two"):
        repo = deployment(
            tmp_path / name / "repo",
            components={
                "app": """
                    from batou.component import Component
                    from batou.lib.file import File

                    class App(Component):
                        def configure(self):
                            self += File("~/.apprc", content="x")
                            self += File("/srv/app-logs/x.conf", content="y")
                    """
            },
            environments={"prod": "[environment]\ntarget_directory = /srv/app\n[hosts]\nweb1 = app\n"},
        )
        git_commit(repo)
        monkeypatch.setenv("HOME", str(tmp_path / name / "home"))
        build_bundles("prod", repo)
        bundles.append((repo / "bundles/prod/web1.bundle").read_bytes())

    assert bundles[0] == bundles[1]
    tree = model_of(tmp_path / "one/repo/bundles/prod/web1.bundle").roots[0].tree
    assert "App > File('{home}/.apprc')" in tree
    # Only a whole path component is the target: /srv/app-logs is not below /srv/app.
    assert "App > File('/srv/app-logs/x.conf')" in tree


# -- sources, serials, keys ------------------------------------------------------


def manifest_of(path: Path) -> Manifest:
    return verified(path).manifest


def test_a_clean_commit_gives_serial_and_build_time_from_the_commit(repo: Path) -> None:
    git_commit(repo, when=1_700_000_123)
    result = build(build_options("prod", repo, dirty=False, clock=lambda: 5))

    manifest = manifest_of(repo / "bundles/prod/web1.bundle")
    assert (manifest.serial, manifest.build_time) == (1_700_000_123, 1_700_000_123)
    assert manifest.source.dirty is False
    assert manifest.source.commit is not None and len(manifest.source.commit) == 40
    assert result.serial == 1_700_000_123


def test_serial_option_and_source_date_epoch(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git_commit(repo, when=1_700_000_123)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1600000000")
    build(build_options("prod", repo, dirty=False, serial=42))

    manifest = manifest_of(repo / "bundles/prod/web1.bundle")
    assert (manifest.serial, manifest.build_time) == (42, 1_600_000_000)


def test_a_dirty_tree_is_refused_unless_asked_for(repo: Path) -> None:
    git_commit(repo)
    (repo / "components/app/component.py").write_text("# changed\n")
    (repo / "new-file").write_text("x")

    with pytest.raises(RepositoryError) as caught:
        build(build_options("prod", repo, dirty=False))
    assert caught.value.message == (
        "the working tree differs from its commit: components/app/component.py, new-file"
    )
    assert "pass --dirty" in (caught.value.hint or "")
    assert not (repo / "bundles").exists()


def test_a_dirty_build_takes_its_serial_from_the_clock(repo: Path) -> None:
    git_commit(repo, when=1_700_000_000)
    (repo / "new-file").write_text("x")
    build(build_options("prod", repo, dirty=True, clock=lambda: 1_800_000_000))

    manifest = manifest_of(repo / "bundles/prod/web1.bundle")
    assert (manifest.serial, manifest.build_time) == (1_800_000_000, 1_800_000_000)
    assert manifest.source.dirty is True


def test_a_repository_outside_git_needs_dirty(repo: Path) -> None:
    with pytest.raises(RepositoryError, match="has no commit to build"):
        build(build_options("prod", repo, dirty=False))


def test_without_a_signing_key_the_build_says_how_to_make_one(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONSIGN_SIGN_KEY", raising=False)
    with pytest.raises(SigningKeyError) as caught:
        build(build_options("prod", repo, sign_keys=()))

    assert caught.value.message == "no signing key: every bundle must be signed"
    assert "bundle keys generate" in (caught.value.hint or "")
    assert not (repo / "bundles").exists()


def test_keys_come_from_the_option_the_variable_or_the_environment_file(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = tmp_path / "keys" / "second"
    generate_key(second)
    monkeypatch.setenv("CONSIGN_SIGN_KEY", f"{signing_key().private}{os.pathsep}{second}")
    build(build_options("prod", repo, sign_keys=()))
    assert len(read_envelope(str(repo / "bundles/prod/web1.bundle")).signatures) == 2

    monkeypatch.delenv("CONSIGN_SIGN_KEY")
    env = repo / "environments/prod/environment.cfg"
    env.write_text(env.read_text().replace("[environment]\n", f"[environment]\nsign_key = {second}\n"))
    build(build_options("prod", repo, sign_keys=()))
    [signature] = read_envelope(str(repo / "bundles/prod/web1.bundle")).signatures
    assert signature.key == read_public_key(second)


def test_a_private_key_inside_the_repository_is_refused(repo: Path) -> None:
    shutil.copy(signing_key().private, repo / "builder-key")
    (repo / "builder-key").chmod(0o600)

    with pytest.raises(SigningKeyError) as caught:
        build(build_options("prod", repo, sign_keys=(repo / "builder-key",)))

    assert "lies inside the repository" in caught.value.message
    assert "move the private key out of the repository" in (caught.value.hint or "")
    assert not (repo / "bundles").exists()
