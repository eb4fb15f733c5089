"""jobtable beside its Python peers, on one PostgreSQL (and SQLite), in one run.

Runs every measurement of every system in a fresh subprocess (``bench/measure.py``),
alternating systems (A B C, A B C, ...) for ``--rounds`` rounds, then prints one table
of medians with jobtable's ratio to the best peer and writes it as JSON.

    bash bench/run.sh            # full run (~15 min on 2 cores)
    bash bench/run.sh --quick    # smaller counts, one round (~3 min)
    bash bench/run.sh --sweep    # find each system's best worker setting
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PG_BASE = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")

PG_SYSTEMS = ["jobtable", "procrastinate", "pgqueuer"]
SQLITE_SYSTEMS = ["jobtable", "huey"]
SKIPPED = {
    "oban-py": "needs Python >= 3.12; this machine has Python "
    f"{platform.python_version()}, so it is not measured",
}


@dataclass
class Case:
    """One figure to measure for several systems."""

    metric: str
    unit: str
    higher_is_better: bool
    systems: list[str]
    # argv for measure.py after SYSTEM; None for pgbench
    measure_args: list[str] | None
    # for latency: which key of measure.py's JSON is the figure
    key: str = "value"
    # the same subprocess result feeds several metrics (latency p50 and p99)
    shares_with: str | None = None
    setting: str = ""
    processes: int = 1


@dataclass
class Sample:
    values: list[float] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def build_cases(args: argparse.Namespace) -> list[Case]:
    pg = ["--backend", "postgres"]
    cases = [
        Case(
            "enqueue one-by-one (pg)",
            "jobs/s",
            True,
            PG_SYSTEMS,
            ["enqueue_one", *pg, "--n", str(args.enqueue_n)],
        ),
        Case(
            "enqueue bulk (pg)",
            "jobs/s",
            True,
            PG_SYSTEMS,
            ["enqueue_bulk", *pg, "--n", str(args.bulk_n), "--chunk", str(args.chunk)],
        ),
    ]
    for backend, systems in (("postgres", PG_SYSTEMS), ("sqlite", SQLITE_SYSTEMS)):
        tag = "pg" if backend == "postgres" else "sqlite"
        for processes in (1, 2):
            for setting in ("default", "best"):
                cases.append(
                    Case(
                        f"drain {args.drain_n} ({tag}, {processes} proc, {setting})",
                        "jobs/s",
                        True,
                        systems,
                        [
                            "drain",
                            "--backend",
                            backend,
                            "--n",
                            str(args.drain_n),
                            "--setting",
                            setting,
                            "--processes",
                            str(processes),
                            "--timeout",
                            str(args.drain_timeout),
                            "--chunk",
                            str(args.chunk),
                        ],
                        setting=setting,
                        processes=processes,
                    )
                )
    latency = ["latency", *pg, "--samples", str(args.samples)]
    cases.append(
        Case("pickup latency p50 (pg, idle worker)", "ms", False, PG_SYSTEMS, latency, key="p50_ms")
    )
    cases.append(
        Case(
            "pickup latency p99 (pg, idle worker)",
            "ms",
            False,
            PG_SYSTEMS,
            latency,
            key="p99_ms",
            shares_with="pickup latency p50 (pg, idle worker)",
        )
    )
    for clients in (1, 2):
        cases.append(
            Case(
                f"pgbench insert+claim+update, {clients} client(s)",
                "tx/s",
                True,
                ["pgbench"],
                None,
                processes=clients,
            )
        )
    if args.only:
        cases = [c for c in cases if any(o in c.metric for o in args.only)]
    if args.systems:
        for c in cases:
            c.systems = [s for s in c.systems if s in args.systems or s == "pgbench"]
    return [c for c in cases if c.systems]


# --- running --------------------------------------------------------------------------


def run_measure(system: str, margs: list[str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(BENCH_DIR / "measure.py"), system, *margs]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise RuntimeError(" | ".join(tail))
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def find_pgbench() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    raise RuntimeError("pgbench not found (apt-get install postgresql-contrib)")


def run_pgbench(clients: int, seconds: int) -> dict[str, Any]:
    import psycopg

    url = f"{PG_BASE}/{os.environ.get('BENCH_DB_PREFIX', 'bench_')}pgbench"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pgbench_jobs (id bigserial PRIMARY KEY,"
            " data jsonb NOT NULL, due timestamptz NOT NULL DEFAULT now(),"
            " started timestamptz, finished timestamptz, success boolean)"
        )
        conn.execute(
            "CREATE INDEX IF NOT EXISTS pgbench_jobs_unfinished ON pgbench_jobs (due, id)"
            " WHERE finished IS NULL"
        )
        conn.execute("TRUNCATE pgbench_jobs")
    cmd = [
        find_pgbench(),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(clients),
        "-T",
        str(seconds),
        "-f",
        str(BENCH_DIR / "pgbench_claim.sql"),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:])
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", proc.stdout)
    if not match:
        raise RuntimeError(f"no tps in pgbench output: {proc.stdout[-500:]}")
    return {"value": float(match.group(1)), "unit": "tx/s", "clients": clients}


def ensure_databases() -> None:
    sys.path.insert(0, str(BENCH_DIR))
    from systems.common import ensure_pg_database

    for name in ("jobtable", "procrastinate", "pgqueuer", "pgbench"):
        ensure_pg_database(f"{os.environ.get('BENCH_DB_PREFIX', 'bench_')}{name}")


def same_as_default(system: str) -> bool:
    """True if the system's best setting is its default (then it is measured once)."""
    sys.path.insert(0, str(BENCH_DIR))
    import importlib

    mod = importlib.import_module(f"systems.{system}_sys")
    settings: dict[str, dict[str, int]] = mod.SETTINGS
    return settings["best"] == settings["default"]


def run_all(args: argparse.Namespace) -> tuple[list[Case], dict[tuple[str, str], Sample]]:
    cases = build_cases(args)
    samples: dict[tuple[str, str], Sample] = {}
    started = time.monotonic()
    for rnd in range(1, args.rounds + 1):
        for case in cases:
            for system in case.systems:
                sample = samples.setdefault((case.metric, system), Sample())
                if case.shares_with:
                    source = samples.get((case.shares_with, system))
                    if source and len(source.raw) >= rnd:
                        raw = source.raw[rnd - 1]
                        sample.raw.append(raw)
                        if case.key in raw:
                            sample.values.append(float(raw[case.key]))
                    continue
                if case.setting == "best" and same_as_default(system) and case.measure_args:
                    twin = case.metric.replace("best)", "default)")
                    source = samples.get((twin, system))
                    if source and len(source.raw) >= rnd:
                        raw = dict(source.raw[rnd - 1], same_as_default=True)
                        sample.raw.append(raw)
                        if "value" in raw:
                            sample.values.append(float(raw["value"]))
                    continue
                t0 = time.monotonic()
                try:
                    if case.measure_args is None:
                        raw = run_pgbench(case.processes, args.pgbench_seconds)
                    else:
                        timeout = args.drain_timeout + 300
                        raw = run_measure(system, case.measure_args, timeout)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                    raw = {"error": str(exc)[-800:]}
                    sample.errors.append(raw["error"])
                sample.raw.append(raw)
                if case.key in raw:
                    sample.values.append(float(raw[case.key]))
                shown = f"{raw[case.key]:.1f} {case.unit}" if case.key in raw else "ERROR"
                if raw.get("capped"):
                    shown += f" (capped at {args.drain_timeout:.0f}s: {raw['done']} done)"
                print(
                    f"[round {rnd}/{args.rounds} {time.monotonic() - started:6.0f}s] "
                    f"{case.metric:<42} {system:<14} {shown}  ({time.monotonic() - t0:.1f}s)",
                    flush=True,
                )
                if "error" in raw:
                    print(f"    error: {raw['error'][-400:]}", flush=True)
    return cases, samples


# --- reporting ------------------------------------------------------------------------


def summarise(cases: list[Case], samples: dict[tuple[str, str], Sample]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in cases:
        medians: dict[str, float] = {}
        for system in case.systems:
            s = samples.get((case.metric, system))
            if s and s.values:
                medians[system] = statistics.median(s.values)
        peers = {k: v for k, v in medians.items() if k not in ("jobtable", "pgbench")}
        best_peer: str | None = None
        if peers:
            pick = max if case.higher_is_better else min
            best_peer = pick(peers, key=lambda k: peers[k])
        for system in case.systems:
            s = samples.get((case.metric, system), Sample())
            row: dict[str, Any] = {
                "metric": case.metric,
                "unit": case.unit,
                "better": "higher" if case.higher_is_better else "lower",
                "system": system,
                "median": medians.get(system),
                "rounds": s.values,
                "errors": s.errors,
                "capped": any(r.get("capped") for r in s.raw),
                "same_as_default": any(r.get("same_as_default") for r in s.raw),
                "settings": next((r["setting"] for r in s.raw if "setting" in r), None),
                "best_peer": best_peer,
                "ratio_to_best_peer": None,
            }
            if system == "jobtable" and best_peer and system in medians and peers[best_peer]:
                row["ratio_to_best_peer"] = medians[system] / peers[best_peer]
            steady = [r["steady_rate"] for r in s.raw if r.get("steady_rate")]
            if steady:
                row["steady_rate_median"] = statistics.median(steady)
                row["startup_s_median"] = statistics.median(
                    r["startup_s"] for r in s.raw if "startup_s" in r
                )
            rows.append(row)
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("metric", "system", "median", "unit", "rounds", "jobtable / best peer")
    lines: list[tuple[str, ...]] = []
    for r in rows:
        note = ""
        if r["capped"]:
            note += " (capped)"
        if r["same_as_default"]:
            note += " (=default)"
        if r["errors"] and not r["rounds"]:
            note += " ERROR"
        ratio = ""
        if r["ratio_to_best_peer"] is not None:
            ratio = f"{r['ratio_to_best_peer']:.2f}x vs {r['best_peer']} ({r['better']} is better)"
        lines.append(
            (
                r["metric"],
                r["system"],
                fmt(r["median"]) + note,
                r["unit"],
                " ".join(fmt(v) for v in r["rounds"]),
                ratio,
            )
        )
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(len(header))]
    sep = "-+-".join("-" * w for w in widths)
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(sep)
    last = ""
    for line in lines:
        if last and line[0] != last:
            print(sep)
        last = line[0]
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


def environment() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in ("jobtable", "procrastinate", "pgqueuer", "huey", "psycopg", "asyncpg"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    server: str | None = None
    try:
        import psycopg

        with psycopg.connect(f"{PG_BASE}/postgres") as conn:
            row = conn.execute("SHOW server_version").fetchone()
            server = row[0] if row else None
    except Exception as exc:  # the report still gets written
        server = f"unknown ({exc})"
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
        ).stdout.strip()
        or None
    )
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "postgres": server,
        "versions": versions,
        "repo_commit": commit,
        "skipped": SKIPPED,
    }


# --- sweep ----------------------------------------------------------------------------

SWEEP: dict[str, tuple[str, list[dict[str, int]]]] = {
    "procrastinate": ("postgres", [{"concurrency": c} for c in (1, 2, 4, 8, 16, 32)]),
    "pgqueuer": ("postgres", [{"batch_size": b} for b in (10, 25, 50, 100, 200)]),
    "jobtable": ("postgres", [{"concurrency": c} for c in (1, 5, 10, 20, 50, 100, 200)]),
    "huey": ("sqlite", [{"workers": w} for w in (1, 2, 4, 8)]),
}


def sweep(args: argparse.Namespace) -> None:
    """Drain args.drain_n jobs with each candidate setting, 1 and 2 processes."""
    extra = [("jobtable", ("sqlite", SWEEP["jobtable"][1]))]
    for system, (backend, candidates) in [*SWEEP.items(), *extra]:
        if args.systems and system not in args.systems:
            continue
        for setting in candidates:
            rates = []
            for processes in (1, 2):
                margs = [
                    "drain",
                    "--backend",
                    backend,
                    "--n",
                    str(args.drain_n),
                    "--setting",
                    "best",
                    "--setting-json",
                    json.dumps(setting),
                    "--processes",
                    str(processes),
                    "--timeout",
                    str(args.drain_timeout),
                ]
                try:
                    raw = run_measure(system, margs, args.drain_timeout + 300)
                    rates.append(f"{processes}p {raw['value']:8.0f}/s")
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    rates.append(f"{processes}p ERROR {exc}")
            print(
                f"{system:<14} {backend:<9} {json.dumps(setting):<22} {'  '.join(rates)}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts and one round, for a smoke run"
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 3; quick 1)")
    parser.add_argument("--enqueue-n", type=int, default=2000, help="jobs for one-by-one enqueue")
    parser.add_argument("--bulk-n", type=int, default=20_000, help="jobs for bulk enqueue")
    parser.add_argument("--chunk", type=int, default=1000, help="jobs per bulk call")
    parser.add_argument("--drain-n", type=int, default=20_000, help="due jobs per drain")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=15.0,
        help="cap on one drain in seconds; a capped drain reports done/elapsed",
    )
    parser.add_argument("--samples", type=int, default=200, help="latency samples")
    parser.add_argument("--pgbench-seconds", type=int, default=5)
    parser.add_argument("--systems", nargs="*", help="only these systems")
    parser.add_argument("--only", nargs="*", help="only metrics whose name contains one of these")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="measure candidate worker settings instead (to pick 'best')",
    )
    parser.add_argument(
        "--history", type=int, default=0,
        help="finished rows in jobtable's table before every figure (peers: none)")
    parser.add_argument(
        "--pending", type=int, default=0,
        help="a backlog of rows not yet due in jobtable's table before every figure")
    parser.add_argument(
        "--db-prefix", default=None,
        help="prefix of the bench databases' names and SQLite files (default bench_; "
             "or BENCH_DB_PREFIX), so that runs sharing one server do not collide")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args()
    if args.db_prefix is not None:
        os.environ["BENCH_DB_PREFIX"] = args.db_prefix
    # Read by the jobtable adapter's clear() in every measurement process.
    os.environ["BENCH_HISTORY"] = str(args.history)
    os.environ["BENCH_PENDING"] = str(args.pending)
    if args.quick:
        args.enqueue_n, args.bulk_n, args.drain_n = 500, 5000, 5000
        args.samples, args.pgbench_seconds = 50, 3
        args.rounds = args.rounds or 1
    args.rounds = args.rounds or 3

    ensure_databases()
    for name, why in SKIPPED.items():
        print(f"skipped {name}: {why}")
    if args.sweep:
        sweep(args)
        return
    began = datetime.now(UTC)
    cases, samples = run_all(args)
    rows = summarise(cases, samples)
    print()
    print_table(rows)
    report = {
        "started": began.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": environment(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
