"""The one generic component registry behind every kind of lossreg component.

A :class:`Registry` maps names to classes (or factory functions) of one *kind*
(``loss``, ``assigner``, ``balancer``, ``head``, ``neck``, ``detector``).
Built-in components are imported lazily on the first lookup, and so are
third-party plugins advertised through the ``lossreg.plugins`` entry-point group,
so a user's component is found without import-order tricks.
"""

from __future__ import annotations

import collections.abc as cabc
import difflib
import fnmatch
import importlib
import inspect
import logging
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any, Generic, TypeVar

__all__ = [
    "REQUIRED",
    "BadParameterError",
    "ComponentInfo",
    "Registry",
    "UnknownComponentError",
    "close_matches",
    "load_plugins",
    "KINDS",
    "REGISTRIES",
    "get_registry",
    "list_components",
    "component_info",
    "create_component",
    "build_component",
    "record_build_spec",
]

_logger = logging.getLogger(__name__)

T = TypeVar("T")
PLUGIN_GROUP = "lossreg.plugins"


class _Required:
    """Marker for a constructor parameter that has no default."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


def close_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates that look like ``name`` (typos, missing parts)."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    if len(matches) < n:
        # Substring hits catch "eiou" -> "focal_eiou" which difflib may rank low.
        low = name.lower()
        for cand in sorted(candidates):
            if cand not in matches and low and (low in cand.lower() or cand.lower() in low):
                matches.append(cand)
            if len(matches) >= n:
                break
    return matches


def _did_you_mean(matches: list[str]) -> str:
    if not matches:
        return ""
    return " did you mean " + ", ".join(repr(m) for m in matches) + "?"


class UnknownComponentError(KeyError):
    """An unknown component name; the message names the kind and close matches."""

    def __init__(self, kind: str, name: str, available: Iterable[str] = (), hint: str = "") -> None:
        available = sorted(available)
        self.kind = kind
        self.name = name
        self.suggestions = close_matches(name, available)
        msg = f"unknown {kind} {name!r};"
        if self.suggestions:
            msg += _did_you_mean(self.suggestions)
        else:
            shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
            msg += f" available: {shown}" if available else f" no {kind} is registered"
        if hint:
            msg += f" ({hint})"
        else:
            msg += f" (see `lossreg list {kind}`)"
        self.message = msg
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return self.message


class BadParameterError(TypeError):
    """An unknown or ill-typed keyword for a component; ``param`` names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ComponentInfo:
    """What the registry knows about one component (see ``component_info``)."""

    name: str
    kind: str
    obj: Any = field(repr=False, compare=False)
    task: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""
    paper: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        """The first line of the docstring."""
        return self.doc.strip().splitlines()[0].strip() if self.doc.strip() else ""

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "kind": self.kind,
            "task": self.task,
            "params": dict(self.params),
            "doc": self.doc,
            "paper": self.paper,
        }
        out.update(self.extra)
        return out


# --------------------------------------------------------------------------- typing


def _signature_target(obj: Any) -> Callable[..., Any]:
    return obj.__init__ if inspect.isclass(obj) else obj


def _signature(obj: Any) -> inspect.Signature:
    sig = inspect.signature(_signature_target(obj))
    params = list(sig.parameters.values())
    if inspect.isclass(obj) and params and params[0].name == "self":
        params = params[1:]
    return sig.replace(parameters=params)


def _type_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(_signature_target(obj))
    except Exception:  # unresolvable forward references: skip type checks
        return {}


def _describe_type(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def check_type(value: Any, tp: Any) -> bool:
    """Shallow runtime check of ``value`` against annotation ``tp``.

    Covers what component parameters use (numbers, bool, str, None, Optional,
    Union, Literal, sequences, mappings); anything else is accepted.
    """
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        return any(check_type(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    seq_origins = (list, tuple, set, frozenset, cabc.Sequence, cabc.Iterable)
    if origin in seq_origins:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, set, frozenset)):
            return False
        if args and origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(args) == len(value) and all(check_type(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        return all(check_type(v, inner) for v in value)
    if origin in (dict, cabc.Mapping):
        if not isinstance(value, Mapping):
            return False
        if len(args) == 2:
            return all(check_type(k, args[0]) and check_type(v, args[1]) for k, v in value.items())
        return True
    if tp in (list, tuple):
        return isinstance(value, (list, tuple))
    if tp is dict:
        return isinstance(value, Mapping)
    if isinstance(tp, type):
        # Arbitrary classes (tensors, modules): trust the caller.
        return isinstance(value, tp) or tp.__module__ not in ("builtins",)
    return True


def _non_finite(value: Any, depth: int = 0) -> str:
    """``"NaN"`` / ``"inf"`` when a float parameter is not finite (NaN also inside lists), else ``""``."""
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if depth == 0 and value in (float("inf"), float("-inf")):
            return str(value)  # a bound inside a list (FCOS's scale_ranges) may be inf
        return ""
    if isinstance(value, (list, tuple)) and depth < 4:
        for v in value:
            if _non_finite(v, depth + 1).startswith("NaN"):
                return "NaN inside a " + type(value).__name__
    return ""


def record_build_spec(obj: Any, name: str, params: Mapping[str, Any]) -> None:
    """Keep on ``obj`` what it was built with: ``obj.build_spec = {"name": name, **params}``.

    ``params`` are the resolved keyword arguments: those given, including the build-time
    defaults a detector passes (a head's ``num_classes`` and ``in_channels``), and the
    signature's defaults for the rest, so ``build_spec`` is what the constructor received
    and ``Registry.build(obj.build_spec)`` builds the same component again. ``config.json``
    records its components from it (:func:`lossreg.hub.config.component_entries`). Objects
    that take no attributes are left as they are.
    """
    try:
        obj.build_spec = {"name": name, **params}
    except (AttributeError, TypeError):
        pass


# --------------------------------------------------------------------------- plugins

_plugins_lock = threading.RLock()
_plugins_loaded = False


def load_plugins(force: bool = False) -> list[str]:
    """Import every ``lossreg.plugins`` entry point once; return their names.

    An entry point may name a module (importing it registers its components) or
    a callable (called with no arguments). A broken plugin is logged and
    skipped so that it cannot take the built-in components down with it.
    """
    global _plugins_loaded
    with _plugins_lock:
        if _plugins_loaded and not force:
            return []
        _plugins_loaded = True
        loaded = []
        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            try:
                obj = ep.load()
                if callable(obj) and not inspect.ismodule(obj):
                    obj()
                loaded.append(ep.name)
            except Exception as exc:  # noqa: BLE001 - a plugin must not break lossreg
                _logger.warning("lossreg plugin %r (%s) failed to load: %s", ep.name, ep.value, exc)
        return loaded


# --------------------------------------------------------------------------- registry


class Registry(Generic[T]):
    """Name -> component for one kind.

    Args:
        kind: the component kind, used in messages (``"loss"``).
        builtin: module imported on first lookup; importing it registers the
            built-in components of this kind.
        tasks: allowed values of a component's ``task`` (``("cls", "reg")``).
    """

    def __init__(self, kind: str, builtin: str | None = None, tasks: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.builtin = builtin
        self.tasks = tasks
        self._entries: dict[str, ComponentInfo] = {}
        self._builtin_state = "pending"  # pending -> loading -> done
        self._lock = threading.RLock()

    # -- loading
    def _ensure_loaded(self) -> None:
        if self._builtin_state == "pending":
            with self._lock:
                if self._builtin_state == "pending":
                    self._builtin_state = "loading"
                    try:
                        if self.builtin:
                            importlib.import_module(self.builtin)
                    except BaseException:
                        self._builtin_state = "pending"
                        raise
                    self._builtin_state = "done"
        if self._builtin_state == "done":
            load_plugins()

    # -- registration
    def register(
        self,
        name: str | None = None,
        *,
        override: bool = False,
        task: str | None = None,
        paper: str | None = None,
        **extra: Any,
    ) -> Callable[[T], T]:
        """Decorator registering a class or factory under ``name``.

        ``task`` and ``paper`` default to the object's ``task`` / ``paper``
        attributes. Registering a taken name raises unless ``override=True``.
        """

        def deco(obj: T) -> T:
            self.add(obj, name=name, override=override, task=task, paper=paper, **extra)
            return obj

        return deco

    def add(
        self,
        obj: Any,
        name: str | None = None,
        *,
        override: bool = False,
        task: str | None = None,
        paper: str | None = None,
        **extra: Any,
    ) -> ComponentInfo:
        if not callable(obj):
            raise TypeError(f"cannot register {obj!r} as a {self.kind}: it is not a class or function")
        key = name or getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {key!r}")
        if self._builtin_state == "pending":
            self._ensure_loaded()  # built-ins first, so a user name cannot shadow them by accident
        task = task if task is not None else getattr(obj, "task", None)
        if self.tasks and task not in self.tasks:
            raise ValueError(
                f"{self.kind} {key!r} must declare task as one of {self.tasks} "
                f"(class attribute `task` or register(..., task=...)), got {task!r}"
            )
        with self._lock:
            if key in self._entries and not override:
                prev = self._entries[key].obj
                raise ValueError(
                    f"{self.kind} {key!r} is already registered "
                    f"(by {getattr(prev, '__module__', '?')}.{getattr(prev, '__qualname__', prev)}); "
                    "pass override=True to replace it"
                )
            params = {
                p.name: (REQUIRED if p.default is inspect.Parameter.empty else p.default)
                for p in _signature(obj).parameters.values()
                if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            }
            info = ComponentInfo(
                name=key,
                kind=self.kind,
                obj=obj,
                task=task,
                params=MappingProxyType(params),
                doc=inspect.cleandoc(obj.__doc__ or ""),
                paper=paper if paper is not None else getattr(obj, "paper", None),
                extra=MappingProxyType(dict(extra)),
            )
            self._entries[key] = info
        return info

    def unregister(self, name: str) -> None:
        """Remove ``name`` (mainly for tests and plugin reloading)."""
        with self._lock:
            if name not in self._entries:
                raise UnknownComponentError(self.kind, name, self._entries)
            del self._entries[name]

    # -- lookup
    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._entries)

    def info(self, name: str) -> ComponentInfo:
        self._ensure_loaded()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownComponentError(self.kind, str(name), self._entries) from None

    def get(self, name: str) -> Any:
        return self.info(name).obj

    def names(self, pattern: str | None = None, task: str | None = None) -> list[str]:
        self._ensure_loaded()
        out = []
        for key, info in self._entries.items():
            if pattern and not fnmatch.fnmatchcase(key, pattern):
                continue
            if task is not None and info.task != task:
                continue
            out.append(key)
        return sorted(out)

    def list(
        self, pattern: str | None = None, with_description: bool = False, task: str | None = None
    ) -> list[str] | list[tuple[str, str]]:
        names = self.names(pattern, task)
        if with_description:
            return [(n, self._entries[n].description) for n in names]
        return names

    # -- construction
    def check_kwargs(self, name: str, kwargs: Mapping[str, Any], *, where: str = "") -> None:
        """Raise ``TypeError`` for an unknown or ill-typed keyword of ``name``."""
        info = self.info(name)
        sig = _signature(info.obj)
        label = where or f"{self.kind} {name!r}"
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        hints = _type_hints(info.obj)
        for key, value in kwargs.items():
            if key not in sig.parameters or sig.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                if accepts_any:
                    continue
                valid = [k for k in info.params]
                raise BadParameterError(
                    f"{label} has no parameter {key!r};{_did_you_mean(close_matches(key, valid))}"
                    f" valid parameters: {', '.join(valid) or '(none)'}",
                    key,
                )
            if key in hints and not check_type(value, hints[key]):
                raise BadParameterError(
                    f"{label}: parameter {key!r} expects {_describe_type(hints[key])}, "
                    f"got {type(value).__name__} {value!r}",
                    key,
                )
            problem = _non_finite(value)
            if problem:
                raise BadParameterError(f"{label}: parameter {key!r} is {problem}; give a finite number", key)

    def create(self, name: str, /, **kwargs: Any) -> Any:
        """Instantiate component ``name`` with keyword arguments, checked first.

        The instance keeps what it was built with as ``build_spec`` (see :func:`record_build_spec`).
        """
        self.check_kwargs(name, kwargs)
        obj = self.get(name)(**kwargs)
        record_build_spec(obj, name, self.resolved_params(name, kwargs))
        return obj

    def resolved_params(self, name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter component ``name`` gets from ``kwargs``: the signature's defaults, then ``kwargs``."""
        params = {k: v for k, v in self.info(name).params.items() if v is not REQUIRED}
        params.update(kwargs)
        return params

    def build(
        self, spec: str | Mapping[str, Any] | Any, /, require_task: str | None = None, where: str = "", **defaults: Any
    ) -> Any:
        """Build from a config: a name, ``{"name": ..., **params}``, or an instance.

        ``defaults`` fill parameters the spec does not set (mmdetection's
        ``default_args``), e.g. ``num_classes`` for a head. ``require_task``
        rejects a component of another task (a regression loss where a
        classification loss belongs) and limits suggestions to that task.
        Anything else than a name, a mapping or a callable object (a module) raises
        ``TypeError`` at once, naming ``where`` (the slot) when given.
        """
        if spec is None:
            raise ValueError(f"no {self.kind} given: pass a name or {{'name': ..., **params}}")
        if isinstance(spec, Mapping):
            if "name" not in spec:
                raise ValueError(f"a {self.kind} config needs a 'name' key, got keys {sorted(spec)}")
            name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        elif isinstance(spec, str):
            name, params = spec, {}
        else:
            if isinstance(spec, (bool, int, float, complex, bytes, list, tuple, set)) or not (
                callable(spec) or hasattr(spec, "assign")
            ):
                where_text = f"{where}: " if where else ""
                raise TypeError(
                    f"{where_text}expected a {self.kind} name (see `lossreg list {self.kind}`), a "
                    f"{{'name': ..., **params}} mapping or a built {self.kind} module, got {type(spec).__name__} {spec!r}"
                )
            task = getattr(spec, "task", None)
            if require_task and task is not None and task != require_task:
                raise ValueError(f"expected a {require_task!r} {self.kind}, got {type(spec).__name__} (task {task!r})")
            return spec  # an already-built component
        if require_task:
            self._ensure_loaded()
            if name not in self._entries:
                raise UnknownComponentError(self.kind, name, self.names(task=require_task))
            task = self._entries[name].task
            if task != require_task:
                raise ValueError(
                    f"{self.kind} {name!r} has task {task!r}, but a {require_task!r} {self.kind} is needed here "
                    f"(e.g. {', '.join(self.names(task=require_task)[:4])})"
                )
        return self.create(name, **{**defaults, **params})

    def __repr__(self) -> str:
        return f"Registry(kind={self.kind!r}, entries={len(self._entries)})"


# --------------------------------------------------------------------------- the kinds

LOSSES: Registry[Any] = Registry("loss", "lossreg.losses", tasks=("cls", "reg"))
ASSIGNERS: Registry[Any] = Registry("assigner", "lossreg.assigners")
BALANCERS: Registry[Any] = Registry("balancer", "lossreg.balancers")
HEADS: Registry[Any] = Registry("head", "lossreg.heads")
NECKS: Registry[Any] = Registry("neck", "lossreg.necks")
DETECTORS: Registry[Any] = Registry("detector", "lossreg.detectors")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (LOSSES, ASSIGNERS, BALANCERS, HEADS, NECKS, DETECTORS)
}
KINDS: tuple[str, ...] = tuple(REGISTRIES)


def get_registry(kind: str) -> Registry[Any]:
    """The registry of ``kind`` (``"loss"``, ``"assigner"``, ...)."""
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise UnknownComponentError("component kind", kind, REGISTRIES, hint="kinds: " + ", ".join(KINDS)) from None


def list_components(
    kind: str, pattern: str | None = None, with_description: bool = False, task: str | None = None
) -> list[str] | list[tuple[str, str]]:
    """Sorted names of ``kind`` matching the fnmatch ``pattern``.

    With ``with_description=True`` returns ``(name, one-line description)`` pairs.
    ``task`` filters losses by ``"cls"`` / ``"reg"``.
    """
    return get_registry(kind).list(pattern, with_description=with_description, task=task)


def component_info(kind: str, name: str) -> dict[str, Any]:
    """``{"name", "kind", "task", "params": {name: default}, "doc", "paper"}`` of a component."""
    return get_registry(kind).info(name).to_dict()


def create_component(kind: str, name: str, /, **kwargs: Any) -> Any:
    """Instantiate a component of any kind by name; keywords are checked first."""
    return get_registry(kind).create(name, **kwargs)


def build_component(kind: str, spec: Any, /, require_task: str | None = None, where: str = "", **defaults: Any) -> Any:
    """Build from a name, a ``{"name": ..., **params}`` dict, or pass an instance through.

    ``where`` names the slot in the error raised for anything else (``"atss head: cls_loss"``).
    """
    return get_registry(kind).build(spec, require_task=require_task, where=where, **defaults)


def _make_register(reg: Registry[Any]) -> Callable[..., Any]:
    def register(name: Any = None, *, override: bool = False, **meta: Any) -> Any:
        # Usable as @register_x, @register_x("name") and register_x("name")(obj).
        if name is not None and not isinstance(name, str):
            reg.add(name, override=override, **meta)
            return name
        return reg.register(name, override=override, **meta)

    register.__doc__ = f"Register a {reg.kind}: ``@register_{reg.kind}(\"name\", override=False)``."
    register.__name__ = f"register_{reg.kind}"
    return register


def _make_create(reg: Registry[Any]) -> Callable[..., Any]:
    def create(name: str, /, **kwargs: Any) -> Any:
        return reg.create(name, **kwargs)

    create.__doc__ = f"Create the {reg.kind} ``name`` with keyword arguments (checked against its signature)."
    create.__name__ = f"create_{reg.kind}"
    return create


register_loss = _make_register(LOSSES)
register_assigner = _make_register(ASSIGNERS)
register_balancer = _make_register(BALANCERS)
register_head = _make_register(HEADS)
register_neck = _make_register(NECKS)
register_detector = _make_register(DETECTORS)

create_loss = _make_create(LOSSES)
create_assigner = _make_create(ASSIGNERS)
create_balancer = _make_create(BALANCERS)
create_head = _make_create(HEADS)
create_neck = _make_create(NECKS)
