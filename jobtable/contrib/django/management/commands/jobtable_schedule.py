"""``manage.py jobtable_schedule``: ``jobtable schedule`` in a Django project."""

from __future__ import annotations

import click

from jobtable.contrib.django.management.commands._click import ClickCommand


class Command(ClickCommand):
    """Schedule a job (the options of ``jobtable schedule``) with ``settings.JOBTABLE``."""

    help = "Schedule a job of TYPE."
    name = "schedule"

    def command(self) -> click.Command:
        from jobtable.cli.schedule import schedule

        return schedule
