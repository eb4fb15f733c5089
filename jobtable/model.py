"""Plain data: a job row, a job configuration, what a job's ``run`` receives."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

from jobtable.errors import InvalidDataError, InvalidJobError
from jobtable.timeutil import require_aware, to_timedelta

if TYPE_CHECKING:
    from jobtable.client import JobTable

JSON = Any
AppT = TypeVar("AppT")

DEFAULT_REMOVE_DELAY = timedelta(hours=1)
DEFAULT_RETRY_DELAY = timedelta(seconds=0)
CANCELLED_MESSAGE = "Job cancelled due to new job being created"
DEFAULT_MAX_BACKOFF_MS = 3_600_000
DEFAULT_MAX_RETRIES = 25
BACKOFF_MODES = ("constant", "exponential")
DEFAULT_QUEUE = "default"
MAX_UNIQUE_KEY_LENGTH = 255
MAX_QUEUE_NAME_LENGTH = 100
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
ON_CONFLICT_MODES = ("replace", "keep", "allow")
OnConflict = Literal["replace", "keep", "allow"]
Backoff = Literal["constant", "exponential"]
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def check_queue(value: Any, what: str = "queue") -> str:
    """A queue name: 1 to 100 letters, digits, ``_``, ``.`` or ``-``."""
    if (not isinstance(value, str) or not _QUEUE_NAME.fullmatch(value)
            or len(value) > MAX_QUEUE_NAME_LENGTH):
        raise InvalidJobError(
            f"{what} must be a name of 1 to {MAX_QUEUE_NAME_LENGTH} letters, digits, '_', '.' "
            f"or '-' (such as 'default' or 'reports'), got {value!r}")
    return value


def check_priority(value: Any, what: str = "priority") -> int:
    """A priority: an integer, lower runs first (negative allowed)."""
    low, high = PRIORITY_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidJobError(
            f"{what} must be an integer from {low} to {high} (lower runs first, default 0), "
            f"got {value!r}")
    return value


def check_unique_key(value: Any, what: str = "unique_key") -> str | None:
    """None, or a string of at most 255 characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_UNIQUE_KEY_LENGTH:
        raise InvalidJobError(
            f"{what} must be None or a non-empty string of at most {MAX_UNIQUE_KEY_LENGTH} "
            f"characters, got {value!r:.80}")
    if unstorable_text(value):
        raise InvalidJobError(f"{what} holds {unstorable_text(value)}")
    return value


class Unset(Enum):
    """The type of ``UNSET``: a policy not given, as opposed to ``None`` (which for
    ``max_retries`` means unlimited)."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET
"""``WorkerJobConfig.max_retries`` left out: the module's ``MAX_RETRIES``, else the
``max_retries`` setting (default 25)."""


def check_max_retries(value: Any, what: str = "max_retries") -> int | None:
    """None (unlimited) or an integer of at least 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise InvalidJobError(
            f"{what} must be None (unlimited) or an integer of at least 0 (how many retry "
            f"rows a failing job may produce), got {value!r}")
    return value


def check_backoff(value: Any, what: str = "backoff") -> Backoff:
    """``constant`` (default) or ``exponential``."""
    if value not in BACKOFF_MODES:
        raise InvalidJobError(
            f"{what} must be 'constant' or 'exponential', got {value!r}")
    return value  # type: ignore[no-any-return]


def check_on_conflict(value: Any, what: str = "on_conflict") -> OnConflict:
    """One of ``replace`` (default), ``keep`` or ``allow``."""
    if value not in ON_CONFLICT_MODES:
        raise InvalidJobError(
            f"{what} must be one of 'replace', 'keep' or 'allow', got {value!r}")
    return value  # type: ignore[no-any-return]


class JobStatus(StrEnum):
    """Where a row stands. Derived from its columns, never stored on its own."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


MAX_JSON_DEPTH = 100
"""How deeply objects and lists may nest in job data and results. Deeper values are
refused with ``InvalidDataError`` (they would otherwise exhaust Python's recursion
limit while being written, read or shown)."""


def too_deep(limit: int = MAX_JSON_DEPTH) -> str:
    """The end of the error for a value nested deeper than ``limit``: "data " + this."""
    return (f"is nested more than {limit} levels deep (objects and lists inside one "
            f"another, or a value that contains itself); the limit is {limit} levels: "
            "flatten it, or store the deep part elsewhere and pass a reference")


def nesting_problem(value: Any, limit: int = MAX_JSON_DEPTH) -> str | None:
    """``"is nested more than N levels deep ..."`` when objects and lists in ``value``
    nest deeper than ``limit``, else None. Iterative, so any depth (or a value that
    contains itself) is measured without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        depth += 1
        if depth > limit:
            return too_deep(limit)
        stack.extend((child, depth) for child in children
                     if isinstance(child, (dict, list, tuple)))
    return None


def dump_json(value: Any, what: str) -> str:
    """Serialise ``value`` to JSON text, or raise ``InvalidDataError`` naming ``what``
    (not serialisable, nested deeper than ``MAX_JSON_DEPTH``, or unstorable text)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        raise InvalidDataError(f"{what} {nesting_problem(value)}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(
            f"{what} is not JSON-serialisable ({exc}); use dicts, lists, strings, numbers, "
            "booleans and None"
        ) from None
    # The text escapes every character outside ASCII, so the NUL character and unpaired
    # surrogates can only show as "\u0000" and "\ud8.." to "\udf.."; and objects and
    # lists cannot nest deeper than the text has brackets. Plain data is done here;
    # anything else is walked to name its problem.
    if (text.count("[") + text.count("{") > MAX_JSON_DEPTH or "\\u0000" in text
            or "\\ud" in text):
        problem = _scan(value, 0)
        if problem is _TOO_DEEP:
            raise InvalidDataError(f"{what} {nesting_problem(value)}")
        if problem:
            raise InvalidDataError(
                f"{what} contains {problem}, which the database cannot store in JSON; "
                "remove it or encode the text (e.g. base64)")
    return text


_TOO_DEEP = "objects and lists nested more than MAX_JSON_DEPTH levels deep"


def unstorable_text(value: Any) -> str | None:
    """What in ``value`` PostgreSQL's jsonb would refuse, if anything: the NUL character
    or an unpaired surrogate (undecodable bytes). Refused on SQLite too, so that both
    databases accept the same data. Parts nested deeper than ``MAX_JSON_DEPTH`` are
    not looked into (``nesting_problem`` refuses those)."""
    problem = _scan(value, 0)
    return None if problem is _TOO_DEEP else problem


def _scan(value: Any, depth: int) -> str | None:
    # One recursive pass for both checks: it stops at MAX_JSON_DEPTH, far below
    # Python's recursion limit.
    if isinstance(value, str):
        if "\x00" in value:
            return "the NUL character \\u0000"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "an unpaired surrogate (text that is not valid Unicode)"
        return None
    if isinstance(value, dict):
        items: Any = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return None
    if depth >= MAX_JSON_DEPTH:
        return _TOO_DEEP
    for item in items:
        problem = _scan(item, depth + 1)
        if problem:
            return problem
    return None


@dataclass(frozen=True, slots=True)
class WorkerJobConfig:
    """What to schedule: a job type, who it is for, its data and its policies.

    ``due`` must be an aware datetime (default: now). Delays take a ``timedelta``
    or a number of seconds. A policy left at ``None`` takes the job module's setting
    of the same name in capitals (``AUTO_RESCHEDULE_ON_FAILURE``,
    ``AUTO_RESCHEDULE_ON_FAILURE_DELAY``, ``REMOVE_DELAY``), else the built-in default
    (no retry, retry at once, keep a succeeded row for an hour); a value given here wins.

    ``queue`` (default ``"default"``) and ``priority`` (default 0, lower runs first) say
    where the job waits and in which order; ``unique_key`` narrows matching to jobs of
    the same type, user and key; ``on_conflict`` says what scheduling does with matching
    pending jobs: ``"replace"`` them (default), ``"keep"`` the existing one, or
    ``"allow"`` both. ``QUEUE``, ``PRIORITY`` and ``ON_CONFLICT`` in the job's module
    set defaults for these.

    ``max_retries`` bounds the retry rows a failing job may produce in its chain
    (``None``: unlimited; left out: the module's ``MAX_RETRIES``, else the
    ``max_retries`` setting, 25). ``backoff`` is ``"constant"`` (each retry after the
    delay) or ``"exponential"`` (the n-th retry after delay * 2^(n-1), ±10 % jitter,
    at most ``max_backoff``, default the ``max_backoff`` setting, 1 hour);
    ``BACKOFF`` and ``MAX_BACKOFF`` in the module set defaults.
    """

    type: str
    user_id: int = 0
    data: dict[str, Any] | None = None
    due: datetime | None = None
    auto_reschedule_on_failure: bool | None = None
    auto_reschedule_on_failure_delay: timedelta | float | None = None
    remove_delay: timedelta | float | None = None
    queue: str | None = None
    priority: int | None = None
    unique_key: str | None = None
    on_conflict: OnConflict | None = None
    max_retries: int | Unset | None = UNSET
    backoff: Backoff | None = None
    max_backoff: timedelta | float | None = None

    def validated(self, defaults: Mapping[str, Any] | None = None,
                  settings: Mapping[str, Any] | None = None) -> ValidConfig:
        """Check every field and return the normalised form; raises ``InvalidJobError``.

        ``defaults`` (field name to value; see ``Registry.defaults``) fill the policies
        left at ``None``; a default is checked like a given value and named by its
        module setting when it is wrong. ``settings`` (``max_retries``,
        ``max_backoff``) fill what neither the config nor the module gives.
        """
        if not isinstance(self.type, str) or not self.type.isidentifier():
            raise InvalidJobError(
                f"job type must be a module name such as 'send_report', got {self.type!r}"
            )
        if isinstance(self.user_id, bool) or not isinstance(self.user_id, int):
            raise InvalidJobError(
                f"user_id must be an integer (0 = system), got {type(self.user_id).__name__}"
            )
        if not -(2**63) <= self.user_id < 2**63:
            raise InvalidJobError(f"user_id must fit in 64 bits, got {self.user_id}")
        data = {} if self.data is None else self.data
        if not isinstance(data, dict):
            raise InvalidDataError(
                f"data must be a dict (a JSON object), got {type(data).__name__}")
        data_json = dump_json(data, "data")
        due = None if self.due is None else require_aware(self.due, "due")

        def policy(name: str) -> tuple[Any, str]:
            value = getattr(self, name)
            if value is None and defaults and defaults.get(name) is not None:
                return defaults[name], f"{name.upper()} of job type {self.type!r}"
            if value is None and settings and settings.get(name) is not None:
                return settings[name], f"the {name} setting"
            return value, name

        retry_value, retry_what = policy("auto_reschedule_on_failure_delay")
        retry_delay = to_timedelta(retry_value, retry_what)
        remove_value, remove_what = policy("remove_delay")
        remove_delay = to_timedelta(remove_value, remove_what)
        auto, auto_what = policy("auto_reschedule_on_failure")
        if auto is None:
            auto = False
        if not isinstance(auto, bool):
            raise InvalidJobError(f"{auto_what} must be True or False, got {auto!r}")
        queue, queue_what = policy("queue")
        queue = check_queue(DEFAULT_QUEUE if queue is None else queue, queue_what)
        priority, priority_what = policy("priority")
        priority = check_priority(0 if priority is None else priority, priority_what)
        on_conflict, conflict_what = policy("on_conflict")
        on_conflict = check_on_conflict(
            "replace" if on_conflict is None else on_conflict, conflict_what)
        if self.max_retries is not UNSET:
            max_retries = check_max_retries(self.max_retries)
        elif defaults and "max_retries" in defaults:
            max_retries = check_max_retries(defaults["max_retries"],
                                            f"MAX_RETRIES of job type {self.type!r}")
        elif settings and "max_retries" in settings:
            max_retries = check_max_retries(settings["max_retries"], "the max_retries setting")
        else:
            max_retries = DEFAULT_MAX_RETRIES
        backoff, backoff_what = policy("backoff")
        backoff = check_backoff("constant" if backoff is None else backoff, backoff_what)
        cap_value, cap_what = policy("max_backoff")
        max_backoff = to_timedelta(cap_value, cap_what)
        if max_backoff is None:
            max_backoff = timedelta(milliseconds=DEFAULT_MAX_BACKOFF_MS)
        delay = retry_delay or DEFAULT_RETRY_DELAY
        if backoff == "exponential" and max_backoff < delay:
            raise InvalidJobError(
                f"{cap_what} ({max_backoff.total_seconds():g}s) must not be below "
                f"{retry_what} ({delay.total_seconds():g}s): exponential backoff starts at "
                "the delay and grows up to max_backoff")
        return ValidConfig(
            type=self.type,
            user_id=self.user_id,
            data=json.loads(data_json),
            due=due,
            auto_reschedule_on_failure=auto,
            auto_reschedule_on_failure_delay=retry_delay or DEFAULT_RETRY_DELAY,
            remove_delay=DEFAULT_REMOVE_DELAY if remove_delay is None else remove_delay,
            queue=queue,
            priority=priority,
            unique_key=check_unique_key(self.unique_key),
            on_conflict=on_conflict,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            data_json=data_json,
        )


@dataclass(frozen=True, slots=True)
class ValidConfig:
    """A ``WorkerJobConfig`` after validation: every field present and of the right type."""

    type: str
    user_id: int
    data: dict[str, Any]
    due: datetime | None
    auto_reschedule_on_failure: bool
    auto_reschedule_on_failure_delay: timedelta
    remove_delay: timedelta
    queue: str = "default"
    priority: int = 0
    unique_key: str | None = None
    on_conflict: OnConflict = "replace"
    max_retries: int | None = DEFAULT_MAX_RETRIES
    backoff: Backoff = "constant"
    max_backoff: timedelta = timedelta(milliseconds=DEFAULT_MAX_BACKOFF_MS)
    data_json: str | None = field(default=None, repr=False, compare=False)
    """``data`` as the JSON text that was checked (what the store writes)."""


@dataclass(frozen=True, slots=True)
class NewJob:
    """A row about to be inserted. Built by ``scheduling``; written by a ``Store``."""

    type: str
    user_id: int
    data: dict[str, Any]
    due: datetime
    auto_reschedule_on_failure: bool
    auto_reschedule_on_failure_delay_ms: int
    remove_delay_ms: int
    cron_schedule: str | None = None
    cron_timezone: str | None = None
    rescheduled_from_job: int | None = None
    declared: bool = False
    retry_count: int = 0
    max_retries: int | None = None
    backoff: Backoff = "constant"
    max_backoff_ms: int = DEFAULT_MAX_BACKOFF_MS
    unique_key: str | None = None
    on_conflict: OnConflict = "replace"
    queue: str = "default"
    priority: int = 0
    trace_context: dict[str, str] | None = None
    data_json: str | None = field(default=None, repr=False, compare=False)
    """``data`` as JSON text, when scheduling has it already (spares dumping it again)."""


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """One row of ``worker_jobs``, read-only.

    ``attempts`` counts how often the row was claimed; it is also the claim's
    fencing token: a worker may finish the row only while its token is current.

    ``inserted`` is not a column: it tells what scheduling did. True for a row that
    scheduling wrote (and for every row read otherwise); False when
    ``on_conflict="keep"`` found a matching pending job and returned it instead of
    writing a new one. It takes no part in equality and is not in ``to_dict()``.
    """

    id: int
    type: str
    user_id: int
    data: dict[str, Any]
    due: datetime
    started: datetime | None
    finished: datetime | None
    remove_at: datetime | None
    success: bool | None
    result: JSON
    cron_schedule: str | None
    cron_timezone: str | None
    auto_reschedule_on_failure: bool
    auto_reschedule_on_failure_delay: int
    remove_delay: int
    rescheduled_from_job: int | None
    cancelled: bool
    attempts: int
    claimed_by: str | None
    declared: bool
    created_at: datetime
    updated_at: datetime
    # Policies of this release (migration 0004); defaults describe a row written by
    # the previous release.
    retry_count: int = 0
    max_retries: int | None = None
    backoff: Backoff = "constant"
    max_backoff: int = DEFAULT_MAX_BACKOFF_MS
    cancel_requested: datetime | None = None
    unique_key: str | None = None
    on_conflict: OnConflict = "replace"
    queue: str = "default"
    priority: int = 0
    trace_context: dict[str, str] | None = None
    # Reliability (migration 0008): deaths of a process running this row that are
    # charged to it (it ran alone, or isolation is off), and the longest time the
    # worker's event loop was blocked while this job ran on it.
    crashes: int = 0
    loop_blocked_ms: int = 0
    inserted: bool = field(default=True, repr=False, compare=False, kw_only=True)

    @property
    def is_cron(self) -> bool:
        """True when this row belongs to a cron chain."""
        return self.cron_schedule is not None

    @property
    def status(self) -> JobStatus:
        """pending, running, succeeded, failed or cancelled."""
        if self.finished is None:
            return JobStatus.PENDING if self.started is None else JobStatus.RUNNING
        if self.cancelled:
            return JobStatus.CANCELLED
        return JobStatus.SUCCEEDED if self.success else JobStatus.FAILED

    @property
    def error(self) -> str | None:
        """The error message of a failed or cancelled job."""
        if self.success is False and isinstance(self.result, dict):
            err = self.result.get("error")
            return None if err is None else str(err)
        return None

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready values (timestamps in ISO-8601)."""
        out: dict[str, Any] = {}
        for name in JOB_COLUMNS:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        out["status"] = self.status.value
        return out


JOB_COLUMNS = tuple(name for name in WorkerJob.__dataclass_fields__ if name != "inserted")
"""The columns of ``worker_jobs`` that ``WorkerJob`` carries, in order."""

TIME_COLUMNS = tuple(i for i, name in enumerate(JOB_COLUMNS)
                     if "datetime" in str(WorkerJob.__dataclass_fields__[name].type))
"""Positions in ``JOB_COLUMNS`` of the timestamp columns."""

_JOB_SETTERS = tuple(getattr(WorkerJob, name).__set__ for name in JOB_COLUMNS)
_SET_INSERTED = WorkerJob.__dict__["inserted"].__set__
_new_object = object.__new__


def job_from_values(values: Sequence[Any]) -> WorkerJob:
    """A ``WorkerJob`` from its column values in ``JOB_COLUMNS`` order (a row read from
    the table, already decoded). Fills the slots directly: about half the cost of the
    frozen dataclass's ``__init__``, which a worker pays for every job it claims."""
    if len(values) != len(_JOB_SETTERS):
        raise TypeError(f"a job row has {len(_JOB_SETTERS)} columns, got {len(values)}")
    job: WorkerJob = _new_object(WorkerJob)
    for setter, value in zip(_JOB_SETTERS, values, strict=True):
        setter(job, value)
    _SET_INSERTED(job, True)
    return job


class Ending(StrEnum):
    """How a run ended, as the worker decided it (for hooks, logs and tests).

    A failure is ``retrying`` (a retry row follows), ``exhausted`` (a retry was due
    but ``max_retries`` is used up), ``discarded`` (the job raised ``Discard``) or
    ``failed`` (no retry asked for). ``cancelled``: cancelled by request while running;
    ``snoozed``: the job raised ``Snooze`` and its row is pending again.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    EXHAUSTED = "exhausted"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"
    SNOOZED = "snoozed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a claimed job ended, and the row that follows it (a retry or the next cron run).

    ``cancelled`` finishes the row as cancelled; ``snooze_until`` makes it pending again,
    due then, instead of finishing it. A row whose cancel was requested while it ran
    ends cancelled whatever the outcome said (the store checks as it writes).
    """

    job: WorkerJob
    success: bool
    result: JSON
    follow_up: NewJob | None = None
    ending: Ending | None = None
    cancelled: bool = False
    snooze_until: datetime | None = None

    @property
    def kind(self) -> Ending:
        """``ending``, or ``succeeded`` / ``failed`` from ``success`` when not given."""
        if self.ending is not None:
            return self.ending
        return Ending.SUCCEEDED if self.success else Ending.FAILED


_FLAG_LOCK = threading.Lock()


class CancelFlag(threading.Event):
    """A ``threading.Event`` whose lock and condition are made on first use.

    A worker gives one to every job it runs (``params.cancelled``) and almost none is
    ever set or waited on; building a plain ``Event`` (a ``Condition`` and its lock)
    for each cost more than many of the other steps of a no-op job together.
    """

    _cond: threading.Condition | None

    def __init__(self) -> None:  # no super().__init__(): that builds the condition
        self._flag = False
        self._cond = None

    def _condition(self) -> threading.Condition:
        cond = self._cond
        if cond is None:
            with _FLAG_LOCK:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition(threading.Lock())
        return cond

    def _at_fork_reinit(self) -> None:
        if self._cond is not None:
            self._cond._at_fork_reinit()  # type: ignore[attr-defined]

    def is_set(self) -> bool:
        """True once ``set()`` was called (and not cleared since)."""
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every thread waiting on it."""
        cond = self._condition()
        with cond:
            self._flag = True
            cond.notify_all()

    def clear(self) -> None:
        """Reset the flag."""
        with self._condition():
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` seconds pass; the flag's value."""
        cond = self._condition()
        with cond:
            signaled = self._flag
            if not signaled:
                signaled = cond.wait(timeout)
            return signaled


@dataclass(slots=True)
class JobParams(Generic[AppT]):
    """What a job's ``run(params)`` receives."""

    app: AppT
    log: logging.Logger
    job: WorkerJob
    jobtable: JobTable = field(repr=False)
    cancelled: threading.Event = field(default_factory=CancelFlag, repr=False)
    """Set when someone cancels this job while it runs (``JobTable.cancel_job``). A plain
    ``def run`` should check it and return early; an ``async def run`` is cancelled
    (``asyncio.CancelledError``) instead."""

    @property
    def data(self) -> dict[str, Any]:
        """Shortcut for ``params.job.data``."""
        return self.job.data
