"""Analysis KPIs: coffea runs pushed by users' kernels (table ``analysis_runs``).

A run belongs to the facility-local day it started on. Throughput is events per second per
thread (events / (wall time x threads available)), the figure that compares a 4-core notebook
with a 200-worker Dask cluster; percentiles are nearest-rank over successful runs. A user is
*activated* by their first successful analysis run; *first login* is their first recorded
server session (else the hub's creation time, else when af-metrics first saw them).
"""

from __future__ import annotations

import sqlalchemy as sa

from af_metrics.kpis.registry import Query, Series, Table, register
from af_metrics.kpis.sql import nearest_rank

RUNS_IN_RANGE = "FROM analysis_runs ar JOIN calendar c ON c.day = ar.day WHERE ar.day BETWEEN :a AND :b"
SUCCESS = "ar.status = 'success'"
# integer columns are summed as doubles: SQLite's integer SUM raises once past 2**63
EVENTS_SUM = "SUM(CAST(ar.events AS DOUBLE PRECISION))"
BYTES_SUM = "SUM(CAST(ar.bytes_read AS DOUBLE PRECISION))"
FIRST_RUNS = (
    "SELECT user_id, MIN(started) AS first_run, MIN(day) AS day FROM analysis_runs"
    " WHERE status = 'success' GROUP BY user_id"
)


def _sum_by_bucket(q: Query, expression: str, where: str = "1 = 1") -> Series:
    sql = f"SELECT {q.bucket}, {expression} {RUNS_IN_RANGE} AND {where} GROUP BY {q.bucket}"
    return {b: v for b, v in q.conn.execute(sa.text(sql), q.params)}


def _counts(series: Series) -> Series:
    return {b: int(v) for b, v in series.items() if v is not None}


@register("analysis_runs", title="Analysis runs", unit="runs", missing=0,
          definition="Coffea analysis runs started in the bucket, successful or not.")
def analysis_runs(q: Query) -> Series:
    return _sum_by_bucket(q, "COUNT(*)")


@register("analysis_users", title="Analysing users", unit="users", missing=0,
          definition="Distinct users with at least one successful analysis run started in the bucket.")
def analysis_users(q: Query) -> Series:
    return _sum_by_bucket(q, "COUNT(DISTINCT ar.user_id)", SUCCESS)


@register("analysis_events", title="Events analysed", unit="events", missing=0,
          definition="Events processed by analysis runs started in the bucket (all outcomes).")
def analysis_events(q: Query) -> Series:
    return _counts(_sum_by_bucket(q, EVENTS_SUM))


@register("analysis_bytes_read", title="Bytes read by analyses", unit="bytes", missing=0,
          definition="Bytes read from input files by analysis runs started in the bucket.")
def analysis_bytes_read(q: Query) -> Series:
    return _counts(_sum_by_bucket(q, BYTES_SUM))


def _throughput(q: Query) -> dict[str, tuple[float | None, float | None]]:
    def run() -> dict[str, tuple[float | None, float | None]]:
        values = f"SELECT {q.bucket} AS bucket, ar.events_per_thread_second AS v {RUNS_IN_RANGE} AND {SUCCESS} AND ar.events > 0"
        return {b: (p50, p90) for b, p50, p90 in q.conn.execute(sa.text(nearest_rank(values, (50, 90))), q.params)}

    return q.once("analysis_throughput", run)


@register("analysis_throughput_p50", title="Analysis throughput, median", unit="events/s/thread",
          definition="Median over successful runs started in the bucket of events / (wall seconds x threads).")
def analysis_throughput_p50(q: Query) -> Series:
    return {b: p50 for b, (p50, _) in _throughput(q).items()}


@register("analysis_throughput_p90", title="Analysis throughput, 90th percentile", unit="events/s/thread",
          definition="90th percentile over successful runs started in the bucket of events / (wall seconds x threads).")
def analysis_throughput_p90(q: Query) -> Series:
    return {b: p90 for b, (_, p90) in _throughput(q).items()}


@register("analysis_activations", title="Users activated", unit="users", missing=0,
          definition="Users whose first successful analysis run ever started in the bucket.")
def analysis_activations(q: Query) -> Series:
    sql = f"SELECT {q.bucket}, COUNT(*) FROM ({FIRST_RUNS}) f JOIN calendar c ON c.day = f.day WHERE f.day BETWEEN :a AND :b GROUP BY {q.bucket}"
    return dict(q.conn.execute(sa.text(sql), q.params).all())


@register("analysis_time_to_first_run", title="Time from first login to first analysis", unit="hours",
          definition="Median hours from a user's first login to their first successful analysis run, over users activated in the bucket.")
def analysis_time_to_first_run(q: Query) -> Series:
    first_login = (
        "COALESCE((SELECT MIN(s.started) FROM sessions s WHERE s.user_id = f.user_id), u.created, u.first_seen)"
    )
    values = (
        f"SELECT {q.bucket} AS bucket, CASE WHEN f.first_run > {first_login}"
        f" THEN (f.first_run - {first_login}) / 3600.0 ELSE 0 END AS v"
        f" FROM ({FIRST_RUNS}) f JOIN users u ON u.id = f.user_id JOIN calendar c ON c.day = f.day"
        " WHERE f.day BETWEEN :a AND :b"
    )
    return {b: p50 for b, p50 in q.conn.execute(sa.text(nearest_rank(values, (50,))), q.params)}


@register("analysis_by_user", title="Analysis by user", unit="", kind="table",
          definition="Per user over the range: runs, successful runs, events, bytes read, throughput p50/p90 (events/s/thread).")
def analysis_by_user(q: Query) -> Table:
    totals = (
        "SELECT u.name, COUNT(*), SUM(CASE WHEN ar.status = 'success' THEN 1 ELSE 0 END), "
        f"{EVENTS_SUM}, {BYTES_SUM}"
        " FROM analysis_runs ar JOIN users u ON u.id = ar.user_id WHERE ar.day BETWEEN :a AND :b GROUP BY u.name"
    )
    values = (
        "SELECT u.name AS bucket, ar.events_per_thread_second AS v FROM analysis_runs ar JOIN users u ON u.id = ar.user_id"
        f" WHERE ar.day BETWEEN :a AND :b AND {SUCCESS} AND ar.events > 0"
    )
    rates = {name: (p50, p90) for name, p50, p90 in q.conn.execute(sa.text(nearest_rank(values, (50, 90))), q.params)}
    rows = [
        [name, runs, ok, int(events or 0), int(nbytes or 0), *rates.get(name, (None, None))]
        for name, runs, ok, events, nbytes in q.conn.execute(sa.text(totals), q.params)
    ]
    rows.sort(key=lambda r: (-r[3], r[0]))
    return Table(["user", "runs", "successful", "events", "bytes_read", "events_per_thread_second_p50",
                  "events_per_thread_second_p90"], rows)
