"""Accounting ingests inside ``af-metrics serve``, so that no cron job is needed.

Each kind (HTCondor history files, the schedd, Prometheus pod hours) runs on its own interval
from the ``[accounting]`` settings, off unless set. The ingests block (files, the bindings,
SQL), so each runs in a worker thread, one run of a kind at a time. A failed run logs one line,
reports its source down (``af_source_up{source="htcondor"}`` ...) and is retried with the
collector's backoff; it never stops serve.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from af_metrics.accounting.history_files import ingest_history_files
from af_metrics.accounting.ingest import ingest_pod_hours, ingest_schedd, pod_hours_due
from af_metrics.collector import SourceHealth
from af_metrics.config import Settings
from af_metrics.ledger.accounting import JobIngest
from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import HistoryError, Schedd
from af_metrics.sources.kubernetes import PrometheusError

log = logging.getLogger("af_metrics.accounting")

HISTORY_FILES, SCHEDD, PODS = "htcondor", "htcondor_schedd", "kubernetes"  # af_source_up{source=...}
EXPECTED = (HistoryError, PrometheusError, OSError)  # a source's fault: one line, no traceback


@dataclass
class Ingest:
    """One kind of ingest, run every ``interval`` seconds (backing off while it fails)."""

    source: str
    interval: float
    backoff_max: float
    run: Callable[[float, threading.Event], str]  # blocking: (now, halt) -> what it did in a few words, "" if nothing
    health: SourceHealth = field(default_factory=SourceHealth)

    async def loop(self, stop: asyncio.Event, on_done: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run until ``stop`` is set (a run in progress is told to halt at its next step); ``on_done`` after a run that read something or failed."""
        halt = threading.Event()
        relay = asyncio.create_task(_set_when(stop, halt))
        try:
            while not stop.is_set():
                now = time.time()
                done = ""
                try:
                    done = await asyncio.to_thread(self.run, now, halt)
                    self.health.ok(now)
                    if done:
                        log.info("%s ingest: %s", self.source, done)
                except EXPECTED as exc:
                    self.health.failed(f"{self.source} ingest: {exc}")
                except Exception:  # a bug or a ledger outage must not stop serve
                    log.exception("%s ingest failed", self.source)
                    self.health.failed(f"{self.source} ingest: internal error (see log)")
                if on_done is not None and (done or not self.health.up):  # a failed run may have written part
                    await on_done()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.health.next_delay(self.interval, self.backoff_max))
                except asyncio.TimeoutError:
                    pass
        finally:
            relay.cancel()


async def _set_when(stop: asyncio.Event, halt: threading.Event) -> None:
    await stop.wait()
    halt.set()


def ingests_from_settings(settings: Settings, ledger: Ledger) -> list[Ingest]:
    """The ingests the ``[accounting]`` settings turn on (none by default)."""
    cfg = settings.accounting
    rules = cfg.rules
    ingests = []
    if cfg.history_files:
        files_health = SourceHealth()

        def counted(stats: JobIngest) -> None:
            files_health.skipped_total += stats.skipped

        def files(now: float, halt: threading.Event) -> str:
            stats, read = ingest_history_files(ledger, cfg.history_files, rules, now, on_read=counted)
            skipped = f", {stats.skipped} unreadable ads skipped" if stats.skipped else ""
            return f"{read} changed files: {stats.read} records, {stats.written} jobs written{skipped}" if read else ""

        ingests.append(Ingest(HISTORY_FILES, cfg.history_interval, settings.backoff_max, files, files_health))
    if cfg.schedd_interval:
        schedd = Schedd(cfg.schedd, cfg.pool)

        def from_schedd(now: float, halt: threading.Event) -> str:
            stats = ingest_schedd(ledger, schedd, rules, now)
            return f"schedd {cfg.schedd or '(local)'}: {stats.read} records, {stats.written} jobs written"

        ingests.append(Ingest(SCHEDD, cfg.schedd_interval, settings.backoff_max, from_schedd))
    if cfg.pods_interval:

        def pods(now: float, halt: threading.Event) -> str:
            hours = pod_hours_due(ledger, settings.timezone, now)
            wanted = itertools.takewhile(lambda _: not halt.is_set(), hours)  # serve is stopping: stop between hours
            stats = ingest_pod_hours(ledger, cfg, cfg.prometheus_url, wanted, now)
            return f"{stats.hours} of {len(hours)} due hours read, {stats.pod_hours} pod-hours" if hours else ""

        ingests.append(Ingest(PODS, cfg.pods_interval, settings.backoff_max, pods))
    return ingests
