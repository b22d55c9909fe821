"""One per-user total, by day, month (any calendar bucket) and accounting group, counting each core once.

Which source counts (docs/accounting.md): cores are counted where they are allocated. A pod's
requested cores come from Kubernetes, a batch job's ``RequestCpus`` x wall time from HTCondor;
``core_hours`` is their sum. A Dask worker is an HTCondor job (coffea-casa), a pod, or a process
inside the notebook pod, so its cores are in one of those already: the Dask schedulers'
core-hours are reported beside the total (``dask_core_hours``) and never added to it.

Usage is booked on the days it happened (a job's wall time split across its days); batch job
counts on the day a job ended. Rows with no user are the unattributed remainder.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from af_metrics.kpis.periods import GRANULARITIES, Period

HOUR = 3600.0
MIB_PER_GIB = 1024.0
BYTES_PER_GIB = 1024.0**3
NO_GROUP = ""


@dataclass(slots=True)
class Totals:
    """Usage of one user (None: unattributed) in one bucket and group, in seconds."""

    bucket: str
    user: str | None
    group: str
    notebook_core_seconds: float = 0.0  # requested by notebook pods
    notebook_used_core_seconds: float = 0.0  # used (cAdvisor)
    pod_core_seconds: float = 0.0  # requested by other pods (e.g. Dask worker pods)
    pod_used_core_seconds: float = 0.0
    pod_seconds: float = 0.0  # time pods ran (all roles)
    pods: int = 0
    pod_gpu_seconds: float = 0.0
    pod_memory_gib_seconds: float = 0.0  # requested
    pod_memory_used_gib_seconds: float = 0.0
    batch_core_seconds: float = 0.0  # RequestCpus x wall
    batch_wall_seconds: float = 0.0
    batch_cpu_seconds: float = 0.0
    batch_jobs: int = 0  # jobs that ended in the bucket (after running)
    batch_first_end: float | None = None
    batch_last_end: float | None = None
    batch_gpu_seconds: float = 0.0
    batch_memory_gib_seconds: float = 0.0  # requested
    batch_memory_used_gib_seconds: float = 0.0  # peak MemoryUsage x wall
    dask_core_seconds: float = 0.0  # beside the total, never in it

    @property
    def pod_requested_core_seconds(self) -> float:
        return self.notebook_core_seconds + self.pod_core_seconds

    @property
    def core_seconds(self) -> float:
        return self.pod_requested_core_seconds + self.batch_core_seconds

    @property
    def batch_cpu_efficiency(self) -> float | None:
        return self.batch_cpu_seconds / self.batch_core_seconds if self.batch_core_seconds > 0 else None

    def hours(self) -> dict[str, float | int | str | None]:
        """The row as shown and exported: hours, GiB-hours, counts, efficiency."""
        h = HOUR
        return {
            "period": self.bucket, "user": self.user, "group": self.group,
            "core_hours": self.core_seconds / h,
            "notebook_core_hours": self.notebook_core_seconds / h,
            "notebook_used_core_hours": self.notebook_used_core_seconds / h,
            "pod_core_hours": self.pod_core_seconds / h,
            "pod_used_core_hours": self.pod_used_core_seconds / h,
            "batch_core_hours": self.batch_core_seconds / h,
            "batch_wall_hours": self.batch_wall_seconds / h,
            "batch_cpu_hours": self.batch_cpu_seconds / h,
            "batch_cpu_efficiency": self.batch_cpu_efficiency,
            "batch_jobs": self.batch_jobs,
            "pods": self.pods,
            "dask_core_hours": self.dask_core_seconds / h,
            "gpu_hours": (self.pod_gpu_seconds + self.batch_gpu_seconds) / h,
            "memory_gib_hours": (self.pod_memory_gib_seconds + self.batch_memory_gib_seconds) / h,
            "memory_used_gib_hours": (self.pod_memory_used_gib_seconds + self.batch_memory_used_gib_seconds) / h,
        }


def _bucket(by: str) -> str:
    return "CAST(:label AS VARCHAR(32))" if by == "range" else f"c.{GRANULARITIES[by]}"


def usage_totals(
    conn: Connection, period: Period, by: str = "month", by_group: bool = False, user_id: int | None = None
) -> list[Totals]:
    """Per-user totals in ``period``, one row per (bucket, user[, group]), users by name, unattributed last;
    with ``user_id``, that user's rows only."""
    b = _bucket(by)
    params = {"a": period.first, "b": period.last, "label": period.label, "uid": user_id}

    def only(column: str) -> str:
        return "" if user_id is None else f" AND {column} = :uid"
    rows: dict[tuple[str, str | None, str], Totals] = {}

    def row(bucket: str, user: str | None, group: str | None) -> Totals:
        key = (bucket, user, (group or NO_GROUP) if by_group else NO_GROUP)
        if key not in rows:
            rows[key] = Totals(*key)
        return rows[key]

    batch = (
        f"SELECT {b}, us.name, j.grp, SUM(d.core_seconds), SUM(d.wall_seconds), SUM(d.cpu_seconds), SUM(d.gpu_seconds),"
        " SUM(d.memory_mib_seconds), SUM(d.memory_used_mib_seconds)"
        " FROM batch_job_days d JOIN batch_jobs j ON j.id = d.job_id JOIN calendar c ON c.day = d.day"
        " LEFT JOIN users us ON us.id = j.user_id"
        f" WHERE d.day BETWEEN :a AND :b{only('j.user_id')} GROUP BY {b}, us.name, j.grp"
    )
    for bucket, user, group, core, wall, cpu, gpu, mem, used in conn.execute(sa.text(batch), params):
        t = row(bucket, user, group)
        t.batch_core_seconds += core
        t.batch_wall_seconds += wall
        t.batch_cpu_seconds += cpu
        t.batch_gpu_seconds += gpu
        t.batch_memory_gib_seconds += mem / MIB_PER_GIB
        t.batch_memory_used_gib_seconds += used / MIB_PER_GIB
    ended = (
        f"SELECT {b}, us.name, j.grp, COUNT(*), MIN(j.ended), MAX(j.ended)"
        " FROM batch_jobs j JOIN calendar c ON c.day = j.end_day LEFT JOIN users us ON us.id = j.user_id"
        f" WHERE j.end_day BETWEEN :a AND :b AND j.settled = 1 AND j.wall_seconds > 0{only('j.user_id')} GROUP BY {b}, us.name, j.grp"
    )
    for bucket, user, group, n, lo, hi in conn.execute(sa.text(ended), params):
        t = row(bucket, user, group)
        t.batch_jobs += n
        t.batch_first_end = lo if t.batch_first_end is None else min(lo, t.batch_first_end)
        t.batch_last_end = hi if t.batch_last_end is None else max(hi, t.batch_last_end)
    pod = (
        f"SELECT {b}, us.name, p.namespace, p.role, COUNT(DISTINCT h.pod), SUM(h.seconds),"
        " SUM(h.cpu_request_seconds), SUM(h.cpu_used_seconds),"
        " SUM(h.gpu_request_seconds), SUM(h.memory_request_byte_seconds), SUM(h.memory_used_byte_seconds)"
        " FROM pod_hours h JOIN pods p ON p.namespace = h.namespace AND p.name = h.pod JOIN calendar c ON c.day = h.day"
        " LEFT JOIN users us ON us.id = p.user_id"
        f" WHERE h.day BETWEEN :a AND :b{only('p.user_id')} GROUP BY {b}, us.name, p.namespace, p.role"
    )
    for bucket, user, namespace, role, n, seconds, req, used, gpu, mem, mem_used in conn.execute(sa.text(pod), params):
        t = row(bucket, user, namespace)
        t.pods += n
        t.pod_seconds += seconds
        if role == "notebook":
            t.notebook_core_seconds += req
            t.notebook_used_core_seconds += used
        else:
            t.pod_core_seconds += req
            t.pod_used_core_seconds += used
        t.pod_gpu_seconds += gpu
        t.pod_memory_gib_seconds += mem / BYTES_PER_GIB
        t.pod_memory_used_gib_seconds += mem_used / BYTES_PER_GIB
    dask = (
        f"SELECT {b}, us.name, SUM(u.core_seconds) FROM dask_usage u JOIN calendar c ON c.day = u.day"
        f" JOIN users us ON us.id = u.user_id WHERE u.day BETWEEN :a AND :b{only('u.user_id')} GROUP BY {b}, us.name"
    )
    for bucket, user, core in conn.execute(sa.text(dask), params):
        row(bucket, user, NO_GROUP).dask_core_seconds += core
    return sorted(rows.values(), key=lambda t: (t.bucket, t.user is None, t.user or "", t.group))
