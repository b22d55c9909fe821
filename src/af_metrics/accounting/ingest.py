"""Ingest runs: a history (file or schedd) in one transaction, Prometheus pod hours one hour at a time.

A history is written whole or not at all: a record that cannot be read stops the run and
leaves the ledger as it was. Pod hours are committed hour by hour with the hour reached, so
an interrupted backfill resumes where it stopped.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO

from af_metrics.accounting.settings import AccountingSettings, AttributionRule, rules_for
from af_metrics.ledger.accounting import JobIngest, attributor, record_jobs, record_pod_hours
from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import BatchJob, HistoryError, Schedd, job_from_ad, jobs_from_stream, refuse
from af_metrics.sources.kubernetes import HOUR, PrometheusPods, hours_between

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
                   advance: Callable[[int], None] = lambda n: None, skip_bad: bool = False) -> JobIngest:
    """condor_history output or a history file (settled jobs), or with ``queue`` condor_q output (counted up to now).

    An unreadable ad raises HistoryError and nothing is written; with ``skip_bad`` it is counted
    and passed over, unless no ad at all could be read (then it is an error still: a wrong file).
    """
    rules = tuple(rules)
    bad = JobIngest()
    jobs = jobs_from_stream(stream, final=not queue, observed_at=now, attributes=job_attributes(rules),
                            on_bad=bad.skip if skip_bad else refuse)
    stats = ingest_jobs(ledger, jobs, rules, now, advance)
    if bad.skipped and not stats.read:  # nothing was written
        raise HistoryError(bad.first_skipped + (f" (and {bad.skipped - 1} more unreadable ads)" if bad.skipped > 1 else ""))
    stats.add(bad)
    return stats


class _Slice(io.RawIOBase):
    """A binary file read up to byte ``end`` (the rest may be an ad still being written)."""

    def __init__(self, raw: BinaryIO, end: int | None) -> None:
        self.raw, self.end = raw, end

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        size = len(buffer) if self.end is None else max(0, min(len(buffer), self.end - self.raw.tell()))
        data = self.raw.read(size)
        buffer[: len(data)] = data
        return len(data)


def ingest_history_file(ledger: Ledger, path: str, rules: Iterable[AttributionRule], now: float, *, queue: bool = False,
                        advance: Callable[[int], None] = lambda n: None, skip_bad: bool = False) -> JobIngest:
    """A whole history file; ``advance`` gets the bytes read after each batch.

    Raises OSError if it cannot be read, HistoryError if a record is bad (see ``skip_bad``).
    """
    with open(path, "rb") as raw:
        return ingest_history_bytes(ledger, raw, rules, now, queue=queue, advance=advance, skip_bad=skip_bad)


def ingest_history_bytes(ledger: Ledger, raw: BinaryIO, rules: Iterable[AttributionRule], now: float, *, queue: bool = False,
                         start: int = 0, end: int | None = None, advance: Callable[[int], None] = lambda n: None,
                         skip_bad: bool = False) -> JobIngest:
    """The bytes [start, end) of an open history file (default: to its end); HistoryError line
    numbers count from ``start``. The caller's file stays open."""
    raw.seek(start)
    piece = _Slice(raw, end)
    last = start

    def step(_: int) -> None:
        nonlocal last
        pos = piece.tell()
        advance(pos - last)
        last = pos

    stream = io.TextIOWrapper(io.BufferedReader(piece), encoding="utf-8", errors="replace")
    try:
        return ingest_history(ledger, stream, rules, now, queue=queue, advance=step, skip_bad=skip_bad)
    finally:
        stream.detach()  # leave ``raw`` open for the caller


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
        gpu_resources=cfg.gpu_resources,
    )


def pods_resume_point(ledger: Ledger) -> float | None:
    """The end of the last pod hour ingested, if any."""
    with ledger.begin() as conn:
        return (ledger.get_state(conn, KUBERNETES_STATE) or {}).get("until")


def pod_hours_due(ledger: Ledger, tz: str, now: float, start: float | None = None, end: float | None = None) -> list[float]:
    """The whole local hours to read: from ``start``, else where the last run stopped, else 24 h
    before ``end``; up to ``end`` (default and at most ``now``: an hour is read once it is over)."""
    end = now if end is None else min(end, now)
    if start is None:
        start = pods_resume_point(ledger) or end - 24 * HOUR
    return list(hours_between(start, end, tz))


def ingest_pod_hours(ledger: Ledger, cfg: AccountingSettings, url: str, hours: Iterable[float], now: float,
                     advance: Callable[[int], None] = lambda n: None) -> PodIngest:
    """``ingest_pods`` with its own Prometheus reader, at most ``backfill_hours_max`` hours."""
    reader = pods_reader(cfg, url)
    try:
        return ingest_pods(ledger, reader, cfg, itertools.islice(hours, cfg.backfill_hours_max), now, advance)
    finally:
        reader.close()


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
