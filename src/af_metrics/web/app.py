"""Tornado application: Prometheus exposition, health, service discovery, and (web.pages) the
pages and JSON API that need a logged-in viewer."""

from __future__ import annotations

import json
from typing import Any

import tornado.web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from af_metrics.collector import Collector
from af_metrics.discovery.http_sd import DaskSDHandler
from af_metrics.ledger.store import Ledger
from af_metrics.web.bearer import BearerRequired, bearer_ok
from af_metrics.web.secret_files import MetricsToken


class BaseHandler(tornado.web.RequestHandler):
    @property
    def ledger(self) -> Ledger:
        return self.settings["ledger"]

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload, default=str))

    def error_message(self, **kwargs: Any) -> str:
        """The one line to show for an error: the HTTPError's message, else the status' reason."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        return exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else self._reason

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.write_json({"error": self.error_message(**kwargs)}, status_code)


class MetricsHandler(BearerRequired, BaseHandler):
    def get(self) -> None:
        registry: CollectorRegistry = self.settings["registry"]
        encoder, content_type = choose_encoder(self.request.headers.get("Accept", ""))
        self.set_header("Content-Type", content_type)
        self.finish(encoder(registry))


class HealthHandler(BaseHandler):
    """Open to liveness probes; the sources' errors (which name hosts) only with the bearer token."""

    def get(self) -> None:
        collector: Collector = self.settings["collector"]
        sources = {
            name: {"up": h.up, "last_success": h.last_success, "last_error": h.last_error}
            for name, h in collector.health.items()
        }
        status = "ok" if all(s["up"] for s in sources.values()) else "degraded"
        self.write_json({"status": status, "sources": sources} if bearer_ok(self) else {"status": status})


def make_app(ledger: Ledger, collector: Collector, registry: CollectorRegistry, dask: Any = None) -> tornado.web.Application:
    from af_metrics.web.analysis import AnalysisPushHandler, HubIdentity  # it builds on BaseHandler
    from af_metrics.web.pages import app_settings, routes  # so do these

    settings = collector.settings
    pages = app_settings(settings)
    return tornado.web.Application(
        [
            (r"/metrics", MetricsHandler),
            (r"/healthz", HealthHandler),
            (r"/sd/dask", DaskSDHandler),
            (r"/api/v1/analysis/runs", AnalysisPushHandler),
            *routes(pages["web_auth"]),
        ],
        **pages,
        ledger=ledger,
        collector=collector,
        registry=registry,
        dask=dask,
        hub_identity=HubIdentity(settings.resolved_hub()[0]),
        metrics_token=MetricsToken(settings.metrics_token_file) if settings.metrics_token_file else None,
    )
