"""Jinja2 as batou users know it: ``@@`` line statements, strict names.

Unknown names are errors, the trailing newline of a template is kept, and
an error names the template file and line.
"""

from __future__ import annotations

import re
import traceback
import types
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import codecache
from .errors import ConsignError, TemplateError

if TYPE_CHECKING:
    import jinja2


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # Imported with the first template that needs Jinja (45 ms): a run
    # whose files hold no template syntax never loads it.
    import jinja2

    return jinja2.Environment(
        line_statement_prefix="@@",
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def use_code_cache(directory: Path | None) -> None:
    """Keep compiled templates (and component files) in `directory` across
    runs; see :mod:`executor.codecache`."""
    codecache.use(directory)


# Compiled code holds a template's literal text: one that contains a secret
# value (a File's content made with an f-string, say) is never cached on disk.
_withheld: frozenset[str] = frozenset()


def withhold_from_cache(secrets: frozenset[str]) -> None:
    """Never write templates that contain one of `secrets` to the code cache."""
    global _withheld
    _withheld = secrets


@lru_cache(maxsize=4096)
def _compile(text: str, name: str) -> jinja2.Template:
    # Compiling dominates rendering; one deployment renders the same few
    # templates for many hosts.
    environment = _environment()
    code = _code(environment, text, name)
    return environment.template_class.from_code(
        environment, code, environment.make_globals(None)
    )


def _code(environment: jinja2.Environment, text: str, name: str) -> types.CodeType:
    import jinja2

    if any(secret in text for secret in _withheld):
        return environment.compile(text, name=name, filename=name)
    return codecache.cached(
        ["template", jinja2.__version__, name, text],
        lambda: environment.compile(text, name=name, filename=name),
        lambda value: isinstance(value, types.CodeType),
    )


def _template_line(exc: BaseException, name: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == name:
            line = frame.lineno
    return line


# Anything Jinja would change: a tag, an expression, a comment, a line
# statement, or a carriage return (Jinja writes "\n" line ends).
_SYNTAX = re.compile(r"\{[{%#]|^[ \t]*@@|\r", re.MULTILINE)


def render(text: str, context: Mapping[str, Any], *, name: str = "<string>") -> str:
    """Render `text` as a template; `name` is the file shown in errors.

    Text without any template syntax renders to itself: returned as it is,
    without compiling (most file contents are plain text)."""
    if not _SYNTAX.search(text):
        return text
    import jinja2

    try:
        template = _compile(text, name)
        return template.render(**context)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{name}:{exc.lineno}" if exc.lineno else name
        raise TemplateError(
            f"template syntax error: {exc.message}",
            where=where,
            hint="fix the template; '@@' starts a line statement, '{{ }}' an expression",
        ) from None
    except jinja2.UndefinedError as exc:
        line = _template_line(exc, name)
        where = f"{name}:{line}" if line else name
        raise TemplateError(
            f"template uses an undefined name: {exc.message}",
            where=where,
            hint="the context has 'component', 'host', 'environment' and the template_args",
        ) from None
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - user expressions can raise anything
        line = _template_line(exc, name)
        where = f"{name}:{line}" if line else name
        # A consign error (an attribute without value, say) keeps its own hint;
        # its str() would drag its where and hint into our message.
        message = exc.message if isinstance(exc, ConsignError) else str(exc)
        hint = exc.hint if isinstance(exc, ConsignError) else None
        raise TemplateError(
            f"template raised {type(exc).__name__}: {message}",
            where=where,
            hint=hint,
        ) from exc
