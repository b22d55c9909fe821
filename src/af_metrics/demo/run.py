"""``af-metrics demo``: activity on the local facility while the collector watches, then the KPIs."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from af_metrics.collector import Collector
from af_metrics.config import Settings
from af_metrics.demo.driver import DriverError
from af_metrics.demo.facility import LocalFacility
from af_metrics.demo.scenario import morning, user_names
from af_metrics.kpis import period_report
from af_metrics.ledger.store import Ledger
from af_metrics.report import write_report
from af_metrics.timeutil import zone

PAUSE = 1.5  # seconds after each step, so that the collector sees every state


class BackgroundCollection:
    """The collector (or all of ``af-metrics serve``) on its own event loop in a thread."""

    def __init__(self, settings: Settings, ledger: Ledger, serve_http: bool) -> None:
        self.settings, self.ledger, self.serve_http = settings, ledger, serve_http
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="af-metrics-collection", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self._started.set()

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        if self.serve_http:
            from af_metrics.serve import serve

            await serve(self.settings, self.ledger, self._stop)
        else:
            await Collector(self.settings, self.ledger).run(self._stop)


def drive_activity(facility: LocalFacility, collection: BackgroundCollection, users: int, seconds: float, console: Console) -> None:
    """Run the scenario's steps within ``seconds``, showing progress; a failed step is reported, not fatal."""
    deadline = time.monotonic() + seconds
    steps = morning(facility.driver, user_names(users))
    columns = (SpinnerColumn(), TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("activity", total=len(steps) + 1)
        for step in steps:
            left = deadline - time.monotonic()
            if left <= 0:
                console.print(f"[yellow]time budget of {seconds:.0f}s used up: remaining steps skipped")
                break
            if not collection.running:
                raise RuntimeError(f"the collector stopped: {collection.error}")
            progress.update(task, description=step.what)
            try:
                step.act(left)
            except DriverError as exc:
                console.print(f"[yellow]{step.what}: {exc}")
            time.sleep(max(0.0, min(PAUSE, deadline - time.monotonic())))
            progress.advance(task)
        progress.update(task, description="last collection cycles")
        time.sleep(2 * collection.settings.poll_interval + 0.5)
        progress.advance(task)


def today_report(ledger: Ledger, tz: str) -> dict:
    return period_report(ledger, period=dt.datetime.now(zone(tz)).date().isoformat())


def print_kpis(report: dict, console: Console) -> None:
    """The period report as tables, then one line with the figures the demo is about."""
    write_report(report, "table", out=console.file)
    values = {h["name"]: h["value"] for h in report["headline"]}
    rate = values.get("spawn_success_rate")
    console.print(
        f"[bold]Demo facility today: DAU {values.get('dau') or 0:g}, sessions {values.get('sessions') or 0:g}, "
        f"spawn success {'n/a' if rate is None else f'{rate:.0%}'}"
    )
