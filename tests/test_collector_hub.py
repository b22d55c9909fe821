"""Collector cycles against the real JupyterHub, on SQLite and PostgreSQL ledgers."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from facility import LedgerView, assert_hours_cover, hub_settings, hub_time, run_cycle

from af_metrics.collector import Collector
from af_metrics.demo.spawner import PROFILES
from af_metrics.ledger.schema import spawn_buckets

from conftest import wait_until

pytestmark = pytest.mark.hub


def test_sessions_spawns_and_stops(hub, hub_users, ledger, ledger_url) -> None:  # noqa: ANN001
    alice, bob = hub_users(2)
    drive = hub.driver
    collector = Collector(hub_settings(hub, ledger_url), ledger)
    view = LedgerView(ledger, [alice, bob])
    run_cycle(collector)  # first look: users listed, the hub's spawn histogram baseline taken
    assert {n: u["created"] for n, u in view.users().items()} == {
        n: hub_time(drive.user(n), "created") for n in (alice, bob)
    }

    drive.start_server(alice, profile="cms-coffea")
    drive.start_server(alice, "analysis", profile="atlas-columnar")
    drive.start_server(bob, profile="broken-image")
    # the broken image is "pulled" for a few seconds before its command fails: a poll sees it pending
    wait_until(
        lambda: run_cycle(collector) or [s["outcome"] for s in view.spawns() if s["user"] == bob] == ["pending"],
        timeout=PROFILES["broken-image"].pull_seconds + 10,
        what="the broken spawn to be seen pending",
    )
    default = drive.wait_ready(alice)
    named = drive.wait_ready(alice, "analysis")
    failed = drive.wait_stopped(bob)
    run_cycle(collector)

    got = [(s["user"], s["server"], s["profile"], s["started"], s["ended"]) for s in view.sessions()]
    assert got == [
        (alice, "", "cms-coffea", hub_time(default, "started"), None),
        (alice, "analysis", "atlas-columnar", hub_time(named, "started"), None),
    ]
    outcomes = {(s["user"], s["server"]): (s["outcome"], s["profile"]) for s in view.spawns()}
    assert outcomes == {
        (alice, ""): ("success", "cms-coffea"),
        (alice, "analysis"): ("success", "atlas-columnar"),
        (bob, ""): ("failure", "broken-image"),
    }
    (broken,) = [s for s in view.spawns() if s["user"] == bob]
    assert broken["finished"] == hub_time(failed, "last_activity")  # when the hub gave up
    assert broken["duration"] >= PROFILES["broken-image"].pull_seconds
    with ledger.engine.connect() as conn:
        statuses = dict(
            conn.execute(sa.select(spawn_buckets.c.status, sa.func.sum(spawn_buckets.c.count)).group_by(spawn_buckets.c.status)).all()
        )
    assert statuses.get("success", 0) >= 2 * 2  # two spawns, counted in +Inf and in a finite bucket at least
    assert statuses.get("error", 0) >= 1

    # stopping the named server ends its session at the hub's stop time
    drive.stop_server(alice, "analysis")
    stopped = drive.wait_stopped(alice, "analysis")
    run_cycle(collector)
    by_server = {s["server"]: s for s in view.sessions()}
    assert by_server["analysis"]["ended"] == hub_time(stopped, "last_activity")
    assert by_server["analysis"]["end_reason"] == "stopped"
    assert by_server[""]["ended"] is None
    for session in by_server.values():
        assert_hours_cover(view, session)


def test_killed_and_removed_servers_are_closed(hub, hub_users, ledger, ledger_url) -> None:  # noqa: ANN001
    carol, dave = hub_users(2)
    drive = hub.driver
    collector = Collector(hub_settings(hub, ledger_url), ledger)
    view = LedgerView(ledger, [carol, dave])
    for user in (carol, dave):
        drive.start_server(user)
    for user in (carol, dave):
        drive.wait_ready(user)
    run_cycle(collector)
    assert [(s["user"], s["ended"]) for s in view.sessions()] == [(carol, None), (dave, None)]

    killed_at = time.time()
    hub.kill_server(carol)  # the server crashes; the hub notices on its next poll of the process
    noticed = drive.wait_stopped(carol, timeout=30)
    drive.delete_user(dave)  # the user is removed: the server vanishes from the hub altogether
    deleted_at = time.time()
    run_cycle(collector)

    ends = {s["user"]: s for s in view.sessions()}
    assert ends[carol]["end_reason"] == "stopped"
    assert ends[carol]["ended"] == hub_time(noticed, "last_activity")
    assert ends[carol]["ended"] >= killed_at
    assert ends[dave]["end_reason"] == "vanished"
    assert ends[dave]["started"] <= ends[dave]["ended"] <= deleted_at
    for session in ends.values():
        assert_hours_cover(view, session)


def test_spawns_that_fail_between_two_polls_are_attributed(hub, hub_users, ledger, ledger_url) -> None:  # noqa: ANN001
    erin, fred = hub_users(2)
    drive = hub.driver
    collector = Collector(hub_settings(hub, ledger_url), ledger)
    view = LedgerView(ledger, [erin, fred])
    drive.start_server(fred, profile="minimal")
    ready = drive.wait_ready(fred)
    run_cycle(collector)  # the hub's spawn histogram baseline; fred's server runs

    # with no poll in between: two spawns of erin start and fail, fred stops his server
    drive.start_server(erin, profile="broken-image")
    drive.start_server(erin, "gpu", profile="broken-image")
    drive.stop_server(fred)
    failed = {"": drive.wait_stopped(erin), "gpu": drive.wait_stopped(erin, "gpu")}
    drive.wait_stopped(fred)
    run_cycle(collector)

    spawns = [(s["user"], s["server"], s["profile"], s["outcome"], s["started"]) for s in view.spawns()]
    assert spawns == [
        (erin, "", "broken-image", "failure", hub_time(failed[""], "last_activity")),
        (erin, "gpu", "broken-image", "failure", hub_time(failed["gpu"], "last_activity")),
        (fred, "", "minimal", "success", hub_time(ready, "started")),
    ]
    run_cycle(collector)  # the hub still holds both failures: found again, written once
    assert len(view.spawns()) == 3
