from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import batou.c
from executor.component import Component
from executor.errors import ComponentLoadError, ConsignError
from executor.lib.file import File
from executor import codecache, loader
from executor.loader import Registry, load_components


def deployment(root: Path, components: dict[str, str]) -> Path:
    for name, source in components.items():
        path = root / "components" / name / "component.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return root


def load(root: Path) -> tuple[Registry, list[ConsignError]]:
    return load_components(root)


def load_ok(root: Path) -> Registry:
    registry, errors = load_components(root)
    assert errors == []
    return registry


def summary(errors: list[ConsignError]) -> list[tuple[str, str | None]]:
    assert all(isinstance(e, ComponentLoadError) for e in errors)
    return [(e.message, e.where) for e in errors]


@pytest.fixture(autouse=True)
def forget_loaded_modules() -> Iterator[None]:
    # Each load forgets the previous one; leave nothing behind for other tests.
    yield
    load_components(Path("/nonexistent-consign-repository"))


APP = """
    from batou.component import Component

    class App(Component):
        pass
"""


def test_files_load_in_sorted_order_as_batou_c_modules(tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    record = f"""
        with open({str(log)!r}, "a") as f:
            f.write(__name__ + "\\n")
    """
    repo = deployment(tmp_path / "repo", {name: record for name in ["zeta", "alpha", "mid"]})

    load_ok(repo)

    assert log.read_text().split() == ["batou.c.alpha", "batou.c.mid", "batou.c.zeta"]
    for name in ["alpha", "mid", "zeta"]:
        module = sys.modules[f"batou.c.{name}"]
        assert getattr(batou.c, name) is module
        assert module.__file__ == str(repo / "components" / name / "component.py")


def test_a_later_file_imports_an_earlier_one_at_import_time(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        {
            "base": APP,
            "web": """
                import batou.c.base
                from batou.c.base import App

                class Web(batou.c.base.App):
                    pass

                assert Web.__mro__[1] is App
            """,
        },
    )

    registry = load_ok(repo)

    assert registry.names() == ["app", "web"]
    assert registry.classes["web"].__mro__[1] is registry.classes["app"]
    # The imported App is the same class, not a second definition.
    assert registry.files["app"] == "components/base/component.py"


def test_several_components_per_file(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        {
            "stack": """
                from batou.component import Component

                class Database(Component):
                    pass

                class WebServer(Component):
                    pass

                class helper:
                    pass
            """
        },
    )

    registry = load_ok(repo)

    assert registry.names() == ["database", "webserver"]
    assert registry.classes["webserver"].__name__ == "WebServer"
    assert registry.classes["database"].__module__ == "batou.c.stack"


def test_defdirs_and_files_are_recorded(tmp_path: Path) -> None:
    repo = deployment(tmp_path, {"app": APP})

    registry = load_ok(repo)

    assert registry.defdirs == {"app": str(tmp_path / "components" / "app")}
    assert registry.files == {"app": "components/app/component.py"}


def test_a_relative_repository_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment(tmp_path / "repo", {"app": APP})
    monkeypatch.chdir(tmp_path)

    registry = load_ok(Path("repo"))

    assert registry.defdirs["app"] == str(tmp_path / "repo" / "components" / "app")
    assert sys.modules["batou.c.app"].__file__ == str(
        tmp_path / "repo" / "components" / "app" / "component.py"
    )


def test_library_classes_imported_in_two_files_are_no_conflict(tmp_path: Path) -> None:
    uses_file = """
        from batou.component import Component
        from batou.lib.file import File

        class {name}(Component):
            def configure(self):
                self += File("x")
    """
    repo = deployment(
        tmp_path, {"one": uses_file.format(name="One"), "two": uses_file.format(name="Two")}
    )

    registry = load_ok(repo)

    assert registry.classes["file"] is File
    # Registered, so a batou deployment may use it as a root, but hints
    # name only the deployment's own components.
    assert "file" in registry.classes
    assert registry.names() == ["one", "two"]


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_a_deployment_class_wins_over_an_imported_library_class(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    own, imports = order
    repo = deployment(
        tmp_path,
        {
            own: """
                from batou.component import Component

                class File(Component):
                    pass
            """,
            imports: "from batou.lib.file import File\n",
        },
    )

    registry = load_ok(repo)

    assert registry.classes["file"] is not File
    assert registry.classes["file"].__module__ == f"batou.c.{own}"
    assert registry.files["file"] == f"components/{own}/component.py"


def test_a_component_defined_in_two_files_is_an_error_naming_both(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        {
            "first": APP,
            "second": """
                from batou.component import Component

                class APP(Component):
                    pass
            """,
        },
    )

    registry, errors = load(repo)

    assert summary(errors) == [
        (
            "component 'app' is defined twice: in components/first/component.py "
            "and in components/second/component.py",
            "components/second/component.py",
        )
    ]
    assert errors[0].hint == "rename one of the classes; consign does not let the later one win"
    assert registry.classes["app"].__module__ == "batou.c.first"


def test_two_classes_of_one_name_in_a_file_is_an_error_with_the_lines(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        {
            "app": """
                from batou.component import Component

                class App(Component):
                    pass

                class App(Component):
                    port = 1
            """
        },
    )

    _registry, errors = load(repo)

    assert summary(errors) == [
        (
            "class 'app' is defined 2 times in component 'app' (lines 3, 6)",
            "components/app/component.py:6",
        )
    ]
    assert errors[0].hint == "give each component class its own name"


def test_with_a_code_cache_a_second_load_compiles_nothing_and_finds_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = APP + "\n    class app(Component):\n        pass\n"
    repo = deployment(tmp_path / "repo", {"app": source})
    codecache.use(tmp_path / "cache")
    try:
        first, first_errors = load(repo)
        kept = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        assert len(kept) == 1

        def no_compiling(*args: object, **kw: object) -> object:
            raise AssertionError("compiled again")

        monkeypatch.setattr(loader, "_compile", no_compiling)
        second, second_errors = load(repo)
        # The cached entry keeps the duplicate-class finding with the code.
        assert summary(second_errors) == summary(first_errors) != []
        assert sorted(second.classes) == sorted(first.classes)

        # A damaged entry is compiled again, not trusted.
        monkeypatch.undo()
        kept[0].write_bytes(b"not marshal data")
        _third, third_errors = load(repo)
        assert summary(third_errors) == summary(first_errors)
    finally:
        codecache.use(None)


@pytest.mark.parametrize(
    ("source", "message", "line"),
    [
        ("x = 1\ny = (\n", "'(' was never closed", 2),
        ("from batou.component import Component\n\nclass App(:\n    pass\n", "invalid syntax", 3),
        ("def f():\n    pass\n  x = 1\n", "unindent does not match any outer indentation level", 3),
        # These pass the parser; only the compiler finds them.
        ("x = 1\n\nreturn x\n", "'return' outside function", 3),
        ("for i in []:\n    pass\nbreak\n", "'break' outside loop", 3),
        ("def f():\n    nonlocal x\n", "no binding for nonlocal 'x' found", 2),
    ],
    ids=["unclosed", "invalid", "indentation", "return", "break", "nonlocal"],
)
def test_a_syntax_error_names_the_file_and_line(
    tmp_path: Path, source: str, message: str, line: int
) -> None:
    path = tmp_path / "components" / "bad" / "component.py"
    path.parent.mkdir(parents=True)
    path.write_text(source, encoding="utf-8")

    registry, errors = load(tmp_path)

    assert summary(errors) == [
        (f"syntax error in component 'bad': {message}", f"components/bad/component.py:{line}")
    ]
    assert errors[0].hint == "fix the Python syntax of the component file"
    assert "batou.c.bad" not in sys.modules
    assert registry.names() == []


def test_a_null_byte_is_a_syntax_error_without_a_line(tmp_path: Path) -> None:
    path = tmp_path / "components" / "nul" / "component.py"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x = 1\n\x00\n")

    _registry, errors = load(tmp_path)

    assert summary(errors) == [
        (
            "syntax error in component 'nul': source code string cannot contain null bytes",
            "components/nul/component.py",
        )
    ]


def test_a_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "components" / "latin" / "component.py"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"# caf\xe9\n")

    _registry, errors = load(tmp_path)

    assert summary(errors) == [
        ("component 'latin' is not UTF-8: invalid continuation byte at byte 5",
         "components/latin/component.py")
    ]
    assert errors[0].hint == "save the component file as UTF-8"


def test_an_exception_at_import_names_the_raising_line(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        {
            "boom": """
                from batou.component import Component

                def fail():
                    raise RuntimeError("no database")

                class Boom(Component):
                    pass

                fail()
            """,
            "fine": APP,
        },
    )

    registry, errors = load(repo)

    assert summary(errors) == [
        (
            "loading component 'boom' raised RuntimeError: no database",
            "components/boom/component.py:4",
        )
    ]
    assert errors[0].hint == "component files run when loaded; keep module-level code simple"
    assert "batou.c.boom" not in sys.modules
    assert not hasattr(batou.c, "boom")
    # The other files still load; the failed one registers nothing.
    assert registry.names() == ["app"]


def test_an_exception_in_an_earlier_file_names_that_files_line(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        {
            "a": """
                def check(value):
                    if not value:
                        raise ValueError("empty value")
            """,
            "b": """
                from batou.c.a import check

                check("")
            """,
        },
    )

    _registry, errors = load(repo)

    assert summary(errors) == [
        ("loading component 'b' raised ValueError: empty value", "components/a/component.py:3")
    ]


def test_importing_a_later_file_fails_at_import_time(tmp_path: Path) -> None:
    repo = deployment(tmp_path, {"a": "import batou.c.b\n", "b": APP})

    registry, errors = load(repo)

    assert summary(errors) == [
        (
            "loading component 'a' raised ModuleNotFoundError: No module named 'batou.c.b'",
            "components/a/component.py:1",
        )
    ]
    assert registry.names() == ["app"]


def test_annotations_in_component_files_are_not_stringified(tmp_path: Path) -> None:
    # The loader's own `from __future__ import annotations` must not leak.
    repo = deployment(tmp_path, {"a": "def f(x: int) -> str:\n    return ''\n"})

    load_ok(repo)

    assert sys.modules["batou.c.a"].f.__annotations__ == {"x": int, "return": str}


def test_loading_twice_forgets_the_first_load(tmp_path: Path) -> None:
    first = deployment(
        tmp_path / "first",
        {"old": APP, "shared": "VALUE = 'first'\n"},
    )
    second = deployment(
        tmp_path / "second",
        {"new": APP.replace("App", "Other"), "shared": "VALUE = 'second'\n"},
    )
    old_registry = load_ok(first)
    old_app = old_registry.classes["app"]

    registry = load_ok(second)

    assert registry.names() == ["other"]
    assert "batou.c.old" not in sys.modules
    assert not hasattr(batou.c, "old")
    assert sys.modules["batou.c.shared"].VALUE == "second"
    assert batou.c.shared.VALUE == "second"  # type: ignore[attr-defined]
    # Reloading the first repository builds new classes.
    assert load_ok(first).classes["app"] is not old_app


def test_a_directory_without_component_py_is_ignored(tmp_path: Path) -> None:
    repo = deployment(tmp_path, {"app": APP})
    (repo / "components" / "docs").mkdir()
    (repo / "components" / "docs" / "README.md").write_text("not a component")
    (repo / "components" / "__pycache__").mkdir()
    (repo / "components" / "notes.py").write_text("raise SystemExit\n")

    registry = load_ok(repo)

    assert registry.names() == ["app"]
    assert "batou.c.docs" not in sys.modules
    assert "batou.c.__pycache__" not in sys.modules


def test_no_components_directory_gives_an_empty_registry(tmp_path: Path) -> None:
    registry, errors = load(tmp_path)

    assert errors == []
    assert registry == Registry()
    assert registry.names() == []


def test_errors_of_several_files_are_all_collected(tmp_path: Path) -> None:
    repo = deployment(
        tmp_path,
        {
            "a": "x = (\n",
            "b": "raise KeyError('k')\n",
            "c": APP,
            "d": APP,
        },
    )

    registry, errors = load(repo)

    assert [e.where for e in errors] == [
        "components/a/component.py:1",
        "components/b/component.py:1",
        "components/d/component.py",
    ]
    assert registry.names() == ["app"]


def test_the_component_base_class_itself_is_not_registered(tmp_path: Path) -> None:
    repo = deployment(tmp_path, {"app": APP})

    registry = load_ok(repo)

    assert "component" not in registry.classes
    assert all(issubclass(cls, Component) for cls in registry.classes.values())
