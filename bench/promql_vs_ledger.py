"""Engagement figures two ways, side by side: af-metrics' SQL over its ledger, and PromQL over a
real Prometheus holding the same history. ``python -m bench.promql_vs_ledger`` from the repo root.

One simulated year (``af_metrics.simulate``) is the truth. Dask clusters are not simulated
there, so this benchmark gives every session of a Dask-using profile a cluster of the user's
size for the session's whole length, and books it in the ledger's ``dask_usage`` the way the
Dask sampler does (per local hour). The same history becomes what Prometheus would have scraped
from ``af-metrics serve`` every ``--scrape`` seconds: ``af_user_servers_running{user}`` while a
server runs and the counter ``af_dask_core_seconds_total{user}`` while a cluster runs (zeros
are left out: they change no figure, only make Prometheus slower). That is written as
OpenMetrics and backfilled with ``promtool tsdb create-blocks-from openmetrics``.

Figures (facility time zone America/Chicago, year 2025):
- DAU for every day: ``af-metrics kpi active_users --by day`` vs one range query,
  ``count(max_over_time(af_user_servers_running[1d]))`` stepping a day from local midnight;
- MAU for every month: ``--by month`` vs an instant query per month at its local end over its
  exact length in seconds;
- core-hours per user per month: ``dask_core_hours_by_user --by month`` vs
  ``sum by (user) (increase(af_dask_core_seconds_total[<month>])) / 3600`` per month.

Each side is timed best of ``--repeat`` runs, after a warm-up; loading (simulation, backfill,
Prometheus start) is reported but not counted. Results: a markdown report on stdout and JSON
under bench/results/.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import json
import math
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from af_metrics.kpis import compute_kpi
from af_metrics.ledger.schema import dask_targets, dask_usage, sessions, users
from af_metrics.ledger.store import Ledger
from af_metrics.simulate import Plan, simulate
from af_metrics.timeutil import day_start, hour_slices
from bench.run import machine
from tests.dask_support import PrometheusServer

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
TZ = "America/Chicago"
YEAR = 2025
DASK_PROFILES = {"coffea-base", "coffea-dask-cms", "atlas-analysisbase"}
RUNNING = "af_user_servers_running"
CORE = "af_dask_core_seconds_total"


def threads_of(user: str) -> int:
    """Each user's Dask cluster size: 2, 4, 6 or 8 threads."""
    return 2 * (1 + int(user.removeprefix("user")) % 4)


@dataclass(frozen=True, slots=True)
class Session:
    server: str
    profile: str | None
    start: float
    end: float


def load_sessions(ledger: Ledger) -> dict[str, list[Session]]:
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(users.c.name, sessions.c.server, sessions.c.profile, sessions.c.started, sessions.c.ended)
            .join(users, users.c.id == sessions.c.user_id)
            .order_by(users.c.name, sessions.c.started)
        ).all()
    out: dict[str, list[Session]] = defaultdict(list)
    for name, server, profile, started, ended in rows:
        out[name].append(Session(server, profile, started, ended))
    return out


def book_dask_usage(ledger: Ledger, history: dict[str, list[Session]]) -> int:
    """One Dask target per (user, server); its sessions' core-seconds per local hour."""
    rows = 0
    with ledger.begin() as conn:
        ids = dict(conn.execute(sa.select(users.c.name, users.c.id)).all())
        for name, runs in history.items():
            threads = threads_of(name)
            usage: dict[tuple[str, float], list] = {}
            for s in runs:
                if s.profile not in DASK_PROFILES:
                    continue
                for hour, day, _, seconds in hour_slices(s.start, s.end, TZ):
                    cell = usage.setdefault((s.server, hour), [day, 0.0])
                    cell[1] += seconds
            targets = {}
            for server in sorted({server for server, _ in usage}):
                targets[server] = conn.execute(
                    dask_targets.insert().values(user_id=ids[name], cluster=server or "default",
                                                 url=f"http://{name}-{server or 'default'}:8787", first_seen=0.0)
                ).inserted_primary_key[0]
            if usage:
                conn.execute(dask_usage.insert(), [
                    {"target_id": targets[server], "hour_start": hour, "user_id": ids[name], "day": day,
                     "seconds": seconds, "worker_seconds": seconds * threads / 2, "core_seconds": seconds * threads,
                     "memory_byte_seconds": 0.0, "max_workers": threads // 2, "max_threads": threads}
                    for (server, hour), (day, seconds) in usage.items()
                ])
            rows += len(usage)
    return rows


def scrape_times(start: float, end: float, every: int) -> range:
    """The scrape instants (multiples of ``every``) inside [start, end)."""
    return range(math.ceil(start / every) * every, math.ceil(end / every) * every, every)


def openmetrics(history: dict[str, list[Session]], every: int, path: Path, advance: Callable[[], None]) -> int:
    """Write what Prometheus would have scraped; returns the number of samples."""
    samples = 0
    with path.open("w") as out:
        out.write(f"# TYPE {RUNNING} gauge\n")
        for name, runs in history.items():
            running: dict[int, int] = defaultdict(int)
            for s in runs:
                for t in scrape_times(s.start, s.end, every):
                    running[t] += 1
            out.writelines(f'{RUNNING}{{user="{name}"}} {n} {t}\n' for t, n in sorted(running.items()))
            samples += len(running)
            advance()
        out.write(f"# TYPE {CORE.removesuffix('_total')} counter\n")
        for name, runs in history.items():
            dask = [(s.start, s.end) for s in runs if s.profile in DASK_PROFILES]
            threads = threads_of(name)
            instants = sorted({t for a, b in dask for t in scrape_times(a, b, every)})
            for t in instants:
                used = sum(max(0.0, min(t, b) - a) for a, b in dask if a < t)
                out.write(f'{CORE}{{user="{name}"}} {used * threads:.3f} {t}\n')
            samples += len(instants)
            advance()
        out.write("# EOF\n")
    return samples


def months() -> Iterator[tuple[str, float, float]]:
    """(YYYY-MM, local start, local end) of each month of the year."""
    for m in range(1, 13):
        first = dt.date(YEAR, m, 1)
        last = first.replace(day=calendar.monthrange(YEAR, m)[1])
        yield f"{YEAR}-{m:02d}", day_start(first.toordinal(), TZ), day_start(last.toordinal() + 1, TZ)


def by_ledger(ledger: Ledger) -> dict:
    span = {"from_": f"{YEAR}-01-01", "to": f"{YEAR}-12-31"}
    dau = compute_kpi(ledger, "active_users", by="day", **span)["rows"]
    mau = compute_kpi(ledger, "active_users", by="month", **span)["rows"]
    core = compute_kpi(ledger, "dask_core_hours_by_user", by="month", **span)["rows"]
    return {
        "dau": {period: float(v) for period, v in dau},
        "mau": {period: float(v) for period, v in mau},
        "core": {(period, user): float(h) for period, user, h in core},
    }


def by_promql(prom: BackfilledPrometheus) -> dict:
    first = dt.date(YEAR, 1, 1).toordinal()
    start = day_start(first + 1, TZ)  # end of the first local day; then plain 86,400 s steps
    result = prom.api("query_range", query=f"count(max_over_time({RUNNING}[1d]))", start=start,
                      end=start + 364 * 86400, step=86400)["result"]
    dau = {dt.date.fromordinal(first + round((t - start) / 86400)).isoformat(): float(v)
           for t, v in (result[0]["values"] if result else [])}
    mau, core = {}, {}
    for label, lo, hi in months():
        window = f"{int(hi - lo)}s"
        got = prom.api("query", query=f"count(max_over_time({RUNNING}[{window}]))", time=hi)["result"]
        mau[label] = float(got[0]["value"][1]) if got else 0.0
        got = prom.api("query", query=f"sum by (user) (increase({CORE}[{window}])) / 3600", time=hi)["result"]
        core.update({(label, r["metric"]["user"]): float(r["value"][1]) for r in got})
    return {"dau": dau, "mau": mau, "core": core}


def best_of(fn: Callable[[], dict], repeat: int) -> tuple[dict, float]:
    fn()  # warm-up: caches, the ledger's pages, Prometheus' chunks
    best, value = math.inf, {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return value, best


def dst_days() -> set[str]:
    """Local days on which a fixed 86,400 s step from standard-time midnight is off by an hour."""
    out = set()
    first = dt.date(YEAR, 1, 1).toordinal()
    for i in range(365):
        start = day_start(first + i, TZ)
        if (start - day_start(first, TZ)) % 86400:
            out.add(dt.date.fromordinal(first + i).isoformat())
    return out


def compare(ledger_figs: dict, prom_figs: dict) -> dict:
    dst = dst_days()
    dau_diff = {d: prom_figs["dau"].get(d, 0.0) - v for d, v in ledger_figs["dau"].items()}
    off = {d: x for d, x in dau_diff.items() if x}
    mau_diff = {m: prom_figs["mau"].get(m, 0.0) - v for m, v in ledger_figs["mau"].items()}
    keys = set(ledger_figs["core"]) | set(prom_figs["core"])
    rel = {}
    for k in keys:
        a, b = ledger_figs["core"].get(k, 0.0), prom_figs["core"].get(k, 0.0)
        rel[k] = (b - a) / a if a else math.inf
    finite = [abs(x) for x in rel.values() if math.isfinite(x)]
    return {
        "dau_days": len(dau_diff),
        "dau_days_equal": len(dau_diff) - len(off),
        "dau_days_differing_in_dst": sum(d in dst for d in off),
        "dau_max_abs_diff": max((abs(x) for x in off.values()), default=0.0),
        "dau_sum_ledger": sum(ledger_figs["dau"].values()),
        "dau_sum_promql": sum(prom_figs["dau"].values()),
        "mau_months_equal": sum(1 for x in mau_diff.values() if not x),
        "mau_diff": mau_diff,
        "core_pairs": len(keys),
        "core_pairs_equal_1e-9": sum(1 for x in finite if x <= 1e-9),
        "core_pairs_within_1pct": sum(1 for x in finite if x <= 0.01),
        "core_pairs_only_promql": sum(1 for k in keys if k not in ledger_figs["core"]),
        "core_pairs_only_ledger": sum(1 for k in keys if k not in prom_figs["core"]),
        "core_median_abs_rel_diff": sorted(finite)[len(finite) // 2] if finite else 0.0,
        "core_max_abs_rel_diff": max(finite, default=0.0),
        "core_total_ledger": sum(ledger_figs["core"].values()),
        "core_total_promql": sum(prom_figs["core"].values()),
    }


@contextmanager
def phases() -> Iterator[Progress]:
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=False) as progress:
        yield progress


def run(users_n: int, days: int, every: int, repeat: int, workdir: Path) -> dict:
    ledger = Ledger.open(f"sqlite:///{workdir / 'ledger.db'}", tz=TZ)
    plan = Plan(users=users_n, days=days, end=dt.date(YEAR, 12, 31), seed=0)
    timings: dict[str, float] = {}
    with phases() as progress:
        task = progress.add_task("simulate the year", total=users_n)
        t0 = time.perf_counter()
        outcome = simulate(ledger, plan, now=day_start(dt.date(YEAR + 1, 1, 3).toordinal(), TZ),
                           advance=lambda n: progress.advance(task, n))
        history = load_sessions(ledger)
        usage_rows = book_dask_usage(ledger, history)
        timings["load_ledger_s"] = time.perf_counter() - t0

        task = progress.add_task("write OpenMetrics", total=2 * len(history))
        t0 = time.perf_counter()
        om = workdir / "history.om"
        samples = openmetrics(history, every, om, lambda: progress.advance(task))
        timings["write_openmetrics_s"] = time.perf_counter() - t0

        task = progress.add_task("promtool tsdb create-blocks-from openmetrics", total=None)
        t0 = time.perf_counter()
        tsdb = workdir / "tsdb"
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--max-block-duration=744h",
                        str(om), str(tsdb)], check=True, capture_output=True, timeout=3600)
        timings["backfill_s"] = time.perf_counter() - t0
        progress.update(task, total=1, completed=1)

        task = progress.add_task("start Prometheus on the backfilled TSDB", total=None)
        t0 = time.perf_counter()
        # no scraping; retention long enough to keep the backfilled year
        prom = PrometheusServer(workdir, [], extra_args=("--storage.tsdb.retention.time=100y",),
                                start_timeout=300, query_timeout=600)
        timings["prometheus_start_s"] = time.perf_counter() - t0
        progress.update(task, total=1, completed=1)
        try:
            task = progress.add_task(f"query both sides (best of {repeat})", total=2)
            ledger_figs, timings["af_metrics_s"] = best_of(lambda: by_ledger(ledger), repeat)
            progress.advance(task)
            prom_figs, timings["promql_s"] = best_of(lambda: by_promql(prom), repeat)
            progress.advance(task)
        finally:
            prom.stop()
    return {
        "plan": {"users": users_n, "days": days, "scrape_interval_s": every, "timezone": TZ, "year": YEAR},
        "data": {"sessions": outcome.sessions, "dask_usage_rows": usage_rows, "openmetrics_samples": samples,
                 "openmetrics_bytes": om.stat().st_size},
        "timings": timings,
        "speedup": timings["promql_s"] / timings["af_metrics_s"],
        "comparison": compare(ledger_figs, prom_figs),
    }


WHY = """\
Why they differ (af-metrics is exact by construction: it reads whole sessions and local hours):
- DST: PromQL has no time zones; a range query steps a fixed 86,400 s, so from the spring change
  to the autumn one each "day" is an hour off the local day. Instant queries per day would fix
  the alignment at one HTTP request per day.
- Sampling: Prometheus knows a server only at scrape instants; a session shorter than the scrape
  interval that falls between two scrapes is invisible (fewer active users), and a session
  running across midnight is seen on the next day only if a scrape falls after midnight.
- Counters: increase() sees only the samples inside the window. Core-seconds used between the
  last scrape of a month and the first of the next, and before a user's very first scrape, are
  lost or extrapolated (increase() extrapolates up to half a scrape interval at each end).
  Prometheus has no notion of a calendar month: each month is one instant query over its exact
  length in seconds.
"""


def report(result: dict) -> str:
    t, c = result["timings"], result["comparison"]
    lines = [
        f"## PromQL vs ledger: {result['plan']['users']:,} users x {result['plan']['days']} days, "
        f"scrape every {result['plan']['scrape_interval_s']} s ({TZ})",
        "",
        f"{result['data']['sessions']:,} sessions, {result['data']['openmetrics_samples']:,} samples backfilled "
        f"({result['data']['openmetrics_bytes'] / 1e6:.0f} MB OpenMetrics); backfill {t['backfill_s']:.1f} s, "
        f"Prometheus start {t['prometheus_start_s']:.1f} s (not counted)",
        "",
        "| | af-metrics (SQL over the ledger) | PromQL (real Prometheus) |",
        "| --- | --- | --- |",
        f"| time for DAU x 365, MAU x 12, core-hours per user x 12 | {t['af_metrics_s']:.3f} s | {t['promql_s']:.3f} s |",
        f"| speed-up | **{result['speedup']:.1f}x** | |",
        f"| DAU days equal | {c['dau_days']} (reference) | {c['dau_days_equal']} of {c['dau_days']} "
        f"(of the rest {c['dau_days_differing_in_dst']} in DST; max diff {c['dau_max_abs_diff']:.0f} users) |",
        f"| sum of DAU over the year | {c['dau_sum_ledger']:.0f} | {c['dau_sum_promql']:.0f} |",
        f"| MAU months equal | 12 (reference) | {c['mau_months_equal']} of 12 |",
        f"| core-hours (user, month) pairs | {c['core_pairs']:,} (reference) | equal: {c['core_pairs_equal_1e-9']:,}, "
        f"within 1 %: {c['core_pairs_within_1pct']:,}; median diff {c['core_median_abs_rel_diff']:.2%}, "
        f"max {c['core_max_abs_rel_diff']:.1%}; missing {c['core_pairs_only_ledger']} |",
        f"| core-hours, whole year | {c['core_total_ledger']:,.1f} | {c['core_total_promql']:,.1f} |",
        "",
        WHY,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--scrape", type=int, default=60, help="scrape interval the history is sampled at, seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="af-bench-promql-"))
    if workdir.exists() and any(workdir.iterdir()) and args.keep is not None:
        parser.error(f"--keep {workdir}: the directory must be new or empty")
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.users, 365, args.scrape, args.repeat, workdir)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result["machine"] = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
    out = RESULTS / f"promql-vs-ledger-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(report(result))
    print(f"\n(JSON: {out.relative_to(REPO)})")


if __name__ == "__main__":
    main()
