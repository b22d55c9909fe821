"""A user's scheduler endpoint is hostile input: garbage, a 1 GB body, a body that never ends, a
redirect loop, 100,000 label sets, silence. Each counts as a failed read for that user only; the
cycle ends within the per-target time-out (plus slack), and the collector's memory stays under
a fixed cap. The hostile servers run in a subprocess on loopback so that tracemalloc measures
the collector alone; a real scheduler next to them is read fine.

The time bound here is a functional check of the time-out mechanism, not a speed measurement.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from af_metrics.dask_collector import DaskCollector
from af_metrics.ledger.schema import dask_targets, dask_usage, users
from af_metrics.ledger.store import Ledger

from dask_support import UserCluster, dask_settings, write_targets

TIMEOUT = 2.0
SLACK = 2.0
BODY_MAX = 10 * 1024 * 1024  # the default
MEMORY_CAP = 3 * BODY_MAX  # one capped body, its growth slack, parsing and the ledger write
EXPECTED = {
    "garbage": "not a Dask scheduler dashboard",
    "malformed": "unparsable /metrics",
    "huge": f"exceeds {BODY_MAX} bytes",
    "endless": f"did not answer within {TIMEOUT:g} s",
    "redirect": "answered HTTP 302",
    "labels": "exceeds 20000 lines",
    "silent": f"did not answer within {TIMEOUT:g} s",
}


@pytest.fixture
def hostile() -> Iterator[dict[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("dask_hostile_server.py")), "300"], stdout=subprocess.PIPE, text=True
    )
    ports: dict[str, int] = {}
    reader = threading.Thread(target=lambda: ports.update(json.loads(proc.stdout.readline() or "{}")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(30)
    try:
        assert set(ports) == set(EXPECTED), "hostile servers did not start"
        yield ports
    finally:
        proc.kill()
        proc.wait(10)


def test_hostile_schedulers_fail_alone_within_timeout_and_memory_cap(tmp_path: Path, hostile: dict[str, int], artifacts: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.open(url)
    good = UserCluster(tmp_path / "good.log", workers=1, threads=1, processes=False)
    try:
        targets = {"good": [good.url], **{user: [f"http://127.0.0.1:{port}"] for user, port in hostile.items()}}
        settings = dask_settings(url, write_targets(tmp_path / "targets.yaml", targets), dask_interval=1.0, dask_timeout=TIMEOUT)
        assert settings.dask_body_max == BODY_MAX
        collector = DaskCollector.from_settings(settings, ledger)
        assert collector is not None

        async def cycles() -> tuple[list[float], list[int], int]:
            walls, peaks = [], []
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            try:
                for _ in range(3):
                    tracemalloc.reset_peak()
                    base = tracemalloc.get_traced_memory()[0]
                    t0 = time.monotonic()
                    await collector.cycle()
                    walls.append(time.monotonic() - t0)
                    peaks.append(tracemalloc.get_traced_memory()[1] - base)
                    await asyncio.sleep(0.5)
                retained = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            return walls, peaks, retained

        walls, peaks, retained = asyncio.run(cycles())
    finally:
        good.stop()

    (artifacts / "dask_hostile.txt").write_text(
        f"cycle wall s: {[round(w, 2) for w in walls]}\npeak traced bytes: {peaks}\nretained bytes: {retained}\n"
    )
    assert max(walls) < TIMEOUT + SLACK, walls
    assert max(peaks) < MEMORY_CAP, peaks
    assert retained < BODY_MAX // 4, retained  # nothing of a hostile answer is kept
    status = {t.user: s for t, s in collector.status.items()}
    assert status["good"].health.up and status["good"].sample is not None
    for user, fragment in EXPECTED.items():
        assert not status[user].health.up
        assert fragment in (status[user].health.last_error or ""), (user, status[user].health.last_error)
        assert status[user].health.failures == 3
    with ledger.engine.connect() as conn:
        sampled = dict(conn.execute(sa.select(users.c.name, dask_targets.c.last_t).join(users, users.c.id == dask_targets.c.user_id)).all())
        booked = set(conn.execute(sa.select(users.c.name).join(dask_usage, dask_usage.c.user_id == users.c.id)).scalars())
    assert sampled["good"] is not None
    assert {u for u, t in sampled.items() if t is not None} == {"good"}
    assert booked == {"good"}
    ledger.engine.dispose()
