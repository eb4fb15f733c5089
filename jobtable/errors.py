"""Errors raised by jobtable. Every error a user can cause is a ``JobTableError``."""

from __future__ import annotations


class JobTableError(Exception):
    """Base class of every error jobtable raises on purpose."""


class InvalidJobError(JobTableError, ValueError):
    """A job configuration was rejected before anything was written."""


class UnknownJobTypeError(InvalidJobError):
    """The job type names no module in the jobs folder."""

    def __init__(self, job_type: str, known: list[str]) -> None:
        self.job_type = job_type
        self.known = sorted(known)
        listed = ", ".join(self.known) if self.known else "(none: the jobs folder is empty)"
        super().__init__(f"unknown job type {job_type!r}; known job types: {listed}")


class InvalidDataError(InvalidJobError, TypeError):
    """Job data (or a job result) is not JSON-serialisable, or does not match the job's Data."""


class InvalidCronError(InvalidJobError):
    """A cron expression could not be parsed."""


class DatabaseUnavailableError(JobTableError, ConnectionError):
    """The database could not be reached."""


class MigrationError(JobTableError):
    """The database schema is missing or newer than this version of jobtable."""


class ConfigError(JobTableError, ValueError):
    """A setting has a value jobtable cannot use."""


class JobNotFoundError(JobTableError, LookupError):
    """No row has that id."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id}")


class ActionRefusedError(JobTableError):
    """The action does not apply to the job as it stands (e.g. retrying a pending job)."""


class JobFailed(JobTableError):
    """What failure hooks receive when a job failed without raising an exception of its
    own: it timed out, its worker shut down, it was cancelled while running, it crashed
    its process, or it returned a result that cannot be stored. ``kind`` names which
    (``TimeoutError``, ``WorkerShutdown``, ``JobCancelled``, ``WorkerCrash``,
    ``InvalidDataError``)."""

    def __init__(self, message: str, kind: str) -> None:
        self.kind = kind
        super().__init__(message)


class UnusableConnectionError(JobTableError, ValueError):
    """A ``connection=`` given to a scheduling call cannot be used: an unsupported type,
    closed, in a failed transaction, or connected to another database than the
    ``JobTable``'s. Nothing was written."""
