"""Latency of the facility KPI API under 50 concurrent clients, over a simulated year of 10,000 users.

Run from the repository root: ``python -m bench.api_latency`` (about 2 minutes; the simulated
ledger is kept in bench/.cache/ for the next run). What it does:

1. a ledger: ``af-metrics simulate --users 10000 --days 365`` (SQLite);
2. a real JupyterHub (LocalFacility) with af-metrics as its external OAuth service, and
   ``af-metrics serve`` on loopback; an admin's real hub token authenticates every request;
3. the cold pass: each URL once, one at a time, nothing cached (what the first viewer waits);
4. the load: Debian's ``wrk`` in its own process keeps 50 connections, each sending its next
   request as soon as the previous answer arrived (closed loop), for ``--duration`` seconds,
   round-robin over the facility page's charts and some KPIs for four ranges. Answers are
   reused for ``--cache-seconds`` (the server's ``web_cache_seconds``), then refreshed behind
   the last answer while the load goes on: the default, 10 s, is six times shorter than the
   production default, so refreshes compete with the load several times per run.

Results: a markdown table on stdout and JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from af_metrics.demo.facility import free_port
from af_metrics.figures import FIGURES
from bench.run import RESULTS, machine
from tests.conftest import _proxy, wait_until
from tests.facility import AfProcess
from tests.web_support import PREFIX, user_token, web_hub, web_settings

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
TZ = "America/Chicago"
YEAR_END = dt.date(2025, 12, 31)
RANGES = [  # what the facility page asks for: a month by day, a quarter by day, the year by week and by month
    {"from": "2025-12-02", "to": "2025-12-31"},
    {"period": "2025Q4"},
    {"period": "2025"},
    {"period": "2025", "by": "month"},
]
KPIS = ("dau", "mau", "sessions", "spawn_success_rate", "session_duration_p50")
CACHE_SECONDS = 10


def urls() -> list[str]:
    figures = [name for name, f in FIGURES.items() if f.scope == "facility"]
    out = [httpx.URL(f"{PREFIX}api/v1/figures/{name}", params=r) for r in RANGES for name in figures]
    out += [httpx.URL(f"{PREFIX}api/v1/kpis/{name}", params={**r, "by": r.get("by", "week")}) for r in RANGES[2:] for name in KPIS]
    return [str(u) for u in out]


def ledger(users: int, days: int) -> str:
    """The simulated ledger, made once and kept (a file written whole, then renamed)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"api-latency-{users}x{days}.db"
    if not path.exists():
        tmp = path.with_suffix(".tmp.db")
        tmp.unlink(missing_ok=True)
        print(f"simulating {users:,} users x {days} days into {path.relative_to(REPO)} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "af_metrics", "simulate", "--users", str(users), "--days", str(days),
             "--end", YEAR_END.isoformat(), "--seed", "1", "--ledger", f"sqlite:///{tmp}"],
            cwd=REPO, env={**os.environ, "AF_METRICS_TIMEZONE": TZ}, stdout=subprocess.DEVNULL, timeout=1800, check=True,
        )
        tmp.rename(path)
    return f"sqlite:///{path}"


# -- the load: Debian's wrk, a second process ---------------------------------------------------

WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Authorization"] = "token %s"})
end
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def wrk_load(base: str, token: str, paths: list[str], clients: int, duration: float, script: Path) -> dict:
    """``wrk`` with ``clients`` connections, each sending its next request when the answer came."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("the load generator is Debian's wrk: apt-get install wrk")
    script.write_text(WRK_SCRIPT % (", ".join(f"[[{p}]]" for p in paths), token))
    out = subprocess.run([wrk, "-t1", f"-c{clients}", f"-d{duration:.0f}s", "--timeout", "30s", "--latency", "-s", str(script), base],
                         capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    latency = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "requests": int(re.search(r"(\d+) requests in", out)[1]), "seconds": duration,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
        "non_2xx": int(bad[1]) if bad else 0, "socket_errors": socket_errors[1] if socket_errors else "",
        "p50_ms": latency["50"], "p90_ms": latency["90"], "p99_ms": latency["99"],
        "max_ms": _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)[1]), "wrk": out,
    }


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(number) * UNITS[unit]


# -- the orchestration ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--cache-seconds", type=float, default=CACHE_SECONDS, help="web_cache_seconds of the server")
    args = parser.parse_args()

    url = ledger(args.users, args.days)
    load_before = os.getloadavg()[0]  # other work on the machine, before ours starts
    work = Path(tempfile.mkdtemp(prefix="af-metrics-bench-api-"))
    port = free_port()
    with web_hub(work / "hub", _proxy(), port) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTERHUB_"))}
        env.update(web_settings(url, work / "none.toml", AF_METRICS_HUB_URL=hub.hub_url, AF_METRICS_HUB_API_TOKEN=hub.af_token,
                                AF_METRICS_TIMEZONE=TZ, AF_METRICS_WEB_CACHE_SECONDS=str(args.cache_seconds)))
        with AfProcess(["serve", "--port", str(port)], env, work / "serve.log") as serve:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: serve.running() and _answers(base), 60, what="af-metrics serve")
            token = user_token(hub, "olga")  # admin through the admin group
            cold = []
            with httpx.Client(base_url=base, headers={"Authorization": f"token {token}"}, timeout=120) as client:
                for path in urls():
                    t0 = time.perf_counter()
                    client.get(path).raise_for_status()
                    cold.append(time.perf_counter() - t0)
            result = wrk_load(base, token, urls(), args.clients, args.duration, work / "load.lua")
            serve.terminate()
    shutil.rmtree(work, ignore_errors=True)
    result.update(cold_median_ms=1000 * statistics.median(cold), cold_max_ms=1000 * max(cold), urls=len(cold),
                  users=args.users, days=args.days, clients=args.clients, cache_seconds=args.cache_seconds,
                  load_average=load_before)
    report(result)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def report(result: dict) -> None:
    when = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    info = machine()
    errors = result["non_2xx"]
    text = "\n".join([
        f"Facility KPI API on {when[:10]}, {info['nproc']} x {info['cpu']}: {result['users']:,} users x {result['days']} days "
        f"(SQLite), {result['urls']} URLs, {result['clients']} concurrent clients for {result['seconds']:.0f} s from a second process:",
        "",
        "| answers reused for | requests | errors | throughput | p50 | p90 | p99 | max | cold (first request per URL): median / max | load avg before |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {result['cache_seconds']:.0f} s | {result['requests']:,} | {errors} | {result['rps']:.0f}/s | {result['p50_ms']:.1f} ms "
        f"| {result['p90_ms']:.1f} ms | {result['p99_ms']:.1f} ms | {result['max_ms']:.0f} ms "
        f"| {result['cold_median_ms']:.0f} ms / {result['cold_max_ms']:.0f} ms | {result['load_average']:.1f} |",
    ])
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"api-latency-{when.replace(':', '')}.json"
    path.write_text(json.dumps({"when": when, "machine": info, "result": result, "markdown": text}, indent=2))
    print(f"\nwritten to {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
