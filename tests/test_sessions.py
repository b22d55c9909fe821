"""Session decisions (pure) and their idempotent application to the ledger, on both backends."""

from __future__ import annotations

import sqlalchemy as sa

from af_metrics.facts import HubSnapshot, ServerSeen, ServerStopped
from af_metrics.ledger.schema import session_hours, sessions, spawns
from af_metrics.sessions import OpenRun, decide, users_to_check

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def running(user: str, started: float, server: str = "", activity: float | None = None, ready: bool = True) -> ServerSeen:
    return ServerSeen(user, server, started, activity, ready, None if ready else "spawn", "cms-image")


def test_running_server_opens_a_session_and_a_successful_spawn() -> None:
    d = decide(HubSnapshot(T0 + 60, servers=[running("alice", T0, activity=T0 + 50)]), [], [])
    assert [(s.user, s.started, s.profile) for s in d.seen] == [("alice", T0, "cms-image")]
    assert [(s.outcome, s.started) for s in d.spawns] == [("success", T0)]
    assert d.ended == []


def test_stopped_server_ends_at_hub_stop_time() -> None:
    run = OpenRun("alice", "", T0, T0 + 100, T0 + 120)
    snap = HubSnapshot(T0 + 300, stopped=[ServerStopped("alice", "", T0 + 200)], users_checked={"alice"})
    assert users_to_check(HubSnapshot(T0 + 300), [run], []) == {"alice"}
    d = decide(snap, [run], [])
    assert [(e.ended, e.reason) for e in d.ended] == [(T0 + 200, "stopped")]


def test_vanished_server_ends_at_last_observed_activity() -> None:
    run = OpenRun("bob", "gpu", T0, T0 + 100, T0 + 500)
    d = decide(HubSnapshot(T0 + 600, users_checked={"bob"}), [run], [])
    assert [(e.ended, e.reason) for e in d.ended] == [(T0 + 100, "vanished")]


def test_unasked_user_is_not_closed() -> None:
    run = OpenRun("bob", "", T0, T0 + 100, T0 + 500)
    assert decide(HubSnapshot(T0 + 600), [run], []).ended == []


def test_restarted_server_replaces_the_old_session() -> None:
    run = OpenRun("carol", "", T0, T0 + 40, T0 + 60)
    d = decide(HubSnapshot(T0 + 90, servers=[running("carol", T0 + 70)]), [run], [])
    assert [(e.key, e.ended, e.reason) for e in d.ended] == [(("carol", "", T0), T0 + 40, "replaced")]
    assert [s.started for s in d.seen] == [T0 + 70]


def test_pending_spawn_that_disappears_is_a_failure_with_duration() -> None:
    pending = OpenRun("dave", "", T0, None, T0)
    snap = HubSnapshot(T0 + 30, stopped=[ServerStopped("dave", "", T0 + 12)], users_checked={"dave"})
    d = decide(snap, [], [pending])
    assert [(s.outcome, s.duration) for s in d.spawns] == [("failure", 12.0)]


def test_poll_applied_twice_writes_once_and_spans_midnight(ledger) -> None:  # noqa: ANN001
    late = T0 - 1800  # 23:30 the day before
    snap = HubSnapshot(T0 + 1800, servers=[running("alice", late, activity=T0 + 1700), running("bob", T0, "named")])
    for _ in range(2):
        open_s, pending = ledger.open_runs()
        ledger.apply(decide(snap, open_s, pending), snap.observed_at)
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sessions)).scalar_one() == 2
        assert conn.execute(sa.select(sa.func.count()).select_from(spawns)).scalar_one() == 2
        days = conn.execute(
            sa.select(session_hours.c.day, sa.func.sum(session_hours.c.seconds)).group_by(session_hours.c.day).order_by(session_hours.c.day)
        ).all()
    # alice: 1800 s on Dec 31 and 1800 s on Jan 1; bob: 1800 s on Jan 1
    assert [round(s) for _, s in days] == [1800, 3600]
    assert days[1][0] - days[0][0] == 1

    # the server stops: the session ends at the stop time and its hours are trimmed to it
    open_s, pending = ledger.open_runs()
    stop = HubSnapshot(T0 + 3600, servers=[running("bob", T0, "named")], stopped=[ServerStopped("alice", "", T0 + 900)], users_checked={"alice"})
    ledger.apply(decide(stop, open_s, pending), stop.observed_at)
    ledger.apply(decide(stop, *ledger.open_runs()), stop.observed_at)
    with ledger.engine.connect() as conn:
        alice = conn.execute(sa.select(sessions.c.ended, sessions.c.end_reason).where(sessions.c.started == late)).one()
        total = conn.execute(
            sa.select(sa.func.sum(session_hours.c.seconds)).join(sessions, sessions.c.id == session_hours.c.session_id).where(sessions.c.started == late)
        ).scalar_one()
    assert alice == (T0 + 900, "stopped")
    assert round(total) == 2700


def test_failed_spawn_being_stopped_is_no_session() -> None:
    stopping = ServerSeen("erin", "", T0, T0, False, "stop", "broken-image")
    d = decide(HubSnapshot(T0 + 5, servers=[stopping]), [], [])
    assert d.seen == []
    assert [(s.outcome, s.started) for s in d.spawns] == [("pending", T0)]
    # next poll: gone, with the hub's stop time: a failed spawn, still no session
    gone = HubSnapshot(T0 + 35, stopped=[ServerStopped("erin", "", T0 + 8)], users_checked={"erin"})
    d2 = decide(gone, [], [OpenRun("erin", "", T0, None, T0)])
    assert d2.seen == [] and [(s.outcome, s.duration) for s in d2.spawns] == [("failure", 8.0)]


def test_running_server_being_stopped_stays_open() -> None:
    stopping = ServerSeen("erin", "", T0, T0 + 50, False, "stop", "cms")
    d = decide(HubSnapshot(T0 + 60, servers=[stopping]), [OpenRun("erin", "", T0, T0 + 40, T0 + 30)], [])
    assert [(s.started, s.last_activity) for s in d.seen] == [(T0, T0 + 50)]
    assert d.ended == [] and d.spawns == []


def test_late_poll_neither_reopens_nor_moves_times_back(ledger) -> None:  # noqa: ANN001
    early = HubSnapshot(T0 + 60, servers=[running("frank", T0, activity=T0 + 50)])
    late = HubSnapshot(T0 + 120, servers=[running("frank", T0, activity=T0 + 110)])
    closing = HubSnapshot(T0 + 200, stopped=[ServerStopped("frank", "", T0 + 150)], users_checked={"frank"})
    for snap in (early, late, closing):
        ledger.apply(decide(snap, *ledger.open_runs()), snap.observed_at)
    ledger.apply(decide(early, [], []), early.observed_at)  # the early poll replayed after the close
    with ledger.engine.connect() as conn:
        row = conn.execute(sa.select(sessions.c.ended, sessions.c.end_reason, sessions.c.last_seen, sessions.c.last_activity)).one()
    assert tuple(row) == (T0 + 150, "stopped", T0 + 120, T0 + 110)
