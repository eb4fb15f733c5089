"""Job types: the modules of the jobs folder, found by file name, imported on demand.

Nothing the database holds is ever imported: a row's ``type`` is only looked up
in this registry, whose names come from the files of the jobs folder.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import keyword
import logging
import os
import pkgutil
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from jobtable.bindings import read_registry, resolve_bindings
from jobtable.errors import ConfigError, InvalidDataError, InvalidJobError, UnknownJobTypeError
from jobtable.routing import TypeLimits, limits_of
from jobtable.timeutil import to_timedelta
from jobtable.validation import validate_data

BUILTIN_PACKAGE = "jobtable.jobs"
log = logging.getLogger("jobtable.registry")

#: The ``WorkerJobConfig`` fields a job module may give a default for, each by a
#: module-level setting of the same name in capitals (``REMOVE_DELAY = 60``).
MODULE_DEFAULTS = ("auto_reschedule_on_failure", "auto_reschedule_on_failure_delay",
                   "remove_delay", "queue", "priority", "on_conflict", "max_retries",
                   "backoff", "max_backoff")
_DEFAULT_NAMES = tuple((field, field.upper()) for field in MODULE_DEFAULTS)
# Module settings for which None is a value (MAX_RETRIES = None: unlimited), not "unset".
_NONE_IS_A_VALUE = ("max_retries",)
_STAND_IN_PREFIX = "jobtable_user_jobs_"  # a jobs folder that cannot load by its own name


@dataclass
class JobType:
    """One job type: its module once imported, or the error that stopped the import."""

    name: str
    origin: str  # the file of a module in a jobs folder, else its dotted name
    module: ModuleType | None = None
    module_name: str | None = None  # the name a module in a jobs folder is imported by
    error: str | None = None
    builtin: bool = False

    @functools.cached_property
    def run(self) -> Callable[[Any], Any] | None:
        """The module's ``run`` callable, if it has one (read once, after import)."""
        fn = getattr(self.module, "run", None)
        return fn if callable(fn) else None

    @functools.cached_property
    def is_async(self) -> bool:
        """True when ``run`` is a coroutine function."""
        return inspect.iscoroutinefunction(self.run)

    @functools.cached_property
    def timeout(self) -> timedelta | None:
        """The module's ``TIMEOUT`` (seconds or timedelta), if any."""
        return _setting(self.module, "TIMEOUT")

    @property
    def cron(self) -> str | None:
        """The module's declared ``CRON`` schedule, if any."""
        value = getattr(self.module, "CRON", None)
        return value if isinstance(value, str) else None

    @property
    def cron_timezone(self) -> str | None:
        """The time zone of the declared ``CRON`` (``CRON_TIMEZONE``), default UTC."""
        value = getattr(self.module, "CRON_TIMEZONE", None)
        return value if isinstance(value, str) else None

    @property
    def data_type(self) -> Any:
        """The module's ``Data`` class (TypedDict, dataclass or pydantic model), if any."""
        return getattr(self.module, "Data", None)

    @functools.cached_property
    def limits(self) -> TypeLimits:
        """The flow limits the module declares (``CONCURRENCY_LIMIT``,
        ``CONCURRENCY_KEY``, ``RATE_LIMIT``, ``FAIR``); checked when it is imported."""
        return limits_of(self.name, self.module)

    def declared_setting(self, name: str) -> Any:
        """A module-level setting such as ``AUTO_RESCHEDULE_ON_FAILURE``."""
        return getattr(self.module, name, None)


def _setting(module: ModuleType | None, name: str) -> timedelta | None:
    value = getattr(module, name, None)
    if value is None:
        return None
    return to_timedelta(value, f"{name} of {getattr(module, '__name__', '?')}")


@dataclass
class Registry:
    """Job types by name. Built from the built-in jobs plus the user's jobs folder."""

    source: str | None
    types: dict[str, JobType] = field(default_factory=dict)
    bindings: str | None = None  # the generated bindings whose REGISTRY was used
    package: str | None = None  # the package name the jobs folder's modules import under
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def names(self) -> list[str]:
        """Every job type name, sorted."""
        return sorted(self.types)

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def get(self, name: str) -> JobType | None:
        """The job type called ``name``, imported on first use; None when unknown."""
        jt = self.types.get(name)
        if jt is not None and jt.module is None and jt.error is None:
            with self._lock:
                if jt.module is None and jt.error is None:
                    _import(jt)
        return jt

    def load_all(self) -> list[JobType]:
        """Import every job module now; return the ones that failed to import."""
        broken = []
        for name in self.names:
            jt = self.get(name)
            assert jt is not None
            if jt.error is not None:
                broken.append(jt)
        return broken

    def require(self, name: str) -> JobType:
        """The job type called ``name``, or ``UnknownJobTypeError`` listing the known ones."""
        jt = self.types.get(name)
        if jt is None:
            raise UnknownJobTypeError(name, self.names)
        return jt

    def defaults(self, name: object) -> dict[str, Any]:
        """The defaults job type ``name`` declares for its jobs: ``WorkerJobConfig``
        field name to the value of the module's setting (``MODULE_DEFAULTS``), for the
        settings the module sets. Empty for an unknown or broken job type. Passed to
        ``WorkerJobConfig.validated``, where a value given in the config wins."""
        jt = self.get(name) if isinstance(name, str) else None
        if jt is None or jt.module is None:
            return {}
        # The module's namespace, read directly: getattr of an absent name costs an
        # exception each, and this runs for every job scheduled. A module with its own
        # __getattr__ (PEP 562) is asked through getattr.
        space = vars(jt.module)
        if "__getattr__" in space:
            return {field: value for field, upper in _DEFAULT_NAMES
                    if (value := getattr(jt.module, upper, None)) is not None
                    or (field in _NONE_IS_A_VALUE and hasattr(jt.module, upper))}
        return {field: value for field, upper in _DEFAULT_NAMES
                if (value := space.get(upper)) is not None
                or (field in _NONE_IS_A_VALUE and upper in space)}

    def limits(self) -> list[TypeLimits]:
        """The flow limits of every loadable job type that declares any."""
        out = []
        for name in self.names:
            jt = self.get(name)
            if jt is not None and jt.module is not None and jt.limits.limited:
                out.append(jt.limits)
        return out

    def check_data(self, name: str, data: dict[str, Any]) -> None:
        """Raise ``InvalidDataError`` when ``data`` does not fit the ``Data`` declared by
        the module of job type ``name``; nothing to check when it declares none."""
        jt = self.get(name)
        data_type = None if jt is None else jt.data_type
        if data_type is None:
            return
        problem = validate_data(data_type, data)
        if problem:
            raise InvalidDataError(
                f"data for job type {name!r} does not match its Data: {problem}")


def _file_stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


# The stamp of each job file when it was imported: a registry made after the file
# changed imports it afresh (as a new worker process would); otherwise the module in
# sys.modules is used, so that a test's mock.patch("jobs.x.helper") reaches the job.
_imported: dict[str, tuple[int, int] | None] = {}
_import_lock = threading.RLock()


def _import(jt: JobType) -> None:
    with _import_lock:
        _import_locked(jt)


def _import_locked(jt: JobType) -> None:
    try:
        if jt.module_name is not None:
            stamp = _file_stamp(jt.origin)
            if jt.module_name in _imported and _imported[jt.module_name] != stamp:
                sys.modules.pop(jt.module_name, None)
            _imported[jt.module_name] = stamp
        module = importlib.import_module(jt.module_name or jt.origin)
    except Exception as exc:
        jt.error = _describe_import_error(jt, exc)
        return
    if not callable(getattr(module, "run", None)):
        jt.error = f"{jt.origin}: job module has no run(params) function"
        return
    try:
        limits_of(jt.name, module)
    except InvalidJobError as exc:
        jt.error = f"{jt.origin}: {exc}"
        return
    jt.module = module


def _describe_import_error(jt: JobType, exc: Exception) -> str:
    if isinstance(exc, SyntaxError):
        return f"{exc.filename or jt.origin}:{exc.lineno}: SyntaxError: {exc.msg}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = next(
        (f"{f.filename}:{f.lineno}" for f in reversed(frames) if f.filename == jt.origin),
        jt.origin,
    )
    return f"{where}: {type(exc).__name__}: {exc}"


def package_name_of(folder: Path) -> str:
    """The dotted name a jobs folder is imported by: its name, preceded by the names of
    the enclosing folders that are packages (hold an ``__init__.py``)."""
    parts = [folder.name]
    parent = folder.parent
    while (parent / "__init__.py").is_file() and parent != parent.parent:
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts)


def _folder_paths(module: ModuleType) -> list[Path]:
    return [Path(p).resolve() for p in getattr(module, "__path__", None) or ()]


def _package_module(name: str, folder: Path) -> ModuleType:
    """A package ``name`` whose only folder is ``folder``, registered in ``sys.modules``
    (for a jobs folder without ``__init__.py``: its relative imports then work)."""
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent, _, leaf = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], leaf, module)
    return module


def _folder_package(folder: Path) -> str:
    """The package name the modules of jobs folder ``folder`` are imported under.

    Its real name (``jobs``, or ``myapp.jobs`` inside a package; see
    ``package_name_of``) when that name leads to this folder, so that a job's
    relative imports, ``mock.patch("jobs.x.helper")`` and tracebacks see the module
    under the name the application knows; a folder without ``__init__.py`` is loaded
    as a package of its name. When the name is taken by something else (another
    folder of that name already imported, a module of the standard library) or is not
    a Python name, a stand-in package name is used, and a debug message says why.
    """
    name = package_name_of(folder)
    parts = name.split(".")
    root = folder.parents[len(parts) - 1]
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return _stand_in(folder, name, "it is not a Python name")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        loaded = sys.modules.get(name)
        if loaded is not None:
            where = _folder_paths(loaded)
        else:
            spec = importlib.util.find_spec(name)
            where = [] if spec is None else [
                Path(p).resolve() for p in spec.submodule_search_locations or ()]
            if spec is not None and spec.origin is None and folder in where:
                where = [folder]  # a namespace package: this folder becomes its only one
    except Exception as exc:  # a parent package that fails to import
        return _stand_in(folder, name, f"finding it failed: {type(exc).__name__}: {exc}")
    if set(where) != {folder}:
        shown = ", ".join(map(str, where)) or "a module"
        return _stand_in(folder, name, f"{name} is already {shown}")
    if loaded is None and not (folder / "__init__.py").is_file():
        _package_module(name, folder)
    log.debug("jobs folder %s: job modules import as %s.<type>", folder, name)
    return name


def _stand_in(folder: Path, name: str, why: str) -> str:
    digest = hashlib.sha1(str(folder).encode(), usedforsecurity=False).hexdigest()[:10]
    stand_in = _STAND_IN_PREFIX + digest
    if stand_in not in sys.modules:
        _package_module(stand_in, folder)
    log.debug("jobs folder %s cannot import as %s (%s); job modules import as %s.<type>",
              folder, name, why, stand_in)
    return stand_in


def _scan_directory(path: Path) -> dict[str, str]:
    found = {}
    for file in sorted(path.glob("*.py")):
        if file.stem.startswith("_") or not file.stem.isidentifier():
            continue
        found[file.stem] = str(file.resolve())
    return found


def _scan_package(dotted: str) -> dict[str, str]:
    package = importlib.import_module(dotted)
    paths = getattr(package, "__path__", None)
    if paths is None:
        raise ConfigError(f"jobs {dotted!r} is a module, not a package (a folder of job modules)")
    return {
        info.name: f"{dotted}.{info.name}"
        for info in pkgutil.iter_modules(paths)
        if not info.name.startswith("_") and not info.ispkg
    }


def discover(jobs: str | Path | None, bindings: str | Path | None = None, *,
             use_bindings: bool = True) -> Registry:
    """Find job types: built-ins, then the modules of ``jobs`` (a folder or dotted package).

    Discovery reads file names only; modules are imported on first use. When the
    generated bindings (``jobtable codegen``; ``bindings`` or ``_generated.py`` in the
    folder) are present their ``REGISTRY`` is used; when it no longer matches the
    folder a warning says so and the folder's modules are used.
    """
    registry = Registry(source=None if jobs is None else str(jobs))
    for name, origin in _scan_package(BUILTIN_PACKAGE).items():
        registry.types[name] = JobType(name=name, origin=origin, builtin=True)
    if jobs is None:
        return registry
    path = Path(jobs)
    if path.is_dir():
        # Job modules import the user's own packages; make the project root importable.
        root = str(path.resolve().parent)
        if root not in sys.path:
            sys.path.insert(0, root)
        registry.package = _folder_package(path.resolve())
        user = _scan_directory(path)
    elif isinstance(jobs, str) and all(p.isidentifier() for p in jobs.split(".")):
        try:
            user = _scan_package(jobs)
            registry.package = jobs
        except ImportError as exc:
            raise ConfigError(
                f"jobs {jobs!r} is neither a folder nor an importable package ({exc})"
            ) from None
    else:
        raise ConfigError(f"jobs folder {str(jobs)!r} does not exist; create it or pass jobs=...")
    if use_bindings:
        folder = path if path.is_dir() else Path(next(iter(sys.modules[str(jobs)].__path__)))
        user = _prefer_bindings(registry, folder, user, bindings)
    for name, origin in user.items():
        if name in registry.types:
            raise InvalidJobError(
                f"job module {origin} shadows the built-in job type {name!r}; rename the file"
            )
        module_name = f"{registry.package}.{name}" if path.is_dir() else None
        registry.types[name] = JobType(name=name, origin=origin, module_name=module_name)
    return registry


def _prefer_bindings(registry: Registry, folder: Path, found: dict[str, str],
                     bindings: str | Path | None) -> dict[str, str]:
    path = resolve_bindings(folder.resolve(), bindings)
    listed = read_registry(path)
    if listed is None:
        return found
    if listed.keys() == found.keys():
        registry.bindings = str(path)
        return {name: found[name] for name in sorted(listed)}
    new, gone = sorted(found.keys() - listed.keys()), sorted(listed.keys() - found.keys())
    log.warning("job bindings %s are stale (%s); using the jobs folder; run 'jobtable codegen'",
                path, "; ".join(part for part in (
                    f"not listed: {', '.join(new)}" if new else "",
                    f"listed but gone: {', '.join(gone)}" if gone else "") if part))
    return found
