"""Dask KPIs: adoption, core-hours, top users, erred-task rate, peak concurrent workers.

Usage comes from ``dask_usage`` (worker/core/memory integrals per scheduler per local hour; see
``ledger.dask`` for the estimator and its error bound), task counts from ``dask_tasks`` (per
scheduler per local day), concurrency from ``dask_cycles`` (one row per sampling cycle).
"""

from __future__ import annotations

import sqlalchemy as sa

from af_metrics.kpis.registry import Query, Series, Table, register

TOP_USERS = 20
GB_HOUR = 1e9 * 3600


def _by_bucket(q: Query, values: str, table: str) -> list:
    """``SELECT bucket, <values>`` over the rows of ``table`` (alias ``x``) on the range's days."""
    sql = (
        f"SELECT {q.bucket}, {values} FROM {table} x JOIN calendar c ON c.day = x.day"
        f" WHERE x.day BETWEEN :a AND :b GROUP BY {q.bucket}"
    )
    return q.conn.execute(sa.text(sql), q.params).all()


@register("dask_adoption", title="Dask adoption", unit="ratio",
          definition="Share of the bucket's active users whose Dask cluster had workers in the bucket.")
def dask_adoption(q: Query) -> Series:
    sql = f"""
    WITH act AS (
      SELECT DISTINCT {q.bucket} AS bucket, sh.user_id FROM session_hours sh JOIN calendar c ON c.day = sh.day
      WHERE sh.day BETWEEN :a AND :b
    ), dk AS (
      SELECT DISTINCT {q.bucket} AS bucket, du.user_id FROM dask_usage du JOIN calendar c ON c.day = du.day
      WHERE du.day BETWEEN :a AND :b AND du.worker_seconds > 0
    )
    SELECT act.bucket, COUNT(dk.user_id), COUNT(*) FROM act
    LEFT JOIN dk ON dk.bucket = act.bucket AND dk.user_id = act.user_id GROUP BY act.bucket
    """
    return {bucket: users / active for bucket, users, active in q.conn.execute(sa.text(sql), q.params)}


@register("dask_core_hours", title="Dask core-hours", unit="core-hours", missing=0,
          definition="Worker threads x hours of every user's Dask clusters in the bucket.")
def dask_core_hours(q: Query) -> Series:
    return dict(_by_bucket(q, "SUM(x.core_seconds) / 3600.0", "dask_usage"))


@register("dask_core_hours_per_user", title="Dask core-hours per Dask user", unit="core-hours",
          definition="Core-hours in the bucket / users whose Dask cluster had workers in the bucket.")
def dask_core_hours_per_user(q: Query) -> Series:
    values = "SUM(x.core_seconds) / 3600.0, COUNT(DISTINCT CASE WHEN x.worker_seconds > 0 THEN x.user_id END)"
    return {bucket: hours / users for bucket, hours, users in _by_bucket(q, values, "dask_usage") if users}


@register("dask_erred_task_rate", title="Dask erred-task rate", unit="ratio",
          definition="Dask tasks that erred / tasks that finished (in memory or erred) in the bucket.")
def dask_erred_task_rate(q: Query) -> Series:
    return {bucket: erred / finished for bucket, erred, finished in _by_bucket(q, "SUM(x.erred), SUM(x.finished)", "dask_tasks") if finished}


@register("dask_peak_workers", title="Peak concurrent Dask workers", unit="workers",
          definition="Most workers of all users' Dask clusters seen at once (in one sampling cycle) in the bucket.")
def dask_peak_workers(q: Query) -> Series:
    return dict(_by_bucket(q, "MAX(x.workers)", "dask_cycles"))


@register("dask_core_hours_by_user", kind="table", periodic=True, title="Dask core-hours by user and period",
          unit="core-hours", definition="Core-hours of each user's Dask clusters, per bucket (--by).")
def dask_core_hours_by_user(q: Query) -> Table:
    sql = (
        f"SELECT {q.bucket} AS bucket, u.name, SUM(du.core_seconds) / 3600.0 AS hours"
        " FROM dask_usage du JOIN calendar c ON c.day = du.day JOIN users u ON u.id = du.user_id"
        f" WHERE du.day BETWEEN :a AND :b GROUP BY {q.bucket}, u.name ORDER BY bucket, hours DESC, u.name"
    )
    return Table(["period", "user", "core_hours"], [[b, u, h] for b, u, h in q.conn.execute(sa.text(sql), q.params)])


@register("dask_top_users", kind="table", title="Top Dask users by core-hours", unit="core-hours",
          definition=f"The {TOP_USERS} users with the most Dask core-hours in the range, with worker-hours, "
                     "memory GB-hours, tasks and erred-task rate.")
def dask_top_users(q: Query) -> Table:
    sql = f"""
    WITH use AS (
      SELECT user_id, SUM(core_seconds) AS cs, SUM(worker_seconds) AS ws, SUM(memory_byte_seconds) AS ms
      FROM dask_usage WHERE day BETWEEN :a AND :b GROUP BY user_id
    ), tasks AS (
      SELECT user_id, SUM(finished) AS finished, SUM(erred) AS erred FROM dask_tasks
      WHERE day BETWEEN :a AND :b GROUP BY user_id
    )
    SELECT u.name, use.cs / 3600.0, use.ws / 3600.0, use.ms / {GB_HOUR}, COALESCE(tasks.finished, 0), COALESCE(tasks.erred, 0)
    FROM use JOIN users u ON u.id = use.user_id LEFT JOIN tasks ON tasks.user_id = use.user_id
    ORDER BY use.cs DESC, u.name LIMIT {TOP_USERS}
    """
    rows = [
        [name, core, workers, memory, int(finished), int(erred), (erred / finished) if finished else None]
        for name, core, workers, memory, finished, erred in q.conn.execute(sa.text(sql), q.params)
    ]
    return Table(["user", "core_hours", "worker_hours", "memory_gb_hours", "tasks_finished", "tasks_erred", "erred_rate"], rows)
