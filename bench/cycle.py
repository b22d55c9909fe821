"""One process = collection cycles of ``af_metrics.collector.Collector`` against a hub, measured.

Each kind of cycle runs in a fresh process so that its peak RSS is its own. Prints one JSON
object: wall and CPU seconds per cycle, RSS before and at peak.

Run: ``python -m bench.cycle --hub URL --token T --ledger URL (--sweep | --steady N)``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time

import httpx

from af_metrics.collector import Collector
from af_metrics.config import Settings
from af_metrics.ledger.store import Ledger

NO_SWEEP = 1e12  # seconds: longer than the epoch, so a cycle never lists every user


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        kib = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return kib / 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(collector: Collector) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(collector.cycle())
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ledger", required=True)
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--sweep", action="store_true", help="one first cycle: full user listing, empty ledger")
    kind.add_argument("--steady", type=int, metavar="N", help="N cycles without listing, each after a tick of the hub")
    args = parser.parse_args()

    settings = Settings(
        hub_url=args.hub, hub_api_token=args.token, ledger=args.ledger,
        user_sweep_interval=600.0 if args.sweep else NO_SWEEP,
    )
    ledger = Ledger.open(args.ledger)
    collector = Collector(settings, ledger)
    before = rss_mib()
    runs = []
    for _ in range(1 if args.sweep else args.steady):
        if args.steady:
            httpx.post(f"{args.hub}/bench/tick", params={"n": 40}, headers={"Authorization": f"token {args.token}"}, timeout=60).raise_for_status()
        runs.append(measure(collector))
    ok = collector.last_cycle is not None and collector.last_cycle.ok
    print(json.dumps({
        "ok": ok,
        "cycles": len(runs),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
        "cpu_s": statistics.median(r["cpu_s"] for r in runs),
        "rss_before_mib": before,
        "rss_peak_mib": peak_rss_mib(),
    }))


if __name__ == "__main__":
    main()
