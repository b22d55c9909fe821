"""``af-metrics serve``: one process running the collector loop and the HTTP endpoints."""

from __future__ import annotations

import asyncio
import logging
import signal

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from af_metrics.accounting.schedule import ingests_from_settings
from af_metrics.collector import Collector
from af_metrics.config import Settings
from af_metrics.dask_collector import DaskCollector
from af_metrics.dask_exporter import DaskMetrics
from af_metrics.exporter import build_registry, read_figures
from af_metrics.ledger.store import Ledger
from af_metrics.web.app import make_app
from af_metrics.web.auth import listen_address

log = logging.getLogger("af_metrics.serve")


async def serve(settings: Settings, ledger: Ledger, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    collector = Collector(settings, ledger)
    registry, ledger_metrics, cycle_hist = build_registry(collector)

    figures_lock = asyncio.Lock()  # one read at a time, so that an older read never replaces a newer one

    async def refresh_figures() -> None:
        async with figures_lock:
            try:
                ledger_metrics.figures = await asyncio.to_thread(read_figures, ledger, settings.per_user_series_max)
            except Exception:
                log.exception("could not read figures from the ledger")

    async def after_cycle() -> None:
        if collector.last_cycle is not None:
            cycle_hist.observe(collector.last_cycle.duration)
        await refresh_figures()

    ingests = ingests_from_settings(settings, ledger)  # accounting ingests, if [accounting] turns any on
    for ingest in ingests:
        collector.health[ingest.source] = ingest.health  # shown in /metrics (af_source_up) and /healthz

    dask = DaskCollector.from_settings(settings, ledger)  # None unless a Dask discovery is configured
    if dask is not None:
        registry.register(DaskMetrics(dask))
    app = make_app(ledger, collector, registry, dask=dask)
    bind, port = listen_address(settings)  # a managed hub service listens where the hub says
    sockets = bind_sockets(port, address=bind)
    server = HTTPServer(app, xheaders=True)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    log.info("af-metrics serving on http://%s:%d (metrics at /metrics)", bind, port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await asyncio.gather(
            collector.run(stop, on_cycle=after_cycle), *([dask.run(stop)] if dask else []),
            *(ingest.loop(stop, on_done=refresh_figures) for ingest in ingests),
        )
    finally:
        server.stop()
        await server.close_all_connections()
