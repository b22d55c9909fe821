"""A job's usage split across the facility-local days it ran in.

HTCondor reports a job's wall time (``RemoteWallClockTime``, summed over all its runs) and its
first start and completion. The wall time is spread evenly over [first start, end]: exact for a
job that ran once (wall == end - start), and for a job that was evicted and restarted an even
spread over the span its runs lie in. When the span is shorter than the wall time (a missing
or wrong start), the wall time is placed just before the end. CPU time, core-, GPU- and memory
figures follow the wall time's split; a month's share is the sum of its days.
"""

from __future__ import annotations

from collections.abc import Iterator

from af_metrics.sources.htcondor import BatchJob
from af_metrics.timeutil import day_of, day_start

MAX_DAYS = 3700  # spans are cut to about ten years before their end


def day_spans(start: float, end: float, tz: str) -> Iterator[tuple[int, float]]:
    """(local day ordinal, seconds of [start, end) inside it), in order."""
    day = day_of(start, tz)
    t = start
    while t < end:
        stop = min(end, day_start(day + 1, tz))
        if stop > t:
            yield day, stop - t
        t = max(t, stop)
        day += 1


def job_days(job: BatchJob, tz: str) -> list[dict[str, float]]:
    """Per-day rows of ``batch_job_days`` (without job_id) for one job."""
    if job.wall <= 0 or job.ended is None:
        return []
    end = job.ended
    start = job.started if job.started is not None and job.started < end else end - job.wall
    if end - start < job.wall or end - start > MAX_DAYS * 86400.0:
        start = end - min(job.wall, MAX_DAYS * 86400.0)  # bounded: the totals stay whole through ``scale``
    scale = job.wall / (end - start)
    cpu_per_wall = job.cpu / job.wall
    mem = job.request_memory or 0.0
    used = job.memory_usage or 0.0
    rows = []
    for day, seconds in day_spans(start, end, tz):
        wall = seconds * scale
        rows.append({
            "day": day,
            "wall_seconds": wall,
            "core_seconds": wall * job.request_cpus,
            "cpu_seconds": wall * cpu_per_wall,
            "gpu_seconds": wall * job.request_gpus,
            "memory_mib_seconds": wall * mem,
            "memory_used_mib_seconds": wall * used,
        })
    return rows
