"""One measurement of one system, in its own process; prints one JSON object on stdout.

bench.py starts this script afresh for every (system, measurement, round), so each
figure comes from a cold process with its own memory, and worker processes are real OS
processes started with the system's own worker CLI.

    python bench/measure.py SYSTEM {enqueue_one,enqueue_bulk,drain,latency} [options]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from systems.common import Adapter, latency_params  # noqa: E402

POLL_S = 0.05


def load(system: str) -> Adapter:
    return cast(Adapter, importlib.import_module(f"systems.{system}_sys"))


def worker_env(adapter: Adapter, setting: dict[str, int]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH", "")) if p)
    env.update(adapter.worker_env(setting))
    return env


def start_workers(
    adapter: Adapter, backend: str, setting: dict[str, int], processes: int, log: Path
) -> list[subprocess.Popen[bytes]]:
    env = worker_env(adapter, setting)
    out = log.open("ab")
    procs = [
        subprocess.Popen(
            cmd,
            cwd=BENCH_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for cmd in adapter.worker_commands(backend, setting, processes)
    ]
    out.close()
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM each worker's own process group (the workers we started), then SIGKILL."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def check_alive(procs: list[subprocess.Popen[bytes]], log: Path) -> None:
    for p in procs:
        if p.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker exited early with code {p.returncode}:\n{tail}")


def measure_enqueue(adapter: Adapter, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    adapter.setup(backend)
    adapter.clear(backend)
    if args.kind == "enqueue_one":
        seconds = adapter.enqueue_one(backend, args.n)
    else:
        seconds = adapter.enqueue_bulk(backend, args.n, args.chunk)
    pending = adapter.pending_count(backend)
    if pending != args.n:
        raise RuntimeError(f"enqueued {args.n} but {pending} are pending")
    adapter.clear(backend)
    return {"value": args.n / seconds, "unit": "jobs/s", "seconds": seconds, "n": args.n}


def measure_drain(adapter: Adapter, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Enqueue n due jobs, then start the workers and time until none is pending.

    The clock starts just before the worker processes are spawned, so it includes their
    start-up (imports, connecting); ``startup_s`` reports when the first job finished.
    """
    setting = adapter.SETTINGS[args.setting]
    adapter.setup(backend)
    adapter.clear(backend)
    adapter.prefill(backend, args.n, args.chunk)
    if adapter.pending_count(backend) != args.n:
        raise RuntimeError("drain: jobs were not all enqueued")
    log = Path(tempfile.mkstemp(prefix=f"bench-{adapter.NAME}-", suffix=".log")[1])
    start = time.perf_counter()
    procs = start_workers(adapter, backend, setting, args.processes, log)
    first_done: float | None = None
    pending = args.n
    capped = False
    try:
        while True:
            time.sleep(POLL_S)
            pending = adapter.pending_count(backend)
            now = time.perf_counter()
            if first_done is None and pending < args.n:
                first_done = now - start
            if pending == 0:
                break
            if now - start > args.timeout:
                capped = True
                break
            check_alive(procs, log)
        elapsed = time.perf_counter() - start
    finally:
        stop_workers(procs)
    done = args.n - pending
    log.unlink(missing_ok=True)
    adapter.clear(backend)
    startup = first_done if first_done is not None else elapsed
    return {
        "value": done / elapsed,
        "unit": "jobs/s",
        "seconds": elapsed,
        "startup_s": startup,
        # Rate once the first job is done (leaves worker start-up out).
        "steady_rate": (done / (elapsed - startup)) if elapsed > startup else None,
        "n": args.n,
        "done": done,
        "capped": capped,
        "setting": setting,
        "processes": args.processes,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure_latency(adapter: Adapter, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Idle worker, one job at a time: time from enqueue call to the job body starting."""
    setting = adapter.SETTINGS["default"]
    adapter.setup(backend)
    adapter.clear(backend)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    log = Path(tempfile.mkstemp(prefix=f"bench-{adapter.NAME}-", suffix=".log")[1])
    procs = start_workers(adapter, backend, setting, 1, log)
    producer = adapter.open_producer(backend)
    rng = random.Random(4)
    samples: list[float] = []

    def one(key: int, timeout: float) -> float:
        sent = time.time()
        producer.enqueue(latency_params(port, key), user_id=key)
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(0.01, min(1.0, deadline - time.monotonic())))
            try:
                data = sock.recv(256)
            except TimeoutError:
                check_alive(procs, log)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"latency job {key} did not start in {timeout}s") from None
                continue
            got_key, started = data.decode().split()
            if int(got_key) == key:
                return float(started) - sent

    try:
        # Warm-up: wait until the worker is up and has run a few jobs.
        for key in range(-5, 0):
            one(key, timeout=60.0)
            time.sleep(0.2)
        for key in range(args.samples):
            # Let the worker finish the previous job and go idle again; the jitter keeps
            # samples from locking onto a poll period.
            time.sleep(0.05 + rng.random() * 0.05)
            samples.append(one(key, timeout=30.0))
    finally:
        producer.close()
        stop_workers(procs)
        sock.close()
    log.unlink(missing_ok=True)
    adapter.clear(backend)
    ms = [s * 1000 for s in samples]
    return {
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "mean_ms": statistics.fmean(ms),
        "max_ms": max(ms),
        "samples": len(ms),
        "setting": setting,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("system")
    parser.add_argument("kind", choices=["enqueue_one", "enqueue_bulk", "drain", "latency"])
    parser.add_argument("--backend", default="postgres", choices=["postgres", "sqlite"])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=1000, help="jobs per bulk call")
    parser.add_argument("--setting", default="default")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=120.0, help="cap on a drain (s)")
    parser.add_argument("--setting-json", help="override the named setting (sweeps)")
    args = parser.parse_args()
    adapter = load(args.system)
    if args.setting_json:
        adapter.SETTINGS[args.setting] = json.loads(args.setting_json)
    if args.kind.startswith("enqueue"):
        result = measure_enqueue(adapter, args.backend, args)
    elif args.kind == "drain":
        result = measure_drain(adapter, args.backend, args)
    else:
        result = measure_latency(adapter, args.backend, args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
