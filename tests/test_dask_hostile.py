"""A user's scheduler endpoint is hostile input: garbage, a 1 GB body, a body that never ends, a
redirect loop, 100,000 label sets, silence, figures that lie (inf, NaN, negative, too large for a
ledger column), a URL the HTTP client cannot use, made-up state labels. Each counts as a failed read for that user only; the
cycle ends within the per-target time-out (plus slack), and the collector's memory stays under
a fixed cap. The hostile servers run in a subprocess on loopback so that tracemalloc measures
the collector alone; a real scheduler next to them is read fine.

Discovery is hostile too: a provider raising anything keeps its last good list, a gateway that
refuses one user fails that user only, and clusters per user and field lengths are capped.

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
from af_metrics.discovery import CLUSTER_MAX, URL_MAX, USER_MAX, DaskTarget, Discovery, DiscoveryError
from af_metrics.discovery.gateway import CLUSTERS_PER_USER, GatewayProvider
from af_metrics.discovery.static import StaticFileProvider
from af_metrics.ledger.schema import dask_targets, dask_usage, users
from af_metrics.ledger.store import Ledger

from dask_support import UserCluster, dask_settings, write_targets
from test_dask_discovery import GATEWAY_PASSWORD, _start_cluster, gateway  # noqa: F401 - the real dask-gateway fixture

TIMEOUT = 2.0
SLACK = 3 * TIMEOUT  # a loaded machine with tracemalloc on; an endless or 1 GB body would take far longer
BODY_MAX = 10 * 1024 * 1024  # the default
MEMORY_CAP = 3 * BODY_MAX  # one capped body, its growth slack, parsing and the ledger write
SERVED = {
    "garbage": "not a Dask scheduler dashboard",
    "malformed": "unparsable /metrics",
    "huge": f"exceeds {BODY_MAX} bytes",
    "endless": f"did not answer within {TIMEOUT:g} s",
    "redirect": "answered HTTP 302",
    "labels": "exceeds 20000 lines",
    "silent": f"did not answer within {TIMEOUT:g} s",
    "lying_inf": "implausible workers in /json/counts.json",
    "lying_huge": "implausible cores in /json/counts.json",
    "lying_negative": "implausible bytes in /json/counts.json",
    "lying_nan": "implausible dask_scheduler_tasks",
    "lying_counter": "implausible dask_scheduler_tasks_suspicious_total",
    "lying_infinite_clients": "implausible dask_scheduler_clients",
}
BAD_PORT = "http://127.0.0.1:99999"  # the static file accepts it; the HTTP client raises no httpx error
EXPECTED = {**SERVED, "bad_port": "unexpected "}
READ = {"good", "odd_states"}


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
        assert set(ports) == set(SERVED) | {"odd_states"}, "hostile servers did not start"
        yield ports
    finally:
        proc.kill()
        proc.wait(10)


def test_hostile_schedulers_fail_alone_within_timeout_and_memory_cap(tmp_path: Path, hostile: dict[str, int], artifacts: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.open(url)
    good = UserCluster(tmp_path / "good.log", workers=1, threads=1, processes=False)
    try:
        targets = {"good": [good.url], "bad_port": [BAD_PORT], **{user: [f"http://127.0.0.1:{port}"] for user, port in hostile.items()}}
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
    odd = status["odd_states"].sample
    assert status["odd_states"].health.up and odd is not None
    assert odd.workers_by_state == {"idle": 1.0, "other": 500.0} and odd.tasks == {"other": 500.0}
    for user, fragment in EXPECTED.items():
        assert not status[user].health.up
        assert fragment in (status[user].health.last_error or ""), (user, status[user].health.last_error)
        assert status[user].health.failures == 3
    with ledger.engine.connect() as conn:
        sampled = dict(conn.execute(sa.select(users.c.name, dask_targets.c.last_t).join(users, users.c.id == dask_targets.c.user_id)).all())
        booked = set(conn.execute(sa.select(users.c.name).join(dask_usage, dask_usage.c.user_id == users.c.id)).scalars())
    assert sampled["good"] is not None
    assert {u for u, t in sampled.items() if t is not None} == READ
    assert booked == READ
    ledger.engine.dispose()


def test_a_provider_that_raises_anything_keeps_its_last_good_list(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("alice: [http://127.0.0.1:8787]\n")
    discovery = Discovery([StaticFileProvider(path)])
    first = asyncio.run(discovery.targets())
    path.write_bytes(b"alice: [http://127.0.0.1:8787/\xff]\n")  # not UTF-8: the provider raises UnicodeDecodeError
    assert asyncio.run(discovery.targets()) == first
    health = discovery.health["static"]
    assert not health.up and "unexpected UnicodeDecodeError" in (health.last_error or "")


def test_discovered_fields_are_bounded() -> None:
    target = DaskTarget.make("alice", "c" * 10_000, "http://127.0.0.1:8787")
    assert target.cluster == "c" * CLUSTER_MAX
    with pytest.raises(DiscoveryError, match=f"longer than {URL_MAX} characters"):
        DaskTarget.make("alice", "", "http://127.0.0.1:8787/" + "x" * URL_MAX)
    with pytest.raises(DiscoveryError, match=f"longer than {USER_MAX} characters"):
        DaskTarget.make("a" * (USER_MAX + 1), "", "http://127.0.0.1:8787")


def test_gateway_lists_at_most_a_capped_number_of_clusters_per_user() -> None:
    clusters = {f"c{i:02d}": {"status": "RUNNING", "dashboard_route": f"/clusters/c{i:02d}/status"} for i in range(CLUSTERS_PER_USER + 5)}
    clusters["a-pending"] = {"status": "PENDING", "dashboard_route": "/clusters/a-pending/status"}
    found = GatewayProvider._parse("alice", "http://127.0.0.1:1", clusters)
    assert [t.cluster for t in found] == [f"c{i:02d}" for i in range(CLUSTERS_PER_USER)]


def test_gateway_refusing_one_user_fails_that_user_only(gateway: str) -> None:
    name = _start_cluster(gateway, "alice")

    async def candidates() -> list[str]:
        return ["alice", "bob:x"]  # Basic auth splits at the first colon: user "bob", a wrong password

    provider = GatewayProvider(gateway, GATEWAY_PASSWORD, candidates)
    assert asyncio.run(provider.targets()) == [DaskTarget("alice", name, f"{gateway}/clusters/{name}")]
    assert provider._health["alice"].up
    bob = provider._health["bob:x"]
    assert not bob.up and "refused the password for user 'bob:x' (401)" in (bob.last_error or "")
