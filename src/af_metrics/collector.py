"""The collection loop: read sources, decide sessions, write the ledger, keep source health.

A failed poll decides nothing and writes nothing; the loop retries with exponential backoff
and reports the source down (``af_source_up{source="jupyterhub"} 0``) until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from af_metrics.config import Settings
from af_metrics.failed_spawns import failed_between_polls
from af_metrics.ledger.store import Ledger
from af_metrics.sessions import decide, users_to_check
from af_metrics.sources.jupyterhub import HubAuthError, HubClient, HubError

log = logging.getLogger("af_metrics.collector")

HUB = "jupyterhub"
HUB_METRICS = "jupyterhub_metrics"


@dataclass(slots=True)
class SourceHealth:
    """What the exporter says about one source."""

    up: bool = False
    last_success: float | None = None
    last_error: str | None = None
    failures: int = 0  # consecutive
    errors_total: int = 0
    skipped_total: int = 0  # records read but unreadable, passed over (the read itself succeeded)

    def ok(self, at: float) -> None:
        self.up, self.last_success, self.last_error, self.failures = True, at, None, 0

    def failed(self, error: str) -> None:
        if error != self.last_error:
            log.warning("%s", error)
        self.up, self.last_error = False, error
        self.failures += 1
        self.errors_total += 1

    def next_delay(self, interval: float, backoff_max: float) -> float:
        """``interval`` while up; exponential backoff (1 s, 2 s, 4 s ... up to ``backoff_max``) while down."""
        if self.failures == 0:
            return interval
        return min(backoff_max, 2.0 ** (self.failures - 1))


@dataclass(slots=True)
class CycleStats:
    started: float
    duration: float
    ok: bool


@dataclass
class Collector:
    """Polls the hub every ``poll_interval`` seconds into the ledger."""

    settings: Settings
    ledger: Ledger
    health: dict[str, SourceHealth] = field(default_factory=lambda: {HUB: SourceHealth(), HUB_METRICS: SourceHealth()})
    last_cycle: CycleStats | None = None
    cycles: int = 0
    _last_sweep: float = 0.0
    _token_checked: bool = False

    def _client(self) -> HubClient:
        url, token = self.settings.resolved_hub()
        return HubClient(url, token, timeout=self.settings.request_timeout, page_size=self.settings.page_size)

    async def cycle(self) -> None:
        """One poll of the hub; raises HubError (after recording it) if the hub cannot be read."""
        t0 = time.time()
        ok = False
        try:
            async with self._client() as hub:
                if not self._token_checked:
                    await hub.check_token()
                    self._token_checked = True
                await self._poll(hub)
            ok = True
        except HubAuthError as exc:
            self._token_checked = False
            self.health[HUB].failed(str(exc))
            raise
        except HubError as exc:
            self.health[HUB].failed(str(exc))
            raise
        finally:
            self.cycles += 1
            self.last_cycle = CycleStats(t0, time.time() - t0, ok)

    async def _poll(self, hub: HubClient) -> None:
        sweep = time.time() - self._last_sweep >= self.settings.user_sweep_interval
        open_sessions, pending = await asyncio.to_thread(self.ledger.open_runs)
        snap = await hub.active(sweep=sweep)
        await hub.check(snap, users_to_check(snap, open_sessions, pending))
        histogram = None
        try:
            histogram = await hub.spawn_histogram()
        except HubError as exc:
            self.health[HUB_METRICS].failed(f"/hub/metrics: {exc}")
        decision = decide(snap, open_sessions, pending)
        if histogram is not None:
            try:
                decision.spawns.extend(await failed_between_polls(hub, self.ledger, decision, histogram))
            except HubAuthError:
                raise
            except HubError as exc:  # the poll itself stands; the failures are looked for next time
                log.warning("looking for spawns that failed between polls: %s", exc)
        await asyncio.to_thread(self.ledger.apply, decision, snap.observed_at, histogram)
        if sweep:
            await asyncio.to_thread(self.ledger.record_users, snap.users, snap.observed_at)
            self._last_sweep = snap.observed_at
        self.health[HUB].ok(snap.observed_at)
        if histogram is not None:
            self.health[HUB_METRICS].ok(histogram.observed_at)

    def next_delay(self) -> float:
        """The poll interval while healthy; exponential backoff (1 s, 2 s, 4 s ...) while down."""
        return self.health[HUB].next_delay(self.settings.poll_interval, self.settings.backoff_max)

    async def run(self, stop: asyncio.Event, on_cycle=None) -> None:  # noqa: ANN001 - optional callback
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.cycle()
            except HubError:
                pass
            except Exception:  # a bug must not stop collection: log it, count it, go on
                log.exception("collection cycle failed")
                self.health[HUB].failed("internal error in collection cycle (see log)")
            if on_cycle is not None:
                await on_cycle()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.next_delay())
            except asyncio.TimeoutError:
                pass
