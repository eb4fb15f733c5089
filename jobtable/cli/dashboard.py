"""``jobtable dashboard``: serve the web dashboard."""

from __future__ import annotations

from typing import Any

import click

from jobtable.cli.options import (
    checked_table,
    database_options,
    friendly_errors,
    log_format_option,
    setup_logging,
)
from jobtable.settings import load_settings


@click.command("dashboard")
@database_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs a token or basic auth.")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True,
              help="Port to listen on.")
@click.option("--token", envvar="JOBTABLE_DASHBOARD_TOKEN", metavar="TOKEN",
              help="Require this token (Bearer header, or ?token= once in the browser) "
                   "[env JOBTABLE_DASHBOARD_TOKEN].")
@click.option("--user", envvar="JOBTABLE_DASHBOARD_USER", metavar="NAME",
              help="Basic-auth user name [env JOBTABLE_DASHBOARD_USER].")
@click.option("--password", envvar="JOBTABLE_DASHBOARD_PASSWORD", metavar="PASSWORD",
              help="Basic-auth password [env JOBTABLE_DASHBOARD_PASSWORD].")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="HOST",
              envvar="JOBTABLE_DASHBOARD_ALLOWED_HOSTS",
              help="A Host name the dashboard answers to besides loopback (repeatable; "
                   "'ops.example.com', '*.example.com', 'name:port') "
                   "[env JOBTABLE_DASHBOARD_ALLOWED_HOSTS, comma-separated].")
@click.option("--origin", envvar="JOBTABLE_DASHBOARD_ORIGIN", metavar="URL",
              help="The public origin actions must come from, behind a proxy "
                   "('https://ops.example.com') [env JOBTABLE_DASHBOARD_ORIGIN].")
@click.option("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
@log_format_option
@friendly_errors
def dashboard_command(database: str | None, jobs: str | None, host: str, port: int,
                      token: str | None, user: str | None, password: str | None,
                      allowed_hosts: tuple[str, ...], origin: str | None,
                      log_level: str | None, log_format: str | None) -> None:
    """Serve the web dashboard: overview, jobs, job details, cron schedules, actions and
    /metrics for Prometheus."""
    from jobtable._extras import require_extra

    require_extra("dashboard", "the dashboard")
    import uvicorn

    from jobtable.dashboard import create_app
    from jobtable.dashboard.security import is_loopback

    if (user is None) != (password is None):
        raise click.UsageError("basic auth needs both --user and --password")
    if token == "":
        raise click.UsageError("--token must not be empty")
    if not is_loopback(host) and token is None and user is None:
        raise click.UsageError(
            f"--host {host} would open the dashboard to other machines without credentials; "
            "set a token (--token or JOBTABLE_DASHBOARD_TOKEN) or basic auth (--user and "
            "--password, or JOBTABLE_DASHBOARD_USER and JOBTABLE_DASHBOARD_PASSWORD), or keep "
            "the default --host 127.0.0.1")
    chosen = setup_logging(log_level or "WARNING", log_format)
    settings = load_settings(database=database, jobs=jobs)
    with checked_table(settings):  # fail now, clearly, if the database is unreachable
        pass
    app = create_app(settings, token=token, username=user, password=password,
                     allowed_hosts=allowed_hosts or None, origin=origin)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    click.echo(f"jobtable dashboard for {_redact(settings.database)} on {url}"
               + ("?token=…" if token else ""), err=True)
    # With JSON logs, uvicorn's own records go through the same JSON handler.
    config: dict[str, Any] | None = None if chosen == "json" else uvicorn.config.LOGGING_CONFIG
    uvicorn.run(app, host=host, port=port, log_level=(log_level or "warning").lower(),
                access_log=False, server_header=False, log_config=config)


def _redact(url: str) -> str:
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)

