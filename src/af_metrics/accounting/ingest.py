"""Ingest runs: a history (file or schedd) in one transaction, Prometheus pod hours one hour at a time.

A history is written whole or not at all: a record that cannot be read stops the run and
leaves the ledger as it was. Pod hours are committed hour by hour with the hour reached, so
an interrupted backfill resumes where it stopped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from af_metrics.accounting.settings import AccountingSettings, AttributionRule, rules_for
from af_metrics.ledger.accounting import JobIngest, attributor, record_jobs, record_pod_hours
from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import BatchJob, Schedd, job_from_ad, jobs_from_stream
from af_metrics.sources.kubernetes import HOUR, PrometheusPods

BATCH = 5000
KUBERNETES_STATE = "kubernetes_pods"


def job_attributes(rules: Iterable[AttributionRule]) -> list[str]:
    """The ClassAd attributes the htcondor rules read (besides the accounting ones)."""
    return list(dict.fromkeys(r.attribute for r in rules_for(rules, "htcondor")))


def _batches(items: Iterable[BatchJob], size: int) -> Iterator[list[BatchJob]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def ingest_jobs(ledger: Ledger, jobs: Iterable[BatchJob], rules: Iterable[AttributionRule], now: float,
                advance: Callable[[int], None] = lambda n: None) -> JobIngest:
    """Write jobs (streamed, in batches) in one transaction."""
    stats = JobIngest()
    with ledger.begin() as conn:
        attr = attributor(conn, rules)
        for batch in _batches(jobs, BATCH):
            stats.add(record_jobs(ledger, conn, batch, attr, now))
            advance(len(batch))
    return stats


def ingest_history(ledger: Ledger, stream: IO[str], rules: Iterable[AttributionRule], now: float, *, queue: bool = False,
                   advance: Callable[[int], None] = lambda n: None) -> JobIngest:
    """condor_history output or a history file (settled jobs), or with ``queue`` condor_q output (counted up to now)."""
    rules = tuple(rules)
    jobs = jobs_from_stream(stream, final=not queue, observed_at=now, attributes=job_attributes(rules))
    return ingest_jobs(ledger, jobs, rules, now, advance)


def ingest_schedd(ledger: Ledger, schedd: Schedd, rules: Iterable[AttributionRule], now: float) -> JobIngest:
    """The schedd's history since the last run (with an overlap) and its queue, in one transaction."""
    rules = tuple(rules)
    key = f"htcondor_schedd:{schedd.name or 'local'}"
    with ledger.begin() as conn:
        state = ledger.get_state(conn, key) or {}
    attrs = job_attributes(rules)
    done = [job_from_ad(ad, final=True, observed_at=now, attributes=attrs) for ad in schedd.history(state.get("until"), attrs)]
    running = [job_from_ad(ad, final=False, observed_at=now, attributes=attrs) for ad in schedd.queue(attrs)]
    stats = ingest_jobs(ledger, [*running, *done], rules, now)
    until = max((j.ended for j in done if j.ended is not None), default=state.get("until"))
    with ledger.begin() as conn:
        ledger.set_state(conn, key, {"until": until}, now)
    return stats


@dataclass(slots=True)
class PodIngest:
    hours: int = 0
    pod_hours: int = 0
    unattributed: int = 0  # pods no rule attributed, summed over hours


def pods_reader(cfg: AccountingSettings, url: str | None = None) -> PrometheusPods:
    return PrometheusPods(
        url=url or cfg.prometheus_url, timeout=cfg.prometheus_timeout, body_max=cfg.prometheus_body_max,
        series_max=cfg.prometheus_series_max, scrape_interval=cfg.scrape_interval, namespaces=cfg.namespaces,
        gpu_resources=cfg.gpu_resources, annotations=any(r.attribute.startswith("annotation:") for r in cfg.rules),
    )


def pods_resume_point(ledger: Ledger) -> float | None:
    """The end of the last pod hour ingested, if any."""
    with ledger.begin() as conn:
        return (ledger.get_state(conn, KUBERNETES_STATE) or {}).get("until")


def ingest_pods(ledger: Ledger, reader: PrometheusPods, cfg: AccountingSettings, hours: Iterable[float], now: float,
                advance: Callable[[int], None] = lambda n: None) -> PodIngest:
    """Read and write each hour in its own transaction, recording how far it got."""
    stats = PodIngest()
    for hour in hours:
        rows = reader.hour(hour)
        with ledger.begin() as conn:
            stats.unattributed += record_pod_hours(ledger, conn, rows, attributor(conn, cfg.rules), cfg.notebook_label, now)
            until = max(hour + HOUR, (ledger.get_state(conn, KUBERNETES_STATE) or {}).get("until") or 0.0)
            ledger.set_state(conn, KUBERNETES_STATE, {"until": until}, now)
        stats.hours += 1
        stats.pod_hours += len(rows)
        advance(1)
    return stats
