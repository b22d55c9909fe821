"""Prometheus families for analysis runs, shared by the facility exporter and the user's server.

The facility fills ``AnalysisFigures`` from the ledger, the Jupyter server extension from the
user's journal; both expose the same names, so one dashboard works on either endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from af_metrics.coffea.record import CHUNK_SECONDS_BOUNDS, RunRecord

OTHER_DATASETS = "_other"


@dataclass(slots=True)
class UserAnalysis:
    """One user's analysis totals."""

    datasets: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # events, bytes, process s
    chunk_duration: list[int] = field(default_factory=lambda: [0] * (len(CHUNK_SECONDS_BOUNDS) + 1))
    chunk_seconds_sum: float = 0.0
    runs: dict[str, int] = field(default_factory=dict)  # by status

    def add(self, record: RunRecord, dataset_cap: int) -> None:
        self.runs[record.status] = self.runs.get(record.status, 0) + 1
        self.chunk_seconds_sum += record.chunk_seconds
        self.chunk_duration = [a + b for a, b in zip(self.chunk_duration, record.chunk_duration.counts, strict=True)]
        for d in record.datasets:
            self.add_dataset(d.name, d.events, d.bytes_read, d.process_seconds, dataset_cap)

    def add_dataset(self, name: str, events: int, nbytes: int, seconds: float, cap: int) -> None:
        key = name if name in self.datasets or len(self.datasets) < cap else OTHER_DATASETS
        before = self.datasets.get(key, (0, 0, 0.0))
        self.datasets[key] = (before[0] + events, before[1] + nbytes, before[2] + seconds)


@dataclass(slots=True)
class AnalysisFigures:
    per_user: dict[str, UserAnalysis] = field(default_factory=dict)
    users_dropped: int = 0


def analysis_families(fig: AnalysisFigures) -> Iterator[Metric]:
    labels = ["user", "dataset"]
    events = CounterMetricFamily("af_analysis_events", "Events processed by analysis runs", labels=labels)
    nbytes = CounterMetricFamily("af_analysis_bytes_read", "Bytes read from input files by analysis runs", labels=labels)
    seconds = CounterMetricFamily(
        "af_analysis_process_seconds", "Time spent in processors' process() by analysis runs", labels=labels
    )
    runs = CounterMetricFamily("af_analysis_runs", "Analysis runs, by outcome", labels=["user", "status"])
    chunks = HistogramMetricFamily(
        "af_analysis_chunk_duration_seconds", "Wall time of one chunk on a worker (open, build, process)", labels=["user"]
    )
    for user, ua in sorted(fig.per_user.items()):
        for dataset, (n, b, s) in sorted(ua.datasets.items()):
            events.add_metric([user, dataset], n)
            nbytes.add_metric([user, dataset], b)
            seconds.add_metric([user, dataset], s)
        for status, n in sorted(ua.runs.items()):
            runs.add_metric([user, status], n)
        cumulative, total = [], 0
        for upper, count in zip((*map(str, CHUNK_SECONDS_BOUNDS), "+Inf"), ua.chunk_duration, strict=True):
            total += count
            cumulative.append((upper, total))
        chunks.add_metric([user], cumulative, ua.chunk_seconds_sum)
    yield from (events, nbytes, seconds, runs, chunks)
    yield GaugeMetricFamily(
        "af_analysis_users_dropped", "Users left out of per-user analysis series by the cap", value=fig.users_dropped
    )


class AnalysisCollector:
    """A prometheus_client collector over fixed ``AnalysisFigures``."""

    def __init__(self, figures: AnalysisFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        yield from analysis_families(self.figures)
