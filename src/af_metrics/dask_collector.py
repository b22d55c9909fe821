"""The Dask sampling loop: discover every user's scheduler, read them all concurrently, book usage.

Each cycle reads every target at most once, ``dask_concurrency`` at a time, each under its own
deadline and caps (``sources.dask``), so one hostile or dead scheduler costs at most its
time-out and counts as a failed read for that user only. The cycle's reads are written to the
ledger in one transaction (``ledger.dask.record_cycle``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from af_metrics.collector import CycleStats, SourceHealth
from af_metrics.config import Settings
from af_metrics.discovery import DaskTarget, Discovery, Provider
from af_metrics.discovery.gateway import GatewayProvider
from af_metrics.discovery.hub import HubTemplateProvider
from af_metrics.discovery.static import StaticFileProvider
from af_metrics.ledger.dask import UserDaskTotals, recent_users, record_cycle, user_totals
from af_metrics.ledger.store import Ledger
from af_metrics.sources.dask import SchedulerHTTP, SchedulerSample, ScrapeError, ScrapeLimits, describe, scrape

log = logging.getLogger("af_metrics.dask")

GATEWAY_USERS_SINCE = 7 * 86400  # gateway discovery asks about users seen in the last week


def providers_from_settings(settings: Settings, ledger: Ledger) -> list[Provider]:
    """The discovery providers the settings enable (none: Dask sampling is off)."""
    providers: list[Provider] = []
    if settings.dask_static_file:
        providers.append(StaticFileProvider(Path(settings.dask_static_file).expanduser()))
    if settings.dask_url_template:
        url, token = settings.resolved_hub()
        providers.append(HubTemplateProvider(url, token, settings.dask_url_template, timeout=settings.request_timeout))
    if settings.dask_gateway_url:

        async def users() -> list[str]:
            return await asyncio.to_thread(recent_users, ledger, time.time() - GATEWAY_USERS_SINCE)

        providers.append(GatewayProvider(settings.dask_gateway_url, settings.dask_gateway_password, users, timeout=settings.request_timeout))
    return providers


@dataclass(slots=True)
class TargetStatus:
    """A target's health and its last successful read (what /metrics shows live)."""

    health: SourceHealth = field(default_factory=SourceHealth)
    sample: SchedulerSample | None = None


@dataclass
class DaskCollector:
    """Samples every discovered scheduler every ``dask_interval`` seconds into the ledger."""

    settings: Settings
    ledger: Ledger
    discovery: Discovery
    targets: list[DaskTarget] = field(default_factory=list)
    status: dict[DaskTarget, TargetStatus] = field(default_factory=dict)
    totals: dict[str, UserDaskTotals] = field(default_factory=dict)
    users_dropped: int = 0
    last_cycle: CycleStats | None = None
    cycles: int = 0
    _http: SchedulerHTTP | None = None

    @classmethod
    def from_settings(cls, settings: Settings, ledger: Ledger) -> "DaskCollector | None":
        providers = providers_from_settings(settings, ledger)
        return cls(settings, ledger, Discovery(providers)) if providers else None

    @property
    def limits(self) -> ScrapeLimits:
        s = self.settings
        return ScrapeLimits(timeout=s.dask_timeout, body_max=s.dask_body_max, lines_max=s.dask_lines_max)

    async def read_all(self, targets: list[DaskTarget]) -> list[SchedulerSample | ScrapeError]:
        """Read every target once, ``dask_concurrency`` at a time, each within its own deadline."""
        if self._http is None:
            self._http = SchedulerHTTP(self.settings.dask_timeout)
        limit = asyncio.Semaphore(self.settings.dask_concurrency)
        limits = self.limits

        async def one(target: DaskTarget) -> SchedulerSample | ScrapeError:
            async with limit:
                try:
                    return await scrape(self._http, target.url, limits)  # type: ignore[arg-type]
                except ScrapeError as exc:
                    return exc
                except Exception as exc:  # an unforeseen answer or URL costs this user's read only
                    log.debug("reading %s failed", target.url, exc_info=True)
                    return ScrapeError(describe(exc))

        return await asyncio.gather(*(one(t) for t in targets))

    async def cycle(self) -> None:
        """Discover, read every target, write the cycle to the ledger, refresh per-user totals."""
        t0 = time.time()
        ok = False
        try:
            self.targets = await self.discovery.targets()
            results = await self.read_all(self.targets)
            reads: list[tuple[DaskTarget, SchedulerSample | None]] = []
            status: dict[DaskTarget, TargetStatus] = {}
            for target, result in zip(self.targets, results):
                st = status[target] = self.status.get(target) or TargetStatus()
                if isinstance(result, ScrapeError):
                    st.health.failed(f"dask scheduler of {target.user} ({target.cluster}): {result}")
                    st.sample = None
                    reads.append((target, None))
                else:
                    st.health.ok(result.observed_at)
                    st.sample = result
                    reads.append((target, result))
            self.status = status
            await asyncio.to_thread(record_cycle, self.ledger, t0, reads, self.settings.dask_interval)
            self.totals, self.users_dropped = await asyncio.to_thread(user_totals, self.ledger, self.settings.per_user_series_max)
            ok = True
        finally:
            self.cycles += 1
            self.last_cycle = CycleStats(t0, time.time() - t0, ok)

    async def run(self, stop: asyncio.Event, on_cycle: Callable[[], Awaitable[None]] | None = None) -> None:
        """Sample until ``stop`` is set; a cycle starts every ``dask_interval`` seconds."""
        while not stop.is_set():
            try:
                await self.cycle()
            except Exception:  # a bug or a ledger outage must not stop sampling
                log.exception("dask sampling cycle failed")
            if on_cycle is not None:
                await on_cycle()
            elapsed = self.last_cycle.duration if self.last_cycle else 0.0
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, self.settings.dask_interval - elapsed))
            except asyncio.TimeoutError:
                pass
