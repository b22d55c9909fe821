"""The benchmarks of the spine, run with ``python -m bench`` from the repository root.

a) collection cycles of the collector against a simulated hub (10,000 users, 2,000 running
   servers) served by ``bench.fakehub`` in its own process on loopback: the first cycle
   (full user listing, every session opened) and steady-state cycles (no listing; 40
   servers stopped and 40 started before each);
b) the full KPI report for one year over a simulated ledger (10,000 users x 365 days).

Each on SQLite and on a throwaway PostgreSQL (tests/conftest.py's PostgresServer). Every
measurement runs in a fresh process. Results: a markdown table on stdout and JSON under
bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import PostgresServer, free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TZ = "America/Chicago"
YEAR_END = dt.date(2025, 12, 31)
CHILD_TIMEOUT = 1800  # seconds


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kib / 1024**2, 1), "python": platform.python_version(), "os": platform.platform()}


def child(*args: str, env: dict | None = None) -> dict:
    """Run ``python -m <args>`` from the repository root; its last stdout line is JSON."""
    out = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@contextmanager
def fake_hub(users: int, running: int) -> Iterator[tuple[str, str]]:
    port, token = free_port(), secrets.token_hex(16)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fakehub", "--port", str(port), "--users", str(users), "--running", str(running), "--token", token],
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, what="the simulated hub")
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def backends(with_postgres: bool) -> Iterator[dict]:
    """Ledger URL factories: a new empty ledger per call, on SQLite and (if available) PostgreSQL."""
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="af-metrics-bench-"))
        stack.callback(shutil.rmtree, tmp, True)
        counter = iter(range(1_000_000))
        found = {"SQLite": lambda: f"sqlite:///{tmp / f'ledger{next(counter)}.db'}"}
        if with_postgres:
            # its own temporary directory, as in the tests: the server runs as 'postgres'
            pg_base = Path(tempfile.mkdtemp(prefix="af-metrics-bench-pg-"))
            stack.callback(shutil.rmtree, pg_base, True)
            try:
                pg = PostgresServer(pg_base)
            except pytest.skip.Exception as exc:
                print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
            else:
                stack.callback(pg.stop)
                found["PostgreSQL"] = pg.new_database
        yield found


def collector_bench(new_ledger: dict, users: int, running: int) -> list[dict]:
    rows = []
    with fake_hub(users, running) as (url, token):
        for backend, make in new_ledger.items():
            ledger = make()
            common = ("bench.cycle", "--hub", url, "--token", token, "--ledger", ledger)
            first = child(*common, "--sweep")
            steady = child(*common, "--steady", "3")
            rows.append({"bench": f"collector cycle, first: {users:,} users listed, {running:,} sessions opened", "backend": backend, **first})
            rows.append({"bench": f"collector cycle, steady: {running:,} running, 40 stopped + 40 started (median of 3)", "backend": backend, **steady})
    return rows


def report_bench(new_ledger: dict, users: int, days: int) -> list[dict]:
    rows = []
    for backend, make in new_ledger.items():
        ledger = make()
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "af_metrics", "simulate", "--users", str(users), "--days", str(days),
             "--end", YEAR_END.isoformat(), "--seed", "1", "--ledger", ledger],
            cwd=REPO, env={**os.environ, "AF_METRICS_TIMEZONE": TZ}, stdout=subprocess.DEVNULL, timeout=CHILD_TIMEOUT, check=True,
        )
        rows.append({"bench": f"simulate {users:,} users x {days} days", "backend": backend, "wall_s": time.perf_counter() - t0})
        report = child("bench.report", "--ledger", ledger, "--tz", TZ, "--period", str(YEAR_END.year))
        size = report["rows"]
        rows.append({
            "bench": f"KPI report {YEAR_END.year} ({report['kpis']} KPIs; {size['sessions']:,} sessions, "
                     f"{size['session_hours']:,} session-hours), first / best of 3",
            "backend": backend, "wall_s": report["first_s"], "best_s": report["best_s"], "rss_peak_mib": report["rss_peak_mib"],
        })
    return rows


def table(rows: list[dict], info: dict, when: str) -> str:
    def secs(row: dict) -> str:
        text = f"{row['wall_s']:.2f} s"
        return f"{text} / {row['best_s']:.2f} s" if "best_s" in row else text

    lines = [
        f"Benchmarks of {when} on {info['nproc']} x {info['cpu']}, {info['ram_gib']} GiB RAM, Python {info['python']}:",
        "",
        "| benchmark | ledger | wall | CPU | peak RSS |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        cpu = f"{row['cpu_s']:.2f} s" if "cpu_s" in row else ""
        rss = f"{row['rss_peak_mib']:.0f} MiB" if "rss_peak_mib" in row else ""
        lines.append(f"| {row['bench']} | {row['backend']} | {secs(row)} | {cpu} | {rss} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the collector and the KPI report.")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--only", choices=("collector", "report"))
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()

    when = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    info = machine()
    rows: list[dict] = []
    with backends(not args.no_postgres) as new_ledger:
        if args.only in (None, "collector"):
            rows += collector_bench(new_ledger, args.users, args.running)
        if args.only in (None, "report"):
            rows += report_bench(new_ledger, args.users, args.days)
    text = table(rows, info, when[:10])
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{when.replace(':', '')}.json"
    out.write_text(json.dumps({"when": when, "machine": info, "results": rows, "markdown": text}, indent=2))
    print(f"\nwritten to {out.relative_to(REPO)}")
