"""A realistic synthetic history (``af-metrics simulate``): for demos, tests and benchmarks.

The model, per user, drawn from a generator seeded by (seed, user number) so the same
arguments give the same history whatever the batching:

- joining: a launch cohort, steady growth (more joiners later) and tutorial days that
  bring bursts of newcomers, most of whom never come back;
- kinds of users: tourists (days), occasional users (months) and regulars (most of the
  year); churn after a lifetime drawn per user, and some come back after a break;
- weekly rhythm (weekends quiet), a year-end lull, and working hours in the facility's time
  zone (morning and afternoon peaks, some evenings, so some sessions run past midnight);
- sessions: one to three a day, log-normal length (median 75 min, some for many hours);
  profiles of unequal popularity, each user with a favourite; a few users with named servers;
- spawns: every session starts with a successful spawn; about 3 % of attempts fail (more
  for the GPU image), quickly or by time-out, after which the user mostly retries.
  The hub's spawn-duration histogram increase is recorded per hour, with JupyterHub's
  default buckets.

With 10,000 users over 365 days about 3-10 % of registered users are active on a weekday.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from af_metrics.ledger.schema import INF_LE, sessions, users
from af_metrics.ledger.store import Ledger, SessionRecord, SpawnRecord
from af_metrics.timeutil import day_of, day_start

SOURCE = "simulate"
SPAWN_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600, math.inf)  # JupyterHub's default
PROFILES = {  # name: popularity
    "coffea-base": 38,
    "coffea-dask-cms": 22,
    "root-cpp": 13,
    "atlas-analysisbase": 10,
    "gpu-ml": 8,
    "legacy-el7": 6,
    "julia": 3,
}
GPU_PROFILE = "gpu-ml"
NAMED_SERVERS = ("analysis", "gpu", "scratch")
WEEKDAY_FACTOR = (1.0, 1.05, 1.05, 1.0, 0.8, 0.18, 0.15)  # Monday first
BATCH_USERS = 250
CALENDAR = (dt.date(2000, 1, 1), dt.date(2100, 12, 31))  # the days the ledger's calendar table holds


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of user: chance of being active on an ordinary weekday, mean lifetime, comeback."""

    name: str
    daily: float
    lifetime: float  # days
    comeback: float


TOURIST = Kind("tourist", 0.25, 7.0, 0.05)
OCCASIONAL = Kind("occasional", 0.08, 120.0, 0.3)
REGULAR = Kind("regular", 0.26, 400.0, 0.5)


@dataclass(frozen=True, slots=True)
class Plan:
    users: int
    days: int
    end: dt.date  # last simulated day (facility-local), included
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Window:
    """The simulated days: local midnights, activity factors, tutorial days."""

    first: int  # date ordinal of the first day
    starts: tuple[float, ...]
    factor: tuple[float, ...]
    tutorials: tuple[int, ...]  # day indexes

    @classmethod
    def of(cls, plan: Plan, tz: str) -> "Window":
        first = plan.end.toordinal() - plan.days + 1
        dates = [dt.date.fromordinal(first + i) for i in range(plan.days)]
        rng = random.Random(f"{plan.seed}:facility")
        weekdays = [i for i, d in enumerate(dates) if d.weekday() < 5] or [0]
        tutorials = sorted(rng.choice(weekdays) for _ in range(max(1, plan.days // 45)))
        return cls(
            first=first,
            starts=tuple(day_start(first + i, tz) for i in range(plan.days)),
            factor=tuple(WEEKDAY_FACTOR[d.weekday()] * _season(d) for d in dates),
            tutorials=tuple(tutorials),
        )


@dataclass(slots=True)
class UserHistory:
    name: str
    sessions: list[SessionRecord] = field(default_factory=list)
    spawns: list[SpawnRecord] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    users: int = 0
    sessions: int = 0
    new_sessions: int = 0
    spawns: int = 0
    failures: int = 0


class SimulateError(ValueError):
    """The simulation cannot run as asked; one line."""


def _season(day: dt.date) -> float:
    """The year-end lull."""
    return 0.35 if (day.month == 12 and day.day >= 22) or (day.month == 1 and day.day <= 2) else 1.0


def user_name(index: int) -> str:
    return f"user{index:05d}"


def user_history(plan: Plan, window: Window, index: int) -> UserHistory:
    """Everything one user does in the window; depends only on (seed, index) and the window."""
    rng = random.Random(f"{plan.seed}:user:{index}")
    history = UserHistory(user_name(index))
    kind, join = _joining(rng, plan.days, window.tutorials)
    eagerness = rng.lognormvariate(0.0, 0.4)
    favourite = rng.choices(list(PROFILES), list(PROFILES.values()))[0]
    named = 0.4 if rng.random() < 0.15 else 0.0
    busy: dict[str, float] = {}  # server -> end of its last session
    for day in _active_days(rng, kind, join, eagerness, window):
        day_end = window.starts[day] + 86400.0
        t = window.starts[day] + _start_hour(rng) * 3600.0
        for _ in range(1 + (rng.random() < 0.2) + (rng.random() < 0.04)):
            if t >= day_end:
                break
            server = rng.choice(NAMED_SERVERS) if rng.random() < named else ""
            profile = favourite if rng.random() < 0.85 else rng.choices(list(PROFILES), list(PROFILES.values()))[0]
            ended = _session(rng, history, server, profile, t, busy.get(server, 0.0), must_start=day == join)
            if ended is not None:
                busy[server] = ended
                t = ended
            t += rng.lognormvariate(math.log(5400.0), 0.8)
    return history


def _joining(rng: random.Random, days: int, tutorials: tuple[int, ...]) -> tuple[Kind, int]:
    """Kind of user and day index of joining."""
    r = rng.random()
    if r < 0.25:  # tutorial newcomers: mostly tourists
        return (TOURIST if rng.random() < 0.6 else _kind(rng)), rng.choice(tutorials)
    if r < 0.40:  # the launch cohort
        return _kind(rng), rng.randrange(min(days, 14))
    return _kind(rng), min(days - 1, int(days * math.sqrt(rng.random())))  # growth: more joiners later


def _kind(rng: random.Random) -> Kind:
    r = rng.random()
    return TOURIST if r < 0.35 else OCCASIONAL if r < 0.75 else REGULAR


def _active_days(rng: random.Random, kind: Kind, join: int, eagerness: float, window: Window) -> Iterator[int]:
    """The join day, then days of activity during each spell of use (a comeback is a second spell)."""
    yield join
    spells = [(join + 1, join + 1 + rng.expovariate(1.0 / kind.lifetime))]
    if rng.random() < kind.comeback:
        back = spells[0][1] + rng.expovariate(1.0 / 60.0)
        spells.append((back, back + rng.expovariate(2.0 / kind.lifetime)))
    days = len(window.starts)
    for lo, hi in spells:
        for day in range(math.ceil(lo), min(days, math.ceil(hi))):
            if rng.random() < min(0.95, kind.daily * eagerness * window.factor[day]):
                yield day


def _start_hour(rng: random.Random) -> float:
    """Local start time: a morning peak, an afternoon peak after lunch, some evenings."""
    r = rng.random()
    hour = rng.gauss(10.3, 1.6) if r < 0.5 else rng.gauss(14.8, 1.8) if r < 0.86 else rng.gauss(20.5, 1.8)
    return hour % 24.0


def _session(rng: random.Random, history: UserHistory, server: str, profile: str, t: float, busy_until: float, must_start: bool) -> float | None:
    """Spawn (perhaps failing first) and run one session from ``t``; its end, or None if none ran."""
    if t < busy_until:
        return None  # that server is still running: the user works in it
    gpu = profile == GPU_PROFILE
    if rng.random() < (0.08 if gpu else 0.025):
        failed_after = 300.0 if rng.random() < 0.4 else rng.lognormvariate(math.log(3.0), 0.8)
        history.spawns.append(SpawnRecord(history.name, server, profile, round(t, 3), "failure", round(failed_after, 3), SOURCE))
        if not must_start and rng.random() < 0.3:
            return None  # gave up for now
        t += failed_after + rng.uniform(20.0, 180.0)
    spawn = rng.lognormvariate(math.log(45.0 if gpu else 8.0), 0.6)
    length = min(36 * 3600.0, max(120.0, rng.lognormvariate(math.log(75 * 60.0), 1.0)))
    started, ended = round(t, 3), round(t + spawn + length, 3)
    history.spawns.append(SpawnRecord(history.name, server, profile, started, "success", round(spawn, 3), SOURCE))
    history.sessions.append(SessionRecord(history.name, server, profile, started, ended, SOURCE))
    return ended


def clip(history: UserHistory, now: float) -> None:
    """Nothing after ``now``: later sessions and spawns are dropped, sessions spanning it still run."""
    history.sessions = [
        s if s.ended is None or s.ended <= now else SessionRecord(s.user, s.server, s.profile, s.started, None, s.source)
        for s in history.sessions
        if s.started <= now
    ]
    history.spawns = [s for s in history.spawns if s.started + (s.duration or 0.0) <= now]


class HourlyHistogram:
    """The hub's spawn-duration histogram increase, per hour of observation."""

    def __init__(self) -> None:
        self.hours: dict[tuple[float, str], list[int]] = {}

    def observe(self, spawn: SpawnRecord) -> None:
        if spawn.duration is None:
            return
        observed = math.ceil((spawn.started + spawn.duration) / 3600.0) * 3600.0
        counts = self.hours.setdefault((observed, spawn.outcome), [0] * len(SPAWN_BUCKETS))
        for i, le in enumerate(SPAWN_BUCKETS):
            if spawn.duration <= le:
                counts[i] += 1

    def rows(self, tz: str) -> list[dict]:
        return [
            {"observed_at": observed, "status": status, "le": min(le, INF_LE), "day": day_of(observed, tz), "count": float(count)}
            for (observed, status), counts in sorted(self.hours.items())
            for le, count in zip(SPAWN_BUCKETS, counts)
            if count > 0
        ]


def simulate(ledger: Ledger, plan: Plan, now: float | None = None, advance: Callable[[int], None] | None = None) -> Outcome:
    """Write the plan's history into ``ledger``, a batch of users per transaction.

    Every write is keyed, so running the same plan again (after an interruption, say)
    completes the history without duplicating it. ``advance(n)`` reports users done.
    """
    if plan.users < 1 or plan.days < 1:
        raise SimulateError("--users and --days must be at least 1")
    if plan.end.toordinal() - plan.days + 1 < CALENDAR[0].toordinal() or plan.end > CALENDAR[1]:
        raise SimulateError(f"the simulated days must lie within the ledger's calendar, {CALENDAR[0]} to {CALENDAR[1]}")
    now = time.time() if now is None else now
    _refuse_real_history(ledger)
    window = Window.of(plan, ledger.tz)
    histogram = HourlyHistogram()
    outcome = Outcome(users=plan.users)
    for lo in range(0, plan.users, BATCH_USERS):
        batch = [user_history(plan, window, i) for i in range(lo, min(plan.users, lo + BATCH_USERS))]
        records: list[SessionRecord] = []
        spawn_records: list[SpawnRecord] = []
        for history in batch:
            clip(history, now)
            records.extend(history.sessions)
            spawn_records.extend(history.spawns)
        for spawn in spawn_records:
            histogram.observe(spawn)
        with ledger.begin() as conn:
            outcome.new_sessions += ledger.add_history_in(conn, records, spawn_records, now)
            _set_created(conn, batch)
        outcome.sessions += len(records)
        outcome.spawns += len(spawn_records)
        outcome.failures += sum(s.outcome == "failure" for s in spawn_records)
        if advance is not None:
            advance(len(batch))
    with ledger.begin() as conn:
        ledger.add_spawn_buckets(conn, histogram.rows(ledger.tz))
    return outcome


def _refuse_real_history(ledger: Ledger) -> None:
    """Synthetic sessions must never mix with real ones."""
    with ledger.engine.connect() as conn:
        real = conn.execute(sa.select(sa.func.count()).select_from(sessions).where(sessions.c.source != SOURCE)).scalar_one()
    if real:
        raise SimulateError(f"the ledger already holds {real} real sessions: simulate into a new ledger (--ledger URL)")


def _set_created(conn: sa.Connection, batch: list[UserHistory]) -> None:
    """The hub creates a user at first login: the first spawn attempt."""
    params = [{"uname": h.name, "created": min(s.started for s in h.spawns)} for h in batch if h.spawns]
    if params:
        conn.execute(
            users.update()
            .where(users.c.name == sa.bindparam("uname"))
            .values(created=sa.func.coalesce(users.c.created, sa.bindparam("created"))),
            params,
        )
