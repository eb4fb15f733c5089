"""``manage.py jobtable_worker``: ``jobtable worker`` in a Django project."""

from __future__ import annotations

import click

from jobtable.contrib.django.management.commands._click import ClickCommand


class Command(ClickCommand):
    """Run jobs (the options of ``jobtable worker``) with ``settings.JOBTABLE``."""

    help = "Run jobs until SIGTERM/SIGINT (or, with --burst, until none is due)."
    name = "worker"

    def command(self) -> click.Command:
        from jobtable.cli.worker import worker

        return worker
