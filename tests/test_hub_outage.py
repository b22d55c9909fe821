"""The hub goes down and comes back under a running ``af-metrics serve``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from facility import LedgerView, ServeProcess, assert_hours_cover, hub_env, hub_time

from af_metrics.ledger.store import Ledger, engine_for

from conftest import wait_until

pytestmark = pytest.mark.hub


class SourceRecorder(threading.Thread):
    """Samples af_source_up / af_source_errors_total of the hub source from /metrics."""

    def __init__(self, serve: ServeProcess) -> None:
        super().__init__(daemon=True)
        self.serve = serve
        self.samples: list[tuple[float, float | None, float | None]] = []  # (monotonic, up, errors)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            samples = self.serve.metrics()
            if samples is not None:
                key = (("source", "jupyterhub"),)
                self.samples.append((time.monotonic(), samples.get(("af_source_up", key)), samples.get(("af_source_errors_total", key))))

    def failure_times(self) -> list[float]:
        """When the error counter went up."""
        return [t for (t, _, n), (_, _, before) in zip(self.samples[1:], self.samples) if n is not None and before is not None and n > before]


def test_hub_outage_backoff_and_contiguous_sessions(hub, hub_users, ledger_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    keeps, dies = hub_users(2)
    drive = hub.driver
    for user in (keeps, dies):
        drive.start_server(user)
    started = {user: hub_time(drive.wait_ready(user), "started") for user in (keeps, dies)}
    view = LedgerView(Ledger(engine_for(ledger_url)), [keeps, dies])
    env = hub_env(hub, ledger_url, poll_interval=0.5, backoff_max=4, request_timeout=3)

    with ServeProcess(env, tmp_path / "serve.log") as serve:
        wait_until(
            lambda: serve.source("af_source_up") == 1 and len(view.sessions()) == 2, timeout=60, what="both sessions open"
        )
        recorder = SourceRecorder(serve)
        recorder.start()
        down_at = time.time()
        hub.stop_hub()
        hub.kill_server(dies)  # this server dies while the hub is down
        wait_until(lambda: len(recorder.failure_times()) >= 4, timeout=40, what="four failed polls")
        assert serve.source("af_source_up") == 0
        hub.start_hub()
        up_at = time.time()
        stopped = drive.wait_stopped(dies, timeout=30)  # the hub finds it gone when it comes back
        wait_until(
            lambda: serve.source("af_source_up") == 1 and all(s["last_seen"] > up_at for s in view.sessions() if s["ended"] is None)
            and any(s["ended"] for s in view.sessions()),
            timeout=30,
            what="the collector to catch up after the outage",
        )
        recorder.done.set()
        recorder.join(5)
        assert serve.terminate() == 0

    times = recorder.failure_times()
    gaps = [b - a for a, b in zip(times, times[1:4])]
    assert gaps[0] < gaps[1] < gaps[2], f"retries did not back off: gaps {gaps}"

    sessions = {s["user"]: s for s in view.sessions()}
    assert len(view.sessions()) == 2, "a session was split or duplicated by the outage"
    survivor, dead = sessions[keeps], sessions[dies]
    assert (survivor["started"], survivor["ended"]) == (started[keeps], None)
    assert survivor["last_seen"] > up_at
    assert_hours_cover(view, survivor)  # one contiguous run across the outage
    assert dead["started"] == started[dies]
    assert dead["end_reason"] == "stopped"
    assert dead["ended"] == hub_time(stopped, "last_activity")
    assert dead["ended"] >= down_at
    assert_hours_cover(view, dead)
