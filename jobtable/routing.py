"""Routing and flow control as plain data: which queues a worker serves with how many
slots, the global limits a job module declares, and why a pending job is held back.

No SQL and no database: the store enforces these inside its claim, the worker passes
them to it, and ``JobTable`` and the commands explain them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from jobtable.errors import ConfigError, InvalidJobError
from jobtable.model import check_queue

#: The periods ``RATE_LIMIT`` accepts, by their letter.
RATE_PERIODS = {"s": timedelta(seconds=1), "m": timedelta(minutes=1), "h": timedelta(hours=1)}
#: The values ``CONCURRENCY_KEY`` accepts.
CONCURRENCY_KEYS = ("user_id",)
#: Rate-limit starts are counted in buckets of this fraction of the period.
RATE_BUCKETS = 10
_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")
_QUEUE_ITEM = re.compile(r"\s*([^=\s]+)\s*=\s*(\S+)\s*")
QUEUES_FORM = "NAME=SLOTS[,NAME=SLOTS...] such as 'default=10,reports=2'"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``count`` starts per ``period``, everywhere."""

    count: int
    period: timedelta

    @property
    def bucket(self) -> timedelta:
        """The width of one counting bucket."""
        return self.period / RATE_BUCKETS

    def bucket_of(self, moment: datetime) -> datetime:
        """The start of the bucket ``moment`` falls in (aligned on the epoch)."""
        width = self.bucket.total_seconds()
        epoch = moment.timestamp()
        return datetime.fromtimestamp(epoch - epoch % width, moment.tzinfo)

    def window_start(self, moment: datetime) -> datetime:
        """Buckets starting after this moment count against the limit at ``moment``.

        The oldest bucket counted may have begun up to one bucket before ``moment -
        period``: counting it whole errs on the side of starting fewer."""
        return self.bucket_of(moment - self.period)

    def __str__(self) -> str:
        letter = next(k for k, v in RATE_PERIODS.items() if v == self.period)
        return f"{self.count}/{letter}"


@dataclass(frozen=True, slots=True)
class TypeLimits:
    """What one job type's module declares about its flow: ``CONCURRENCY_LIMIT``
    (``concurrency``), ``CONCURRENCY_KEY`` (``per_user``), ``RATE_LIMIT`` (``rate``)
    and ``FAIR`` (``fair``)."""

    type: str
    concurrency: int | None = None
    per_user: bool = False
    rate: RateLimit | None = None
    fair: bool = False

    @property
    def limited(self) -> bool:
        """True when claims of this type take the limited (serialised) path."""
        return self.concurrency is not None or self.rate is not None or self.fair

    def describe(self) -> str:
        """One line for people: ``at most 2 running per user, 10/s, fair by user``."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"at most {self.concurrency} running"
                         + (" per user" if self.per_user else ""))
        if self.rate is not None:
            parts.append(f"at most {self.rate.count} starts per {_period_name(self.rate)}")
        if self.fair:
            parts.append("fair between users")
        return ", ".join(parts) or "no limits"


def _period_name(rate: RateLimit) -> str:
    return {"s": "second", "m": "minute", "h": "hour"}[str(rate).rsplit("/", 1)[1]]


def parse_rate_limit(value: Any, what: str = "RATE_LIMIT") -> RateLimit:
    """``"100/m"`` (also ``/s`` and ``/h``) as a ``RateLimit``; ``InvalidJobError`` if not."""
    match = _RATE.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) < 1:
        raise InvalidJobError(
            f"{what} must be 'N/s', 'N/m' or 'N/h' with N a positive integer "
            f"(such as '100/m'), got {value!r}")
    return RateLimit(int(match.group(1)), RATE_PERIODS[match.group(2)])


def limits_of(name: str, module: ModuleType | None) -> TypeLimits:
    """The flow settings a job module declares, checked; ``InvalidJobError`` naming the
    bad one and what is accepted."""
    def get(setting: str) -> Any:
        return getattr(module, setting, None)

    concurrency = get("CONCURRENCY_LIMIT")
    if concurrency is not None and (isinstance(concurrency, bool)
                                    or not isinstance(concurrency, int) or concurrency < 1):
        raise InvalidJobError(
            f"CONCURRENCY_LIMIT of job type {name!r} must be a positive integer (the most "
            f"jobs of this type running at once, everywhere), got {concurrency!r}")
    key = get("CONCURRENCY_KEY")
    if key is not None and key not in CONCURRENCY_KEYS:
        raise InvalidJobError(
            f"CONCURRENCY_KEY of job type {name!r} must be one of "
            f"{', '.join(map(repr, CONCURRENCY_KEYS))} (the limit then applies per user), "
            f"got {key!r}")
    if key is not None and concurrency is None:
        raise InvalidJobError(
            f"CONCURRENCY_KEY of job type {name!r} needs CONCURRENCY_LIMIT (how many per "
            f"{key}), which is not set")
    rate = get("RATE_LIMIT")
    fair = get("FAIR")
    if fair is not None and not isinstance(fair, bool):
        raise InvalidJobError(f"FAIR of job type {name!r} must be True or False, got {fair!r}")
    return TypeLimits(
        type=name, concurrency=concurrency, per_user=key is not None,
        rate=None if rate is None else parse_rate_limit(rate, f"RATE_LIMIT of job type {name!r}"),
        fair=bool(fair))


def parse_queues(value: Any) -> dict[str, int]:
    """``"default=10,reports=2"`` as ``{"default": 10, "reports": 2}``; ``ConfigError``
    naming the bad part and the accepted form. A dict is checked the same way."""
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, str) and value.strip():
        items = []
        for part in value.split(","):
            match = _QUEUE_ITEM.fullmatch(part)
            if match is None:
                raise ConfigError(f"queues: {part.strip()!r} in {value!r} is not NAME=SLOTS; "
                                  f"use {QUEUES_FORM}")
            items.append((match.group(1), match.group(2)))
    else:
        raise ConfigError(f"queues: expected {QUEUES_FORM}, got {value!r}")
    out: dict[str, int] = {}
    for name, slots in items:
        try:
            check_queue(name, "queue name")
        except InvalidJobError as exc:
            raise ConfigError(f"queues: {exc}; use {QUEUES_FORM}") from None
        if isinstance(slots, bool) or not (
                isinstance(slots, int) or (isinstance(slots, str) and slots.isdigit())):
            raise ConfigError(f"queues: the slots of queue {name!r} must be a positive "
                              f"integer, got {slots!r}; use {QUEUES_FORM}")
        count = int(slots)
        if count < 1:
            raise ConfigError(f"queues: the slots of queue {name!r} must be at least 1, got "
                              f"{count}; use {QUEUES_FORM}")
        if name in out:
            raise ConfigError(f"queues: queue {name!r} is named twice in {value!r}")
        out[name] = count
    return out


def format_queues(queues: dict[str, int]) -> str:
    """The ``--queues`` form of ``queues``."""
    return ",".join(f"{k}={v}" for k, v in queues.items())


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue: its pending (due or not) and running rows, and its pause."""

    name: str
    pending: int = 0
    running: int = 0
    paused: bool = False
    paused_until: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"name": self.name, "pending": self.pending, "running": self.running,
                "paused": self.paused,
                "paused_until": None if self.paused_until is None
                else self.paused_until.isoformat()}


def is_paused(paused: bool, paused_until: datetime | None, now: datetime) -> bool:
    """Whether a queue row with these values pauses claims at ``now``."""
    return bool(paused) and (paused_until is None or paused_until > now)
