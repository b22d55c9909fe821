"""Per-user Dask series for ``/metrics``: live figures of each scheduler, usage counters per user.

Live gauges come from each target's last read (no scheduler is contacted at scrape time);
counters are the ledger's running totals, refreshed after each sampling cycle. Targets and
users are capped at ``per_user_series_max`` each.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from af_metrics.dask_collector import DaskCollector

COUNTERS = (
    ("worker_seconds", "af_dask_worker_seconds", "Worker-seconds of the user's Dask clusters"),
    ("core_seconds", "af_dask_core_seconds", "Core-seconds (worker threads x seconds) of the user's Dask clusters"),
    ("memory_byte_seconds", "af_dask_memory_byte_seconds", "Dask-managed memory held x seconds, over the user's clusters"),
    ("tasks_finished", "af_dask_tasks_finished", "Dask tasks of the user that finished (in memory or erred)"),
    ("tasks_erred", "af_dask_tasks_erred", "Dask tasks of the user that erred"),
    ("tasks_suspicious", "af_dask_tasks_suspicious", "Times a Dask task of the user was marked suspicious"),
)


class DaskMetrics(Collector):
    def __init__(self, dask: DaskCollector) -> None:
        self.dask = dask

    def collect(self) -> Iterator[Metric]:
        cap = self.dask.settings.per_user_series_max
        ul = ["user", "cluster"]
        up = GaugeMetricFamily("af_dask_scrape_up", "1 if the last read of the user's scheduler succeeded", labels=ul)
        workers = GaugeMetricFamily("af_dask_workers", "Workers of the user's scheduler, by state", labels=[*ul, "state"])
        threads = GaugeMetricFamily("af_dask_threads", "Worker threads of the user's scheduler", labels=ul)
        memory = GaugeMetricFamily("af_dask_memory_bytes", "Dask-managed data held by the user's workers", labels=ul)
        tasks = GaugeMetricFamily("af_dask_tasks", "Tasks of the user's scheduler, by state", labels=[*ul, "state"])
        clients = GaugeMetricFamily("af_dask_clients", "Clients connected to the user's scheduler", labels=ul)
        targets = sorted(self.dask.status.items())
        for target, st in targets[:cap]:
            labels = [target.user, target.cluster]
            up.add_metric(labels, 1.0 if st.health.up else 0.0)
            s = st.sample
            if s is None:
                continue
            for state, n in sorted(s.workers_by_state.items()):
                workers.add_metric([*labels, state], n)
            threads.add_metric(labels, s.threads)
            memory.add_metric(labels, s.memory_bytes)
            for state, n in sorted(s.tasks.items()):
                tasks.add_metric([*labels, state], n)
            clients.add_metric(labels, s.clients)
        yield from (up, workers, threads, memory, tasks, clients)
        yield GaugeMetricFamily("af_dask_targets", "Dask schedulers discovered", value=len(targets))
        yield GaugeMetricFamily(
            "af_dask_series_dropped", "Schedulers and users left out of per-user Dask series by the cap",
            value=max(0, len(targets) - cap) + self.dask.users_dropped,
        )
        discovery = GaugeMetricFamily("af_dask_discovery_up", "1 if the discovery provider answered last time", labels=["provider"])
        for name, health in sorted(self.dask.discovery.health.items()):
            discovery.add_metric([name], 1.0 if health.up else 0.0)
        yield discovery
        if self.dask.last_cycle is not None:
            yield GaugeMetricFamily(
                "af_dask_cycle_duration_seconds", "Wall time of the last Dask sampling cycle", value=self.dask.last_cycle.duration
            )
        for attr, name, doc in COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["user"])
            for user, totals in sorted(self.dask.totals.items()):
                family.add_metric([user], getattr(totals, attr))
            yield family
