from __future__ import annotations

from pathlib import Path

import pytest

from executor import template
from executor.component import Attribute, Component
from executor.errors import ConfigurationError, TemplateError
from tests.executor.component_helpers import (
    configure_ok,
    configure_roots,
    line_of,
    prepare,
    write_component,
)

# --- the renderer ---------------------------------------------------------------


def test_line_statements_start_with_double_at() -> None:
    text = "@@ for name in names\n{{ name }}\n@@ endfor\n"
    assert template.render(text, {"names": ["a", "b"]}) == "a\nb\n"


@pytest.mark.parametrize(("text", "expected"), [("x={{ x }}\n", "x=1\n"), ("x={{ x }}", "x=1")])
def test_the_trailing_newline_is_kept_as_written(text: str, expected: str) -> None:
    assert template.render(text, {"x": 1}) == expected


def test_output_is_not_html_escaped() -> None:
    assert template.render("{{ v }}", {"v": "<a & b>"}) == "<a & b>"


def test_defined_tests_work_with_strict_names() -> None:
    text = "@@ if proxy is defined\nproxy={{ proxy }}\n@@ else\nno proxy\n@@ endif\n"
    assert template.render(text, {}) == "no proxy\n"
    assert template.render(text, {"proxy": "p"}) == "proxy=p\n"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a\nb={{ nope }}\n", "app.conf:2", "template uses an undefined name: 'nope' is undefined"),
        (
            "@@ for i in [1]\n{{ i }}\n@@ endfor\n{{ server.name }}\n",
            "app.conf:4",
            "template uses an undefined name: 'server' is undefined",
        ),
        (
            "ok\n{% if %}\n",
            "app.conf:2",
            "template syntax error: Expected an expression, got 'end of statement block'",
        ),
        ("\n\n{{ 1 // 0 }}\n", "app.conf:3", "template raised ZeroDivisionError: integer division or modulo by zero"),
    ],
)
def test_errors_name_the_template_file_and_line(text: str, where: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        template.render(text, {}, name="app.conf")
    assert (info.value.where, info.value.message) == (where, message)


def test_undefined_name_hint_lists_the_context() -> None:
    with pytest.raises(TemplateError) as info:
        template.render("{{ x }}", {})
    assert info.value.hint == "the context has 'component', 'host', 'environment' and the template_args"


def test_the_same_text_under_two_names_reports_its_own_name() -> None:
    for name in ("one.conf", "two.conf"):
        with pytest.raises(TemplateError) as info:
            template.render("{{ missing }}", {}, name=name)
        assert info.value.where == f"{name}:1"


def test_a_cached_template_renders_each_context() -> None:
    assert template.render("{{ x }}", {"x": 1}) == "1"
    assert template.render("{{ x }}", {"x": 2}) == "2"


# --- Component.template ------------------------------------------------------------


class Configured(Component):
    port = 8080


def test_template_resolves_against_defdir_and_sees_the_context(tmp_path: Path) -> None:
    defdir = tmp_path / "components" / "app"
    defdir.mkdir(parents=True)
    (defdir / "app.conf").write_text(
        "@@ for worker in workers\n"
        "{{ worker }}@{{ host.fqdn }}:{{ component.port }} ({{ environment.name }})\n"
        "@@ endfor\n"
    )
    root = prepare(Configured(), tmp_path, defdir=defdir)
    rendered = root.template("app.conf", workers=["a", "b"])
    assert rendered == "a@web1.example.com:8080 (test)\nb@web1.example.com:8080 (test)\n"
    assert root.template(str(defdir / "app.conf"), workers=[]) == ""


def test_template_renders_for_another_component(tmp_path: Path) -> None:
    (tmp_path / "port.conf").write_text("{{ component.port }}")
    root = prepare(Configured(), tmp_path)
    assert root.template("port.conf", component=Configured(port=1)) == "1"


def test_a_missing_template_file_says_where_it_was_looked_for(tmp_path: Path) -> None:
    root = prepare(Configured(), tmp_path)
    with pytest.raises(TemplateError) as info:
        root.template("nginx.conf")
    assert info.value.message == f"template {tmp_path}/nginx.conf does not exist"
    assert info.value.hint is not None and str(tmp_path) in info.value.hint


APP = """
from batou.component import Component


class App(Component):
    workers = 2

    def configure(self):
        self.rendered = self.template("app.conf.j2", extra="x")  # renders
"""


def test_template_errors_name_the_template_and_the_users_line(tmp_path: Path) -> None:
    path = write_component(tmp_path, "app", APP)
    (path.parent / "app.conf.j2").write_text("workers={{ component.workers }}\n{{ typo }}\n")
    configured, errors = configure_roots(tmp_path, "app")
    assert configured == []
    [error] = errors
    assert isinstance(error, TemplateError)
    assert isinstance(error, ConfigurationError)
    assert error.message == "template uses an undefined name: 'typo' is undefined"
    line = line_of(path, "# renders")
    assert error.where == f"App (components/app/component.py:{line}), components/app/app.conf.j2:2"


def test_template_of_a_loaded_component_renders_from_its_directory(tmp_path: Path) -> None:
    path = write_component(tmp_path, "app", APP)
    (path.parent / "app.conf.j2").write_text("workers={{ component.workers }} {{ extra }}\n")
    [app] = configure_ok(tmp_path, "app")
    assert app.component.rendered == "workers=2 x\n"  # type: ignore[attr-defined]


class Needy(Component):
    token = Attribute(str)


def test_a_consign_error_inside_a_template_keeps_its_message_and_hint(tmp_path: Path) -> None:
    root = prepare(Needy(), tmp_path)
    with pytest.raises(TemplateError) as info:
        template.render("a\n{{ component.token }}\n", {"component": root}, name="t.conf")
    assert info.value.where == "t.conf:2"
    assert info.value.message == (
        "template raised AttributeValueError: Needy.token has no value: no default and no override"
    )
    assert info.value.hint is not None and "token=" in info.value.hint


@pytest.mark.parametrize(
    "text",
    [
        "plain text\n",
        "no newline at the end",
        "",
        "braces { alone } and } { and %} and #}\n",
        "at signs in the middle: a@@b\n",
        "trailing newlines\n\n\n",
    ],
)
def test_text_without_template_syntax_renders_to_itself_as_jinja_would(text: str) -> None:
    assert template.render(text, {}) == text
    assert template._compile(text, "<string>").render() == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\r\nb\r\n", "a\nb\n"),
        ("{# a comment #}x\n", "x\n"),
        ("  @@ if True\nyes\n  @@ endif\n", "yes\n"),
    ],
)
def test_text_that_jinja_changes_is_still_rendered(text: str, expected: str) -> None:
    assert template.render(text, {}) == expected


def test_compiled_templates_are_kept_and_reused_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "hello {{ name }}\n"
    template.use_code_cache(tmp_path / "cache")
    try:
        template._compile.cache_clear()
        assert template.render(text, {"name": "web1"}) == "hello web1\n"
        kept = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        assert len(kept) == 1 and not kept[0].name.startswith(".")

        # A new run (a new process: nothing in memory) compiles nothing.
        template._compile.cache_clear()

        def no_compiling(*args: object, **kw: object) -> object:
            raise AssertionError("compiled again")

        monkeypatch.setattr(template._environment(), "compile", no_compiling)
        assert template.render(text, {"name": "web2"}) == "hello web2\n"

        # A damaged entry is compiled again, not trusted.
        monkeypatch.undo()
        template._compile.cache_clear()
        kept[0].write_bytes(b"not marshal data")
        assert template.render(text, {"name": "web3"}) == "hello web3\n"
    finally:
        template.use_code_cache(None)
        template._compile.cache_clear()
