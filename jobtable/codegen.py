"""Typed bindings for a jobs folder: ``jobtable codegen``.

The generated module (default ``<jobs folder>/_generated.py``) holds ``JobType``, a
``Literal`` of every job type; per job type the class of its ``data`` (``XData``) when
the module declares ``Data`` and the type of its result (``XResult``) when ``run`` is
annotated; ``@overload``-typed ``job_config``, ``schedule_job``, ``schedule_cron_job``
and their async twins, so that a type checker rejects an unknown job type or data of
the wrong shape; and ``REGISTRY``, the job modules by type, which the worker reads in
place of scanning the folder.

The job modules are imported (never run) to read ``Data`` and ``run``. The generated
module imports them only for type checkers: importing the bindings at run time imports
no job module, so an application may import its bindings from anywhere.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import importlib
import importlib.util
import keyword
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from jobtable.errors import ConfigError, InvalidDataError
from jobtable.model import WorkerJobConfig
from jobtable.settings import Settings, find_pyproject

GENERATED_NAME = "_generated.py"
COMMAND = "jobtable codegen"
_DIR_PACKAGE = "jobtable_user_jobs"  # the synthetic package registry.py imports folders under

# -- run-time support for the generated module ---------------------------------------


def data_dict(data: Any) -> dict[str, Any] | None:
    """``data`` as the dict stored in the row: dicts as they are, dataclass instances and
    pydantic models converted."""
    if data is None or isinstance(data, dict):
        return data
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return dataclasses.asdict(data)
    dump = getattr(data, "model_dump", None)
    if callable(dump):
        dumped = dump(mode="json")
        if isinstance(dumped, dict):
            return dumped
    if isinstance(data, Mapping):
        return dict(data)
    raise InvalidDataError(
        f"data must be a dict, a dataclass instance or a pydantic model, "
        f"got {type(data).__name__}")


def make_config(job_type: str, data: Any = None, **options: Any) -> WorkerJobConfig:
    """The ``WorkerJobConfig`` behind every generated function."""
    return WorkerJobConfig(type=job_type, data=data_dict(data), **options)


def lazy_attribute(module: str, table: Mapping[str, tuple[str, str]], name: str) -> Any:
    """Import a job module's ``Data`` class the first time the bindings are asked for it."""
    target = table.get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return getattr(importlib.import_module(target[0]), target[1])


# -- where things are ------------------------------------------------------------------


@dataclass(frozen=True)
class JobsLocation:
    """The jobs folder, the dotted name it is imported by, and where its bindings go."""

    folder: Path
    package: str
    bindings: Path


def _dotted_name_of(folder: Path) -> str:
    parts = [folder.name]
    parent = folder.parent
    while (parent / "__init__.py").is_file() and parent != parent.parent:
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts)


def locate(settings: Settings, output: str | Path | None = None) -> JobsLocation:
    """Resolve the jobs folder (or dotted package) of ``settings`` and its bindings file."""
    jobs = settings.jobs
    path = Path(jobs)
    if path.is_dir():
        folder = path.resolve()
        package = _dotted_name_of(folder)
    elif all(part.isidentifier() for part in jobs.split(".")):
        try:
            spec = importlib.util.find_spec(jobs)
        except ImportError as exc:
            raise ConfigError(f"jobs package {jobs!r} cannot be found: {exc}") from None
        locations = None if spec is None else spec.submodule_search_locations
        if not locations:
            raise ConfigError(
                f"jobs {jobs!r} is neither a folder nor an importable package; create the "
                "folder or pass --jobs")
        folder = Path(next(iter(locations))).resolve()
        package = jobs
    else:
        raise ConfigError(f"jobs folder {jobs!r} does not exist; create it or pass --jobs")
    bad = [p for p in package.split(".") if not p.isidentifier() or keyword.iskeyword(p)]
    if bad:
        raise ConfigError(
            f"the jobs folder is imported as {package!r}, and {bad[0]!r} is not a Python "
            "identifier; rename the folder (letters, digits and underscores)")
    target = output if output is not None else settings.bindings
    bindings = resolve_bindings(folder, target)
    if bindings.parent == folder and not bindings.stem.startswith("_"):
        raise ConfigError(
            f"bindings file {bindings.name} inside the jobs folder would be taken for a job "
            "type; start its name with '_' (default _generated.py)")
    return JobsLocation(folder=folder, package=package, bindings=bindings)


def resolve_bindings(folder: Path, bindings: str | Path | None) -> Path:
    """The bindings file: ``bindings`` (relative to the project's pyproject.toml folder, or
    the working directory) or ``_generated.py`` in the jobs folder."""
    if bindings is None or str(bindings) == "":
        return folder / GENERATED_NAME
    path = Path(bindings)
    if not path.is_absolute():
        pyproject = find_pyproject()
        path = (pyproject.parent if pyproject else Path.cwd()) / path
    return path.resolve()


def read_registry(path: Path) -> dict[str, str] | None:
    """``REGISTRY`` of a generated bindings file, read without importing it; None when
    the file is missing or holds none."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and target.id == "REGISTRY" and value is not None:
            try:
                found = ast.literal_eval(value)
            except ValueError:
                return None
            if isinstance(found, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
                return found
            return None
    return None


# -- rendering types -------------------------------------------------------------------


class _Unrenderable(Exception):
    pass


_BUILTIN_NAMES = {int, str, float, bool, bytes, dict, list, set, frozenset, tuple, type,
                  object, complex, bytearray}


class _Renderer:
    """Turns run-time type objects into source text, collecting the imports it needs."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.modules: dict[str, str] = {}  # dotted module -> alias

    def real_module(self, module: str) -> str:
        if module == _DIR_PACKAGE or module.startswith(_DIR_PACKAGE + "."):
            return self.package + module[len(_DIR_PACKAGE):]
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


# -- reading the job modules -----------------------------------------------------------


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


def _camel(name: str) -> str:
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
        from jobtable.validation import _required_keys

        return not _required_keys(cls)
    if kind == "dataclass":
        return all(f.default is not dataclasses.MISSING
                   or f.default_factory is not dataclasses.MISSING
                   for f in dataclasses.fields(cls))
    fields = getattr(cls, "model_fields", {})
    return not any(getattr(f, "is_required", lambda: True)() for f in fields.values())


def _return_annotation(run: Any) -> tuple[bool, Any]:
    """(annotated?, the evaluated return type); raises _Unrenderable when unresolvable."""
    import inspect

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


def _bind(jt: Any, alias: str, renderer: _Renderer) -> JobBinding:
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


@dataclass(frozen=True)
class Bindings:
    """The bindings module for a jobs folder: its text, and the problems met making it."""

    location: JobsLocation
    text: str
    job_types: tuple[str, ...]
    registry: dict[str, str]
    errors: tuple[str, ...]

    @property
    def path(self) -> Path:
        """Where the module is written."""
        return self.location.bindings


def generate(settings: Settings, output: str | Path | None = None) -> Bindings:
    """Import the job modules of ``settings.jobs`` and build their bindings module.

    Modules that fail to import are reported in ``errors`` (``file:line: message``);
    the text is then not to be written.
    """
    from jobtable.registry import discover

    location = locate(settings, output)
    registry = discover(settings.jobs, use_bindings=False)
    broken = {jt.name: jt.error for jt in registry.load_all()}
    errors = tuple(f"{error}" for _, error in sorted(broken.items()) if error)
    renderer = _Renderer(location.package)
    aliases: dict[str, str] = {}
    for name in registry.names:
        alias = _camel(name)
        while alias in aliases.values() or alias in _RESERVED:
            alias += "_"
        aliases[name] = alias
    bindings = []
    for name in registry.names:
        jt = registry.get(name)
        assert jt is not None
        if jt.module is None:
            bindings.append(JobBinding(name=name, alias=aliases[name], builtin=jt.builtin,
                                       notes=("it cannot be imported",)))
            continue
        bindings.append(_bind(jt, aliases[name], renderer))
    user = {b.name: f"{location.package}.{b.name}" for b in bindings if not b.builtin}
    text = _render_module(location.package, bindings, user, renderer)
    return Bindings(location=location, text=text, job_types=tuple(registry.names),
                    registry=user, errors=errors)


def write(bindings: Bindings) -> bool:
    """Write the module when its text changed; True when it was written."""
    path = bindings.path
    try:
        if path.read_text(encoding="utf-8") == bindings.text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(bindings.text, encoding="utf-8")
    tmp.replace(path)
    return True


def staleness(bindings: Bindings, shown: Path | str | None = None) -> list[str]:
    """What is stale in the file on disk compared with the jobs folder; empty when current."""
    path = bindings.path
    name = str(shown or path)
    try:
        current = path.read_text(encoding="utf-8")
    except OSError:
        return [f"{name} does not exist; run '{COMMAND}'"]
    if current == bindings.text:
        return []
    problems = []
    old = read_registry(path)
    if old is not None:
        for added in sorted(bindings.registry.keys() - old.keys()):
            problems.append(f"{name} lacks job type {added!r} (a new job module)")
        for gone in sorted(old.keys() - bindings.registry.keys()):
            problems.append(f"{name} still has job type {gone!r}, whose module is gone")
    if not problems:
        diff = list(difflib.unified_diff(current.splitlines(), bindings.text.splitlines(),
                                         "on disk", "expected", n=0, lineterm=""))
        body = [line for line in diff[2:] if not line.startswith("@@")]
        shown_lines = "\n".join("    " + line for line in body[:12])
        more = f"\n    ... {len(body) - 12} more lines" if len(body) > 12 else ""
        problems.append(f"{name} differs from what the job modules declare "
                        f"(Data or result types changed):\n{shown_lines}{more}")
    return problems


# -- the module text -------------------------------------------------------------------

_RESERVED = {"JobType", "JobTable", "WorkerJob", "WorkerJobConfig", "Any", "Literal",
             "TypeAlias", "REGISTRY", "JOB_TYPES"}

_OPTIONS = """\
    user_id: int = 0,
    due: datetime | None = None,
    auto_reschedule_on_failure: bool = False,
    auto_reschedule_on_failure_delay: timedelta | float | None = None,
    remove_delay: timedelta | float | None = None,"""

_FUNCTIONS: list[tuple[str, str, str, str, str]] = [
    # name, async prefix, leading params, trailing params, return type
    ("job_config", "", "", "", "WorkerJobConfig"),
    ("schedule_job", "", "    jt: JobTable,\n", "", "WorkerJob"),
    ("schedule_job_async", "async ", "    jt: JobTable,\n", "", "WorkerJob"),
    ("schedule_cron_job", "", "    jt: JobTable,\n",
     "    cron: str,\n    timezone: str | None = None,\n", "WorkerJob"),
    ("schedule_cron_job_async", "async ", "    jt: JobTable,\n",
     "    cron: str,\n    timezone: str | None = None,\n", "WorkerJob"),
]

_DOCS = {
    "job_config": "A ``WorkerJobConfig`` of a known job type with data of its shape, for\n"
                  "    ``jt.schedule_jobs([...])``.",
    "schedule_job": "``jt.schedule_job`` for a known job type with data of its shape.",
    "schedule_job_async": "``jt.schedule_job_async`` for a known job type with data of its "
                          "shape.",
    "schedule_cron_job": "``jt.schedule_cron_job`` for a known job type with data of its "
                         "shape.",
    "schedule_cron_job_async": "``jt.schedule_cron_job_async`` for a known job type with "
                               "data of its shape.",
}

_BODIES = {
    "job_config": "return make_config(type, data, **options)",
    "schedule_job": "return jt.schedule_job(make_config(type, data, **options))",
    "schedule_job_async": "return await jt.schedule_job_async(make_config(type, data, "
                          "**options))",
    "schedule_cron_job": "return jt.schedule_cron_job(make_config(type, data, **options), "
                         "cron, timezone)",
    "schedule_cron_job_async": "return await jt.schedule_cron_job_async(\n"
                               "        make_config(type, data, **options), cron, timezone)",
}


def _data_param(b: JobBinding) -> str:
    if b.data_name is None:
        return "    data: dict[str, Any] | None = None,\n"
    if b.data_optional:
        return f"    data: {b.alias}Data | None = None,\n"
    return f"    data: {b.alias}Data,\n"


def _signature(fn: tuple[str, str, str, str, str], type_annotation: str, data: str,
               overload: bool) -> str:
    name, prefix, lead, trail, returns = fn
    options = _OPTIONS if overload else "    **options: Any,"
    star = "    *,\n" if overload or trail else ""
    return (f"{prefix}def {name}(\n{lead}    type: {type_annotation},\n{data}{star}{trail}"
            f"{options}\n) -> {returns}:")


def _render_module(package: str, bindings: list[JobBinding], registry: dict[str, str],
                   renderer: _Renderer) -> str:
    out: list[str] = []
    w = out.append
    w(f"# Generated by `{COMMAND}` from the job modules of `{package}`. Do not edit: "
      "`jobtable dev`\n"
      f"# rewrites it when a job module changes, and `{COMMAND} --check` says when it "
      "is stale.\n# ruff: noqa\n")
    w(f'"""Typed bindings of the job types in `{package}`.\n\n'
      "Schedule through these functions rather than ``JobTable`` directly and a type "
      "checker\nrejects an unknown job type or data of the wrong shape::\n\n"
      f"    from {package}.{GENERATED_NAME[:-3]} import schedule_job\n\n"
      '    schedule_job(jt, "job_type", {...}, user_id=7)\n"""\n\n')
    w("from __future__ import annotations\n\n")
    w("from datetime import datetime, timedelta\n")
    w("from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload\n\n")
    w("from jobtable import JobTable, WorkerJob, WorkerJobConfig\n")
    w("from jobtable.codegen import lazy_attribute, make_config\n")

    typed = [b for b in bindings if b.data_name is not None]
    results = [b for b in bindings if b.result is not None]
    # Render every result first so that the module imports they need are known.
    if renderer.modules or typed:
        w("\nif TYPE_CHECKING:\n")
        for module, alias in sorted(renderer.modules.items()):
            w(f"    import {module} as {alias}\n")
        for b in typed:
            w(f"    from {b.data_module} import {b.data_name} as {b.alias}Data\n")

    exported = ["JOB_TYPES", "REGISTRY", "JobType"]
    exported += [f"{b.alias}Data" for b in typed] + [f"{b.alias}Result" for b in results]
    exported += [fn[0] for fn in _FUNCTIONS]
    w("\n__all__ = [\n" + "".join(f'    "{name}",\n' for name in sorted(exported)) + "]\n")

    names = [b.name for b in bindings]
    w("\n#: Every job type, built-ins included.\n")
    w("JobType: TypeAlias = Literal[\n" + "".join(f'    "{n}",\n' for n in names) + "]\n")
    w("JOB_TYPES: tuple[JobType, ...] = (\n" + "".join(f'    "{n}",\n' for n in names) + ")\n")
    w("\n#: The job modules of the jobs folder by type; the worker reads this in place of "
      "scanning\n#: the folder.\n")
    w("REGISTRY: dict[str, str] = {\n"
      + "".join(f'    "{k}": "{v}",\n' for k, v in sorted(registry.items())) + "}\n")

    notes = [(b.name, note) for b in bindings for note in b.notes]
    if notes:
        w("\n# Notes:\n" + "".join(f"# - {name}: {note}\n" for name, note in notes))
    if results:
        w("\n# The result of each job type whose run() is annotated.\n")
        for b in results:
            w(f'{b.alias}Result: TypeAlias = "{b.result}"\n')

    if typed:
        table = "".join(f'        "{b.alias}Data": ("{b.data_module}", "{b.data_name}"),\n'
                        for b in typed)
        w("\nif not TYPE_CHECKING:\n"
          "    # The Data classes, imported from their job modules on first use.\n"
          "    _LAZY = {\n" + table + "    }\n\n"
          "    def __getattr__(name):\n"
          "        return lazy_attribute(__name__, _LAZY, name)\n")

    for fn in _FUNCTIONS:
        many = len(bindings) > 1
        for b in bindings:
            signature = _signature(fn, f'Literal["{b.name}"]', _data_param(b), True)
            w("\n\n" + ("@overload\n" if many else "") + signature
              + (" ...\n" if many else "\n"))
            if not many:
                w(f'    """{_DOCS[fn[0]]}"""\n')
                w("    " + _BODIES[fn[0]].replace("**options", _KEYWORDS) + "\n")
        if many:
            w("\n\n" + _signature(fn, "JobType", "    data: Any = None,\n", False) + "\n")
            w(f'    """{_DOCS[fn[0]]}"""\n')
            w("    " + _BODIES[fn[0]] + "\n")
    return "".join(out)


_KEYWORDS = ("user_id=user_id, due=due,"
             "\n        auto_reschedule_on_failure=auto_reschedule_on_failure,"
             "\n        auto_reschedule_on_failure_delay=auto_reschedule_on_failure_delay,"
             "\n        remove_delay=remove_delay")
