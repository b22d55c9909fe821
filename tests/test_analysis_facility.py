"""Analysis runs against the real facility: a real JupyterHub, real user servers, ``af-metrics serve``.

Identity comes from the token JupyterHub gives a user's server (read from that server's
environment, as a kernel inherits it); nothing here fakes the hub.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from af_metrics.coffea.delivery import Delivery, journal_path, wait_for_delivery
from af_metrics.coffea.push import PUSH_PATH
from af_metrics.coffea.record import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS, RunRecord
from af_metrics.demo.facility import LocalFacility, free_port
from af_metrics.ledger.schema import analysis_run_datasets, analysis_runs, users
from af_metrics.ledger.store import Ledger
from af_metrics.web.analysis import MAX_BODY_BYTES
from conftest import wait_until
from dask_support import stop_process
from facility import AfProcess, hub_env

pytestmark = pytest.mark.hub
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "nanoaod"


def sample_record(user: str = "", **changes: object) -> RunRecord:
    now = time.time()
    fields = dict(
        run_id=uuid.uuid4().hex, user=user, processor="MetHistogram", executor="futures", status="success",
        started=now - 10, ended=now, wall_seconds=10.0, events=1000, chunks=2, bytes_read=5_000_000, columns_read=3,
        process_seconds=12.0, chunk_seconds=16.0, threads=2,
        datasets=[{"name": "DYJetsToLL", "events": 1000, "bytes_read": 5_000_000, "process_seconds": 12.0, "chunks": 2}],
        chunk_duration={"counts": [0] * 6 + [2] + [0] * (len(CHUNK_SECONDS_BOUNDS) - 6)},
        chunk_events={"counts": [0, 1, 1] + [0] * (len(CHUNK_EVENTS_BOUNDS) - 2)},
    )
    return RunRecord.model_validate({**fields, **changes})


def server_token(facility: LocalFacility, user: str) -> str:
    """The JUPYTERHUB_API_TOKEN the hub gave the user's running server (what the user's kernels get)."""
    pid = next(pid for pid, owner in facility.server_pids().items() if owner == f"{user}/")
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(kv.split(b"=", 1)[1].decode() for kv in env if kv.startswith(b"JUPYTERHUB_API_TOKEN="))


def home_of(facility: LocalFacility, user: str) -> Path:
    return facility.workdir / "home" / user


@pytest.fixture
def servers(hub: LocalFacility, hub_users: Callable[[int], list[str]]) -> Callable[[int], list[tuple[str, str]]]:
    """``servers(n)``: n new users with running servers, as (name, the server's token)."""

    def start(n: int) -> list[tuple[str, str]]:
        names = hub_users(n)
        for name in names:
            conf = home_of(hub, name) / ".jupyter" / "jupyter_server_config.d"
            conf.mkdir(parents=True)  # what the packaged data file does in a real install
            (conf / "af_metrics.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {"af_metrics.jupyter_ext": True}}}))
            hub.driver.start_server(name)
        for name in names:
            hub.driver.wait_ready(name)
        return [(name, server_token(hub, name)) for name in names]

    return start


class Serve(AfProcess):
    def __init__(self, facility: LocalFacility, ledger_url: str, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        # figures in /metrics are re-read after each collection cycle: poll often enough to see a push
        super().__init__(["serve", "--port", str(self.port)], hub_env(facility, ledger_url, poll_interval=2), log)
        self.url = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {log.read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 60, what="af-metrics serve")

    def push(self, body: bytes | str, token: str | None, **headers: str) -> httpx.Response:
        auth = {"Authorization": f"token {token}"} if token is not None else {}
        return httpx.post(f"{self.url}{PUSH_PATH}", content=body, headers={**auth, **headers}, timeout=10)


def stored_runs(ledger_url: str) -> list[dict]:
    led = Ledger.open(ledger_url)
    try:
        with led.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(users.c.name.label("user"), analysis_runs).join(users, users.c.id == analysis_runs.c.user_id)
                .order_by(analysis_runs.c.id)
            )]
    finally:
        led.engine.dispose()


def test_push_is_filed_under_the_tokens_user(ledger_url: str, hub: LocalFacility, servers, tmp_path: Path) -> None:  # noqa: ANN001
    (alice, alice_token), (bob, _) = servers(2)
    record = sample_record(user=bob)  # names another user: ignored
    with Serve(hub, ledger_url, tmp_path / "serve.log") as serve:
        first = serve.push(record.model_dump_json(), alice_token)
        again = serve.push(record.model_dump_json(), None, Authorization=f"Bearer {alice_token}")
        samples = wait_until(lambda: serve_metrics(serve, alice), 30, what="analysis series in /metrics")
    assert first.status_code == 201 and first.json() == {"run_id": record.run_id, "user": alice, "stored": True}
    assert again.status_code == 200 and again.json()["stored"] is False  # a resend is a no-op
    runs = stored_runs(ledger_url)
    assert [(r["user"], r["run_id"], r["events"], r["bytes_read"], r["threads"]) for r in runs] == [
        (alice, record.run_id, 1000, 5_000_000, 2)
    ]
    assert runs[0]["events_per_thread_second"] == pytest.approx(50.0) and runs[0]["cpu_efficiency"] == pytest.approx(0.6)
    assert samples[("af_analysis_events_total", "DYJetsToLL")] == 1000
    assert samples[("af_analysis_bytes_read_total", "DYJetsToLL")] == 5_000_000


def serve_metrics(serve: Serve, user: str) -> dict[tuple[str, str], float] | None:
    from prometheus_client.parser import text_string_to_metric_families

    # figures are re-read after each collection cycle: wait for one that saw the push
    text = httpx.get(f"{serve.url}/metrics", timeout=5).text
    found = {
        (s.name, s.labels.get("dataset", "")): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples if s.labels.get("user") == user
    }
    return found if any(name.startswith("af_analysis_") for name, _ in found) else None


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_bad_pushes_reach_nothing(ledger_url: str, hub: LocalFacility, servers, tmp_path: Path) -> None:  # noqa: ANN001
    [(_, token), (_, unchecked_token)] = servers(2)
    good = sample_record().model_dump_json()
    with Serve(hub, ledger_url, tmp_path / "serve.log") as serve:
        answers = {
            "no token": serve.push(good, None).status_code,
            "invalid token": serve.push(good, "not-a-token-" + uuid.uuid4().hex).status_code,
            "service token": serve.push(good, hub.af_token).status_code,
            "oversized": serve.push(b"{" + b" " * MAX_BODY_BYTES + b"}", token).status_code,
            "not json": serve.push("{this is not json}", token).status_code,
            "negative events": serve.push(good.replace('"events":1000,', '"events":-5,', 1), token).status_code,
            "2**62 events": serve.push(good.replace('"events":1000,', f'"events":{2**62},', 1), token).status_code,
            "2**31 chunks": serve.push(good.replace('"chunks":2,', f'"chunks":{2**31},', 1), token).status_code,
            "2**31 dataset chunks": serve.push(good.replace('"chunks":2}', f'"chunks":{2**31}}}', 1), token).status_code,
            "unknown field": serve.push(good[:-1] + ',"admin":true}', token).status_code,
            "bad run id": serve.push(good.replace('"run_id":"', '"run_id":"../', 1), token).status_code,
        }
        message = serve.push("{}", token).json()["error"]
        hub.stop_hub()  # the hub cannot vouch for a token it has not seen: try again later, nothing stored
        answers["hub down"] = serve.push(good, unchecked_token).status_code
        hub.start_hub()
    assert answers == {
        "no token": 401, "invalid token": 401, "service token": 401, "oversized": 413,
        "not json": 400, "negative events": 400, "2**62 events": 400, "2**31 chunks": 400, "2**31 dataset chunks": 400,
        "unknown field": 400, "bad run id": 400, "hub down": 503,
    }
    assert message.startswith("invalid run record:") and "\n" not in message
    assert stored_runs(ledger_url) == []


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_spooled_runs_are_delivered_exactly_once_when_the_service_returns(
    ledger_url: str, hub: LocalFacility, servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    coffea = pytest.importorskip("coffea")
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema

    from af_metrics.coffea import Runner
    from af_metrics.coffea.examples import MetHistogram

    [(alice, token)] = servers(1)
    port = free_port()  # nothing listens there yet: the facility service is down
    monkeypatch.setenv("AF_METRICS_PUSH_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("AF_METRICS_ANALYSIS_DIR", str(tmp_path / "analysis"))
    runner = Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)
    fileset = {"TTbar_v15": [str(SAMPLES / "nano_tt_v15.root")]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ids = [runner(fileset, MetHistogram(), treename="Events") and runner.last_record.run_id for _ in range(2)]
    wait_for_delivery(30)  # the background push found the service down
    delivery = Delivery.from_env()
    assert [RunRecord.model_validate_json(x).run_id for x in delivery.spool.pending()] == ids
    assert delivery.flush().left == 2  # still down: kept

    with Serve(hub, ledger_url, tmp_path / "serve.log", port=port):
        result = delivery.flush()
        assert (result.sent, result.left) == (2, 0)
        # a kill between the facility's answer and the spool rewrite makes the client send again
        delivery.spool.add(journal_path(delivery.directory).read_text().splitlines()[0])
        assert delivery.flush().sent == 1
        assert delivery.flush().sent == 0
    runs = stored_runs(ledger_url)
    assert [(r["user"], r["run_id"], r["events"]) for r in runs] == [(alice, ids[0], 200), (alice, ids[1], 200)]
    assert delivery.spool.pending() == []
    led = Ledger.open(ledger_url)
    with led.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(analysis_run_datasets)).scalar_one() == 2
    led.engine.dispose()


def test_users_server_serves_only_its_users_runs(hub: LocalFacility, servers) -> None:  # noqa: ANN001
    (alice, alice_token), (bob, bob_token) = servers(2)
    delivery = Delivery(home_of(hub, alice) / ".local" / "share" / "af-metrics" / "analysis")  # the server's data dir
    delivery.deliver(sample_record(user=alice))
    delivery.deliver(sample_record(user=alice, status="failure", error="ZeroDivisionError: oops", events=0, datasets=[]))
    base = f"{hub.public_url}/user/{alice}/af-metrics"
    own = httpx.get(f"{base}/metrics", headers={"Authorization": f"token {alice_token}"}, timeout=10)
    runs = httpx.get(f"{base}/runs?limit=1", headers={"Authorization": f"token {alice_token}"}, timeout=10)
    other = httpx.get(f"{base}/metrics", headers={"Authorization": f"token {bob_token}"}, timeout=10)
    anonymous = httpx.get(f"{base}/metrics", timeout=10)
    assert own.status_code == 200
    assert f'af_analysis_events_total{{dataset="DYJetsToLL",user="{alice}"}} 1000.0' in own.text
    assert f'af_analysis_runs_total{{status="failure",user="{alice}"}} 1.0' in own.text
    assert f'af_analysis_chunk_duration_seconds_count{{user="{alice}"}} 4.0' in own.text
    assert runs.status_code == 200 and [r["status"] for r in runs.json()["runs"]] == ["failure"]
    assert other.status_code == 403 and anonymous.status_code in (302, 403)
    assert bob not in own.text


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_the_servers_extension_sends_what_the_spool_kept(ledger_url: str, hub: LocalFacility, servers, tmp_path: Path) -> None:  # noqa: ANN001
    """Runs recorded while the facility was down arrive from the user's Jupyter server by itself,
    with no further analysis: the extension's periodic flush (a real jupyter_server, alice's token)."""
    [(alice, token)] = servers(1)
    spooled = Delivery(tmp_path / "analysis").spool
    records = [sample_record(user="someone-else") for _ in range(2)]  # the token decides whose runs they are
    for record in records:
        spooled.add(record.model_dump_json())
    port = free_port()  # the facility service is down while the server starts
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"af_metrics.jupyter_ext": True}}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTER"))}
    env.update(HOME=str(tmp_path), JUPYTER_CONFIG_DIR=str(config), JUPYTERHUB_API_TOKEN=token,
               AF_METRICS_ANALYSIS_DIR=str(tmp_path / "analysis"), AF_METRICS_PUSH_URL=f"http://127.0.0.1:{port}",
               AF_METRICS_PUSH_INTERVAL="1")
    log = tmp_path / "jupyter.log"
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={free_port()}", f"--IdentityProvider.token={uuid.uuid4().hex}", f"--ServerApp.root_dir={tmp_path}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        wait_until(lambda: server.poll() is None and "af-metrics: analysis figures at" in log.read_text(), 60,
                   what="jupyter_server with the af-metrics extension")
        time.sleep(2)  # a flush or two against the service that is down: the spool keeps the runs
        assert len(spooled.pending()) == 2 and stored_runs(ledger_url) == []
        with Serve(hub, ledger_url, tmp_path / "serve.log", port=port):
            wait_until(lambda: len(stored_runs(ledger_url)) == 2, 30, what="the spooled runs at the facility")
            wait_until(lambda: spooled.pending() == [], 30, what="the spool emptied")
    finally:
        stop_process(server)
    assert sorted((r["user"], r["run_id"]) for r in stored_runs(ledger_url)) == sorted((alice, r.run_id) for r in records)
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("value, seconds", [("", 60.0), ("5", 5.0), ("0.5", 60.0), ("1e9", 60.0), ("nan", 60.0), ("soon", 60.0)])
def test_push_interval_is_checked(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, value: str, seconds: float) -> None:
    from af_metrics.jupyter_ext import ENV_PUSH_INTERVAL, flush_interval

    monkeypatch.setenv(ENV_PUSH_INTERVAL, value)
    with caplog.at_level("WARNING"):
        assert flush_interval(logging.getLogger("test")) == seconds
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ([] if value in ("", "5") else [f"af-metrics: {ENV_PUSH_INTERVAL}={value!r} is not seconds from 1 to 86400: flushing every 60 s"])
