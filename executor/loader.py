"""Loading a deployment's component files.

``components/<dir>/component.py`` files load in sorted order, each as the
module ``batou.c.<dir>``, so a later file can reach an earlier one's classes
(and any file can, at call time, reach any other's). Every Component
subclass in a file's namespace, imported ones included, becomes a component
named by its lowercased class name.
"""

from __future__ import annotations

import ast
import linecache
import importlib
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

from . import codecache
from .component import COMPONENT_MODULE_PREFIX, Component, user_location
from .errors import ComponentLoadError, ConsignError

COMPONENT_FILE = "component.py"


@dataclass
class Registry:
    """Component classes by name, and the directory each root comes from."""

    classes: dict[str, type[Component]] = field(default_factory=dict)
    defdirs: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    # Component directories whose file failed to load: the names they would
    # have defined are unknown, so "no such component" would mislead.
    failed: set[str] = field(default_factory=set)

    def names(self) -> list[str]:
        """Names the deployment itself defines (not imported library classes)."""
        return sorted(
            name
            for name, cls in self.classes.items()
            if cls.__module__.startswith(COMPONENT_MODULE_PREFIX)
        )


def _package() -> types.ModuleType:
    # batou.c is the namespace deployment modules live in; batou itself only
    # re-exports the executor, so importing it here adds no logic.
    return importlib.import_module(COMPONENT_MODULE_PREFIX.rstrip("."))


def _forget_previous_modules(package: types.ModuleType) -> None:
    for name in [n for n in sys.modules if n.startswith(COMPONENT_MODULE_PREFIX)]:
        del sys.modules[name]
        attribute = name[len(COMPONENT_MODULE_PREFIX) :]
        if hasattr(package, attribute):
            delattr(package, attribute)


def _duplicate_classes(tree: ast.Module) -> dict[str, list[int]]:
    lines: dict[str, list[int]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            lines.setdefault(node.name.lower(), []).append(node.lineno)
    return {name: found for name, found in lines.items() if len(found) > 1}


def _compile(source: str, relative: str) -> tuple[types.CodeType, dict[str, list[int]]]:
    """The code of a component file, and its classes defined twice."""
    tree = ast.parse(source, filename=relative)
    # Some syntax errors ('return' outside a function, ...) only show when
    # compiling. dont_inherit: this module's `from __future__ import
    # annotations` must not leak into the user's file.
    return compile(tree, relative, "exec", dont_inherit=True), _duplicate_classes(tree)


def _is_compiled(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], types.CodeType)
        and isinstance(value[1], dict)
    )


def load_components(repository: Path) -> tuple[Registry, list[ConsignError]]:
    """Load every component file below `repository`; collect all errors."""
    # Configure changes directories; every path must be absolute.
    repository = repository.resolve()
    registry = Registry()
    errors: list[ConsignError] = []
    package = _package()
    _forget_previous_modules(package)
    components_dir = repository / "components"
    if not components_dir.is_dir():
        return registry, errors
    root = str(repository)
    for directory in sorted(p for p in components_dir.iterdir() if p.is_dir()):
        path = directory / COMPONENT_FILE
        if not path.is_file():
            continue
        relative = path.relative_to(repository).as_posix()
        module = _load_module(path, directory.name, relative, root, package, errors)
        if module is None:
            registry.failed.add(directory.name.lower())
            continue
        _register(module, directory, relative, registry, errors)
    return registry, errors


def _load_module(
    path: Path,
    dirname: str,
    relative: str,
    root: str,
    package: types.ModuleType,
    errors: list[ConsignError],
) -> types.ModuleType | None:
    try:
        source = path.read_text(encoding="utf-8")
        code, duplicates = codecache.cached(
            ["component", relative, source],
            lambda: _compile(source, relative),
            _is_compiled,
        )
        # Tracebacks name the file as the repository does; the builder's
        # copy of it is gone by the time they are shown, so linecache keeps
        # the source.
        linecache.cache[relative] = (len(source), None, source.splitlines(True), relative)
    except SyntaxError as exc:
        errors.append(
            ComponentLoadError(
                f"syntax error in component {dirname!r}: {exc.msg}",
                where=relative if exc.lineno is None else f"{relative}:{exc.lineno}",
                hint="fix the Python syntax of the component file",
            )
        )
        return None
    except UnicodeDecodeError as exc:
        errors.append(
            ComponentLoadError(
                f"component {dirname!r} is not UTF-8: {exc.reason} at byte {exc.start}",
                where=relative,
                hint="save the component file as UTF-8",
            )
        )
        return None
    except ValueError as exc:
        # Python < 3.12 reports null bytes in the source as ValueError.
        errors.append(
            ComponentLoadError(
                f"syntax error in component {dirname!r}: {exc}",
                where=relative,
                hint="fix the Python syntax of the component file",
            )
        )
        return None
    except OSError as exc:
        errors.append(
            ComponentLoadError(
                f"cannot read component file: {exc.strerror or exc}",
                where=relative,
                hint="check the file's permissions",
            )
        )
        return None
    for name, lines in sorted(duplicates.items()):
        errors.append(
            ComponentLoadError(
                f"class {name!r} is defined {len(lines)} times in component {dirname!r} "
                f"(lines {', '.join(map(str, lines))})",
                where=f"{relative}:{lines[-1]}",
                hint="give each component class its own name",
            )
        )
    module_name = COMPONENT_MODULE_PREFIX + dirname
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    module.__dict__["__consign_root__"] = root
    sys.modules[module_name] = module
    setattr(package, dirname, module)
    try:
        exec(code, module.__dict__)
    except Exception as exc:  # noqa: BLE001 - a component file may raise anything
        location = user_location(exc) or relative
        errors.append(
            ComponentLoadError(
                f"loading component {dirname!r} raised {type(exc).__name__}: {exc}",
                where=location,
                hint="component files run when loaded; keep module-level code simple",
            )
        )
        del sys.modules[module_name]
        delattr(package, dirname)
        return None
    return module


def _register(
    module: types.ModuleType,
    directory: Path,
    relative: str,
    registry: Registry,
    errors: list[ConsignError],
) -> None:
    for value in module.__dict__.values():
        if not (isinstance(value, type) and issubclass(value, Component)) or value is Component:
            continue
        name = value.__name__.lower()
        known = registry.classes.get(name)
        if known is value:
            continue
        ours = value.__module__.startswith(COMPONENT_MODULE_PREFIX)
        if known is not None and not ours:
            # An imported library class never displaces the deployment's own.
            continue
        if known is not None and not known.__module__.startswith(COMPONENT_MODULE_PREFIX):
            known = None
        if known is not None:
            errors.append(
                ComponentLoadError(
                    f"component {name!r} is defined twice: in {registry.files[name]} "
                    f"and in {relative}",
                    where=relative,
                    hint="rename one of the classes; consign does not let the later one win",
                )
            )
            continue
        registry.classes[name] = value
        registry.defdirs[name] = str(directory)
        registry.files[name] = relative
