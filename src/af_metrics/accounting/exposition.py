"""Accounting series for ``/metrics``: core- and CPU-seconds by infrastructure, group and user.

Read from the ledger after a collection cycle (never at scrape time). Core-seconds are what the
per-user totals count (pods' requested cores, batch jobs' RequestCpus x wall; no Dask), so
``rate()`` of them is cores in use. Per-user series are capped (largest users first).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import STATUS_NAMES

BATCH = (
    "SELECT j.grp, us.name, SUM(j.request_cpus * j.wall_seconds), SUM(j.cpu_seconds)"
    " FROM batch_jobs j LEFT JOIN users us ON us.id = j.user_id GROUP BY j.grp, us.name"
)
PODS = (
    "SELECT p.namespace, us.name, SUM(h.cpu_request_seconds), SUM(h.cpu_used_seconds)"
    " FROM pod_hours h JOIN pods p ON p.namespace = h.namespace AND p.name = h.pod"
    " LEFT JOIN users us ON us.id = p.user_id GROUP BY p.namespace, us.name"
)


@dataclass(slots=True)
class AccountingFigures:
    by_group: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (infrastructure, group) -> [core, cpu]
    unattributed: dict[str, float] = field(default_factory=dict)  # infrastructure -> core-seconds
    per_user: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (user, infrastructure) -> [core, cpu]
    users_dropped: int = 0
    jobs: dict[str, int] = field(default_factory=dict)  # settled jobs by final status


def read_accounting_figures(ledger: Ledger, cap: int) -> AccountingFigures:
    fig = AccountingFigures()
    users: dict[str, float] = {}
    with ledger.engine.connect() as conn:
        for infrastructure, sql in (("htcondor", BATCH), ("kubernetes", PODS)):
            for group, user, core, cpu in conn.execute(sa.text(sql)):
                g = fig.by_group.setdefault((infrastructure, group or ""), [0.0, 0.0])
                g[0] += core or 0.0
                g[1] += cpu or 0.0
                if user is None:
                    fig.unattributed[infrastructure] = fig.unattributed.get(infrastructure, 0.0) + (core or 0.0)
                    continue
                u = fig.per_user.setdefault((user, infrastructure), [0.0, 0.0])
                u[0] += core or 0.0
                u[1] += cpu or 0.0
                users[user] = users.get(user, 0.0) + (core or 0.0)
        fig.jobs = {
            STATUS_NAMES.get(status, str(status)): n
            for status, n in conn.execute(sa.text("SELECT status, COUNT(*) FROM batch_jobs WHERE settled = 1 GROUP BY status"))
        }
    keep = set(sorted(users, key=lambda n: (-users[n], n))[:cap])
    fig.per_user = {k: v for k, v in fig.per_user.items() if k[0] in keep}
    fig.users_dropped = len(users) - len(keep)
    return fig


def accounting_families(fig: AccountingFigures) -> Iterator[Metric]:
    core = CounterMetricFamily("af_accounting_core_seconds", "Cores allocated x seconds (pods' requests, batch RequestCpus x wall)",
                               labels=["infrastructure", "group"])
    cpu = CounterMetricFamily("af_accounting_cpu_seconds", "CPU time used (batch user+system, pods' cAdvisor usage)",
                              labels=["infrastructure", "group"])
    for (infrastructure, group), (c, u) in sorted(fig.by_group.items()):
        core.add_metric([infrastructure, group], c)
        cpu.add_metric([infrastructure, group], u)
    unattributed = CounterMetricFamily("af_accounting_unattributed_core_seconds", "Core-seconds no attribution rule gave a hub user",
                                       labels=["infrastructure"])
    for infrastructure, c in sorted(fig.unattributed.items()):
        unattributed.add_metric([infrastructure], c)
    jobs = CounterMetricFamily("af_accounting_batch_jobs", "Batch jobs that left the queue, by final status", labels=["status"])
    for status, n in sorted(fig.jobs.items()):
        jobs.add_metric([status], n)
    user_core = CounterMetricFamily("af_user_core_seconds", "Cores allocated to the user x seconds", labels=["user", "infrastructure"])
    user_cpu = CounterMetricFamily("af_user_cpu_seconds", "CPU time the user's jobs and pods used", labels=["user", "infrastructure"])
    for (user, infrastructure), (c, u) in sorted(fig.per_user.items()):
        user_core.add_metric([user, infrastructure], c)
        user_cpu.add_metric([user, infrastructure], u)
    yield from (core, cpu, unattributed, jobs, user_core, user_cpu)
    yield GaugeMetricFamily("af_accounting_user_series_dropped", "Users left out of per-user accounting series by the cap",
                            value=fig.users_dropped)
