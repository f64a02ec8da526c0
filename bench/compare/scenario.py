"""Batou-style deployment repositories that batou 2.7.1 and consign both run
unchanged (issue 8), written deterministically from a seed.

    python bench/compare/scenario.py DIR [--roots N] [--files N] [--bytes N]
        [--template-share F] [--seed N] [--hosts N]

One environment, `bench`, with one host `localhost` listing every root
(or, with `--hosts N`, hosts `host001` ... each listing every root):

    components/c000/component.py      class C000(Component): F Files
    components/c000/files/f00.txt     static data (is_template=False)
    components/c000/files/f01.conf    a template: lines with {{component.x}}
    environments/bench/environment.cfg
    .batou.json                       batou's migration marker (see below)
    .gitignore                        work/ (batou's local target), bundles/

`connect_method = local` makes batou deploy into `<repo>/work/<root>/`;
consign reads the key, ignores it with a note, and deploys where
`executor apply --target-dir` says. `.batou.json` holds the migration
version `./batou migrate` would write, so that batou does not refuse to
deploy; it is only written when the caller passes `migration=` (the runner
asks batou's own `migrate --bootstrap` for the number, see `run.py`).
Contents, file times, author and dates derive from the spec: one spec
gives one commit id.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Fixed times everywhere (the STYLE's determinism habit), and in the past so
# that git never finds a file "racily clean" and re-hashes it.
EPOCH = 1_700_000_000
TARGET_DIRECTORY = "/srv/consign-bench"

_WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega listen port workers timeout backend frontend cache "
    "database user group mode owner path socket pool size limit retry level debug info"
).split()


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """How big the deployment is: `roots` root components, each with `files`
    files of about `file_bytes` bytes; `template_share` of each root's files
    are Jinja templates using `{{component.x}}`. `hosts` 0 means the one host
    `localhost`; N > 0 means hosts `host001` ... each listing every root."""

    roots: int = 10
    files: int = 10
    file_bytes: int = 1024
    template_share: float = 0.2
    seed: int = 1
    hosts: int = 0

    @property
    def label(self) -> str:
        base = f"{self.roots}x{self.files}"
        return f"{base}@{self.hosts}h" if self.hosts else base

    def host_names(self) -> list[str]:
        return [f"host{n:03d}" for n in range(1, self.hosts + 1)] if self.hosts else ["localhost"]

    def describe(self) -> str:
        """The spec in commit messages. Without hosts it is the repr the
        spec had before `hosts` existed, so those scenarios keep their
        commit ids."""
        text = (
            f"ScenarioSpec(roots={self.roots!r}, files={self.files!r}, file_bytes={self.file_bytes!r}, "
            f"template_share={self.template_share!r}, seed={self.seed!r}"
        )
        return f"{text}, hosts={self.hosts!r})" if self.hosts else f"{text})"

    def templates_per_root(self) -> int:
        return round(self.files * self.template_share)


def root_name(index: int) -> str:
    return f"c{index:03d}" if index < 1000 else f"c{index:04d}"


def _text(rng: random.Random, size: int, template: bool) -> str:
    """Lines of words up to `size` characters; templates get a
    `{{component.x}}` expression on every fourth line."""
    lines: list[str] = []
    length = 0
    number = 0
    while length < size:
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 9)))
        if template and number % 4 == 0:
            line = f"{words} = {{{{component.x}}}}-{number}"
        else:
            line = f"{words} {rng.randrange(10**6)}"
        lines.append(line)
        length += len(line) + 1
        number += 1
    return "\n".join(lines) + "\n"


def _file_names(spec: ScenarioSpec) -> list[tuple[str, bool]]:
    """(name, is_template) for one root's files: templates first."""
    templates = spec.templates_per_root()
    return [
        (f"f{n:02d}.conf" if n < templates else f"f{n:02d}.txt", n < templates)
        for n in range(spec.files)
    ]


def _component_py(index: int, spec: ScenarioSpec) -> str:
    name = root_name(index)
    lines = [
        f'"""Benchmark root {name}: {spec.files} files, {spec.templates_per_root()} of them templates."""',
        "from batou.component import Component",
        "from batou.lib.file import File",
        "",
        "",
        f"class {name.upper()}(Component):",
        f'    x = "value-{name}"',
        "",
        "    def configure(self):",
    ]
    for file_name, template in _file_names(spec):
        flag = "" if template else ", is_template=False"
        lines.append(f'        self += File("{file_name}", source="files/{file_name}"{flag})')
    return "\n".join(lines) + "\n"


def environment_cfg(spec: ScenarioSpec) -> str:
    roots = ", ".join(root_name(i) for i in range(spec.roots))
    return (
        "[environment]\n"
        "# batou deploys into <repository>/work; consign ignores this key (with\n"
        "# a note) and deploys where 'executor apply --target-dir' says.\n"
        "connect_method = local\n"
        f"target_directory = {TARGET_DIRECTORY}\n"
        + "".join(f"\n[host:{host}]\ncomponents = {roots}\n" for host in spec.host_names())
    )


def _git_env(repo: Path) -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "GIT_AUTHOR_DATE": f"@{EPOCH} +0000", "GIT_COMMITTER_DATE": f"@{EPOCH} +0000",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
    }  # fmt: skip


def commit(repo: Path, message: str = "bench") -> str:
    """Commit everything in `repo` (git init first if needed); the commit id."""
    env = _git_env(repo)
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    for path in sorted(repo.rglob("*")):
        if ".git" not in path.relative_to(repo).parts:
            os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", message], check=True, env=env
    )
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()


def make_repository(repo: Path, spec: ScenarioSpec, migration: int | None = None) -> str:
    """Write the scenario into `repo` (new or empty) and commit it; the commit id."""
    rng = random.Random(f"consign-compare:{spec.seed}")
    repo.mkdir(parents=True, exist_ok=True)
    for index in range(spec.roots):
        directory = repo / "components" / root_name(index)
        (directory / "files").mkdir(parents=True, exist_ok=True)
        (directory / "component.py").write_text(_component_py(index, spec))
        for file_name, template in _file_names(spec):
            (directory / "files" / file_name).write_text(_text(rng, spec.file_bytes, template))
    (repo / "environments/bench").mkdir(parents=True, exist_ok=True)
    (repo / "environments/bench/environment.cfg").write_text(environment_cfg(spec))
    (repo / ".gitignore").write_text("/work/\n/bundles/\n/.batou-lock\n")
    if migration is not None:
        (repo / ".batou.json").write_text(json.dumps({"migration": {"version": migration}}) + "\n")
    return commit(repo, f"scenario {spec.describe()}")


def changed_file(spec: ScenarioSpec) -> str:
    """The repository path `change_one_file` edits: the last (static) file of the first root."""
    name, _ = _file_names(spec)[-1]
    return f"components/{root_name(0)}/files/{name}"


def change_one_file(repo: Path, spec: ScenarioSpec, generation: int) -> str:
    """Append a line to one data file and commit; each generation differs."""
    path = repo / changed_file(spec)
    text = path.read_text().splitlines(keepends=True)
    # Replace the marker line of the previous generation, if any, so the file
    # keeps its size and every generation has distinct content.
    text = [line for line in text if not line.startswith("# bench generation ")]
    text.append(f"# bench generation {generation}\n")
    path.write_text("".join(text))
    return commit(repo, f"change {generation}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--roots", type=int, default=10)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--bytes", type=int, default=1024, dest="file_bytes")
    parser.add_argument("--template-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hosts", type=int, default=0, help="hosts host001.. instead of localhost")
    parser.add_argument("--migration", type=int, default=None, help="write .batou.json with this version")
    args = parser.parse_args()
    spec = ScenarioSpec(args.roots, args.files, args.file_bytes, args.template_share, args.seed, args.hosts)
    print(make_repository(args.directory, spec, args.migration))


if __name__ == "__main__":
    main()
