"""YAMLContent and its emitter: JSON-like data as block-style YAML with sorted
keys, strings quoted wherever a YAML reader could take them for anything else.

The runtime has no YAML library; where PyYAML is importable (in this
virtualenv, or else in a python3 on PATH) the emitted documents are read
back with it and must give the data again.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from executor.component import Component
from executor.errors import ConfigurationError
from executor.lib.file import YAMLContent, dump_yaml

from .helpers import apply_twice, configure, deploy


def root_with(*makers: Callable[[], Component]) -> Callable[[], Component]:
    class Root(Component):
        def configure(self) -> None:
            for make in makers:
                self += make()

    return Root


# -- reading YAML back -------------------------------------------------------------------

_READ_BACK = """
import json, sys, yaml
def tag(o):
    return {"$type": type(o).__name__, "repr": repr(o)}
def load(text):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return {"$error": str(exc)}
texts = json.load(sys.stdin)
print(json.dumps([load(t) for t in texts], default=tag))
"""


def _load(yaml: Any, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return {"$error": str(exc)}


def _pyyaml_reader() -> Callable[[list[str]], list[Any]] | None:
    """Something that reads YAML documents with PyYAML, if there is one."""
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        pass
    else:
        return lambda texts: [_load(yaml, text) for text in texts]
    for python in dict.fromkeys(p for p in (shutil.which("python3"), "/usr/bin/python3") if p):
        probe = subprocess.run([python, "-c", "import yaml"], capture_output=True, timeout=30)
        if probe.returncode == 0:

            def read(texts: list[str], python: str = python) -> list[Any]:
                done = subprocess.run(
                    [python, "-c", _READ_BACK],
                    input=json.dumps(texts),
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=60,
                )
                loaded: list[Any] = json.loads(done.stdout)
                return loaded

            return read
    return None


@pytest.fixture(scope="module")
def read_yaml() -> Callable[[list[str]], list[Any]]:
    reader = _pyyaml_reader()
    if reader is None:
        pytest.skip("PyYAML is not importable here (nor in a python3 on PATH)")
    return reader


def same(a: Any, b: Any) -> bool:
    """Equal, with types: 1 is not 1.0 nor True; NaN is NaN."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


TRICKY = [
    "", " x", "x ", "\tx", "a: b", "a #b", "a#b", "a:b", "foo:", "x,y", "a]", "it's", 'q"uote',
    *(c + "x" for c in "-?:,[]{}#&*!|>'\"%@`"),
    "yes", "no", "on", "off", "true", "True", "FALSE", "null", "Null", "NULL", "~", "y", "n",
    "Y", "N", "1e3", "1E3", "0x10", "0o17", "0b11", "017", "1_000", "+1", "-1", ".5", "1.",
    "1.0", "0", "-0", "12:30", "12:30:00", "190:20:30", "2024-01-01",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5", ".inf", "-.inf", ".NaN", "NaN", "Infinity", "<<", "=", "---",
    "...", "--- x", "... x", "a\nb", "a\n", "\n", "line\r\nbreak", "nul\0", "bell\a", "\x1b[0m",
    "\x7f", "\x85", "\x9f", "\xa0x", "x\xa0", "\u2028", "\u2029", "\ufeff", "é", "日本語", "😀",
    "\\", "back\\slash", "http://example.com/a?b=c#d", "3 apples", "v1.2", "1.2.3", "a  b",
]


def random_data(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 7, 2**70, -(2**40)])
    if kind == 2:
        return rng.choice([0.0, -0.5, 1e20, 1e-7, 3.14159, float("inf"), float("-inf"), 1e16])
    if kind in (3, 4):
        if rng.random() < 0.5:
            return rng.choice(TRICKY)
        return "".join(rng.choice(" :#-?'\"ab1.\n\t\\{}[],é") for _ in range(rng.randrange(6)))
    if kind in (5, 6):
        return {
            rng.choice(TRICKY) if rng.random() < 0.5 else f"k{i}": random_data(rng, depth + 1)
            for i in range(rng.randrange(4))
        }
    return [random_data(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_documents_read_back_as_the_data_with_pyyaml(
    read_yaml: Callable[[list[str]], list[Any]],
) -> None:
    rng = random.Random(9)
    cases: list[Any] = [
        {"tricky": TRICKY},
        {key: index for index, key in enumerate(TRICKY)},
        *TRICKY,
        [float("nan")],
        *(random_data(rng) for _ in range(400)),
    ]

    loaded = read_yaml([dump_yaml(case) for case in cases])

    wrong = [(case, got) for case, got in zip(cases, loaded, strict=True) if not same(case, got)]
    assert wrong == []


# -- the emitter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain text", "plain text"),
        ("é 日本語", "é 日本語"),
        ("a#b", "a#b"),
        ("http://x/y", "http://x/y"),
        ("", '""'),
        (" lead", '" lead"'),
        ("trail ", '"trail "'),
        ("a: b", '"a: b"'),
        ("a #b", '"a #b"'),
        ("ends:", '"ends:"'),
        ("-dash", '"-dash"'),
        ("*star", '"*star"'),
        ("`tick", '"`tick"'),
        ("yes", '"yes"'),
        ("Off", '"Off"'),
        ("~", '"~"'),
        ("null", '"null"'),
        ("1e3", '"1e3"'),
        ("0x10", '"0x10"'),
        ("1_000", '"1_000"'),
        ("2024-01-01", '"2024-01-01"'),
        ("12:30", '"12:30"'),
        (".inf", '".inf"'),
        ("---", '"---"'),
        ('say "hi"', 'say "hi"'),
        ('"quoted"', '"\\"quoted\\""'),
        ("two\nlines", '"two\\nlines"'),
        ("tab\there", '"tab\\there"'),
        ("nul\0", '"nul\\0"'),
        ("\x7f\x9f", '"\\x7f\\x9f"'),
        ("\u2028\ufeff", '"\\L\\ufeff"'),
        ("back\\slash", "back\\slash"),
        ("back\\slash\n", '"back\\\\slash\\n"'),
    ],
)
def test_strings_are_plain_only_when_no_reader_could_misread_them(value: str, written: str) -> None:
    assert dump_yaml({"k": value}) == f"k: {written}\n"
    assert dump_yaml([value]) == f"- {written}\n"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-12, "-12"),
        (2**70, "1180591620717411303424"),
        (0.5, "0.5"),
        (100.0, "100.0"),
        (1e20, "1.0e+20"),
        (1.5e-7, "1.5e-07"),
        (float("inf"), ".inf"),
        (float("-inf"), "-.inf"),
        (float("nan"), ".nan"),
        ({}, "{}"),
        ([], "[]"),
        ((), "[]"),
    ],
)
def test_scalars_and_empty_collections(value: Any, written: str) -> None:
    assert dump_yaml({"k": value}) == f"k: {written}\n"
    assert dump_yaml(value) == f"{written}\n"


def test_nested_structures_are_block_style_with_two_spaces() -> None:
    data = {
        "server": {"port": 8080, "hosts": ["a", "b"], "tls": {"on": True}},
        "jobs": [{"name": "x", "args": ["-v"]}, [1, [2, 3]], {}, []],
        "yes": "no",
    }

    assert dump_yaml(data) == (
        "jobs:\n"
        "  - args:\n"
        '      - "-v"\n'
        "    name: x\n"
        "  - - 1\n"
        "    - - 2\n"
        "      - 3\n"
        "  - {}\n"
        "  - []\n"
        "server:\n"
        "  hosts:\n"
        "    - a\n"
        "    - b\n"
        "  port: 8080\n"
        "  tls:\n"
        '    "on": true\n'
        '"yes": "no"\n'
    )


def test_keys_are_sorted_whatever_order_they_came_in() -> None:
    one = {"b": {"y": 1, "x": 2}, "a": [{"d": 1, "c": 2}]}
    two = {"a": [{"c": 2, "d": 1}], "b": {"x": 2, "y": 1}}

    # "y" is a boolean to YAML 1.1 readers: quoted.
    assert dump_yaml(one) == dump_yaml(two) == 'a:\n  - c: 2\n    d: 1\nb:\n  x: 2\n  "y": 1\n'


# -- YAMLContent -------------------------------------------------------------------------------


def test_yaml_content_is_written_once_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"

    first, _run = apply_twice(
        root_with(lambda: YAMLContent(str(path), data={"port": 8080, "name": "yes"})), tmp_path
    )

    assert path.read_text() == 'name: "yes"\nport: 8080\n'
    assert first.changed == (f"Root > YAMLContent('{path}')",)


def test_yaml_content_with_equal_data_gives_equal_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"

    apply_twice(
        root_with(
            lambda: YAMLContent(str(one), data={"b": 1, "a": {"y": [1, 2], "x": "é"}}),
            lambda: YAMLContent(str(two), data={"a": {"x": "é", "y": [1, 2]}, "b": 1}),
        ),
        tmp_path,
    )

    assert one.read_bytes() == two.read_bytes()
    assert one.read_text() == 'a:\n  x: é\n  "y":\n    - 1\n    - 2\nb: 1\n'


def test_override_merges_deeply(tmp_path: Path) -> None:
    path = tmp_path / "merged.yaml"

    apply_twice(
        root_with(
            lambda: YAMLContent(
                str(path),
                data={"db": {"host": "a", "port": 5432}, "debug": True, "list": [1, 2]},
                override={"db": {"host": "b"}, "debug": False, "list": [3], "new": None},
            )
        ),
        tmp_path,
    )

    assert path.read_text() == (
        "db:\n  host: b\n  port: 5432\ndebug: false\nlist:\n  - 3\nnew: null\n"
    )


def test_a_change_is_shown_as_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    apply_twice(root_with(lambda: YAMLContent(str(path), data={"port": 80})), tmp_path)

    outcome, run = deploy(root_with(lambda: YAMLContent(str(path), data={"port": 81})), tmp_path)

    assert outcome.error is None
    [diff] = run.diffs
    assert diff.diff is not None and "-port: 80\n+port: 81\n" in diff.diff


@pytest.mark.parametrize("name", ["base.json", "base.yaml", "base.yml"])
def test_a_json_source_is_read_whatever_its_name(tmp_path: Path, name: str) -> None:
    defdir = tmp_path / "components" / "app"
    defdir.mkdir(parents=True)
    (defdir / name).write_text('{"port": 80, "name": "{{ not a template }}", "on": true}')
    path = tmp_path / "config.yaml"

    apply_twice(
        root_with(lambda: YAMLContent(str(path), source=name, override={"port": 81})),
        tmp_path,
        defdir=defdir,
    )

    assert path.read_text() == 'name: "{{ not a template }}"\n"on": true\nport: 81\n'


def test_a_yaml_source_that_is_no_json_is_refused_saying_why(tmp_path: Path) -> None:
    defdir = tmp_path / "components" / "app"
    defdir.mkdir(parents=True)
    (defdir / "base.yaml").write_text("port: 80\n")

    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(lambda: YAMLContent(str(tmp_path / "x.yaml"), source="base.yaml")),
            tmp_path,
            defdir=defdir,
        )

    assert info.value.message.startswith("source file base.yaml is no JSON (")
    assert info.value.message.endswith(
        "); YAMLContent reads only JSON-compatible YAML sources, "
        "as consign's runtime has no YAML parser"
    )
    assert info.value.hint is not None and "JSON syntax" in info.value.hint
    assert info.value.where == f"Root > YAMLContent('{tmp_path / 'x.yaml'}')"


def test_a_json_source_that_is_no_json_is_a_configure_error(tmp_path: Path) -> None:
    defdir = tmp_path / "components" / "app"
    defdir.mkdir(parents=True)
    (defdir / "broken.json").write_text("{nope")

    with pytest.raises(ConfigurationError) as info:
        configure(
            root_with(lambda: YAMLContent(str(tmp_path / "x.yaml"), source="broken.json")),
            tmp_path,
            defdir=defdir,
        )

    assert info.value.message.startswith("source file broken.json is not valid JSON: ")


def _loop() -> Any:
    data: Any = {"a": [1]}
    data["a"].append(data)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "YAMLContent needs data= or source="),
        ({"s": {1, 2}}, "YAML data at data['s'] is a builtins.set, which YAMLContent cannot write"),
        (
            {"b": [b"x"]},
            "YAML data at data['b'][0] is a builtins.bytes, which YAMLContent cannot write",
        ),
        ({"a": {1: "x"}}, "YAML data at data['a'] has the key 1 (int): keys must be strings"),
        (
            {"k" * 1025: 1},
            "YAML data at data has a key of 1025 characters; YAML keys are limited to 1024",
        ),
        (_loop(), "YAML data at data['a'][1] contains itself"),
    ],
    ids=["nothing", "set", "bytes", "int key", "long key", "loop"],
)
def test_data_yaml_cannot_hold_is_a_configure_error(
    tmp_path: Path, data: Any, message: str
) -> None:
    path = tmp_path / "bad.yaml"

    with pytest.raises(ConfigurationError) as info:
        configure(root_with(lambda: YAMLContent(str(path), data=data)), tmp_path)

    assert info.value.message == message
    assert info.value.where == f"Root > YAMLContent('{path}')"
