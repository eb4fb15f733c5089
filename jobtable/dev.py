"""``jobtable dev``, ``jobtable codegen`` and ``jobtable init``: the development loop.

``jobtable dev`` regenerates the typed bindings, runs a worker as a child process, and
watches the jobs folder and the application package: on a change it regenerates the
bindings (in a fresh interpreter, so the new code is what is read) and restarts the
worker gracefully, so the new code is what runs. Job modules that fail to import are
reported as ``file:line: message`` and the loop keeps going until they are fixed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from jobtable import codegen
from jobtable.cli.options import (
    database_options,
    friendly_errors,
    log_format_option,
    log_level_option,
    setup_logging,
    worker_options,
)
from jobtable.process import ChildProcess
from jobtable.settings import Settings, load_settings

PREFIX = "jobtable dev:"


def shown(path: Path | str) -> str:
    """``path`` relative to the working directory when it is inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _relative_messages(text: str) -> str:
    cwd = str(Path.cwd().resolve()) + os.sep
    return text.replace(cwd, "")


# -- jobtable codegen ------------------------------------------------------------------


@click.command("codegen")
@click.option("--jobs", "jobs", metavar="DIR|PACKAGE",
              help="Jobs folder or dotted package [env JOBTABLE_JOBS; default ./jobs].")
@click.option("--output", "-o", metavar="FILE",
              help="Where to write the bindings [env JOBTABLE_BINDINGS; default "
                   "_generated.py in the jobs folder].")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1, naming what is stale, when the file does not "
                   "match the jobs folder (for CI).")
@friendly_errors
def codegen_command(jobs: str | None, output: str | None, check: bool) -> None:
    """Write the typed bindings of the jobs folder: JobType, each job's Data and result
    types, typed schedule_job / schedule_cron_job (and async twins), and the registry.

    The job modules are imported, not run. Output is deterministic: running it twice
    changes nothing.
    """
    settings = load_settings(jobs=jobs)
    target = str(Path(output).resolve()) if output else None
    bindings = codegen.generate(settings, target)
    name = shown(bindings.path)
    if bindings.errors:
        for error in bindings.errors:
            click.echo(f"error: {_relative_messages(error)}", err=True)
        click.echo(f"{name} not written: fix the job modules above", err=True)
        sys.exit(1)
    count = f"{len(bindings.job_types)} job type{'s' if len(bindings.job_types) != 1 else ''}"
    if check:
        problems = codegen.staleness(bindings, name)
        if problems:
            for problem in problems:
                click.echo(f"stale: {problem}", err=True)
            click.echo(f"run '{codegen.COMMAND}' to update it", err=True)
            sys.exit(1)
        click.echo(f"{name} is up to date ({count})")
        return
    if codegen.write(bindings):
        click.echo(f"wrote {name} ({count})")
    else:
        click.echo(f"{name} is up to date ({count})")


# -- jobtable init ---------------------------------------------------------------------


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@friendly_errors
def init_command(directory: str) -> None:
    """Create a runnable project in DIRECTORY: a jobs folder with two example jobs, an app
    bootstrap factory, a pyproject with [tool.jobtable], tests, and the typed bindings.
    In an existing folder (`jobtable init .`) only missing files are added; existing
    ones are kept and listed as skipped.

    Then: cd DIRECTORY && jobtable dev
    """
    from jobtable.scaffold import create_project

    project = create_project(directory)
    for path in project.files:
        click.echo(f"created {shown(path)}")
    for path in project.skipped:
        click.echo(f"skipped {shown(path)} (exists; left as it was)")
    if (table := project.missing_settings()) is not None:
        click.echo(f"\nadd to pyproject.toml:\n{table}")
    where = "" if project.root == Path.cwd().resolve() else f"cd {shown(project.root)} && "
    click.echo(f"\nnext: {where}jobtable dev   (see its README.md)")


# -- jobtable dev ----------------------------------------------------------------------


@dataclass
class CodegenOutcome:
    """What one run of ``jobtable codegen`` in a child process said."""

    ok: bool
    wrote: bool
    errors: list[str] = field(default_factory=list)
    summary: str = ""


def describe_changes(changes: Iterable[tuple[Any, str]], known: set[str]) -> str:
    """``jobs/a.py added, jobs/b.py modified`` (at most three, then a count).

    ``known`` holds the files seen so far and is kept up to date: an editor that saves
    by replacing the file shows up as "added", which is a modification of a known file.
    """
    words = {1: "added", 2: "modified", 3: "deleted"}
    seen: dict[str, str] = {}
    for change, path in sorted(changes, key=lambda c: c[1]):
        what = words.get(int(change), "changed")
        exists = Path(path).exists()
        if (what == "added" and path in known) or (what == "deleted" and exists):
            what = "modified"
        if exists:
            known.add(path)
        else:
            known.discard(path)
        seen[shown(path)] = what
    parts = [f"{path} {what}" for path, what in seen.items()]
    if len(parts) > 3:
        parts = [*parts[:3], f"and {len(parts) - 3} more"]
    return ", ".join(parts)


class DevLoop:
    """Codegen, a worker child process, a watcher; restarts the worker on changes."""

    def __init__(self, settings: Settings, worker_args: list[str], codegen_args: list[str],
                 extra_paths: list[Path], *, debounce_ms: int = 200) -> None:
        self.settings = settings
        self.location = codegen.locate(settings)
        self.worker_args = worker_args
        self.codegen_args = codegen_args
        self.debounce_ms = debounce_ms
        self.paths = self._watch_paths(extra_paths)
        self.stop_event = threading.Event()
        self.signals = 0
        self.worker: ChildProcess | None = None
        self.broken: list[str] = []
        self.known = {str(f) for p in self.paths
                      for f in ([p] if p.is_file() else p.rglob("*.py"))}
        self.reported_exit = False

    # -- output ---------------------------------------------------------------------

    @staticmethod
    def say(message: str) -> None:
        """One line on stderr, where the worker logs too."""
        click.echo(f"{PREFIX} {message}", err=True)

    # -- what to watch ------------------------------------------------------------------

    def _watch_paths(self, extra: list[Path]) -> list[Path]:
        paths = [self.location.folder]
        app = self._app_path()
        if app is not None:
            paths.append(app)
        for path in extra:
            if not path.exists():
                raise click.BadParameter(f"{path} does not exist", param_hint="--watch")
            paths.append(path.resolve())
        unique: list[Path] = []
        for path in paths:
            if not any(path == p or p in path.parents for p in unique):
                unique = [p for p in unique if path not in p.parents]
                unique.append(path)
        return unique

    def _app_path(self) -> Path | None:
        """The folder (or file) of the application package named by ``app``, when it is
        part of the project and not an installed library."""
        if not self.settings.app:
            return None
        top = self.settings.app.partition(":")[0].split(".")[0]
        for base in (Path.cwd(), self.location.folder.parent):
            if (base / top).is_dir():
                return (base / top).resolve()
            if (base / f"{top}.py").is_file():
                return (base / f"{top}.py").resolve()
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(top)
            origin = Path(spec.origin) if spec is not None and spec.origin else None
            installed = {"site-packages", "dist-packages"}
            if origin is not None and not installed & set(origin.parts):
                return origin.parent if origin.name == "__init__.py" else origin
        return None

    # -- codegen --------------------------------------------------------------------

    def run_codegen(self) -> CodegenOutcome:
        """Regenerate the bindings in a fresh interpreter (new code, no stale modules)."""
        try:
            done = subprocess.run(
                [sys.executable, "-m", "jobtable", "codegen", *self.codegen_args],
                capture_output=True, text=True, timeout=120, check=False,
                start_new_session=True)  # a terminal's Ctrl-C is ours to handle
        except subprocess.TimeoutExpired:
            return CodegenOutcome(ok=False, wrote=False,
                                  errors=["codegen did not finish within 120 s"])
        out = done.stdout.strip()
        if done.returncode == 0:
            return CodegenOutcome(ok=True, wrote=out.startswith("wrote"), summary=out)
        errors = [line.removeprefix("error: ") for line in done.stderr.splitlines()
                  if line.startswith("error: ")]
        if not errors:
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
            errors = [f"codegen failed: {tail[0]}"]
        return CodegenOutcome(ok=False, wrote=False, errors=errors)

    def report_codegen(self, outcome: CodegenOutcome) -> str:
        """Report errors on their own lines; return the words for the change line."""
        if outcome.ok:
            words = "bindings regenerated" if outcome.wrote else "bindings unchanged"
            if self.broken:
                words = "job modules load again; " + words
            self.broken = []
            return words
        for error in outcome.errors:
            self.say(f"error: {error}")
        self.broken = outcome.errors
        return "bindings not updated until the error is fixed"

    # -- the worker -----------------------------------------------------------------

    def start_worker(self) -> None:
        """Start ``jobtable worker`` as a child process."""
        # The worker reads the registry from the bindings this loop writes.
        env = dict(os.environ, JOBTABLE_BINDINGS=str(self.location.bindings))
        # Own session: a terminal's Ctrl-C reaches this loop only, which then stops the
        # worker once, gracefully (a second signal would mean "interrupt jobs now").
        self.worker = ChildProcess.start([sys.executable, "-m", "jobtable", "worker",
                                          *self.worker_args], env=env)
        self.reported_exit = False

    def ask_worker_to_stop(self) -> None:
        """SIGTERM the worker once (a second signal would interrupt its running jobs)."""
        if self.worker is not None:
            self.worker.ask_to_stop()

    def stop_worker(self) -> None:
        """Stop the worker and wait: running jobs get the grace period."""
        proc = self.worker
        if proc is None:
            return
        proc.stop(self.settings.grace_period.total_seconds() + 15, on_force=lambda: self.say(
            f"worker (pid {proc.pid}) did not stop in time; killing it"))
        self.worker = None

    def check_worker(self) -> None:
        """Say once when the worker exited on its own (a crash at start-up, say)."""
        proc = self.worker
        if proc is not None and proc.poll() is not None and not self.reported_exit:
            self.reported_exit = True
            self.say(f"worker exited with code {proc.returncode}; save a file to restart it")

    # -- the loop ---------------------------------------------------------------------

    def _on_signal(self, _signum: int, _frame: object) -> None:
        self.signals += 1
        self.stop_event.set()
        proc = self.worker
        if self.signals > 1 and proc is not None:
            proc.signal(signal.SIGINT)  # the worker's "interrupt running jobs"

    def on_changes(self, changes: set[tuple[Any, str]]) -> None:
        """Regenerate and restart, saying in one line what changed."""
        what = describe_changes(changes, self.known)
        self.ask_worker_to_stop()  # it drains while the bindings are regenerated
        outcome = self.run_codegen()
        if self.stop_event.is_set():
            return
        words = self.report_codegen(outcome)
        self.say(f"{what}; {words}; restarting the worker")
        self.stop_worker()
        if not self.stop_event.is_set():
            self.start_worker()

    def run(self) -> int:
        """Run until SIGINT/SIGTERM; return the exit code (0 after a clean stop)."""
        import logging

        import watchfiles

        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we say what changed
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            words = self.report_codegen(self.run_codegen())
            self.say(f"{words}: {shown(self.location.bindings)}; watching "
                     + ", ".join(shown(p) + ("/" if p.is_dir() else "") for p in self.paths)
                     + "; Ctrl-C stops")
            if not self.stop_event.is_set():
                self.start_worker()
            ignore = [str(self.location.bindings)]
            watch_filter = watchfiles.PythonFilter(ignore_paths=ignore)
            for changes in watchfiles.watch(
                    *self.paths, watch_filter=watch_filter, debounce=self.debounce_ms,
                    step=50, rust_timeout=500, yield_on_timeout=True,
                    stop_event=self.stop_event, raise_interrupt=False):
                if self.stop_event.is_set():
                    break
                if changes:
                    self.on_changes(changes)
                self.check_worker()
        finally:
            self.stop_worker()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.say("stopped")
        return 0


def _option_args(**options: str | int | None) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


@click.command("dev")
@database_options
@worker_options
@click.option("--grace-period", metavar="DURATION",
              help="On a restart, how long running jobs may finish [default 30s].")
@click.option("--output", "-o", metavar="FILE",
              help="Where to write the bindings [env JOBTABLE_BINDINGS; default "
                   "_generated.py in the jobs folder].")
@click.option("--watch", "extra", multiple=True, type=click.Path(path_type=Path),
              metavar="PATH", help="Also restart on changes here (repeatable).")
@log_level_option
@log_format_option
@friendly_errors
def dev_command(database: str | None, jobs: str | None, app: str | None,
                concurrency: int | None, processes: str | None, grace_period: str | None,
                output: str | None, extra: tuple[Path, ...], log_level: str | None,
                log_format: str | None) -> None:
    """Develop jobs: regenerate the typed bindings, run a worker, and on every change to
    the jobs folder or the app package regenerate and restart the worker (gracefully).

    A job module that fails to import is reported (file:line: message) and the loop
    keeps running; saving the fix recovers. Ctrl-C stops everything.
    """
    from jobtable._extras import require_extra

    require_extra("dev", "jobtable dev")
    setup_logging(log_level, log_format)
    output = str(Path(output).resolve()) if output else None
    settings = load_settings(database=database, jobs=jobs, app=app, concurrency=concurrency,
                             processes=processes, grace_period=grace_period,
                             bindings=output, log_level=log_level,
                             log_format=log_format)
    worker_args = _option_args(database=database, jobs=jobs, app=app,
                               concurrency=concurrency, processes=processes,
                               grace_period=grace_period, log_level=log_level,
                               log_format=log_format)
    codegen_args = _option_args(jobs=jobs, output=output)
    loop = DevLoop(settings, worker_args, codegen_args, [p.resolve() for p in extra])
    sys.exit(loop.run())
