"""Dask facts in the ledger: each collection cycle's scheduler reads, integrated into usage.

The estimator. Between two consecutive reads of the same scheduler run, at t0 and t1, workers,
threads and managed memory are taken to change linearly (equivalently: a change happened at an
unknown moment, on average half-way), so the interval contributes ``(v0 + v1) / 2 * (t1 - t0)``.
A run's first read at t extends back half-way to the previous attempt (never before the
scheduler process started), its last read forward half-way to the first failed read; when the
sampler was away in between (the attempt was not in the adjacent cycle), by at most
``interval / 2``. So core-seconds = the integral of threads over the time workers were seen;
each change (and each end of a run) is placed half-way between two attempts, so the error is at
most half the cycle spacing (normally ``interval / 2``) per change, zero on average: for a
cluster of constant size living L seconds, at most ``threads * interval`` in total (relative
error ``interval / L``).

A run ends when the scheduler is not read for ``3 * interval`` (failed reads, or absent from
discovery; reads in consecutive cycles always continue a run, however slow the
cycles), or when it restarted: its process start time changed, or its tick or task counters
went down. Task counters (finished, erred, suspicious) are cumulative per run; their increase
between reads is booked on the day of the later read. History before the first read of a
target is unknown and not booked.

Idempotent: a target's row keeps its last read; a read not newer than it, or a failed read not
newer than the last attempt, changes nothing. One cycle is one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from af_metrics.discovery import DaskTarget
from af_metrics.ledger.schema import dask_cycles, dask_targets, dask_tasks, dask_usage, sessions, users
from af_metrics.ledger.store import Ledger
from af_metrics.sources.dask import SchedulerSample
from af_metrics.timeutil import day_of, hour_slices

GAP_FACTOR = 3.0  # a run ends after this many sample intervals without a read
INT_MAX = 2**31 - 1  # Integer columns; a cycle's sums over many (plausible) schedulers are clamped to it
TOTALS = ("worker_seconds", "core_seconds", "memory_byte_seconds", "tasks_finished", "tasks_erred", "tasks_suspicious")


@dataclass(slots=True)
class TargetState:
    """A target's row of ``dask_targets``: the last read and running totals."""

    id: int
    user_id: int
    last_attempt: float | None = None
    first_miss: float | None = None
    run: float | None = None
    open: int = 0
    last_t: float | None = None
    last_workers: int | None = None
    last_threads: int | None = None
    last_memory: float | None = None
    last_finished: float | None = None
    last_erred: float | None = None
    last_suspicious: float | None = None
    last_started: float | None = None
    last_ticks: float | None = None
    worker_seconds: float = 0.0
    core_seconds: float = 0.0
    memory_byte_seconds: float = 0.0
    tasks_finished: float = 0.0
    tasks_erred: float = 0.0
    tasks_suspicious: float = 0.0


STATE_COLUMNS = [f.name for f in fields(TargetState)]


@dataclass(frozen=True, slots=True)
class Piece:
    """Workers, threads, memory changing linearly from (w0, c0, m0) at start to (w1, c1, m1) at end."""

    start: float
    end: float
    w0: float
    w1: float
    c0: float
    c1: float
    m0: float
    m1: float


def _restarted(st: TargetState, s: SchedulerSample) -> bool:
    if st.last_started is not None and s.started is not None and abs(s.started - st.last_started) > 1.0:
        return True
    if st.last_ticks is not None and s.ticks is not None and s.ticks < st.last_ticks:
        return True
    return (
        s.finished_total < (st.last_finished or 0.0)
        or s.erred_total < (st.last_erred or 0.0)
        or s.suspicious_total < (st.last_suspicious or 0.0)
    )


def _close(st: TargetState, evidence: float) -> Piece:
    """End the open run: its last read extends half-way to the evidence of its end."""
    assert st.last_t is not None
    h = max(0.0, (evidence - st.last_t) / 2)
    w, c, m = st.last_workers or 0, st.last_threads or 0, st.last_memory or 0.0
    st.open, st.first_miss = 0, None
    return Piece(st.last_t, st.last_t + h, w, w, c, c, m, m)


def advance(
    st: TargetState, sample: SchedulerSample | None, at: float, interval: float, previous_cycle: float | None = None
) -> tuple[list[Piece], tuple[float, float, float]]:
    """Apply one read (``sample``, or None for a failed or missing read at ``at``) to ``st``.

    ``previous_cycle`` is when the cycle before this one started: a scheduler read in that cycle
    too continues its run however long the cycles took (a slow sampler is not a gap).
    Returns the usage pieces and the (finished, erred, suspicious) increases it books.
    """
    half, max_gap = interval / 2, GAP_FACTOR * interval
    pieces: list[Piece] = []
    # the previous attempt was in the previous cycle: half the time since it is a fair guess;
    # otherwise the sampler was away, and at most half an interval is assumed
    consecutive = previous_cycle is not None and st.last_attempt is not None and st.last_attempt >= previous_cycle
    if sample is None:
        if st.last_attempt is not None and at <= st.last_attempt:
            return pieces, (0.0, 0.0, 0.0)
        if st.open and st.last_t is not None and st.first_miss is None:
            st.first_miss = at if consecutive else min(at, st.last_t + interval)
        st.last_attempt = at
        if st.open and st.last_t is not None and st.first_miss is not None and at - st.last_t > max_gap:
            pieces.append(_close(st, st.first_miss))
        return pieces, (0.0, 0.0, 0.0)

    t = sample.observed_at
    if st.last_t is not None and t <= st.last_t:
        return pieces, (0.0, 0.0, 0.0)
    reset = st.last_t is not None and _restarted(st, sample)
    seen_last_cycle = consecutive and st.last_t is not None and st.last_t >= (previous_cycle or 0.0)
    continuous = bool(st.open) and not reset and st.last_t is not None and (seen_last_cycle or t - st.last_t <= max_gap)
    w, c, m = sample.workers, sample.threads, sample.memory_bytes
    if continuous:
        pieces.append(Piece(st.last_t, t, st.last_workers or 0, w, st.last_threads or 0, c, st.last_memory or 0.0, m))
    else:
        if st.open:
            assert st.last_t is not None
            pieces.append(_close(st, st.first_miss or (t if seen_last_cycle else min(t, st.last_t + interval))))
        if st.last_attempt is None:
            lead = half
        else:
            lead = max(0.0, (t - st.last_attempt) / 2 if consecutive else min(half, (t - st.last_attempt) / 2))
        if sample.started is not None:
            lead = min(lead, max(0.0, t - sample.started))
        pieces.append(Piece(t - lead, t, w, w, c, c, m, m))
        st.run, st.open = t - lead, 1
    increase = (0.0, 0.0, 0.0)
    if st.last_t is not None:
        before = (0.0, 0.0, 0.0) if reset else (st.last_finished or 0.0, st.last_erred or 0.0, st.last_suspicious or 0.0)
        now = (sample.finished_total, sample.erred_total, sample.suspicious_total)
        increase = tuple(max(0.0, a - b) for a, b in zip(now, before))  # type: ignore[assignment]
    st.last_t, st.last_attempt, st.first_miss = t, max(t, st.last_attempt or t), None
    st.last_workers, st.last_threads, st.last_memory = w, c, m
    st.last_finished, st.last_erred, st.last_suspicious = sample.finished_total, sample.erred_total, sample.suspicious_total
    st.last_started, st.last_ticks = sample.started, sample.ticks
    return pieces, increase


def spread(piece: Piece, tz: str) -> Iterator[tuple[float, int, float, float, float, float, float, float]]:
    """Split a piece at local hours: (hour start, day, seconds, worker-s, core-s, byte-s, max workers, max threads)."""
    span = piece.end - piece.start
    if span <= 0:
        return

    def at(v0: float, v1: float, x: float) -> float:
        return v0 + (v1 - v0) * (x - piece.start) / span

    x0 = piece.start
    for hour_start, day, _how, seconds in hour_slices(piece.start, piece.end, tz):
        x1 = x0 + seconds
        integral = [seconds * (at(a, b, x0) + at(a, b, x1)) / 2 for a, b in ((piece.w0, piece.w1), (piece.c0, piece.c1), (piece.m0, piece.m1))]
        yield hour_start, day, seconds, *integral, max(piece.w0, piece.w1), max(piece.c0, piece.c1)
        x0 = x1


def _load_states(ledger: Ledger, conn: Connection, keys: set[tuple[int, str, str]]) -> dict[tuple[int, str, str], TargetState]:
    """States of the listed targets (created if new) and of every target with an open run."""
    cols = [dask_targets.c[n] for n in STATE_COLUMNS]
    key_cols = (dask_targets.c.user_id, dask_targets.c.cluster, dask_targets.c.url)
    out: dict[tuple[int, str, str], TargetState] = {}
    listed = sorted(keys)
    for i in range(0, len(listed), 300):
        chunk = listed[i : i + 300]
        for row in conn.execute(sa.select(*key_cols, *cols).where(sa.tuple_(*key_cols).in_(chunk))):
            out[tuple(row[:3])] = TargetState(*row[3:])  # type: ignore[index]
    for row in conn.execute(sa.select(*key_cols, *cols).where(dask_targets.c.open == 1)):
        out.setdefault(tuple(row[:3]), TargetState(*row[3:]))  # type: ignore[arg-type]
    return out


def record_cycle(
    ledger: Ledger, at: float, reads: Sequence[tuple[DaskTarget, SchedulerSample | None]], interval: float
) -> None:
    """Write one cycle: every listed target's read (None: failed) and open targets no longer listed."""
    with ledger.begin() as conn:
        ids = ledger.user_ids(conn, {t.user for t, _ in reads}, at)
        keyed = {(ids[t.user], t.cluster, t.url): s for t, s in reads}
        if keyed:
            new = [{"user_id": u, "cluster": c, "url": url, "first_seen": at} for u, c, url in keyed]
            for i in range(0, len(new), 500):
                conn.execute(
                    ledger.insert(dask_targets).on_conflict_do_nothing(index_elements=["user_id", "cluster", "url"]),
                    new[i : i + 500],
                )
        states = _load_states(ledger, conn, set(keyed))
        previous_cycle = conn.execute(sa.select(sa.func.max(dask_cycles.c.t)).where(dask_cycles.c.t < at)).scalar()
        usage: dict[tuple[int, float], list] = {}
        tasks: dict[tuple[int, int], list] = {}
        for key, st in states.items():
            sample = keyed.get(key)
            pieces, increase = advance(st, sample, at, interval, previous_cycle)
            for piece in pieces:
                for hour_start, day, seconds, ws, cs, ms, mw, mc in spread(piece, ledger.tz):
                    row = usage.setdefault((st.id, hour_start), [st.user_id, day, 0.0, 0.0, 0.0, 0.0, 0, 0])
                    row[2:6] = [row[2] + seconds, row[3] + ws, row[4] + cs, row[5] + ms]
                    row[6], row[7] = max(row[6], int(mw)), max(row[7], int(mc))
                    st.worker_seconds += ws
                    st.core_seconds += cs
                    st.memory_byte_seconds += ms
            if any(increase) and sample is not None:
                day = day_of(sample.observed_at, ledger.tz)
                row = tasks.setdefault((st.id, day), [st.user_id, 0.0, 0.0, 0.0])
                row[1:] = [a + b for a, b in zip(row[1:], increase)]
                st.tasks_finished += increase[0]
                st.tasks_erred += increase[1]
                st.tasks_suspicious += increase[2]
        _add_usage(ledger, conn, usage)
        _add_tasks(ledger, conn, tasks)
        if states:
            conn.execute(
                dask_targets.update().where(dask_targets.c.id == sa.bindparam("_id")).values(
                    {n: sa.bindparam(n) for n in STATE_COLUMNS if n not in ("id", "user_id")}
                ),
                [{"_id": st.id, **{n: getattr(st, n) for n in STATE_COLUMNS if n not in ("id", "user_id")}} for st in states.values()],
            )
        up = [s for s in keyed.values() if s is not None]
        conn.execute(
            ledger.insert(dask_cycles).on_conflict_do_nothing(),
            {
                "t": at, "day": day_of(at, ledger.tz), "targets": len(keyed), "up": len(up),
                "users": len({u for (u, _, _), s in keyed.items() if s is not None and s.workers > 0}),
                "workers": min(INT_MAX, sum(s.workers for s in up)), "threads": min(INT_MAX, sum(s.threads for s in up)),
            },
        )


def _add_usage(ledger: Ledger, conn: Connection, usage: dict[tuple[int, float], list]) -> None:
    if not usage:
        return
    rows = [
        {"target_id": tid, "hour_start": hs, "user_id": u, "day": d, "seconds": s, "worker_seconds": ws,
         "core_seconds": cs, "memory_byte_seconds": ms, "max_workers": mw, "max_threads": mc}
        for (tid, hs), (u, d, s, ws, cs, ms, mw, mc) in usage.items()
    ]
    stmt = ledger.insert(dask_usage)
    x = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["target_id", "hour_start"],
        set_={
            **{n: dask_usage.c[n] + x[n] for n in ("seconds", "worker_seconds", "core_seconds", "memory_byte_seconds")},
            **{n: sa.case((x[n] > dask_usage.c[n], x[n]), else_=dask_usage.c[n]) for n in ("max_workers", "max_threads")},
        },
    )
    conn.execute(stmt, rows)


def _add_tasks(ledger: Ledger, conn: Connection, tasks: dict[tuple[int, int], list]) -> None:
    if not tasks:
        return
    rows = [
        {"target_id": tid, "day": d, "user_id": u, "finished": f, "erred": e, "suspicious": s}
        for (tid, d), (u, f, e, s) in tasks.items()
    ]
    stmt = ledger.insert(dask_tasks)
    stmt = stmt.on_conflict_do_update(
        index_elements=["target_id", "day"],
        set_={n: dask_tasks.c[n] + stmt.excluded[n] for n in ("finished", "erred", "suspicious")},
    )
    conn.execute(stmt, rows)


@dataclass(slots=True)
class UserDaskTotals:
    """Running totals over every scheduler of a user (counters for /metrics)."""

    worker_seconds: float
    core_seconds: float
    memory_byte_seconds: float
    tasks_finished: float
    tasks_erred: float
    tasks_suspicious: float


def user_totals(ledger: Ledger, cap: int) -> tuple[dict[str, UserDaskTotals], int]:
    """Totals of the ``cap`` users with the most core-seconds, and how many users were left out."""
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(users.c.name, *(sa.func.sum(dask_targets.c[n]) for n in TOTALS))
            .join(users, users.c.id == dask_targets.c.user_id)
            .group_by(users.c.name)
            .order_by(sa.func.sum(dask_targets.c.core_seconds).desc(), users.c.name)
        ).all()
    return {name: UserDaskTotals(*(float(v or 0.0) for v in vals)) for name, *vals in rows[:cap]}, max(0, len(rows) - cap)


def recent_users(ledger: Ledger, since: float) -> list[str]:
    """Users with a server running or seen since ``since`` (candidates for per-user discovery)."""
    with ledger.engine.connect() as conn:
        running = sa.select(sessions.c.user_id).where(sessions.c.ended.is_(None))
        return list(
            conn.execute(
                sa.select(users.c.name).where(sa.or_(users.c.last_seen >= since, users.c.id.in_(running))).order_by(users.c.name)
            ).scalars()
        )
