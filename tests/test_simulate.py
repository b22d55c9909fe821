"""``af-metrics simulate``: seeded, realistic, idempotent synthetic history."""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from af_metrics.cli import cli
from af_metrics.importer import import_sessions
from af_metrics.ledger.schema import INF_LE, session_hours, sessions, spawn_buckets, spawns, users
from af_metrics.ledger.store import Ledger
from af_metrics.simulate import SPAWN_BUCKETS, Plan, Window, simulate, user_history
from af_metrics.timeutil import day_of, zone

TZ = "America/Chicago"


def run_simulate(url: str, *args: str):  # noqa: ANN201 - click's Result
    return CliRunner().invoke(cli, ["simulate", "--ledger", url, *args], env={"AF_METRICS_TIMEZONE": TZ})


def history(url: str) -> dict[str, list[tuple]]:
    """The simulated history with ledger ids replaced by user names: comparable across ledgers."""
    ledger = Ledger.open(url, tz=TZ)
    try:
        with ledger.engine.connect() as conn:
            name = {uid: n for uid, n in conn.execute(sa.select(users.c.id, users.c.name))}
            sid = {i: (name[u], s, st) for i, u, s, st in conn.execute(sa.select(sessions.c.id, sessions.c.user_id, sessions.c.server, sessions.c.started))}
            return {
                "users": sorted(conn.execute(sa.select(users.c.name, users.c.created, users.c.first_seen, users.c.last_seen)).all()),
                "sessions": sorted(
                    (name[r.user_id], r.server, r.profile, r.started, r.ended, r.source)
                    for r in conn.execute(sa.select(sessions))
                ),
                "spawns": sorted(
                    (name[r.user_id], r.server, r.profile, r.started, r.outcome, r.duration) for r in conn.execute(sa.select(spawns))
                ),
                "hours": sorted((sid[r.session_id], r.hour_start, r.day, r.how, r.seconds) for r in conn.execute(sa.select(session_hours))),
                "buckets": sorted(tuple(r) for r in conn.execute(sa.select(spawn_buckets))),
            }
    finally:
        ledger.engine.dispose()


def test_same_seed_same_history_other_seed_other_history(tmp_path: Path) -> None:
    args = ["--users", "120", "--days", "28", "--end", "2025-03-30"]
    urls = [f"sqlite:///{tmp_path / f'{i}.db'}" for i in range(3)]
    for url, seed in zip(urls, ["7", "7", "8"]):
        result = run_simulate(url, *args, "--seed", seed)
        assert result.exit_code == 0, result.output
        assert "simulated 120 users from 2025-03-03 to 2025-03-30" in result.stdout
    a, b, c = (history(url) for url in urls)
    assert a["sessions"] and a["spawns"] and a["hours"] and a["buckets"]
    assert a == b
    assert a["sessions"] != c["sessions"] and a["buckets"] != c["buckets"]


def test_history_looks_like_a_facility() -> None:
    """Weekly and daily rhythm, midnight-spanning sessions, churn, failures, unequal profiles."""
    plan = Plan(users=2000, days=140, end=dt.date(2025, 6, 29), seed=3)
    window = Window.of(plan, TZ)
    people = [user_history(plan, window, i) for i in range(plan.users)]
    all_sessions = [s for p in people for s in p.sessions]
    all_spawns = [s for p in people for s in p.spawns]

    active: dict[int, set[str]] = defaultdict(set)
    for s in all_sessions:
        active[day_of(s.started, TZ)].add(s.user)
    joined = sorted(min(s.started for s in p.sessions) for p in people)
    weekday, weekend, share = [], [], []
    for d in range(window.first + 28, window.first + plan.days):  # after the launch weeks
        date = dt.date.fromordinal(d)
        (weekday if date.weekday() < 5 else weekend).append(len(active[d]))
        if date.weekday() < 5:
            registered = sum(j < window.starts[d - window.first] + 86400 for j in joined)
            share.append(len(active[d]) / registered)
    assert statistics.mean(weekday) > 2.5 * statistics.mean(weekend)
    assert 0.03 < statistics.median(share) < 0.13  # a few per cent to ~10 % of registered users

    local_hours = Counter(dt.datetime.fromtimestamp(s.started, zone(TZ)).hour for s in all_sessions)
    assert local_hours[10] + local_hours[14] > 10 * (local_hours[3] + local_hours[4])

    across = [s for s in all_sessions if day_of(s.started, TZ) != day_of(s.ended, TZ)]
    assert 0.01 < len(across) / len(all_sessions) < 0.2
    lengths = sorted(s.ended - s.started for s in all_sessions)
    assert lengths[len(lengths) // 2] < 2 * 3600 < 4 * 3600 < lengths[int(len(lengths) * 0.95)]

    days_active = Counter(s.user for s in all_sessions)
    single = sum(1 for p in people if len({day_of(s.started, TZ) for s in p.sessions}) == 1)
    assert 0.1 < single / plan.users < 0.6  # many come once; the others return
    assert max(days_active.values()) > 40

    failures = sum(s.outcome == "failure" for s in all_spawns)
    assert 0.01 < failures / len(all_spawns) < 0.06
    profiles = Counter(s.profile for s in all_sessions).most_common()
    assert len(profiles) >= 5 and profiles[0][1] > 4 * profiles[-1][1]
    assert 0 < sum(s.server != "" for s in all_sessions) < 0.2 * len(all_sessions)


def test_ledger_rows_agree_and_a_second_run_adds_nothing(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url, tz=TZ)
    plan = Plan(users=80, days=21, end=dt.date(2025, 1, 12), seed=1)
    now = dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc).timestamp()
    first = simulate(ledger, plan, now=now)
    assert first.sessions == first.new_sessions > 0
    before = history(ledger_url)
    again = simulate(ledger, plan, now=now)
    assert again.new_sessions == 0 and again.sessions == first.sessions
    assert history(ledger_url) == before

    with ledger.engine.connect() as conn:
        # every session's hours add up to its length, split at local midnight where it spans one
        hours = dict(conn.execute(sa.select(session_hours.c.session_id, sa.func.sum(session_hours.c.seconds)).group_by(session_hours.c.session_id)).all())
        rows = conn.execute(sa.select(sessions.c.id, sessions.c.started, sessions.c.ended, sessions.c.source)).all()
        assert {source for *_, source in rows} == {"simulate"}
        for sid, started, ended, _ in rows:
            assert abs(hours[sid] - (ended - started)) < 1e-3
        spanning = conn.execute(
            sa.select(session_hours.c.session_id).group_by(session_hours.c.session_id).having(sa.func.count(sa.distinct(session_hours.c.day)) > 1)
        ).all()
        assert spanning
        # the hub's histogram: +Inf buckets count every settled spawn, by status
        outcomes = dict(conn.execute(sa.select(spawns.c.outcome, sa.func.count()).group_by(spawns.c.outcome)).all())
        inf = dict(
            conn.execute(sa.select(spawn_buckets.c.status, sa.func.sum(spawn_buckets.c.count)).where(spawn_buckets.c.le == INF_LE).group_by(spawn_buckets.c.status)).all()
        )
        assert inf == {status: float(n) for status, n in outcomes.items()} and set(inf) == {"success", "failure"}
        les = set(conn.execute(sa.select(spawn_buckets.c.le).distinct()).scalars())
        assert les <= {min(le, INF_LE) for le in SPAWN_BUCKETS}
        # the hub created each user at their first spawn attempt
        created = conn.execute(
            sa.select(users.c.created, sa.select(sa.func.min(spawns.c.started)).where(spawns.c.user_id == users.c.id).scalar_subquery())
        ).all()
        assert len(created) == plan.users and all(c == first_spawn for c, first_spawn in created)
    ledger.engine.dispose()


def test_history_up_to_now_leaves_sessions_running(tmp_path: Path) -> None:
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", tz=TZ)
    plan = Plan(users=300, days=7, end=dt.date(2025, 3, 5), seed=2)
    now = dt.datetime(2025, 3, 5, 15, 0, tzinfo=zone(TZ)).timestamp()
    simulate(ledger, plan, now=now)
    with ledger.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.max(sessions.c.started))).scalar_one() <= now
        running = conn.execute(sa.select(sessions.c.last_seen).where(sessions.c.ended.is_(None))).scalars().all()
        assert running and set(running) == {now}
        assert conn.execute(sa.select(sa.func.max(sessions.c.ended))).scalar_one() <= now


def test_refuses_a_ledger_with_real_sessions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    csv = tmp_path / "s.csv"
    csv.write_text("user,server,profile,start,end\nalice,,,2025-01-05T09:00:00Z,2025-01-05T10:00:00Z\n")
    ledger = Ledger.open(url, tz=TZ)
    import_sessions(ledger, csv)
    before = history(url)
    result = run_simulate(url, "--users", "5", "--days", "3", "--end", "2025-01-10")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "Error: the ledger already holds 1 real sessions: simulate into a new ledger (--ledger URL)" in result.stderr
    assert history(url) == before


def test_days_outside_the_calendar_are_refused(tmp_path: Path) -> None:
    result = run_simulate(f"sqlite:///{tmp_path / 'l.db'}", "--users", "5", "--days", "10", "--end", "2000-01-05")
    assert result.exit_code != 0
    assert "Error: the simulated days must lie within the ledger's calendar, 2000-01-01 to 2100-12-31" in result.stderr
