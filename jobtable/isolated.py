"""Deprecated location: isolated runs now live in ``jobtable.worker.isolated``."""

from jobtable.worker.isolated import main, run_isolated

__all__ = ["main", "run_isolated"]

if __name__ == "__main__":
    main()
