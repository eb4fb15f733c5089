"""Hooks: code that runs around and after every job.

A job module may define ``on_success(params, result)``, ``on_failure(params, error)``,
``on_exhausted(params, error)`` (after ``on_failure``: the run wanted a retry and its
retries are used up, no retry follows) and ``on_discard(params, error)`` (after
``on_failure``: the job raised ``Discard``). A snooze fires none of them.
Modules named by the ``hooks`` setting (middleware) may define the same functions,
called for every job after the job module's own, and ``around(params, call_next)``,
which wraps the run: ``call_next()`` runs the job (and any inner middleware) and returns
its result or raises its exception. The first module listed is the outermost.

Each may be ``async def`` or plain ``def``; a plain one runs in a thread so that it never
blocks the worker's event loop. A hook's own error is logged with its traceback and never
changes the job's outcome: an ``around`` that raises before calling ``call_next``, or
returns without calling it, is logged and the job runs without it; whatever an
``around`` returns or raises after ``call_next`` the job's own result or error is what is
stored. ``around`` runs inside the job's timeout; the outcome hooks of one job together
get what the job left of its timeout, and at least a tenth of it (at most 30 s).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from types import ModuleType
from typing import TYPE_CHECKING, Any

from jobtable.errors import ConfigError

if TYPE_CHECKING:
    from jobtable.model import JobParams
    from jobtable.settings import Settings

log = logging.getLogger("jobtable.hooks")

#: The outcome hooks a job module or a middleware module may define.
OUTCOME_HOOKS = ("on_success", "on_failure", "on_exhausted", "on_discard")
#: The module the ``otel`` setting adds as the outermost middleware.
OTEL_MIDDLEWARE = "jobtable.otel"
_LEAST_HOOK_TIME = 30.0


@functools.cache
def load_middleware(names: tuple[str, ...]) -> tuple[ModuleType, ...]:
    """Import the middleware modules ``names``, in order; ``ConfigError`` naming the
    module when one cannot be imported or defines no hook."""
    modules = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"hooks module {name!r} cannot be imported ({type(exc).__name__}: {exc}); "
                "the hooks setting lists importable modules such as 'myapp.jobhooks'"
            ) from None
        if not any(callable(getattr(module, hook, None)) for hook in ("around", *OUTCOME_HOOKS)):
            raise ConfigError(
                f"hooks module {name!r} defines none of around, {', '.join(OUTCOME_HOOKS)}")
        modules.append(module)
    return tuple(modules)


def middleware_for(settings: Settings) -> tuple[ModuleType, ...]:
    """The middleware of these settings: OpenTelemetry first when ``otel`` is on, then
    the ``hooks`` modules."""
    names = tuple(settings.hooks)
    if settings.otel:
        names = (OTEL_MIDDLEWARE, *names)
    return load_middleware(names)


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _hook_failed(fn: Callable[..., Any], params: JobParams[Any], exc: BaseException) -> None:
    job = params.job
    log.error("hook %s failed for job %d (%s); the job's outcome stands: %s: %s", _name(fn),
              job.id, job.type, type(exc).__name__, exc, exc_info=exc)


async def _call(fn: Callable[..., Any], executor: Executor, *args: Any) -> Any:
    """Await an async hook; run a plain one in a thread of ``executor``."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        executor, functools.partial(ctx.run, fn, *args))


class _Run:
    """The job's own outcome, whatever the middleware around it does."""

    def __init__(self, call: Callable[[], Awaitable[Any]]) -> None:
        self.call = call
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    async def once(self) -> Any:
        if not self.done:
            try:
                self.value = await self.call()
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                self.done = True
        if self.error is not None:
            raise self.error
        return self.value


def arounds(middleware: Sequence[ModuleType]) -> list[Callable[..., Any]]:
    """The ``around`` hooks of ``middleware``, outermost first."""
    return [fn for module in middleware if callable(fn := getattr(module, "around", None))]


def defined(hook: str, owners: Sequence[Any]) -> bool:
    """Whether any of ``owners`` defines ``hook``: without one, a worker skips ``fire``."""
    return any(callable(getattr(owner, hook, None)) for owner in owners)


async def run_around(params: JobParams[Any], middleware: Sequence[ModuleType],
                     call: Callable[[], Awaitable[Any]], executor: Executor) -> Any:
    """Run ``call`` (the job) inside every middleware's ``around``; return its result or
    raise its exception, whatever the middleware did."""
    wrappers = arounds(middleware)
    if not wrappers:
        return await call()
    run = _Run(call)
    loop = asyncio.get_running_loop()

    async def invoke(index: int) -> Any:
        if index == len(wrappers):
            return await run.once()
        around = wrappers[index]
        called = failed = False
        inner: list[concurrent.futures.Future[Any]] = []

        async def call_next_async() -> Any:
            nonlocal called
            called = True
            return await invoke(index + 1)

        def call_next_sync() -> Any:
            nonlocal called
            called = True
            future = asyncio.run_coroutine_threadsafe(invoke(index + 1), loop)
            inner.append(future)
            return future.result()

        try:
            if inspect.iscoroutinefunction(around):
                await around(params, call_next_async)
            else:
                await _call(around, executor, params, call_next_sync)
        except asyncio.CancelledError:
            for future in inner:
                future.cancel()
            raise
        except BaseException as exc:
            if not (run.done and exc is run.error):
                _hook_failed(around, params, exc)
                failed = True
        if not called:
            if run.done:
                return await run.once()
            if not failed:
                log.error("hook %s did not call call_next for job %d (%s); the job runs "
                          "without it", _name(around), params.job.id, params.job.type)
            return await invoke(index + 1)
        return await run.once()

    return await invoke(0)


async def fire(hook: str, params: JobParams[Any], arg: Any, owners: Sequence[Any],
               executor: Executor, budget: float) -> None:
    """Call ``hook(params, arg)`` of each owner (the job module, then the middleware) that
    defines it, one after another; log a hook's error, or its overrunning ``budget``
    seconds (shared by the calls of one job), and go on."""
    deadline = time.monotonic() + budget
    for owner in owners:
        fn = getattr(owner, hook, None)
        if not callable(fn):
            continue
        try:
            async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
                await _call(fn, executor, params, arg)
        except asyncio.CancelledError:
            raise
        except TimeoutError as exc:
            log.error("hook %s for job %d (%s) did not return within %.3gs; it is abandoned, "
                      "the job's outcome stands", _name(fn), params.job.id, params.job.type,
                      budget, exc_info=exc)
        except (Exception, SystemExit) as exc:
            _hook_failed(fn, params, exc)


def hook_budget(timeout: float, elapsed: float) -> float:
    """Seconds the outcome hooks of one job may take: what the job left of its timeout,
    at least a tenth of the timeout (at most 30 s)."""
    return max(timeout - elapsed, min(timeout * 0.1, _LEAST_HOOK_TIME))
