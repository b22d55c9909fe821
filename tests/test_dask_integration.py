"""Three users, each with a real LocalCluster (worker processes, own ports), sampled into the ledger.

Each cluster runs in a process of its own, as on a facility. The sampling loop runs as in
``af-metrics serve`` (its own event loop, static-file discovery that picks up each cluster as it
appears); the ledger's core-seconds per user must match threads x lifetime within 5 %, and the
erred tasks of the one user who caused them are booked to that user only.
"""

from __future__ import annotations

import operator
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from af_metrics.dask_exporter import DaskMetrics
from af_metrics.ledger.schema import dask_cycles, dask_targets, dask_tasks, dask_usage, users
from af_metrics.ledger.store import Ledger

from conftest import wait_until
from dask_support import SamplerThread, UserCluster, dask_settings, metric_value, write_targets

distributed = pytest.importorskip("distributed")

INTERVAL = 0.25
# user -> (threads per worker, seconds the cluster lives, tasks it runs, tasks that fail)
PLAN = {"alice": (1, 14.0, 40, 0), "bob": (2, 18.0, 30, 0), "carol": (1, 16.0, 20, 5)}
WORKERS = 2


def _run_work(client, user: str) -> list:  # noqa: ANN001 - distributed.Client
    _, _, ok, bad = PLAN[user]
    futures = client.map(time.sleep, [0.05] * ok, key=[f"sleep-{user}-{i}" for i in range(ok)])
    futures += client.map(operator.truediv, [1] * bad, [0] * bad, key=[f"div-{user}-{i}" for i in range(bad)])
    distributed.wait(futures, timeout=60)
    return futures


def _ledger_by_user(ledger: Ledger) -> dict[str, dict[str, float]]:
    with ledger.engine.connect() as conn:
        usage = conn.execute(
            sa.select(users.c.name, sa.func.sum(dask_usage.c.core_seconds), sa.func.sum(dask_usage.c.worker_seconds))
            .join(users, users.c.id == dask_usage.c.user_id).group_by(users.c.name)
        ).all()
        tasks = dict(
            conn.execute(
                sa.select(users.c.name, sa.func.sum(dask_tasks.c.erred)).join(users, users.c.id == dask_tasks.c.user_id).group_by(users.c.name)
            ).all()
        )
        finished = dict(
            conn.execute(
                sa.select(users.c.name, sa.func.sum(dask_tasks.c.finished)).join(users, users.c.id == dask_tasks.c.user_id).group_by(users.c.name)
            ).all()
        )
        totals = dict(
            conn.execute(sa.select(users.c.name, dask_targets.c.core_seconds).join(users, users.c.id == dask_targets.c.user_id)).all()
        )
    return {
        name: {"core": core, "workers": ws, "erred": tasks.get(name, 0.0), "finished": finished.get(name, 0.0), "total": totals[name]}
        for name, core, ws in usage
    }


def _open_runs(ledger: Ledger) -> int:
    with ledger.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(dask_targets).where(dask_targets.c.open == 1)).scalar_one()


def test_core_seconds_per_user_match_threads_times_lifetime(tmp_path: Path, artifacts: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.open(url)
    targets_file = write_targets(tmp_path / "targets.yaml", {})
    settings = dask_settings(url, targets_file, dask_interval=INTERVAL, dask_timeout=2.0)
    clusters: dict[str, UserCluster] = {}
    lived: dict[str, float] = {}
    with SamplerThread(settings, ledger) as sampler:
        try:
            for user, (threads, _, _, _) in PLAN.items():
                clusters[user] = UserCluster(tmp_path / f"{user}.log", WORKERS, threads)
                write_targets(targets_file, {u: [c.url] for u, c in clusters.items()})
            for user, cluster in clusters.items():
                with distributed.Client(cluster.scheduler, timeout=30) as client:
                    futures = _run_work(client, user)
                    assert sum(f.status == "error" for f in futures) == PLAN[user][3]
            for user in sorted(PLAN, key=lambda u: clusters[u].up + PLAN[u][1]):
                cluster = clusters[user]
                time.sleep(max(0.0, cluster.up + PLAN[user][1] - time.time()))
                lived[user] = cluster.stop() - cluster.up
        finally:
            for cluster in clusters.values():
                cluster.stop()
        wait_until(lambda: _open_runs(ledger) == 0, 30, 0.2, "every run closed after its scheduler stopped")
        sampler.wait_cycles(1)

    by_user = _ledger_by_user(ledger)
    lines = []
    for user, (threads, _, ok, bad) in PLAN.items():
        expected = WORKERS * threads * lived[user]
        got = by_user[user]
        lines.append(f"{user}: core-seconds {got['core']:.2f} vs threads x lifetime {expected:.2f} ({got['core'] / expected - 1:+.2%})")
        # a loaded machine may see a cluster up to a sampling cycle late and its nannies a moment after close()
        edge = 1.0 + INTERVAL
        assert got["core"] == pytest.approx(expected, rel=0.05, abs=WORKERS * threads * edge), lines[-1]
        assert got["workers"] == pytest.approx(WORKERS * lived[user], rel=0.05, abs=WORKERS * edge)
        assert got["total"] == pytest.approx(got["core"], rel=1e-9)  # running total = hourly rows
        assert got["erred"] == bad
        assert got["finished"] == ok + bad
    (artifacts / "dask_core_seconds.txt").write_text("\n".join(lines) + "\n")

    with ledger.engine.connect() as conn:
        peak = conn.execute(sa.select(sa.func.max(dask_cycles.c.workers))).scalar_one()
    assert peak == WORKERS * len(PLAN)

    registry = CollectorRegistry()
    registry.register(DaskMetrics(sampler.collector))
    text = generate_latest(registry).decode()
    assert metric_value(text, "af_dask_core_seconds_total", user="bob") == pytest.approx(by_user["bob"]["core"])
    assert metric_value(text, "af_dask_tasks_erred_total", user="carol") == PLAN["carol"][3]
    assert metric_value(text, "af_dask_scrape_up", user="alice") == 0.0  # its scheduler is gone
    if shutil.which("promtool"):
        result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    ledger.engine.dispose()
