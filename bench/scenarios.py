"""Deployment repositories for benchmarks: sized, committed, same bytes from the same seed.

    spec = ScenarioSpec(files=2500, total_bytes=50 * MB, hosts=1, seed=1)
    scenario = make_repository(Path("/tmp/repo"), spec)
    # bundle build prod -C /tmp/repo --sign-key KEY

The repository holds ``spec.files`` data files of exactly ``spec.total_bytes``
bytes in all, spread over the data directories of ``spec.components``
components (``components/<name>/files/dNN/...``). About ``text_fraction`` of
the bytes are compressible text (lines of words drawn from a Zipf-weighted
vocabulary, roughly what configuration and code compress like) and the rest
incompressible random bytes (images, archives, keys). One component,
``site``, has a ``component.py`` that deploys a few of its files with
``File`` and ``BinaryFile``; the others are data only, as vendored assets
are. ``environments/prod/environment.cfg`` lists ``spec.hosts`` hosts, each
with ``site``.

Everything is derived from ``spec.seed``; file times and the commit's
author, committer and dates are fixed, so the same spec gives the same
commit id on any machine with the same Python and git. The files' mtimes lie
in the past so that git never sees them as "racily clean" and re-hashes
them during a build (which would bias the timing).
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Sizes in benchmarks are decimal, as in the speed targets: 1 MB = 10**6 bytes.
MB = 1_000_000
COMMIT_TIME = 1_700_000_000
ENVIRONMENT = "prod"
SITE = "site"

_VOCABULARY_SIZE = 4096
_WORDS_PER_LINE = 12
# Data files land this many directories deep below components/<name>/files/.
_SUBDIRECTORIES = 16


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    files: int = 2500
    total_bytes: int = 50 * MB
    hosts: int = 1
    components: int = 10
    text_fraction: float = 0.7
    seed: int = 1

    def __post_init__(self) -> None:
        if self.files < 4:
            raise ValueError("a scenario needs at least 4 data files (site uses 3 of them)")
        if self.components < 1 or self.hosts < 1:
            raise ValueError("a scenario needs at least one component and one host")
        if not 0.0 < self.text_fraction < 1.0:
            raise ValueError("text_fraction must lie strictly between 0 and 1")
        if self.total_bytes < self.files * 64:
            raise ValueError("total_bytes must allow at least 64 bytes per file")


@dataclass(frozen=True, slots=True)
class Scenario:
    root: Path
    spec: ScenarioSpec
    environment: str
    hosts: tuple[str, ...]
    commit: str
    data_files: int
    text_bytes: int
    binary_bytes: int
    # Every file git tracks: the data files plus component.py,
    # environment.cfg and .gitignore.
    tracked_files: int
    tracked_bytes: int

    @property
    def data_bytes(self) -> int:
        return self.text_bytes + self.binary_bytes


@dataclass(frozen=True, slots=True)
class _DataFile:
    path: str
    size: int
    text: bool


def host_names(count: int) -> tuple[str, ...]:
    width = max(3, len(str(count)))
    return tuple(f"host{i:0{width}d}" for i in range(1, count + 1))


def _sizes(rng: random.Random, count: int, total: int) -> list[int]:
    """`count` sizes, log-normally spread (many small files, a few large
    ones), at least 64 bytes each, summing to exactly `total`."""
    spare = total - 64 * count
    if spare < 0:
        raise ValueError(f"{total} bytes do not give {count} files 64 bytes each")
    weights = [rng.lognormvariate(0.0, 1.2) for _ in range(count)]
    scale = spare / sum(weights)
    sizes = [64 + int(w * scale) for w in weights]
    # Rounding down leaves a few bytes; the largest file takes them.
    sizes[max(range(count), key=sizes.__getitem__)] += total - sum(sizes)
    return sizes


def _layout(rng: random.Random, spec: ScenarioSpec) -> list[_DataFile]:
    text_files = min(spec.files - 1, max(2, round(spec.files * spec.text_fraction)))
    binary_files = spec.files - text_files
    text_total = round(spec.total_bytes * spec.text_fraction)
    # The first three files are site's: two text files and one binary file
    # for its component to deploy; the kinds of the rest are shuffled.
    rest = [True] * (text_files - 2) + [False] * (binary_files - 1)
    rng.shuffle(rest)
    kinds = [True, True, False, *rest]
    text_sizes = iter(_sizes(rng, text_files, text_total))
    binary_sizes = iter(_sizes(rng, binary_files, spec.total_bytes - text_total))
    names = [SITE] + [f"part{i:02d}" for i in range(1, spec.components)]
    layout = []
    for index, text in enumerate(kinds):
        component = names[0] if index < 3 else rng.choice(names)
        directory = f"d{rng.randrange(_SUBDIRECTORIES):02d}"
        suffix = "txt" if text else "bin"
        path = f"components/{component}/files/{directory}/f{index:06d}.{suffix}"
        layout.append(_DataFile(path, next(text_sizes if text else binary_sizes), text))
    return layout


def _vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    letters = "abcdefghijklmnopqrstuvwxyz_"
    words = [
        "".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(_VOCABULARY_SIZE)
    ]
    # Zipf weights: a few words are everywhere, as in real text.
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    return words, cumulative


def _text(rng: random.Random, vocabulary: tuple[list[str], list[float]], size: int) -> bytes:
    words, cumulative = vocabulary
    # About 6.5 bytes per word with its separator; ask for a few more.
    count = size // 6 + _WORDS_PER_LINE
    drawn = rng.choices(words, cum_weights=cumulative, k=count)
    lines = [
        " ".join(drawn[i : i + _WORDS_PER_LINE]) for i in range(0, len(drawn), _WORDS_PER_LINE)
    ]
    data = ("\n".join(lines) + "\n").encode()
    while len(data) < size:  # short words throughout: rare, but possible
        data += data
    return data[: size - 1] + b"\n"


def _component(files: list[_DataFile]) -> str:
    conf, notes, blob = (f.path.split("/", 2)[2] for f in files[:3])
    return textwrap.dedent(
        f'''\
        # Deploys a few of this component's files; the rest only travel in the bundle.
        from batou.component import Component
        from batou.lib.file import BinaryFile, File


        class Site(Component):
            def configure(self):
                self += File("site.conf", source="{conf}", is_template=False)
                self += File("notes.txt", source="{notes}", is_template=False)
                self += BinaryFile("asset.bin", source="{blob}")
        '''
    )


def _environment(hosts: tuple[str, ...]) -> str:
    lines = [
        "[environment]",
        "host_domain = bench.example",
        "platform = ubuntu",
        "target_directory = /srv/bench",
        "",
        "[hosts]",
        *(f"{host} = {SITE}" for host in hosts),
    ]
    return "\n".join(lines) + "\n"


def _git(root: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "consign bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "consign bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "GIT_AUTHOR_DATE": f"@{COMMIT_TIME} +0000",
        "GIT_COMMITTER_DATE": f"@{COMMIT_TIME} +0000",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(root),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    completed = subprocess.run(
        # N.B. level-1 zlib for loose objects: only the setup gets faster; the
        # build reads the working tree, not the object store.
        ["git", "-c", "core.looseCompression=1", "-c", "commit.gpgSign=false", *args],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return completed.stdout


def make_repository(
    root: Path, spec: ScenarioSpec, extra_files: Mapping[str, str] | None = None
) -> Scenario:
    """Write and commit the repository of `spec` in the new directory `root`.

    `extra_files` (path -> text) are written and committed with it; they may
    replace the generated control files (``environments/prod/environment.cfg``,
    ``components/site/component.py``), e.g. to add components or requirements.
    """
    root.mkdir(parents=True)
    rng = random.Random(spec.seed)
    layout = _layout(rng, spec)
    vocabulary = _vocabulary(rng)
    hosts = host_names(spec.hosts)
    written: list[Path] = []
    for entry in layout:
        path = root / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _text(rng, vocabulary, entry.size) if entry.text else rng.randbytes(entry.size)
        path.write_bytes(data)
        written.append(path)
    control = {
        f"components/{SITE}/component.py": _component(layout),
        f"environments/{ENVIRONMENT}/environment.cfg": _environment(hosts),
        ".gitignore": "/bundles/\n",
        **(extra_files or {}),
    }
    for name, text in control.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    for path in written:
        os.utime(path, (COMMIT_TIME, COMMIT_TIME))
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", f"benchmark scenario {spec}")
    text_bytes = sum(f.size for f in layout if f.text)
    return Scenario(
        root=root,
        spec=spec,
        environment=ENVIRONMENT,
        hosts=hosts,
        commit=_git(root, "rev-parse", "HEAD").strip(),
        data_files=len(layout),
        text_bytes=text_bytes,
        binary_bytes=sum(f.size for f in layout if not f.text),
        tracked_files=len(written),
        tracked_bytes=sum(p.stat().st_size for p in written),
    )


def main() -> None:
    """Write one scenario: ``python bench/scenarios.py DIR [FILES MB HOSTS SEED]``."""
    import sys

    if len(sys.argv) not in (2, 6):
        raise SystemExit("usage: python bench/scenarios.py DIR [FILES MB HOSTS SEED]")
    spec = ScenarioSpec()
    if len(sys.argv) == 6:
        files, megabytes, hosts, seed = (int(a) for a in sys.argv[2:])
        spec = ScenarioSpec(files=files, total_bytes=megabytes * MB, hosts=hosts, seed=seed)
    scenario = make_repository(Path(sys.argv[1]), spec)
    print(
        f"{scenario.root}: {scenario.data_files} data files, {scenario.data_bytes} bytes "
        f"({scenario.text_bytes} text, {scenario.binary_bytes} random), "
        f"{len(scenario.hosts)} hosts, commit {scenario.commit}"
    )


if __name__ == "__main__":
    main()
