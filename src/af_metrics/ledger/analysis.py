"""Ledger writes and reads for analysis runs (coffea), keyed by the client's run id.

A run is written whole in one transaction or not at all; a run id already stored is ignored,
which is what makes the client's resend-until-acknowledged delivery exactly-once.
"""

from __future__ import annotations

import sqlalchemy as sa

from af_metrics.coffea.exposition import AnalysisFigures, UserAnalysis
from af_metrics.coffea.record import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS, RunRecord
from af_metrics.ledger.schema import INF_LE, analysis_chunk_buckets, analysis_run_datasets, analysis_runs, users
from af_metrics.ledger.store import Ledger
from af_metrics.timeutil import day_of

BUCKET_KINDS = {"duration": CHUNK_SECONDS_BOUNDS, "events": CHUNK_EVENTS_BOUNDS}
DATASETS_PER_USER = 20  # dataset label values per user in /metrics; the rest add up under "_other"


def store_run(ledger: Ledger, user: str, record: RunRecord, received: float) -> bool:
    """Store ``record`` as a run of ``user`` (the authenticated one); False if already stored."""
    with ledger.begin() as conn:
        uid = ledger.user_ids(conn, [user], received)[user]
        stmt = ledger.insert(analysis_runs).values(
            run_id=record.run_id, user_id=uid, processor=record.processor, executor=record.executor,
            status=record.status, error=record.error, started=record.started, ended=record.ended,
            day=day_of(record.started, ledger.tz), wall_seconds=record.wall_seconds, events=record.events,
            chunks=record.chunks, bytes_read=record.bytes_read, columns_read=record.columns_read,
            process_seconds=record.process_seconds, chunk_seconds=record.chunk_seconds, threads=record.threads,
            events_per_thread_second=record.events_per_thread_second, cpu_efficiency=record.cpu_efficiency,
            coffea_version=record.coffea_version, received=received,
        )
        pk = conn.execute(stmt.on_conflict_do_nothing(index_elements=["run_id"]).returning(analysis_runs.c.id)).scalar()
        if pk is None:
            return False
        if record.datasets:
            conn.execute(analysis_run_datasets.insert(), [
                {"run_id": pk, "dataset": d.name, "events": d.events, "bytes_read": d.bytes_read,
                 "process_seconds": d.process_seconds, "chunks": d.chunks}
                for d in record.datasets
            ])
        buckets = [
            {"run_id": pk, "kind": kind, "le": le, "count": count}
            for kind, counts in (("duration", record.chunk_duration.counts), ("events", record.chunk_events.counts))
            for le, count in zip((*BUCKET_KINDS[kind], INF_LE), counts, strict=True)
            if count
        ]
        if buckets:
            conn.execute(analysis_chunk_buckets.insert(), buckets)
        return True


def total(column: sa.ColumnElement) -> sa.ColumnElement:
    """SUM of an integer column as a double: SQLite's integer SUM raises on overflow past 2**63."""
    return sa.func.sum(sa.cast(column, sa.Float))


def read_analysis_figures(ledger: Ledger, user_cap: int, dataset_cap: int = DATASETS_PER_USER) -> AnalysisFigures:
    """Per-user totals for the ``user_cap`` users with the latest runs; beyond ``dataset_cap``
    datasets a user's smaller ones are summed under ``_other`` (bounded label cardinality)."""
    fig = AnalysisFigures()
    with ledger.engine.connect() as conn:
        ranked = conn.execute(
            sa.select(users.c.name, analysis_runs.c.user_id)
            .join(users, users.c.id == analysis_runs.c.user_id)
            .group_by(users.c.name, analysis_runs.c.user_id)
            .order_by(sa.func.max(analysis_runs.c.started).desc(), users.c.name)
        ).all()
        kept = {uid: name for name, uid in ranked[:user_cap]}
        fig.users_dropped = max(0, len(ranked) - user_cap)
        if not kept:
            return fig
        fig.per_user = {name: UserAnalysis() for name in kept.values()}
        in_kept = analysis_runs.c.user_id.in_(list(kept))
        for uid, status, runs, seconds in conn.execute(
            sa.select(analysis_runs.c.user_id, analysis_runs.c.status, sa.func.count(), sa.func.sum(analysis_runs.c.chunk_seconds))
            .where(in_kept).group_by(analysis_runs.c.user_id, analysis_runs.c.status)
        ):
            ua = fig.per_user[kept[uid]]
            ua.runs[status] = int(runs)
            ua.chunk_seconds_sum += float(seconds or 0.0)
        ds = analysis_run_datasets
        dataset_events = total(ds.c.events)
        rows = conn.execute(
            sa.select(analysis_runs.c.user_id, ds.c.dataset, dataset_events, total(ds.c.bytes_read), sa.func.sum(ds.c.process_seconds))
            .join(analysis_runs, analysis_runs.c.id == ds.c.run_id)
            .where(in_kept)
            .group_by(analysis_runs.c.user_id, ds.c.dataset)
            .order_by(analysis_runs.c.user_id, dataset_events.desc(), ds.c.dataset)
        ).all()
        for uid, dataset, events, nbytes, seconds in rows:  # largest first: they keep their own label
            fig.per_user[kept[uid]].add_dataset(dataset, int(events), int(nbytes), float(seconds or 0.0), dataset_cap)
        b = analysis_chunk_buckets
        les = (*CHUNK_SECONDS_BOUNDS, INF_LE)
        for uid, le, count in conn.execute(
            sa.select(analysis_runs.c.user_id, b.c.le, total(b.c.count))
            .join(analysis_runs, analysis_runs.c.id == b.c.run_id)
            .where(in_kept, b.c.kind == "duration")
            .group_by(analysis_runs.c.user_id, b.c.le)
        ):
            fig.per_user[kept[uid]].chunk_duration[les.index(le)] += int(count)
    return fig
