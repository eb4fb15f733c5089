"""The Django app of ``jobtable.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig


class JobTableConfig(AppConfig):  # type: ignore[misc]
    """``INSTALLED_APPS += ["jobtable.contrib.django"]``: the management commands
    ``jobtable_worker`` and ``jobtable_schedule``, settings from ``settings.JOBTABLE``."""

    name = "jobtable.contrib.django"
    label = "jobtable"
    verbose_name = "jobtable"
