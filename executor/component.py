"""The component API deployments are written against (``batou.component``).

A component describes a piece of a host's target state::

    from batou.component import Component, Attribute
    from batou.lib.file import File

    class App(Component):
        workers = Attribute(int, default=4)

        def configure(self):            # pure: compute the target state
            self += File("app.conf", content="workers={{component.workers}}\\n")

        def verify(self):               # raise if the host is out of date
            self.assert_no_subcomponent_changes()

        def update(self):               # converge
            self.cmd("systemctl reload app")

``configure`` runs in the builder for every host and again on the host; it
must not touch the host. ``verify`` / ``update`` run on the host only,
children first (see :mod:`executor.deploy`).
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import os
import posixpath
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar

from .redact import mask_url
from . import run as _run
from . import template as _template
from .environment import Environment, Host
from .fs import die_with_parent
from .errors import (
    AttributeValueError,
    CommandError,
    ConfigurationError,
    ConsignError,
    MissingNamevarError,
    OverrideError,
    TemplateError,
    UnknownKeywordError,
)

__all__ = [
    "NO_DEFAULT",
    "Attribute",
    "Component",
    "ConfigString",
    "UpdateNeeded",
    "handle_event",
    "platform",
]

C = TypeVar("C", bound="type[Component]")
F = TypeVar("F", bound=Callable[..., Any])

EVENTS = ("before-update",)
EVENT_SCOPES = ("*", "precursor")

# Modules of deployment component files are named batou.c.<directory>.
COMPONENT_MODULE_PREFIX = "batou.c."

# Set by consign while configuring and deploying; never by keywords or overrides.
_RUNTIME_NAMES = frozenset(
    {
        "namevar",
        "parent",
        "root",
        "host",
        "environment",
        "sub_components",
        "recursive_sub_components",
        "changed",
        "defdir",
    }
)


class UpdateNeeded(AssertionError):
    """Raised by verify() to say the component needs an update."""


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


class ConfigString(str):
    """A default that is expanded, mapped and converted like an override.

    ``port = Attribute(int, ConfigString("80{{host.data['n']}}"))``
    """


class _Override(ConfigString):
    """An override's value; knows where it was written, for errors."""

    location: str | None = None


def _parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true/false, yes/no, on/off or 1/0, got {value!r}")


def _parse_list(value: str) -> list[str]:
    items = value.replace("\n", ",").split(",")
    return [item.strip() for item in items if item.strip()]


def _conversion_name(conversion: Any) -> str:
    if isinstance(conversion, str):
        return repr(conversion)
    return getattr(conversion, "__name__", repr(conversion))


class Attribute:
    """A component attribute that overrides and ConfigString defaults convert.

    ``conversion`` is a callable (``int``, ``Address``, ...), ``"literal"``
    (a Python literal) or ``"list"`` (comma-separated, stripped, empties
    dropped); ``bool`` accepts true/false, yes/no, on/off, 1/0 (batou would
    take any non-empty string as true). With ``expand`` a string value is
    rendered as a template in the component's context first; with ``map``
    it is then mapped as a path (relative to the workdir, through VFS).

    Example::

        class Web(Component):
            port = Attribute(int, default=8080)
            hosts = Attribute("list", default=ConfigString("a, b"))
    """

    name: str

    def __init__(
        self,
        conversion: Callable[[Any], Any] | str = str,
        default: Any = NO_DEFAULT,
        expand: bool = True,
        map: bool = False,
    ) -> None:
        if isinstance(conversion, str) and conversion not in ("literal", "list"):
            raise ValueError(
                f"Attribute conversion {conversion!r} is unknown; use a callable, 'literal' or 'list'"
            )
        self.conversion = conversion
        self.default = default
        self.expand = expand
        self.map = map
        self.name = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def convert(self, component: Component, value: str) -> Any:
        try:
            return self._convert(component, value)
        except ConsignError as exc:
            location = getattr(value, "location", None)
            if location and not exc.where:
                exc.where = location
            raise

    def _convert(self, component: Component, value: str) -> Any:
        label = f"{type(component).__name__}.{self.name}"
        text = str(value)
        if self.expand and getattr(component, "host", None) is not None:
            try:
                text = component.expand(text)
            except TemplateError as exc:
                # The template is the value itself: name the attribute, not "<string>".
                raise TemplateError(
                    f"cannot expand {label} = {text!r} (for {_conversion_name(self.conversion)}): "
                    f"{exc.message}",
                    hint=exc.hint,
                ) from None
        if self.map and getattr(component, "environment", None) is not None:
            text = component.map(text)
        try:
            if self.conversion == "literal":
                return ast.literal_eval(text)
            if self.conversion == "list":
                return _parse_list(text)
            if self.conversion is bool:
                return _parse_bool(text)
            assert callable(self.conversion)
            return self.conversion(text)
        except ConsignError:
            raise
        except Exception as exc:  # noqa: BLE001 - any conversion may fail
            raise AttributeValueError(
                f"cannot convert {label} = {text!r} with {_conversion_name(self.conversion)}: {exc}",
                hint=f"give {label} a value that {_conversion_name(self.conversion)} accepts",
            ) from None

    def __get__(self, obj: Component | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        values = obj.__dict__
        if self.name in values:
            value = values[self.name]
            if isinstance(value, ConfigString) and obj._consign.prepared_context:
                value = values[self.name] = self.convert(obj, value)
            return value
        if self.default is NO_DEFAULT:
            label = f"{type(obj).__name__}.{self.name}"
            raise AttributeValueError(
                f"{label} has no value: no default and no override",
                hint=f"set it in the environment's [component:...] section or pass {self.name}=...",
            )
        if isinstance(self.default, ConfigString):
            if not obj._consign.prepared_context:
                return self.default
            value = values[self.name] = self.convert(obj, self.default)
            return value
        return self.default

    def __set__(self, obj: Component, value: Any) -> None:
        obj.__dict__[self.name] = value


def platform(name: str, component: type[Component]) -> Callable[[C], C]:
    """Register a class as `component`'s variant for hosts of platform `name`.

    After `component`'s configure, an instance of the variant is added as its
    last child on hosts whose platform is `name`. Registration is per exact
    class: subclasses of `component` do not inherit it.

    Example::

        @platform("nixos", Test)
        class TestNixos(Component):
            def configure(self):
                self += File("i-am-nixos")
    """

    def register(cls: C) -> C:
        variants: dict[str, type[Component]] | None = component.__dict__.get("_consign_platforms")
        if variants is None:
            variants = {}
            setattr(component, "_consign_platforms", variants)
        if name in variants and variants[name] is not cls:
            raise ValueError(
                f"{component.__name__} has two variants for platform {name!r}: "
                f"{variants[name].__name__} and {cls.__name__}"
            )
        variants[name] = cls
        return cls

    return register


def platform_variant(cls: type[Component], name: str | None) -> type[Component] | None:
    if name is None:
        return None
    variants: dict[str, type[Component]] = cls.__dict__.get("_consign_platforms", {})
    return variants.get(name)


def handle_event(event: str, scope: str) -> Callable[[F], F]:
    """Call the decorated method before components of the same root update.

    Scope ``"*"`` reacts to every component of the root; ``"precursor"``
    only to components deployed before the handler's own component.

    Example::

        class Service(Component):
            @handle_event("before-update", "precursor")
            def stop(self, component):
                self.cmd("systemctl stop app")
    """
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; consign knows {', '.join(EVENTS)}")
    if scope not in EVENT_SCOPES:
        raise ValueError(f"unknown event scope {scope!r}; use '*' or 'precursor'")

    def mark(method: F) -> F:
        setattr(method, "_consign_event", (event, scope))
        return method

    return mark


def _caller_location(component: Component) -> tuple[dict[str, Any], int] | None:
    """Module globals and line of the deployment code that constructs
    `component` (made into file:line only when an error needs it)."""
    frame: Any = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        # A user's own __init__ (calling ours through super()) is not where
        # the component was created; its caller is.
        if (
            isinstance(name, str)
            and name.startswith(COMPONENT_MODULE_PREFIX)
            and frame.f_locals.get("self") is not component
        ):
            return frame.f_globals, frame.f_lineno
        frame = frame.f_back
    return None


def _frame_location(module_globals: dict[str, Any], line: int | None) -> str:
    filename = module_globals.get("__file__") or "?"
    root = module_globals.get("__consign_root__")
    if root:
        filename = os.path.relpath(filename, root)
    return f"{filename}:{line}"


def user_location(exc: BaseException) -> str | None:
    """file:line of the innermost deployment frame in `exc`'s traceback."""
    location = None
    tb = exc.__traceback__
    while tb is not None:
        module_globals = tb.tb_frame.f_globals
        name = module_globals.get("__name__", "")
        if isinstance(name, str) and name.startswith(COMPONENT_MODULE_PREFIX):
            location = _frame_location(module_globals, tb.tb_lineno)
        tb = tb.tb_next
    return location


def locate(error: ConsignError, component: Component, location: str | None) -> ConsignError:
    """Add the component's breadcrumbs and the user's file:line to an error once."""
    if getattr(error, "_consign_located", False):
        return error
    where = component._breadcrumbs
    location = location or component._consign.origin
    if location:
        where += f" ({location})"
    if error.where:
        where += f", {error.where}"
    error.where = where
    setattr(error, "_consign_located", True)
    return error


_DEFDIRS: dict[type, str | None] = {}


def _class_defdir(cls: type) -> str | None:
    """The directory of the deployment module that defines `cls` (or the
    nearest such base); per class, as modules do not move during a run."""
    if cls not in _DEFDIRS:
        _DEFDIRS[cls] = _find_class_defdir(cls)
    return _DEFDIRS[cls]


def _find_class_defdir(cls: type) -> str | None:
    for klass in cls.__mro__:
        module = sys.modules.get(klass.__module__)
        if klass.__module__.startswith(COMPONENT_MODULE_PREFIX) and module is not None:
            filename = getattr(module, "__file__", None)
            if isinstance(filename, str):
                return os.path.dirname(filename)
    return None


class working_directory:  # noqa: N801 - used like the context managers it sits with
    """Run the block in `path` (when it is a directory), then go back. (A
    class, not a generator: it wraps every component's configure and
    verify, 62,000 times in a large run.)"""

    __slots__ = ("path", "previous")

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.previous: str | None = None

    def __enter__(self) -> None:
        path = self.path
        if not path:
            return
        previous = os.getcwd()
        # Already there (every component of a root shares its defdir).
        if path != previous and os.path.isdir(path):
            os.chdir(path)
            self.previous = previous

    def __exit__(self, *exc_info: object) -> None:
        if self.previous is not None:
            os.chdir(self.previous)


_VERIFY_PREDICTS: dict[Any, bool] = {}


def accepts_predicting(method: Callable[..., Any]) -> bool:
    func = getattr(method, "__func__", method)
    known = _VERIFY_PREDICTS.get(func)
    if known is None:
        try:
            known = "predicting" in inspect.signature(method).parameters
        except (TypeError, ValueError):
            known = False
        _VERIFY_PREDICTS[func] = known
    return known


def _stable(value: Any, depth: int = 0) -> str:
    """A repr that is the same in every process (no addresses, sorted sets)."""
    if depth > 8:
        return "..."
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_stable(v, depth + 1) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(_stable(v, depth + 1) for v in value)) + "}"
    if isinstance(value, dict):
        items = sorted((_stable(k, depth + 1), _stable(v, depth + 1)) for k, v in value.items())
        return "{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, Component):
        return value._breadcrumb
    text = str(value)
    if " at 0x" in text:
        return type(value).__name__
    return f"{type(value).__name__}({text})"


class _State:
    """consign's bookkeeping on a component; one attribute, out of users' way."""

    __slots__ = (
        "caller",
        "own_workdir",
        "prepared_context",
        "configured",
        "reverifying",
        "root_name",
    )

    def __init__(self, caller: tuple[dict[str, Any], int] | None) -> None:
        self.caller = caller
        # The workdir the component asked for, before prepare sets the real one.
        self.own_workdir: str | None = None
        # True once host and environment are known, so values can expand.
        self.prepared_context = False
        self.configured = False
        # While re-checking after update(), assertions about this run's
        # changes hold: update() was the answer to them.
        self.reverifying = False
        self.root_name: str | None = None

    @property
    def origin(self) -> str | None:
        """file:line of the deployment code that constructed the component."""
        return None if self.caller is None else _frame_location(*self.caller)


class Component:
    """Base class of every component; see the module docstring for an example.

    Constructor: ``Component(namevar_value, **attributes)``. Keywords must
    name existing, non-callable class attributes.
    """

    namevar: ClassVar[str | None] = None
    #: Directory verify and update run in; children inherit it. A component
    #: may set its own (relative paths resolve against the parent's).
    workdir: str | None = None
    #: Features a root component offers; ``[hosts] db = postgres:replica``
    #: selects some, ``self.features`` lists the selected ones.
    features: Any = None
    #: After update(), verify() runs again and must pass. A component that
    #: deliberately updates every time it runs sets this to False.
    converges: ClassVar[bool] = True

    parent: Component | None
    root: Component
    host: Host
    environment: Environment
    defdir: str
    sub_components: list[Component]
    changed: bool

    def __init__(self, namevar: Any = None, **kw: Any) -> None:
        self._consign = _State(_caller_location(self))
        cls = type(self)
        if cls.namevar:
            if namevar is None:
                namevar = kw.pop(cls.namevar, None)
            elif cls.namevar in kw:
                raise UnknownKeywordError(
                    f"{cls.__name__} got its {cls.namevar!r} twice: {namevar!r} as first "
                    f"argument and {kw[cls.namevar]!r} as keyword",
                    hint="pass it once",
                )
            if namevar is None:
                raise MissingNamevarError(
                    f"{cls.__name__} needs its {cls.namevar!r} as first argument, got none",
                    hint=f"write {cls.__name__}(<{cls.namevar}>, ...) "
                    f"or {cls.__name__}({cls.namevar}=...)",
                )
            kw[cls.namevar] = namevar
        elif namevar is not None:
            raise UnknownKeywordError(
                f"{cls.__name__} takes no positional argument (it has no namevar), got {namevar!r}",
                hint="pass attributes as keywords",
            )
        unacceptable = sorted(
            k for k in kw if k != cls.namevar and not accepts_attribute(cls, k)
        )
        if unacceptable:
            raise UnknownKeywordError(
                f"{cls.__name__} does not accept {', '.join(map(repr, unacceptable))}",
                hint=f"keywords must name attributes of {cls.__name__}; "
                f"define them on the class (e.g. {unacceptable[0]} = None) or fix the spelling",
            )
        for key, value in kw.items():
            try:
                setattr(self, key, value)
            except AttributeError:
                raise UnknownKeywordError(
                    f"{cls.__name__}.{key} cannot be set (read-only)",
                    hint=f"drop the keyword {key}=...; {cls.__name__} computes it",
                ) from None
        own_workdir = self.__dict__.get("workdir", cls.workdir)
        self._consign.own_workdir = None if own_workdir is None else str(own_workdir)
        self.parent = None
        self.sub_components = []
        self.changed = False
        self._: Component | None = None

    # -- the three phases -------------------------------------------------

    def configure(self) -> None:
        """Compute the target state and add children; never touch the host."""

    def verify(self) -> None:
        """Raise AssertionError (or UpdateNeeded) when an update is needed.

        The default finds nothing to do: a component that only groups
        children changes when they do.
        """

    def update(self) -> None:
        """Converge the host to the target state."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    # -- composition ------------------------------------------------------

    def __iadd__(self, other: Component | None) -> Self:
        if other is None:
            return self
        other.prepare(self.root, self)
        self.sub_components.append(other)
        self._ = other
        return self

    def __ior__(self, other: Component | None) -> Self:
        if other is None:
            return self
        other.prepare(self.root, self)
        self._ = other
        return self

    def prepare(self, root: Component, parent: Component | None = None) -> None:
        """Configure this component as a child of `parent` (default: `root`)."""
        parent = parent if parent is not None else root
        self.parent = parent
        self.root = root
        self.host = parent.host
        self.environment = parent.environment
        self.defdir = _class_defdir(type(self)) or parent.defdir
        own = self._consign.own_workdir
        self.workdir = parent.workdir if own is None else parent.map(own)
        self._configure()

    def prepare_root(
        self,
        *,
        name: str,
        host: Host,
        environment: Environment,
        defdir: str,
        features: Sequence[str] = (),
        overrides: Sequence[tuple[str, str]] = (),
        override_locations: Mapping[str, str] | None = None,
    ) -> None:
        """Configure this component as the root `name` of `host`.

        `override_locations` names where each override was written
        (``environments/prod/environment.cfg:12``), for errors.
        """
        self.parent = None
        self.root = self
        self.host = host
        self.environment = environment
        self.defdir = _class_defdir(type(self)) or defdir
        self._consign.root_name = name
        self.workdir = environment.map(posixpath.join(environment.workdir_base, name))
        own = self._consign.own_workdir
        if own is not None:
            self.workdir = self.map(own)
        declared = type(self).features
        if features:
            if declared is not None:
                unknown = [f for f in features if f not in declared]
                if unknown:
                    raise ConfigurationError(
                        f"{type(self).__name__} has no feature {', '.join(map(repr, unknown))}",
                        where=self._breadcrumbs,
                        hint=f"its features are: {', '.join(declared) or '(none)'}",
                    )
            self.features = list(features)
        else:
            self.features = list(declared or [])
        self._consign.prepared_context = True
        locations = override_locations or {}
        for key, value in overrides:
            try:
                self._apply_override(key, value, locations.get(key))
            except ConsignError as exc:
                if locations.get(key) and not exc.where:
                    exc.where = locations[key]
                locate(exc, self, None)
                raise
        self._configure()

    def _apply_override(self, key: str, value: str, location: str | None) -> None:
        cls = type(self)
        if not accepts_attribute(cls, key):
            known = attribute_names(cls)
            raise OverrideError(
                f"override {key!r} names no attribute of {cls.__name__}",
                hint=f"{cls.__name__}'s attributes: {', '.join(known) or '(none)'}",
            )
        if isinstance(inspect.getattr_static(cls, key, None), Attribute):
            value = _Override(value)
            value.location = location
        else:
            try:
                value = self.expand(value)
            except TemplateError as exc:
                raise TemplateError(
                    f"cannot expand the override {cls.__name__}.{key} = {value!r}: {exc.message}",
                    hint=exc.hint,
                ) from None
        try:
            setattr(self, key, value)
        except AttributeError:
            raise OverrideError(
                f"override {key!r} cannot be set: {cls.__name__}.{key} is read-only",
                hint=f"remove {key} from the environment's [component:...] section",
            ) from None

    def _configure(self) -> None:
        self._consign.prepared_context = True
        self.sub_components = []
        self._ = None
        try:
            self._resolve_attributes()
            with working_directory(self.defdir):
                self.configure()
            variant = platform_variant(type(self), self.host.platform)
            if variant is not None:
                self += variant()
        except ConsignError as exc:
            # Re-raise as is: 'from None' would drop the cause a child recorded.
            locate(exc, self, user_location(exc))
            raise
        except AssertionError as exc:
            raise locate(
                ConfigurationError(f"assertion failed while configuring: {exc}"),
                self,
                user_location(exc),
            ) from exc
        except Exception as exc:  # noqa: BLE001 - user code may raise anything
            raise locate(
                ConfigurationError(f"configure raised {type(exc).__name__}: {exc}"),
                self,
                user_location(exc),
            ) from exc
        self._consign.configured = True

    def _resolve_attributes(self) -> None:
        for key, declared in _declared_attributes(type(self)):
            current = self.__dict__.get(key, declared.default)
            if isinstance(current, ConfigString):
                getattr(self, key)

    # -- names ------------------------------------------------------------

    @property
    def _breadcrumb(self) -> str:
        cls = type(self)
        if cls.namevar:
            # Masked: a URL as namevar may carry credentials.
            return f"{cls.__name__}({mask_url(str(self.__dict__.get(cls.namevar)))!r})"
        return cls.__name__

    @property
    def _breadcrumbs(self) -> str:
        parts = []
        component: Component | None = self
        while component is not None:
            parts.append(component._breadcrumb)
            component = component.parent
        return " > ".join(reversed(parts))

    def __repr__(self) -> str:
        return f"<{self._breadcrumb}>"

    # -- tree -------------------------------------------------------------

    @property
    def recursive_sub_components(self) -> Iterator[Component]:
        for child in self.sub_components:
            yield child
            yield from child.recursive_sub_components

    # -- helpers for configure --------------------------------------------

    def map(self, path: str) -> str:
        """Resolve `path` against the workdir and through the VFS rules."""
        path = os.path.expanduser(str(path))
        if not path.startswith("/"):
            if self.workdir is None:
                raise ConfigurationError(
                    f"cannot resolve {path!r}: {self._breadcrumb} is not part of a deployment yet",
                    hint="add the component with 'self += ...' before using relative paths",
                )
            path = posixpath.join(self.workdir, path)
        return self.environment.map(posixpath.normpath(path))

    def _template_context(self, component: Component | None, args: dict[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {
            "component": component if component is not None else self,
            "host": self.host,
            "environment": self.environment,
        }
        context.update(args)
        return context

    def expand(self, string: str, component: Component | None = None, **kw: Any) -> str:
        """Render `string` as a template in this component's context."""
        return _template.render(str(string), self._template_context(component, kw))

    def template(self, filename: str, component: Component | None = None, **kw: Any) -> str:
        """Render the template file `filename` (relative to defdir)."""
        name, text = self._read_text(filename)
        return _template.render(text, self._template_context(component, kw), name=name)

    def _read_text(self, filename: str, what: str = "template", of: str = "") -> tuple[str, str]:
        """The name to show and the UTF-8 text of `filename` (relative to
        defdir); errors call it `what` ("template", "source file"), then its
        name, then `of` (" of unit app.service")."""
        path = filename if filename.startswith("/") else posixpath.join(self.defdir, filename)
        name = display_path(path, self.environment.base_dir)
        try:
            with open(path, encoding="utf-8") as f:
                return name, f.read()
        except FileNotFoundError:
            raise TemplateError(
                f"{what} {name}{of} does not exist",
                hint=f"relative names resolve against the component's directory "
                f"({display_path(self.defdir, self.environment.base_dir)}); "
                "add the file there or fix the name",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(
                f"cannot read {what} {name}{of}: {exc}",
                hint="it must be UTF-8 text the deployment can read",
            ) from None

    # -- helpers for verify and update -------------------------------------

    def log(self, message: str, *args: Any) -> None:
        """Add a line to the run's log, attributed to this component."""
        _run.current().emit(self._breadcrumbs, message % args if args else message)

    @contextlib.contextmanager
    def chdir(self, path: str) -> Iterator[None]:
        """Run the block in `path` (mapped), then return to where we were."""
        previous = os.getcwd()
        os.chdir(self.map(path))
        try:
            yield
        finally:
            os.chdir(previous)

    def touch(self, path: str) -> None:
        """Create `path` or update its modification time."""
        path = self.map(path)
        with open(path, "a"):
            pass
        os.utime(path, None)

    def cmd(
        self,
        cmd: str | Sequence[str],
        silent: bool = False,
        ignore_returncode: bool = False,
        communicate: bool = True,
        env: dict[str, str] | None = None,
        expand: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """Run a command (a string goes through the shell); return (stdout, stderr).

        The command is expanded as a template first. It may run at most the
        environment's ``timeout`` and never past the run's end. A non-zero
        exit raises CommandError with the code and both outputs, unless
        `ignore_returncode`. With ``communicate=False`` the started
        ``subprocess.Popen`` is returned instead.
        """
        command: str | list[str]
        if isinstance(cmd, str):
            command = text = self.expand(cmd) if expand else cmd
        else:
            command = [self.expand(part) if expand else str(part) for part in cmd]
            text = " ".join(command)
        run = _run.current()
        run.emit(self._breadcrumbs, f"$ {text}", _run.Level.DEBUG)
        process = spawn(command, env=env)
        if not communicate:
            return process
        limit = command_limit(timeout)
        stdout, stderr, timed_out = finish(process, limit)
        if timed_out:
            assert limit is not None
            raise CommandError(
                f"command timed out after {limit:.1f}s: {text}",
                command=text,
                returncode=None,
                stdout=stdout,
                stderr=stderr,
                hint="raise [environment] timeout or --timeout, or make the command faster",
            )
        if process.returncode != 0 and not ignore_returncode:
            raise CommandError(
                f"command exited with {process.returncode}: {text}"
                + (f"\n  stderr: {_tail(stderr)}" if stderr.strip() else "")
                + (f"\n  stdout: {_tail(stdout)}" if stdout.strip() and not silent else ""),
                command=text,
                returncode=process.returncode,
                stdout=stdout,
                stderr=stderr,
            )
        return stdout, stderr

    # -- service discovery ------------------------------------------------

    def _root_name(self) -> str:
        return self.root._consign.root_name or type(self.root).__name__.lower()

    def provide(self, key: str, value: Any) -> None:
        """Publish `value` under `key` for components on any host to require.

        Example::

            class Database(Component):
                def configure(self):
                    self.address = Address(self.host.fqdn, 5432)
                    self.provide("database", self)

        A provided component reaches other hosts as a read-only snapshot of
        its public data attributes.
        """
        self.environment.resources.provide(self.host.name, self._root_name(), key, value)

    def require(
        self,
        key: str,
        host: Any = None,
        strict: bool = True,
        reverse: bool = False,
        dirty: bool = False,
    ) -> list[Any]:
        """All values provided under `key` (only those of `host`, if given).

        The providers deploy first (``reverse=True``: after; ``dirty=True``:
        no order). With ``strict`` (the default) a key nobody provides is an
        error; otherwise the list is empty.

        Example::

            class App(Component):
                def configure(self):
                    self.database = self.require_one("database")
                    self += File("db.conf", content="{{component.database.address}}\n")
        """
        provider_host = host if host is None or isinstance(host, str) else host.name
        return self.environment.resources.require(
            self.host.name, self._root_name(), key, provider_host, strict, reverse, dirty
        )

    def require_one(
        self,
        key: str,
        host: Any = None,
        strict: bool = True,
        reverse: bool = False,
        dirty: bool = False,
    ) -> Any:
        """The one value provided under `key`; none or several are an error
        (with ``strict=False``, none gives None)."""
        values = self.require(key, host, strict, reverse, dirty)
        if len(values) == 1:
            return values[0]
        if not values and not strict:
            return None
        raise ConfigurationError(
            f"require_one({key!r}) found {len(values)} values, expected exactly one",
            hint="make one component provide it, or use require() to take them all",
        )

    # -- assertions for verify ---------------------------------------------

    def assert_cmd(self, *args: Any, **kw: Any) -> None:
        """UpdateNeeded unless the command succeeds.

        A command that times out fails the run: it says nothing about the host.
        """
        try:
            self.cmd(*args, **kw)
        except CommandError as exc:
            if exc.returncode is None:
                raise
            raise UpdateNeeded(f"command failed: {exc.command}") from None

    def assert_file_is_current(
        self, reference: str, requirements: Sequence[str] = (), key: str = "st_mtime"
    ) -> None:
        """UpdateNeeded if `reference` is missing or older than a requirement."""
        reference = self.map(reference)
        try:
            ref_value = getattr(os.stat(reference), key)
        except FileNotFoundError:
            raise UpdateNeeded(f"{reference} does not exist") from None
        for requirement in requirements:
            try:
                value = getattr(os.stat(self.map(requirement)), key)
            except FileNotFoundError:
                continue
            if value > ref_value:
                raise UpdateNeeded(f"{requirement} is newer than {reference}")

    def assert_component_is_current(self, requirements: Component | Sequence[Component] = ()) -> None:
        """UpdateNeeded if a required component changed after this one."""
        if self._consign.reverifying:
            return
        if isinstance(requirements, Component):
            requirements = [requirements]
        own = self.last_updated()
        if own is None:
            raise UpdateNeeded(f"{self._breadcrumb} has never been updated")
        for requirement in requirements:
            other = requirement.last_updated()
            if other is not None and other > own:
                raise UpdateNeeded(f"{requirement._breadcrumb} is newer")

    def assert_no_subcomponent_changes(self) -> None:
        """UpdateNeeded if a child changed in this run."""
        if self._consign.reverifying:
            return
        for child in self.sub_components:
            if child.changed:
                raise UpdateNeeded(f"{child._breadcrumb} changed")

    def assert_no_changes(self) -> None:
        """UpdateNeeded if this component (or a child) changed in this run."""
        if self._consign.reverifying:
            return
        if self.changed:
            raise UpdateNeeded(f"{self._breadcrumb} changed")
        self.assert_no_subcomponent_changes()

    # -- facts -------------------------------------------------------------

    def last_updated(self, key: str = "st_mtime") -> float | None:
        """When this component last changed on the host: its children's newest."""
        times = [t for t in (c.last_updated(key) for c in self.sub_components) if t is not None]
        return max(times) if times else None

    def checksum(self, value: str | bytes | None = None) -> str:
        """A sha256 over this component's configuration and its children's.

        Equal configurations give equal checksums in every process; pass
        `value` to mix in something else (a file's content, say).
        """
        digest = hashlib.sha256()
        digest.update(type(self).__qualname__.encode())
        for key in sorted(self.__dict__):
            if key.startswith("_") or key in _RUNTIME_NAMES or key == "workdir":
                continue
            digest.update(f"\0{key}={_stable(self.__dict__[key])}".encode())
        for child in self.sub_components:
            digest.update(child.checksum().encode())
        if value is not None:
            digest.update(value if isinstance(value, bytes) else value.encode())
        return digest.hexdigest()


def attribute_names(cls: type) -> list[str]:
    """Names a constructor keyword or an override may set on `cls`."""
    return sorted(k for k in dir(cls) if not k.startswith("_") and accepts_attribute(cls, k))


_ACCEPTS: dict[tuple[Any, str], bool] = {}


def accepts_attribute(cls: type, key: str) -> bool:
    """Whether `key` names a settable, non-callable attribute of `cls`
    (asked for every keyword of every component: cached per class and key)."""
    known = _ACCEPTS.get((cls, key))
    if known is None:
        known = _ACCEPTS[(cls, key)] = _accepts_attribute(cls, key)
    return known


_DECLARED: dict[type, tuple[tuple[str, Attribute], ...]] = {}


def _declared_attributes(cls: type) -> tuple[tuple[str, Attribute], ...]:
    """Every Attribute declared on `cls` and its bases, in MRO order (a name
    declared twice appears twice, as the resolution has always done)."""
    known = _DECLARED.get(cls)
    if known is None:
        known = _DECLARED[cls] = tuple(
            (key, value)
            for klass in cls.__mro__
            for key, value in vars(klass).items()
            if isinstance(value, Attribute)
        )
    return known


def _accepts_attribute(cls: type, key: str) -> bool:
    if key in _RUNTIME_NAMES or key.startswith("_"):
        return False
    try:
        value = inspect.getattr_static(cls, key)
    except AttributeError:
        return False
    if isinstance(value, (Attribute, property)):
        return True
    if isinstance(value, (staticmethod, classmethod)):
        return False
    return not callable(value)


def display_path(path: str, base: str | None) -> str:
    """`path` relative to the deployment repository, for messages."""
    if base and path.startswith(base.rstrip("/") + "/"):
        return path[len(base.rstrip("/")) + 1 :]
    return path


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def _drain(process: subprocess.Popen[str]) -> tuple[str, str]:
    """What a killed command wrote; don't wait for descendants that left its group."""
    try:
        return process.communicate(timeout=2)
    except subprocess.TimeoutExpired as exc:
        # A daemonized grandchild still holds the pipes open.
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        process.wait()
        return _text(exc.stdout), _text(exc.stderr)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


def spawn(
    command: str | Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen[str]:
    """Start `command` as deployment code's commands start: a string through
    the shell, text output in pipes, no stdin, in its own process group, and
    killed with the executor (parent-death signal). `env` adds variables."""
    process_env = None
    if env:
        process_env = dict(os.environ)
        process_env.update(env)
    return subprocess.Popen(
        command,
        shell=isinstance(command, str),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=process_env,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


def command_limit(timeout: float | None) -> float | None:
    """Seconds a command may take: its own `timeout`, never past the run's limit."""
    limit = _run.current().command_limit()
    if timeout is not None:
        limit = timeout if limit is None else min(limit, timeout)
    return limit


def finish(process: subprocess.Popen[str], limit: float | None) -> tuple[str, str, bool]:
    """Wait for a started command: (stdout, stderr, timed out). A command past
    `limit` is killed with its process group and what it wrote is kept; an
    interrupted wait (the run's alarm, ^C) leaves no command behind."""
    try:
        stdout, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        with _run.shielded():
            _kill_group(process)
            stdout, stderr = _drain(process)
        return stdout, stderr, True
    except BaseException:
        with _run.shielded():
            _kill_group(process)
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
        raise
    return stdout, stderr, False


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

