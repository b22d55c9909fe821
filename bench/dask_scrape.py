"""Benchmark: one Dask sampling cycle over 2,000 scheduler endpoints on loopback, side by side
with a real Prometheus server scraping the same endpoints. Run with ``python -m bench.dask_scrape``.

The endpoints (``--serve``, a process of their own, one port each) replay what a real
distributed scheduler answered on ``/metrics`` and ``/json/counts.json`` after running a few
task prefixes (captured at start from a LocalCluster). af-metrics: wall time of whole cycles
(``DaskCollector.cycle``: discovery, 2 requests per target, parsing, the ledger write) and the
process CPU time per target; per-read latency from 200 reads one at a time. Prometheus (Debian's): its
``scrape_duration_seconds`` per target, and its CPU time per scrape over a measured window.
Results: a markdown table on stdout, JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.run import RESULTS, machine
from tests.conftest import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
SERIAL = 200  # targets read one at a time for per-read latency


# -- the endpoints -----------------------------------------------------------------------------

def capture() -> tuple[bytes, bytes]:
    """What a real scheduler answers after running some work."""
    import operator

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0", protocol="tcp://") as cluster, Client(cluster) as client:
        for name, fn in (("inc", operator.add), ("mul", operator.mul), ("sub", operator.sub)):
            client.gather(client.map(fn, range(50), range(50), key=[f"{name}-{i}" for i in range(50)]))
        base = cluster.dashboard_link.rsplit("/", 1)[0]
        return httpx.get(f"{base}/metrics").content, httpx.get(f"{base}/json/counts.json").content


async def serve(n: int, metrics: bytes, counts: bytes) -> None:
    answers = {
        b"/metrics": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n\r\n%s" % (len(metrics), metrics),
        b"/json/counts.json": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(counts), counts),
    }
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].split(b"?", 1)[0]
                writer.write(answers.get(path, missing))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512) for _ in range(n)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await asyncio.sleep(3600)  # bounded: the benchmark terminates it long before


# -- the two scrapers --------------------------------------------------------------------------

def af_metrics_cycles(urls: list[str], tmp: Path, cycles: int) -> dict:
    from af_metrics.config import Settings
    from af_metrics.dask_collector import DaskCollector
    from af_metrics.ledger.store import Ledger
    from af_metrics.sources import dask as source

    targets = tmp / "targets.yaml"
    targets.write_text(yaml.safe_dump({f"user{i:04d}": [u] for i, u in enumerate(urls)}))
    settings = Settings(ledger=f"sqlite:///{tmp / 'ledger.db'}", dask_static_file=str(targets), dask_interval=15.0)
    ledger = Ledger.open(settings.ledger)
    collector = DaskCollector.from_settings(settings, ledger)
    assert collector is not None

    async def run() -> tuple[list[float], list[float], list[float]]:
        walls, cpus = [], []
        for _ in range(cycles):
            c0, w0 = time.process_time(), time.perf_counter()
            await collector.cycle()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
            up = sum(1 for s in collector.status.values() if s.health.up)
            assert up == len(urls), f"only {up} of {len(urls)} targets read"
        http = source.SchedulerHTTP(settings.dask_timeout)
        serial = []
        for url in urls[:SERIAL]:  # one at a time: the latency of a read on an idle loop
            t0 = time.perf_counter()
            await source.scrape(http, url, collector.limits)
            serial.append(time.perf_counter() - t0)
        return walls, cpus, serial

    walls, cpus, latencies = asyncio.run(run())
    latencies.sort()
    return {
        "cycle_wall_s": statistics.median(walls[1:] or walls),
        "first_cycle_wall_s": walls[0],
        "cpu_per_target_ms": statistics.median(cpus[1:] or cpus) / len(urls) * 1000,
        "target_p50_ms": latencies[len(latencies) // 2] * 1000,
        "target_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "rss_mib": _rss_mib(os.getpid()),
        "requests_per_target": 2,
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prometheus_scrapes(urls: list[str], tmp: Path, interval: int, rounds: int) -> dict:
    from af_metrics.discovery import DaskTarget
    from af_metrics.discovery.http_sd import http_sd

    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus not installed (apt-get install prometheus)")
    sd = tmp / "dask.json"
    sd.write_text(json.dumps(http_sd(DaskTarget.make(f"user{i:04d}", "", u) for i, u in enumerate(urls))))
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{interval}s", "scrape_timeout": "5s"},
        "scrape_configs": [
            {"job_name": "dask", "file_sd_configs": [{"files": [str(sd)]}]},
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
        ],
    }))
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", f"--storage.tsdb.path={tmp / 'tsdb'}", "--log.level=warn"],
        stdout=log, stderr=log,
    )
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(q: str) -> float | None:
        try:
            result = httpx.get(f"{api}/query", params={"query": q}, timeout=10).json()["data"]["result"]
        except (httpx.HTTPError, KeyError, ValueError):
            return None
        return float(result[0]["value"][1]) if result else None

    try:
        wait_until(lambda: query(f'count(up{{job="dask"}} == 1)') == len(urls), 4 * interval + 60, 1.0, "Prometheus scraping every endpoint")
        time.sleep(interval)  # one full round after warm-up
        c0, t0 = _cpu_seconds(proc.pid), time.time()
        time.sleep(rounds * interval)
        cpu, window = _cpu_seconds(proc.pid) - c0, time.time() - t0
        scrapes = query(f'sum(count_over_time(up{{job="dask"}}[{int(window)}s]))') or 0.0
        return {
            "target_mean_ms": (query('avg(avg_over_time(scrape_duration_seconds{job="dask"}[5m]))') or 0.0) * 1000,
            "target_p50_ms": (query('quantile(0.5, scrape_duration_seconds{job="dask"})') or 0.0) * 1000,
            "target_p99_ms": (query('quantile(0.99, scrape_duration_seconds{job="dask"})') or 0.0) * 1000,
            "cpu_per_target_ms": cpu / scrapes * 1000 if scrapes else None,
            "scrapes_in_window": scrapes,
            "rss_mib": _rss_mib(proc.pid),
            "requests_per_target": 1,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--interval", type=int, default=15, help="Prometheus scrape interval, seconds")
    parser.add_argument("--rounds", type=int, default=4, help="Prometheus scrape rounds measured")
    parser.add_argument("--serve", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("answers", nargs="*", help=argparse.SUPPRESS)  # --serve: /metrics and counts.json files
    args = parser.parse_args()
    if args.serve:
        metrics, counts = (Path(p).read_bytes() for p in args.answers)
        asyncio.run(serve(args.serve, metrics, counts))
        return

    tmp = Path(tempfile.mkdtemp(prefix="af-metrics-bench-dask-"))
    server = None
    try:
        metrics, counts = capture()
        (tmp / "metrics.txt").write_bytes(metrics)
        (tmp / "counts.json").write_bytes(counts)
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.dask_scrape", "--serve", str(args.targets), str(tmp / "metrics.txt"), str(tmp / "counts.json")],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        ports = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        af = af_metrics_cycles(urls, tmp, args.cycles)
        prom = prometheus_scrapes(urls, tmp, args.interval, args.rounds)
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
        "targets": args.targets, "metrics_bytes": len(metrics), "af_metrics": af, "prometheus": prom,
        "load_avg_1m": os.getloadavg()[0],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"dask-scrape-{result['date'].replace(':', '')}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.targets:,} scheduler endpoints on loopback, /metrics of {len(metrics):,} bytes; {result['machine']['nproc']} cores, {result['machine']['cpu']}, load average {result['load_avg_1m']:.1f}")
    print("| scraper | requests/target | one read, p50 / p99 | whole cycle wall | CPU per target | RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| af-metrics (cycle of {args.targets:,}, concurrency 64) | 2 | {af['target_p50_ms']:.1f} / {af['target_p99_ms']:.1f} ms | "
          f"{af['cycle_wall_s']:.2f} s (first {af['first_cycle_wall_s']:.2f} s) | {af['cpu_per_target_ms']:.2f} ms | {af['rss_mib']:.0f} MiB |")
    print(f"| Prometheus {args.interval} s interval (scrape_duration_seconds) | 1 | {prom['target_p50_ms']:.1f} / {prom['target_p99_ms']:.1f} ms | "
          f"spread over {args.interval} s | {prom['cpu_per_target_ms']:.2f} ms | {prom['rss_mib']:.0f} MiB |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
