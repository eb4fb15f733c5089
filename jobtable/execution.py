"""Deprecated location: running one job now lives in ``jobtable.worker.execution``."""

from jobtable.worker.execution import (
    RunResult,
    bootstrap_app,
    describe_failure,
    job_logger,
    job_timeout,
    load_app_factory,
    run_job,
)

__all__ = ["RunResult", "bootstrap_app", "describe_failure", "job_logger", "job_timeout",
           "load_app_factory", "run_job"]
