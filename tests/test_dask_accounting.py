"""Dask accounting in the ledger (SQLite and PostgreSQL): the estimator's edges and restarts,
idempotent replay, hour splitting, and the Dask KPIs over the booked usage."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from af_metrics.discovery import DaskTarget
from af_metrics.kpis import compute_kpi
from af_metrics.ledger.dask import TargetState, advance, record_cycle, user_totals
from af_metrics.ledger.schema import dask_targets, dask_tasks, dask_usage
from af_metrics.ledger.store import SessionRecord
from af_metrics.sources.dask import SchedulerSample

T0 = 1_767_268_800.0  # 2026-01-01T12:00:00Z
S = 10.0  # sample interval
ALICE = DaskTarget("alice", "c1", "http://127.0.0.1:8787")
BOB = DaskTarget("bob", "c2", "http://127.0.0.1:8788")


def sample(t: float, workers: int = 2, threads: int = 4, memory: float = 1e9, finished: float = 0.0, erred: float = 0.0,
           started: float = T0 - 1000, ticks: float | None = None) -> SchedulerSample:
    return SchedulerSample(
        observed_at=t, workers=workers, threads=threads, memory_bytes=memory, finished_total=finished,
        erred_total=erred, started=started, ticks=t - started if ticks is None else ticks,
    )


def core_seconds(pieces: list) -> float:
    return sum((p.end - p.start) * (p.c0 + p.c1) / 2 for p in pieces)


def test_constant_cluster_gets_half_an_interval_at_each_end() -> None:
    st = TargetState(id=1, user_id=1)
    pieces = []
    for k in range(7):  # reads at T0 .. T0+60
        pieces += advance(st, sample(T0 + k * S), T0 + k * S, S)[0]
    for k in range(7, 11):  # failed reads: the run closes once 3 intervals have passed
        pieces += advance(st, None, T0 + k * S, S)[0]
    assert not st.open
    assert core_seconds(pieces) == pytest.approx(4 * (60 + S))  # [T0 - S/2, T0 + 60 + S/2]


def test_growth_between_reads_counts_half() -> None:
    st = TargetState(id=1, user_id=1)
    advance(st, sample(T0, workers=1, threads=2), T0, S)
    pieces, _ = advance(st, sample(T0 + S, workers=3, threads=6), T0 + S, S)
    assert core_seconds(pieces) == pytest.approx((2 + 6) / 2 * S)


def test_restart_closes_the_run_and_counts_the_new_runs_counters_from_zero() -> None:
    st = TargetState(id=1, user_id=1)
    advance(st, sample(T0, finished=100, erred=3), T0, S)
    _, inc = advance(st, sample(T0 + S, finished=110, erred=4), T0 + S, S)
    assert inc == (10.0, 1.0, 0.0)
    pieces, inc = advance(st, sample(T0 + 2 * S, finished=5, erred=2, started=T0 + 15), T0 + 2 * S, S)
    assert inc == (5.0, 2.0, 0.0)  # a new scheduler: all its counts are new
    assert st.run == pytest.approx(T0 + 15)  # the new run starts no earlier than its process
    assert [(p.start, p.end) for p in pieces] == [(T0 + S, T0 + S + S / 2), (T0 + 15, T0 + 2 * S)]


def test_reads_in_consecutive_slow_cycles_continue_the_run() -> None:
    st = TargetState(id=1, user_id=1)
    advance(st, sample(T0), T0, S)
    pieces, _ = advance(st, sample(T0 + 5 * S), T0 + 5 * S, S, previous_cycle=T0)  # the sampler was slow
    assert st.run == T0 - S / 2 and core_seconds(pieces) == pytest.approx(4 * 5 * S)
    pieces, _ = advance(st, sample(T0 + 10 * S), T0 + 10 * S, S, previous_cycle=T0 + 6 * S)  # missed a cycle
    assert st.run == T0 + 10 * S - S / 2  # a gap of 5 intervals: a new run


def test_replayed_reads_change_nothing() -> None:
    st = TargetState(id=1, user_id=1)
    advance(st, sample(T0), T0, S)
    advance(st, sample(T0 + S), T0 + S, S)
    assert advance(st, sample(T0 + S), T0 + S, S) == ([], (0.0, 0.0, 0.0))
    assert advance(st, None, T0 + S, S) == ([], (0.0, 0.0, 0.0))


def _usage(ledger) -> dict[str, float]:  # noqa: ANN001
    with ledger.engine.connect() as conn:
        return dict(conn.execute(
            sa.select(dask_targets.c.cluster, sa.func.sum(dask_usage.c.core_seconds))
            .join(dask_targets, dask_targets.c.id == dask_usage.c.target_id).group_by(dask_targets.c.cluster)
        ).all())


def _cycles(ledger, start: float, end: float) -> None:  # noqa: ANN001
    """alice's 4-thread cluster read every S from start to end; bob's read once, then gone."""
    k = 0
    while start + k * S <= end:
        t = start + k * S
        reads = [(ALICE, sample(t, finished=10 * k, erred=k // 3))]
        if k == 0:
            reads.append((BOB, sample(t, workers=1, threads=1, memory=0.0)))
        record_cycle(ledger, t, reads, S)
        k += 1


def test_cycles_are_idempotent_and_split_at_hours(ledger) -> None:  # noqa: ANN001
    start = T0 - 30  # crosses 12:00 local (UTC)
    _cycles(ledger, start, start + 60)
    first = _usage(ledger)
    _cycles(ledger, start, start + 60)  # the same cycles again
    assert _usage(ledger) == first
    # bob: read once, then unlisted: closed after 3 intervals with half an interval on each side
    assert first["c2"] == pytest.approx(1 * S)
    with ledger.engine.connect() as conn:
        hours = conn.execute(sa.select(dask_usage.c.hour_start, dask_usage.c.core_seconds).join(
            dask_targets, dask_targets.c.id == dask_usage.c.target_id).where(dask_targets.c.cluster == "c1")
            .order_by(dask_usage.c.hour_start)).all()
        erred = conn.execute(sa.select(sa.func.sum(dask_tasks.c.erred))).scalar_one()
    assert [h for h, _ in hours] == [T0 - 3600, T0]
    assert hours[0][1] == pytest.approx(4 * (30 + S / 2))  # 11:59:25 .. 12:00
    assert sum(c for _, c in hours) == pytest.approx(first["c1"])
    assert erred == 2  # erred counter went 0 -> 2 over alice's reads
    totals, dropped = user_totals(ledger, cap=1)
    assert list(totals) == ["alice"] and dropped == 1
    assert totals["alice"].core_seconds == pytest.approx(first["c1"])


def test_dask_kpis(ledger) -> None:  # noqa: ANN001
    ledger.add_history([
        SessionRecord(u, "", None, T0 - 600, T0 + 600, "imported") for u in ("alice", "bob", "dave")
    ], now=T0 + 3600)
    _cycles(ledger, T0, T0 + 600)
    for t in (T0 + 610, T0 + 620, T0 + 630, T0 + 640):  # absent: alice's run closes
        record_cycle(ledger, t, [], S)

    def kpi(name: str) -> list:
        return compute_kpi(ledger, name, **{"from": "2026-01-01", "to": "2026-01-01"})["rows"]

    alice = 4 * (600 + S) / 3600
    bob = 1 * S / 3600
    assert kpi("dask_adoption") == [["2026-01-01", pytest.approx(2 / 3)]]
    assert kpi("dask_core_hours") == [["2026-01-01", pytest.approx(alice + bob)]]
    assert kpi("dask_core_hours_per_user") == [["2026-01-01", pytest.approx((alice + bob) / 2)]]
    assert kpi("dask_peak_workers") == [["2026-01-01", 3]]
    assert kpi("dask_erred_task_rate") == [["2026-01-01", pytest.approx(20 / 600)]]
    top = kpi("dask_top_users")
    assert [r[0] for r in top] == ["alice", "bob"]
    assert top[0][1] == pytest.approx(alice) and top[0][5] == 20 and top[0][6] == pytest.approx(20 / 600)
    assert kpi("dask_core_hours_by_user") == [["2026-01-01", "alice", pytest.approx(alice)], ["2026-01-01", "bob", pytest.approx(bob)]]


def test_a_cycle_of_many_large_clusters_fits_the_ledger(ledger) -> None:  # noqa: ANN001
    """300 schedulers at the plausible thread limit: the cycle's sum exceeds a 32-bit column, and is capped."""
    from af_metrics.ledger.dask import INT_MAX
    from af_metrics.ledger.schema import dask_cycles
    from af_metrics.sources.dask import THREADS_MAX

    targets = [DaskTarget(f"u{i}", "c", f"http://127.0.0.1:{10000 + i}") for i in range(300)]
    for k in range(2):
        record_cycle(ledger, T0 + k * S, [(t, sample(T0 + k * S, threads=int(THREADS_MAX))) for t in targets], S)
    with ledger.engine.connect() as conn:
        threads = conn.execute(sa.select(dask_cycles.c.threads).order_by(dask_cycles.c.t)).scalars().all()
        peak = conn.execute(sa.select(sa.func.max(dask_usage.c.max_threads))).scalar_one()
    assert threads == [INT_MAX, INT_MAX] and peak == THREADS_MAX
