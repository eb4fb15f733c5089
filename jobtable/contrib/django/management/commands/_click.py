"""Running a ``jobtable`` command from ``manage.py``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click
from django.core.management.base import BaseCommand

from jobtable.contrib.django import export_settings


class ClickCommand(BaseCommand):  # type: ignore[misc]
    """A management command that is the ``jobtable`` command ``name``: its options as
    they are (``manage.py jobtable_worker --help``), settings from ``settings.JOBTABLE``."""

    name = ""

    def command(self) -> click.Command:
        """The click command to run."""
        raise NotImplementedError

    def run_from_argv(self, argv: list[str]) -> None:
        self.run_jobtable(argv[2:])

    def print_help(self, prog_name: str, subcommand: str) -> None:
        self.run_jobtable(["--help"], prog_name=f"{os.path.basename(prog_name)} {subcommand}")

    def handle(self, *args: Any, **options: Any) -> None:
        self.run_jobtable(list(args))

    def run_jobtable(self, args: Sequence[str], prog_name: str | None = None) -> None:
        """Run the command with ``args``; exits with its status."""
        export_settings()
        # Child processes (``--processes``) are started as ``python -m jobtable NAME ...``
        # from sys.argv; they find the project as this process did.
        sys.argv = ["jobtable", self.name, *args]
        path = [p for p in (sys.path[0] or os.getcwd(), os.environ.get("PYTHONPATH")) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(path)
        self.command().main(args=list(args),
                            prog_name=prog_name or f"manage.py jobtable_{self.name}")
