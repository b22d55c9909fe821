"""One process = the full KPI report over a ledger, timed (first run and best of the rest).

Run: ``python -m bench.report --ledger URL --tz ZONE --period 2025 [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import time

import sqlalchemy as sa

from af_metrics.kpis import period_report
from af_metrics.ledger.schema import session_hours, sessions, users
from af_metrics.ledger.store import Ledger
from bench.cycle import peak_rss_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--tz", required=True)
    parser.add_argument("--period", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    ledger = Ledger.open(args.ledger, tz=args.tz)
    with ledger.engine.connect() as conn:
        size = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in (users, sessions, session_hours)}
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        report = period_report(ledger, period=args.period)
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "rows": size,
        "first_s": times[0],
        "best_s": min(times),
        "kpis": len(report["headline"]) + len(report["tables"]),
        "rss_peak_mib": peak_rss_mib(),
    }))


if __name__ == "__main__":
    main()
