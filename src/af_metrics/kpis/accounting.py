"""Accounting KPIs: core-hours per user, group and bucket, batch CPU efficiency, the hub's share.

All come from the per-user totals (``accounting.totals``), which count each core once: pods'
requested cores plus batch jobs' ``RequestCpus`` x wall; Dask schedulers' figures are never
added. Definitions: docs/accounting.md.
"""

from __future__ import annotations

from collections import defaultdict

import af_metrics.accounting.totals as acc  # a module, not names: accounting.totals imports kpis.periods
from af_metrics.kpis.registry import Query, Series, Table, register

UNATTRIBUTED = "(unattributed)"
NO_GROUP = "(none)"


def _totals(q: Query, by_group: bool = False) -> list[acc.Totals]:
    return q.once(("accounting_totals", by_group), lambda: acc.usage_totals(q.conn, q.period, q.by, by_group))


def _per_bucket(q: Query, value) -> dict[str, float]:  # noqa: ANN001 - Totals -> seconds
    out: dict[str, float] = defaultdict(float)
    for t in _totals(q):
        out[t.bucket] += value(t)
    return out


@register("core_hours", title="Core-hours", unit="core-hours", missing=0,
          definition="Cores allocated x hours in the bucket: pods' requested cores plus batch jobs' RequestCpus x wall (each core once).")
def core_hours(q: Query) -> Series:
    return {b: s / acc.HOUR for b, s in _per_bucket(q, lambda t: t.core_seconds).items()}


@register("batch_cpu_efficiency", title="Batch CPU efficiency", unit="ratio",
          definition="CPU time (user + system) / (RequestCpus x wall time) of the batch jobs' usage in the bucket.")
def batch_cpu_efficiency(q: Query) -> Series:
    cpu = _per_bucket(q, lambda t: t.batch_cpu_seconds)
    cores = _per_bucket(q, lambda t: t.batch_core_seconds)
    return {b: cpu[b] / c for b, c in cores.items() if c > 0}


@register("hub_share_of_batch", title="Share of batch work through the hub", unit="ratio",
          definition="Batch core-hours attributed to hub users / all batch core-hours of the schedd(s) in the bucket.")
def hub_share_of_batch(q: Query) -> Series:
    hub = _per_bucket(q, lambda t: t.batch_core_seconds if t.user is not None else 0.0)
    every = _per_bucket(q, lambda t: t.batch_core_seconds)
    return {b: hub[b] / s for b, s in every.items() if s > 0}


@register("core_hours_per_user", title="Core-hours per user", unit="table", kind="table",
          definition="Per user over the range: core-hours (notebook pods, other pods, batch), batch CPU efficiency, "
                     "GPU-hours, Dask core-hours (beside the total); the unattributed remainder as its own row.")
def core_hours_per_user(q: Query) -> Table:
    rows = []
    for t in _totals(q):
        h = t.hours()
        rows.append([t.user or UNATTRIBUTED, h["core_hours"], h["notebook_core_hours"], h["pod_core_hours"],
                     h["batch_core_hours"], h["batch_cpu_efficiency"], h["gpu_hours"], h["dask_core_hours"]])
    rows.sort(key=lambda r: -r[1])
    return Table(["user", "core_hours", "notebook_core_hours", "pod_core_hours", "batch_core_hours",
                  "batch_cpu_efficiency", "gpu_hours", "dask_core_hours"], rows)


@register("core_hours_per_group", title="Core-hours per accounting group", unit="table", kind="table",
          definition="Per accounting group over the range (HTCondor AcctGroup; pods: their namespace): "
                     "core-hours, users, batch CPU efficiency.")
def core_hours_per_group(q: Query) -> Table:
    groups: dict[str, list] = {}
    for t in _totals(q, by_group=True):
        if t.group == "" and t.core_seconds == 0:
            continue  # Dask figures carry no group
        g = groups.setdefault(t.group or NO_GROUP, [0.0, set(), 0.0, 0.0])
        g[0] += t.core_seconds
        if t.user is not None:
            g[1].add(t.user)
        g[2] += t.batch_cpu_seconds
        g[3] += t.batch_core_seconds
    rows = [[name, s / acc.HOUR, len(users), cpu / core if core > 0 else None] for name, (s, users, cpu, core) in groups.items()]
    rows.sort(key=lambda r: -r[1])
    return Table(["group", "core_hours", "users", "batch_cpu_efficiency"], rows)
