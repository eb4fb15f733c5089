"""Reading job modules: their ``Data`` class and ``run``'s result type, as source text."""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from jobtable.validation import required_keys


class _Unrenderable(Exception):
    pass


_BUILTIN_NAMES = {int, str, float, bool, bytes, dict, list, set, frozenset, tuple, type,
                  object, complex, bytearray}


class Renderer:
    """Turns run-time type objects into source text, collecting the imports it needs."""

    def __init__(self, package: str, loaded_as: str | None = None) -> None:
        self.package = package
        self.loaded_as = loaded_as  # the name the registry imported the folder under
        self.modules: dict[str, str] = {}  # dotted module -> alias

    def real_module(self, module: str) -> str:
        """The name the bindings import ``module`` by: a job module imported under a
        stand-in package name is named by its real package."""
        old = self.loaded_as
        if old and old != self.package and (module == old or module.startswith(old + ".")):
            return self.package + module[len(old):]
        return module

    def module_alias(self, module: str) -> str:
        alias = self.modules.get(module)
        if alias is None:
            base = "_" + module.replace(".", "_")
            alias = base
            taken = set(self.modules.values())
            n = 2
            while alias in taken:
                alias = f"{base}_{n}"
                n += 1
            self.modules[module] = alias
        return alias

    def locate(self, obj: Any) -> tuple[str, str]:
        """The importable (module, qualified name) of a class."""
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if not isinstance(module, str) or not isinstance(qualname, str):
            raise _Unrenderable(repr(obj))
        if "<" in qualname or module == "__main__":
            raise _Unrenderable(qualname)
        return self.real_module(module), qualname

    def class_ref(self, obj: Any) -> str:
        module, qualname = self.locate(obj)
        if module == "builtins":
            return qualname
        return f"{self.module_alias(module)}.{qualname}"

    def render(self, tp: Any) -> str:
        if tp is None or tp is type(None):
            return "None"
        if tp is Any:
            return "Any"
        if tp is Ellipsis:
            return "..."
        origin = get_origin(tp)
        args = get_args(tp)
        if origin in (Union, types.UnionType):
            return " | ".join(self.render(a) for a in args)
        if origin is Literal:
            return "Literal[" + ", ".join(self.literal(a) for a in args) + "]"
        if origin is typing.Annotated:
            return self.render(args[0])
        if origin in (typing.Required, typing.NotRequired, typing.ClassVar, typing.Final):
            return self.render(args[0])
        if origin is not None:
            if origin is Callable or getattr(origin, "__qualname__", "") == "Callable":
                raise _Unrenderable("Callable")
            head = self.render(origin)
            if not args:
                return head
            if origin is tuple and args == ((),):
                return f"{head}[()]"
            return f"{head}[" + ", ".join(self.render(a) for a in args) + "]"
        if tp in _BUILTIN_NAMES:
            return str(tp.__name__)
        if isinstance(tp, (type, typing.NewType)):
            return self.class_ref(tp)
        raise _Unrenderable(repr(tp))

    def literal(self, value: Any) -> str:
        if isinstance(value, enum.Enum):
            return f"{self.class_ref(type(value))}.{value.name}"
        if value is None or isinstance(value, (str, int, bool, bytes)):
            return repr(value)
        raise _Unrenderable(repr(value))



@dataclass(frozen=True)
class JobBinding:
    """What the bindings say about one job type."""

    name: str
    alias: str
    data_module: str | None = None  # where the Data class is defined
    data_name: str | None = None
    data_optional: bool = True
    result: str | None = None
    notes: tuple[str, ...] = ()
    builtin: bool = False


def job_alias(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Job"


def _data_kind(cls: Any) -> str | None:
    if typing.is_typeddict(cls):
        return "typeddict"
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        return "dataclass"
    if isinstance(cls, type) and callable(getattr(cls, "model_validate", None)):
        return "pydantic"
    return None


def _data_optional(cls: Any, kind: str) -> bool:
    if kind == "typeddict":
        return not required_keys(cls)
    if kind == "dataclass":
        return all(f.default is not dataclasses.MISSING
                   or f.default_factory is not dataclasses.MISSING
                   for f in dataclasses.fields(cls))
    fields = getattr(cls, "model_fields", {})
    return not any(getattr(f, "is_required", lambda: True)() for f in fields.values())


def _return_annotation(run: Any) -> tuple[bool, Any]:
    """(annotated?, the evaluated return type); raises _Unrenderable when unresolvable."""
    annotations = inspect.get_annotations(run)
    if "return" not in annotations:
        return False, None
    value = annotations["return"]
    if isinstance(value, str):
        try:
            value = eval(value, dict(getattr(run, "__globals__", {})))
        except Exception as exc:
            raise _Unrenderable(f"{value} ({type(exc).__name__}: {exc})") from None
    return True, value


def bind(jt: Any, alias: str, renderer: Renderer) -> JobBinding:
    notes: list[str] = []
    data_module = data_name = None
    optional = True
    data = jt.data_type
    if data is not None:
        kind = _data_kind(data)
        if kind is None:
            notes.append("its Data is not a TypedDict, dataclass or pydantic model; "
                         "data is not typed")
        else:
            try:
                data_module, data_name = renderer.locate(data)
            except _Unrenderable:
                notes.append("its Data class cannot be imported by name; data is not typed")
            else:
                if "." in data_name:
                    notes.append("its Data is a nested class; data is not typed")
                    data_module = data_name = None
                else:
                    optional = _data_optional(data, kind)
    result = None
    try:
        annotated, value = _return_annotation(jt.run)
        if annotated:
            result = renderer.render(value)
    except _Unrenderable as exc:
        notes.append(f"its result type {exc} cannot be named here; typed as Any")
        result = "Any"
    return JobBinding(name=jt.name, alias=alias, data_module=data_module, data_name=data_name,
                      data_optional=optional, result=result, notes=tuple(notes),
                      builtin=jt.builtin)
