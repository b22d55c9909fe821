"""jupyter_server extension: a user's own analysis figures, in the user's own server.

``<server>/af-metrics/metrics`` (Prometheus text) and ``<server>/af-metrics/runs`` (JSON, the
latest runs with derived throughput figures) are read from the journal the user's kernels
write; both need the same authentication as every other Jupyter handler, and the server's
authorizer must allow ``read`` on the ``af-metrics`` resource (so a server's authorizer can keep
visitors it lets in, e.g. through sharing, away from the owner's runs). When a facility URL
is configured, the extension also sends the spool every minute (``AF_METRICS_PUSH_INTERVAL``
seconds), so runs recorded while the facility was down arrive without waiting for the next analysis.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import math
import os
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from tornado import web
from tornado.ioloop import PeriodicCallback

from af_metrics.coffea.delivery import Delivery, analysis_dir, journal_path
from af_metrics.coffea.exposition import AnalysisCollector
from af_metrics.jupyter_ext.journal import JournalTail

ENV_PUSH_INTERVAL = "AF_METRICS_PUSH_INTERVAL"
FLUSH_INTERVAL_SECONDS = 60.0
FLUSH_INTERVAL_RANGE = (1.0, 86_400.0)
RUNS_LIMIT_MAX = 200


def flush_interval(log: logging.Logger) -> float:
    """Seconds between the extension's spool flushes: ``AF_METRICS_PUSH_INTERVAL`` or a minute.
    A bad value is logged and the default used: a user's server must start regardless."""
    text = os.environ.get(ENV_PUSH_INTERVAL, "").strip()
    if not text:
        return FLUSH_INTERVAL_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low, high = FLUSH_INTERVAL_RANGE
    if not low <= value <= high:
        log.warning("af-metrics: %s=%r is not seconds from %g to %g: flushing every %g s",
                    ENV_PUSH_INTERVAL, text[:40], low, high, FLUSH_INTERVAL_SECONDS)
        return FLUSH_INTERVAL_SECONDS
    return value


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "af_metrics.jupyter_ext"}]


class _Handler(JupyterHandler):
    auth_resource = "af-metrics"  # what @authorized asks the server's authorizer about

    @property
    def journal(self) -> JournalTail:
        return self.settings["af_metrics_journal"]


class MetricsHandler(_Handler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        figures = self.journal.figures()
        registry = CollectorRegistry()
        registry.register(AnalysisCollector(figures))
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(registry))


class RunsHandler(_Handler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        try:
            limit = min(max(int(self.get_query_argument("limit", "50")), 1), RUNS_LIMIT_MAX)
        except ValueError:
            raise web.HTTPError(400, "limit must be a whole number") from None
        self.journal.refresh()
        runs = [{**r.model_dump(), **r.derived()} for r in list(self.journal.recent)[-limit:]]
        self.set_header("Content-Type", "application/json")
        self.finish({"user": self.journal.user, "runs": runs[::-1]})


def _load_jupyter_server_extension(serverapp: Any) -> None:
    user = os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    tail = JournalTail(journal_path(analysis_dir()), user)
    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    web_app.settings["af_metrics_journal"] = tail
    web_app.add_handlers(".*$", [
        (url_path_join(base, "af-metrics/metrics"), MetricsHandler),
        (url_path_join(base, "af-metrics/runs"), RunsHandler),
    ])
    delivery = Delivery.from_env()
    if delivery.pushes:
        async def flush() -> None:
            await asyncio.to_thread(delivery.flush)

        PeriodicCallback(flush, 1000 * flush_interval(serverapp.log)).start()
    serverapp.log.info("af-metrics: analysis figures at %saf-metrics/metrics (journal %s)", base, tail.path)
