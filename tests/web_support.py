"""Shared by the web and browser tests: a ledger with known usage, and a real JupyterHub on
which af-metrics' pages are an OAuth service (external or managed by the hub).

Users: alice and bob (plain users), olga (admin through the ``facility-ops`` group), rita
(admin through the ``usage-auditor`` role), adam (hub admin). The hub's ``user`` role grants
``access:services!service=af-metrics`` (what a deployment adds so users may use the pages)
and ``read:roles:users!user`` (so roles reach af-metrics in the login identity).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from af_metrics.accounting.ingest import ingest_jobs
from af_metrics.accounting.settings import DEFAULT_RULES
from af_metrics.coffea.record import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS, RunRecord
from af_metrics.demo.facility import AF_SERVICE, LocalFacility
from af_metrics.discovery import DaskTarget
from af_metrics.ledger.analysis import store_run
from af_metrics.ledger.dask import record_cycle
from af_metrics.ledger.store import Ledger, SessionRecord, SpawnRecord
from af_metrics.sources.dask import SchedulerSample
from af_metrics.sources.htcondor import BatchJob

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

TOKENS_SERVICE = "web-test-tokens"
ADMIN_GROUP = "facility-ops"
ADMIN_ROLE = "usage-auditor"
HUB_CONFIG = f"""
c.JupyterHub.load_roles.append({{"name": "user", "scopes": ["self", "access:services!service={AF_SERVICE}", "read:roles:users!user"]}})
c.JupyterHub.load_roles.append({{"name": "{ADMIN_ROLE}", "scopes": ["read:users:name"], "users": ["rita"]}})
c.JupyterHub.load_groups = {{"{ADMIN_GROUP}": {{"users": ["olga"]}}}}
c.Authenticator.admin_users = {{"adam"}}
"""
PREFIX = f"/services/{AF_SERVICE}/"

# What seed_usage writes, for the assertions: sessions in the last 30 days, Dask threads for one hour.
SESSIONS = {"alice": 3, "bob": 2, "olga": 1}
DASK_THREADS = {"alice": 4, "bob": 2}
BATCH = {"alice": (4, 4.0, 12.0)}  # a finished HTCondor job of her notebook pod: cores, wall hours, CPU hours
RUNS = {"alice": [(2_000_000, 100.0, 4), (3_000_000, 100.0, 4), (900_000, 60.0, 2)], "bob": [(500_000, 50.0, 2)]}


def web_settings(ledger_url: str, config_file: Path, **more: str) -> dict[str, str]:
    """AF_METRICS_* for a serve process with the test's admin rules and no collection to speak of."""
    config_file.write_text("")
    return {
        "AF_METRICS_CONFIG": str(config_file), "AF_METRICS_LEDGER": ledger_url, "AF_METRICS_POLL_INTERVAL": "3600",
        "AF_METRICS_ADMIN_GROUPS": f'["{ADMIN_GROUP}"]', "AF_METRICS_ADMIN_ROLES": f'["{ADMIN_ROLE}"]', **more,
    }


def web_hub(workdir: Path, proxy: str | None, port: int, managed_env: dict[str, str] | None = None) -> LocalFacility:
    """The hub with af-metrics at http://127.0.0.1:<port> as an OAuth service: external, or
    started by the hub itself (``managed_env``: its environment)."""
    import sys

    service: dict = {"url": f"http://127.0.0.1:{port}", "oauth_no_confirm": True, "oauth_client_allowed_scopes": ["read:roles:users!user"]}
    if managed_env is not None:
        # the hub gives a managed service 30 s to answer by default: too little on a loaded machine
        service.update(command=[sys.executable, "-m", "af_metrics", "serve"], environment=managed_env, timeout=120)
    return LocalFacility(
        workdir=workdir, proxy=proxy, extra_services={TOKENS_SERVICE: ["tokens", "admin:users"]},
        service_options={AF_SERVICE: service}, extra_config=HUB_CONFIG,
    )


def routed(facility: LocalFacility) -> bool:
    """Whether the hub's proxy routes to af-metrics yet: the hub adds a service's route only once
    the service answers (or its time-out passes), after the hub's own API is up."""
    try:
        return httpx.get(f"{facility.public_url}{PREFIX}api/v1/me", timeout=2).status_code == 401
    except httpx.HTTPError:
        return False


def user_token(facility: LocalFacility, user: str) -> str:
    """A new API token of ``user`` with the user's own permissions (as from the hub's token page)."""
    headers = {"Authorization": f"token {facility.tokens[TOKENS_SERVICE]}"}
    with httpx.Client(base_url=f"{facility.hub_url}/hub/api/", headers=headers, timeout=30) as hub:
        hub.post(f"users/{user}")  # 201, or 409 when the config made it
        resp = hub.post(f"users/{user}/tokens", json={"note": "af-metrics web tests"})
        resp.raise_for_status()
        return resp.json()["token"]


def _run(started: float, events: int, wall: float, threads: int) -> RunRecord:
    return RunRecord(
        run_id=uuid.uuid4().hex, processor="zpeak", executor="dask", status="success", started=started, ended=started + wall,
        wall_seconds=wall, events=events, chunks=1, bytes_read=events * 100, columns_read=2, process_seconds=wall,
        threads=threads, datasets=[{"name": "DY", "events": events, "bytes_read": events * 100, "chunks": 1}],
        chunk_duration={"counts": [0] * 4 + [1] + [0] * (len(CHUNK_SECONDS_BOUNDS) - 4)},
        chunk_events={"counts": [1] + [0] * len(CHUNK_EVENTS_BOUNDS)},
    )


def seed_usage(ledger: Ledger, now: float | None = None) -> float:
    """Sessions, spawns, Dask usage and analysis runs of SESSIONS/DASK_THREADS/RUNS in the days
    before ``now``, written by the ledger's own writers; returns the time the days end at."""
    now = now or dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0).timestamp()
    day = 86400.0
    sessions, spawns = [], []
    for user, count in SESSIONS.items():
        for k in range(count):
            start = now - (2 + 3 * k) * day - 5 * 3600
            profile = "coffea-base" if k % 2 == 0 else "coffea-dask"
            sessions.append(SessionRecord(user, "", profile, start, start + 2 * 3600, "import"))
            spawns.append(SpawnRecord(user, "", profile, start - 20, "success", 20.0, "import"))
    spawns.append(SpawnRecord("bob", "", "coffea-dask", now - 4 * day, "failure", None, "import"))
    ledger.add_history(sessions, spawns, now=now)
    t0 = now - 3 * day
    for at in (t0, t0 + 3600):
        record_cycle(ledger, at, [
            (DaskTarget.make(user, "c", f"http://127.0.0.1:8787/{user}"),
             SchedulerSample(observed_at=at, workers=1, threads=threads, memory_bytes=0.0, started=t0 - 60))
            for user, threads in DASK_THREADS.items()
        ], interval=1800.0)
    for user, runs in RUNS.items():
        for k, (events, wall, threads) in enumerate(runs):
            record = _run(now - (1 + k) * day, events, wall, threads)
            assert store_run(ledger, user, record, record.ended)
    jobs = [_job(user, k, now - 5 * day, *usage) for k, (user, usage) in enumerate(BATCH.items())]
    done = ingest_jobs(ledger, jobs, DEFAULT_RULES, now)
    assert (done.written, done.unattributed) == (len(jobs), 0)
    return now


def _job(user: str, k: int, middle: float, cores: int, wall_hours: float, cpu_hours: float) -> BatchJob:
    """A finished job of the user's notebook pod (its AccountingGroup names the pod), ``wall_hours`` around ``middle``."""
    group = f"cms.other.coffea.jupyter-{user}"
    return BatchJob(
        global_job_id=f"schedd.example.org#{900 + k}.0#1", owner="cms-jovyan", accounting_group=group, group="cms.other.coffea",
        status=4, exit_code=0, final=True, request_cpus=cores, request_memory=2048.0, request_gpus=0.0,
        started=middle - wall_hours * 1800, ended=middle + wall_hours * 1800, wall=wall_hours * 3600, cpu=cpu_hours * 3600,
        memory_usage=1024.0, attributes={"AccountingGroup": group},
    )


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium driven by Playwright (whose own browser downloads are never used)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install 'af-metrics[browser]'")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageWatch:
    """Console errors and uncaught exceptions of a page, and every request it made."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))


def chart_states(page: Page) -> dict[str, dict]:
    """Per drawn figure: Plotly trace types, points in the first trace, or table rows."""
    return page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('.plot')).map(el => {
        const name = (el.closest('[data-figure]') || el).dataset.figure || el.id.replace('plot-', '');
        const traces = el.data || [];
        const first = traces[0] || {};
        const points = first.type === 'heatmap' ? first.z.flat().filter(v => v !== null).length
                                                : (first.y || []).filter(v => v !== null).length;
        return [name, {types: traces.map(t => t.type), points: points, svg: !!el.querySelector('.main-svg'),
                       tableRows: el.querySelectorAll('tbody tr').length, text: el.textContent.slice(0, 60)}];
    }))""")
