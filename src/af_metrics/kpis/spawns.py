"""Spawn KPIs: how often starting a server works, and how long it takes.

The hub's own spawn-duration histogram (``spawn_buckets``: its increase per observation, by
status) counts every spawn the hub saw, so it is preferred whenever it has data in the range;
otherwise the per-attempt ``spawns`` records are used. Each result notes which one it used.
"""

from __future__ import annotations

import sqlalchemy as sa

from af_metrics.kpis.registry import Query, Series, register
from af_metrics.kpis.sql import epoch_bounds, histogram_quantile, nearest_rank, started_in_range
from af_metrics.ledger.schema import INF_LE

FROM_HISTOGRAM = "from the hub's spawn-duration histogram"
FROM_RECORDS = "from per-attempt spawn records"
SETTLED = "outcome IN ('success', 'failure')"
SUCCEEDED = "outcome = 'success'"


def _has_histogram(q: Query) -> bool:
    def run() -> bool:
        sql = "SELECT 1 FROM spawn_buckets WHERE day BETWEEN :a AND :b LIMIT 1"
        return q.conn.execute(sa.text(sql), q.params).first() is not None

    return q.once("has_histogram", run)


def _spawn_records(q: Query, where: str) -> str:
    """Spawn attempts started in the range matching ``where``, with their bucket."""
    return started_in_range(q, "spawns", "outcome, duration", where)


@register("spawn_success_rate", title="Spawn success rate", unit="ratio",
          definition="Successful spawns / all spawns in the bucket (hub histogram: all statuses; else records: success+failure).")
def spawn_success_rate(q: Query) -> Series:
    if _has_histogram(q):
        q.note(f"spawn success rate {FROM_HISTOGRAM}")
        sql = (
            f"SELECT {q.bucket}, SUM(CASE WHEN sb.status = 'success' THEN sb.count ELSE 0 END), SUM(sb.count)"
            " FROM spawn_buckets sb JOIN calendar c ON c.day = sb.day"
            f" WHERE sb.day BETWEEN :a AND :b AND sb.le >= :inf GROUP BY {q.bucket}"
        )
        rows = q.conn.execute(sa.text(sql), {**q.params, "inf": INF_LE})
    else:
        q.note(f"spawn success rate {FROM_RECORDS}")
        sql = (
            "SELECT bucket, SUM(CASE WHEN outcome = 'success' THEN 1 ELSE 0 END), COUNT(*)"
            f" FROM ({_spawn_records(q, SETTLED)}) x GROUP BY bucket"
        )
        rows = q.conn.execute(sa.text(sql), {**q.params, **epoch_bounds(q)})
    return {b: ok / total for b, ok, total in rows if total}


def _latency(q: Query) -> dict[str, tuple[float | None, float | None]]:
    """{bucket: (p50, p95)} of successful spawn durations in seconds."""

    def from_histogram() -> dict[str, tuple[float | None, float | None]]:
        sql = (
            f"SELECT {q.bucket}, sb.le, SUM(sb.count) FROM spawn_buckets sb JOIN calendar c ON c.day = sb.day"
            f" WHERE sb.day BETWEEN :a AND :b AND sb.status = 'success' GROUP BY {q.bucket}, sb.le"
        )
        per_bucket: dict[str, list[tuple[float, float]]] = {}
        for bucket, le, count in q.conn.execute(sa.text(sql), q.params):
            per_bucket.setdefault(bucket, []).append((le, count))
        return {b: (histogram_quantile(0.5, h), histogram_quantile(0.95, h)) for b, h in per_bucket.items()}

    def from_records() -> dict[str, tuple[float | None, float | None]]:
        values = f"SELECT bucket, duration AS v FROM ({_spawn_records(q, SUCCEEDED)}) x"
        rows = q.conn.execute(sa.text(nearest_rank(values, (50, 95))), {**q.params, **epoch_bounds(q)})
        return {b: (p50, p95) for b, p50, p95 in rows}

    return q.once("spawn_latency", from_histogram if _has_histogram(q) else from_records)


def _latency_note(q: Query) -> None:
    how = "interpolated in the hub's spawn-duration histogram" if _has_histogram(q) else "nearest rank over spawn records"
    q.note(f"spawn latency {how}")


@register("spawn_latency_p50", title="Spawn latency p50", unit="seconds",
          definition="Median time to start a server, over successful spawns in the bucket.")
def spawn_latency_p50(q: Query) -> Series:
    _latency_note(q)
    return {b: p50 for b, (p50, _) in _latency(q).items()}


@register("spawn_latency_p95", title="Spawn latency p95", unit="seconds",
          definition="95th percentile time to start a server, over successful spawns in the bucket.")
def spawn_latency_p95(q: Query) -> Series:
    _latency_note(q)
    return {b: p95 for b, (_, p95) in _latency(q).items()}
