"""Benchmark: ingest 1,000,000 HTCondor history records (streamed) and compute a monthly export.

Run with ``python -m bench.accounting_ingest`` from the repository root (``--jobs N``,
``--postgres`` to add a throwaway PostgreSQL). A schedd history file is written with the
bindings (classad2 ads, ``***`` banners, as the schedd writes it): 2,000 hub users whose
workers' AccountingGroup names their notebook pod, 5 % pilot jobs that map to nobody, jobs of
1 min to 2 days over August-October 2026. Each measurement runs in a fresh process: ingest
wall time, records/s, peak RSS (VmHWM) against the peak before ingesting, then the October
export (per-user per-group records) computed and written as CSV. The same run at a tenth of
the size shows that the peak RSS does not grow with the history. Results: a markdown table on
stdout, JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from bench.run import RESULTS, child, machine

USERS = 2000
PILOT_SHARE = 0.05
START = dt.datetime(2026, 8, 1, tzinfo=dt.timezone.utc).timestamp()
END = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp()
TZ = "America/Chicago"
PERIOD = "2026-10"


def generate(path: Path, jobs: int, seed: int = 1) -> None:
    """A schedd history file of ``jobs`` completed jobs, each ad made with the bindings."""
    import classad2

    from af_metrics.sources.htcondor import write_ads

    rng = random.Random(seed)
    memory_usage = classad2.ExprTree("((ResidentSetSize + 1023) / 1024)")

    def ads(advance):  # noqa: ANN001, ANN202
        for i in range(jobs):
            wall = min(2 * 86400.0, max(60.0, rng.lognormvariate(8.0, 1.2)))
            end = rng.uniform(START + wall, END)
            cpus = rng.choice((1, 1, 2, 2, 4, 8))
            pilot = rng.random() < PILOT_SHARE
            user = f"user{rng.randrange(USERS):04d}"
            group = "group_cms.prod" if pilot else f"cms.other.coffea.jupyter-{user}"
            ad = classad2.ClassAd({
                "ClusterId": 1000 + i, "ProcId": 0, "GlobalJobId": f"schedd.example.org#{1000 + i}.0#1785000000",
                "Owner": "cmsgli" if pilot else "cms-jovyan", "AccountingGroup": group, "AcctGroup": group.rpartition(".")[0],
                "RequestCpus": cpus, "RequestGpus": 0, "RequestMemory": 2048 * cpus, "ResidentSetSize": rng.randrange(200_000, 4_000_000),
                "RemoteWallClockTime": wall, "RemoteUserCpu": wall * cpus * rng.uniform(0.3, 0.95), "RemoteSysCpu": wall * 0.01,
                "JobStartDate": int(end - wall), "JobCurrentStartDate": int(end - wall), "CompletionDate": int(end),
                "EnteredCurrentStatus": int(end), "JobStatus": 4, "ExitCode": 0, "Cmd": "/usr/local/bin/dask-worker",
                "Iwd": "/home/cms-jovyan", "Args": "tcp://10.0.0.1:8786 --nthreads 1 --memory-limit 2GB",
            })
            ad["MemoryUsage"] = memory_usage
            yield ad
            if i % 10_000 == 9_999:
                advance(10_000)

    with Progress(console=Console(stderr=True), transient=True) as progress, path.open("w") as out:
        task = progress.add_task(f"writing {jobs:,} history records", total=jobs)
        write_ads(ads(lambda n: progress.advance(task, n)), out, "file")


def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def measure(path: str, url: str) -> dict:
    """In this (fresh) process: ingest the file, then the monthly export."""
    from af_metrics.accounting.ingest import ingest_history
    from af_metrics.accounting.records import records, write_records
    from af_metrics.accounting.settings import DEFAULT_RULES
    from af_metrics.accounting.totals import usage_totals
    from af_metrics.kpis.periods import parse_period
    from af_metrics.ledger.store import Ledger

    ledger = Ledger.open(url, tz=TZ)
    with ledger.begin() as conn:
        ledger.user_ids(conn, [f"user{i:04d}" for i in range(USERS)], START)
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    with open(path) as stream:
        stats = ingest_history(ledger, stream, DEFAULT_RULES, END)
    ingest = time.perf_counter() - t0
    rss_after = peak_rss_mib()
    t0 = time.perf_counter()
    span = parse_period(PERIOD)
    with ledger.engine.connect() as conn:
        totals = usage_totals(conn, span, "range", by_group=True)
    rows = list(records(totals, site="BENCH", vo="cms", label=PERIOD, period=span, tz=TZ))
    write_records(rows, io.StringIO(), "csv", time.time())
    export = time.perf_counter() - t0
    return {
        "records": stats.read, "written": stats.written, "unattributed": stats.unattributed,
        "ingest_s": round(ingest, 1), "records_per_s": round(stats.read / ingest),
        "rss_before_mib": round(rss_before), "peak_rss_mib": round(rss_after),
        "export_s": round(export, 2), "export_records": len(rows),
        "export_core_hours": round(sum(r["CoreHours"] for r in rows)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="Also on a throwaway PostgreSQL.")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="af-acct-bench-") as tmp:
        for jobs in (args.jobs // 10, args.jobs):
            history = Path(tmp) / f"history-{jobs}"
            t0 = time.perf_counter()
            generate(history, jobs)
            print(f"wrote {jobs:,} records ({history.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            backends = {"sqlite": f"sqlite:///{Path(tmp) / f'ledger-{jobs}.db'}"}
            if args.postgres:
                from tests.conftest import PostgresServer

                pg = PostgresServer(Path(tempfile.mkdtemp(prefix="af-acct-pg-")))
                backends["postgresql"] = pg.new_database()
            try:
                for backend, url in backends.items():
                    result = {"backend": backend, "file_mb": round(history.stat().st_size / 1e6), **child("bench.accounting_ingest", "--child", str(history), url)}
                    results.append(result)
                    print(json.dumps(result), file=sys.stderr)
            finally:
                if args.postgres:
                    pg.stop()
            history.unlink()
    print("| backend | records | history file | ingest | records/s | RSS before → peak | October export |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['records']:,} | {r['file_mb']:,} MB | {r['ingest_s']} s | {r['records_per_s']:,} |"
              f" {r['rss_before_mib']} → {r['peak_rss_mib']} MiB | {r['export_s']} s ({r['export_records']} records) |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"accounting-ingest-{dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H%M%S}.json"
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
