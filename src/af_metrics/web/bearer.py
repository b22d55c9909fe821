"""The optional bearer token of the machine endpoints (``/metrics``, ``/sd/dask``).

With ``metrics_token_file`` set, a request must carry ``Authorization: Bearer <token>`` (what
Prometheus sends with ``authorization: {credentials_file: ...}``); anything else gets a 401 with
one line and ``WWW-Authenticate: Bearer``, and nothing of the answer. Without it, they stay open.
The token is that of the file now (see ``secret_files.MetricsToken``): rotating it needs no restart.
"""

from __future__ import annotations

import hmac
import json

import tornado.web

from af_metrics.web.secret_files import MetricsToken


def bearer_ok(handler: tornado.web.RequestHandler) -> bool:
    """Whether the request may read machine endpoints: no token configured, or the right one sent."""
    token: MetricsToken | None = handler.settings.get("metrics_token")
    if token is None:
        return True
    scheme, _, sent = handler.request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent.strip().encode(), token.current().encode())


class BearerRequired(tornado.web.RequestHandler):
    """A machine endpoint: answers only requests with the bearer token, when one is configured."""

    def prepare(self) -> None:
        if bearer_ok(self):
            return
        self.set_status(401)
        self.set_header("WWW-Authenticate", 'Bearer realm="af-metrics"')
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": "send 'Authorization: Bearer <the token of metrics_token_file>'"}) + "\n")
