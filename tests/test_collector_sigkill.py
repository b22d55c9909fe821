"""``af-metrics collect`` killed with SIGKILL at many points and restarted loses and duplicates nothing.

Some lives are killed from outside at a time after a committed cycle, others kill themselves
from inside a write transaction (tests/faults/sitecustomize.py) after their n-th write.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from facility import AfProcess, LedgerView, assert_hours_cover, hub_env, hub_time

from af_metrics.ledger.store import Ledger, engine_for

from conftest import wait_until

pytestmark = pytest.mark.hub

FAULTS = Path(__file__).with_name("faults")
# how each collector life ends: ("after", s) killed s seconds after a committed cycle (None: while
# still starting); ("write", n) killed by itself inside the transaction of its n-th session write
LIVES = [("after", None), ("write", 1), ("after", 0.0), ("write", 3), ("after", 0.07), ("write", 2), ("after", 0.2), ("write", 7)]


def test_sigkilled_collector_loses_and_duplicates_nothing(hub, hub_users, ledger_url: str, tmp_path: Path) -> None:
    names = hub_users(3)
    drive = hub.driver
    runs: dict[tuple[str, str, float], float | None] = {}  # every server run the hub made -> its stop time

    def start(user: str, server: str = "", profile: str = "minimal") -> None:
        drive.start_server(user, server, profile)
        runs[(user, server, hub_time(drive.wait_ready(user, server), "started"))] = None

    def stop(user: str, server: str = "") -> None:
        (key,) = [k for k, end in runs.items() if k[:2] == (user, server) and end is None]
        drive.stop_server(user, server)
        runs[key] = hub_time(drive.wait_stopped(user, server), "last_activity")

    # what happens on the hub between two collector lives (each change is seen by at least one)
    changes = [
        lambda: start(names[0]),
        lambda: start(names[1], "analysis", "cms-coffea"),
        lambda: start(names[2], profile="atlas-columnar"),
        lambda: stop(names[0]),
        lambda: start(names[0], profile="cms-coffea"),  # a second run of the same server
        lambda: stop(names[1], "analysis"),
        lambda: None,
        lambda: stop(names[2]),
    ]
    env = hub_env(hub, ledger_url, poll_interval=0.05)
    log = tmp_path / "collect.log"
    # read without migrating: creating the ledger is the collector's job, killed or not
    view = LedgerView(Ledger(engine_for(ledger_url)), names)
    for (how, when), change in zip(LIVES, changes, strict=True):
        launched = time.time()
        if how == "write":
            faulty = {**env, "AF_TEST_KILL_AT_WRITE": str(when), "PYTHONPATH": os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))}
            with AfProcess(["collect"], faulty, log) as collector:
                assert collector.proc.wait(60) == -signal.SIGKILL, "the collector did not reach the write it was to die in"
        else:
            with AfProcess(["collect"], env, log) as collector:
                if when is None:
                    time.sleep(0.6)  # importing, opening or migrating the ledger
                else:
                    wait_until(lambda: collector.running() and view.last_commit() > launched, timeout=60, what="a committed cycle")
                    time.sleep(when)
                collector.kill()
        change()

    # a last life, long enough to see the hub as it is now
    launched = time.time()
    with AfProcess(["collect"], env, log) as collector:
        wait_until(lambda: collector.running() and view.last_commit() > launched, timeout=60, what="a committed cycle")

    sessions = view.sessions()
    assert sorted((s["user"], s["server"], s["started"]) for s in sessions) == sorted(runs), "lost or duplicated runs"
    for s in sessions:
        assert s["ended"] == runs[(s["user"], s["server"], s["started"])], s
        assert s["end_reason"] == (None if s["ended"] is None else "stopped")
        assert_hours_cover(view, s)
    spawns = view.spawns()
    assert sorted((s["user"], s["server"], s["started"]) for s in spawns) == sorted(runs)
    assert {s["outcome"] for s in spawns} == {"success"}
    assert {n: u["created"] for n, u in view.users().items()} == {n: hub_time(drive.user(n), "created") for n in names}
