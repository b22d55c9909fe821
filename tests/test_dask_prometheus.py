"""A real Prometheus server (Debian's) finds every user's scheduler through ``af-metrics serve``'s
``/sd/dask`` and scrapes it with the user's label attached; af-metrics' own per-user Dask series
are scraped next to them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_until
from dask_support import PrometheusServer, UserCluster, metric_value, stop_process, write_targets

pytestmark = pytest.mark.prometheus
USERS = ("alice", "bob", "carol")


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def test_prometheus_scrapes_each_users_scheduler_with_user_label(tmp_path: Path) -> None:
    clusters: dict[str, UserCluster] = {}
    serve = prom = None
    try:
        for i, user in enumerate(USERS):
            clusters[user] = UserCluster(tmp_path / f"{user}.log", workers=1, threads=i + 1, processes=False)
        targets = write_targets(tmp_path / "targets.yaml", {u: [c.url] for u, c in clusters.items()})
        port = free_port()
        env = {
            **os.environ, "AF_METRICS_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}", "AF_METRICS_DASK_STATIC_FILE": str(targets),
            "AF_METRICS_DASK_INTERVAL": "1", "AF_METRICS_HUB_URL": "", "AF_METRICS_CONFIG": str(tmp_path / "none.toml"),
        }
        (tmp_path / "none.toml").write_text("")
        log = (tmp_path / "serve.log").open("w")
        serve = subprocess.Popen([sys.executable, "-m", "af_metrics", "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        sd = wait_until(lambda: (r := _get(f"{base}/sd/dask")) is not None and len(r.json()) == 3 and r.json(), 60, 0.2, "/sd/dask lists 3 schedulers")
        assert sorted(g["labels"]["user"] for g in sd) == sorted(USERS)

        prom = PrometheusServer(tmp_path / "prom", [
            {"job_name": "dask", "http_sd_configs": [{"url": f"{base}/sd/dask", "refresh_interval": "1s"}]},
            {"job_name": "af-metrics", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
        ])

        def dask_targets_up() -> list[dict] | None:
            active = [t for t in prom.api("targets")["activeTargets"] if t["labels"]["job"] == "dask"]
            return active if len(active) == 3 and all(t["health"] == "up" for t in active) else None

        active = wait_until(dask_targets_up, 60, 0.5, "Prometheus scraping 3 schedulers")
        assert {t["labels"]["user"]: t["scrapeUrl"] for t in active} == {u: f"{c.url}/metrics" for u, c in clusters.items()}

        def per_user(query: str) -> dict[str, float] | None:
            result = prom.api("query", query=query)["result"]
            values = {r["metric"].get("user"): float(r["value"][1]) for r in result}
            return values if set(values) == set(USERS) else None

        assert wait_until(lambda: per_user("sum by (user) (dask_scheduler_workers)"), 30, 0.5, "per-user worker series") == {u: 1.0 for u in USERS}
        threads = wait_until(lambda: per_user('sum by (user) (af_dask_threads{job="af-metrics"})'), 30, 0.5, "af-metrics threads series")
        assert threads == {u: float(i + 1) for i, u in enumerate(USERS)}
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert metric_value(metrics, "af_dask_scrape_up", user="bob") == 1.0
    finally:
        if prom is not None:
            prom.stop()
        if serve is not None:
            stop_process(serve)
        for cluster in clusters.values():
            cluster.stop()
