"""The web pages ("My usage", facility) and the JSON/CSV API behind their charts.

Routes live under the service prefix the hub's proxy forwards (``/services/af-metrics/``);
the JSON API is also served at the root for scripts talking to af-metrics directly. Every
route here except static files needs a viewer (``web.auth``): a user's own figures, or any
figure for admins. Answers are computed on a small thread pool and reused for
``web_cache_seconds`` (then refreshed behind the last answer); identical requests arriving
together share one computation, so a page load by many people costs one SQL pass per chart.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import logging
import os
import re
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import tornado.web
from tornado.log import access_log

from af_metrics import __version__
from af_metrics.config import Settings
from af_metrics.figures import FIGURES, compute_figure, figure_catalogue, resolve_range, user_id
from af_metrics.kpis import KPIError, compute_kpi, kpi_catalogue, period_report
from af_metrics.kpis.periods import iso_day
from af_metrics.report import write_kpi, write_report
from af_metrics.web.assets import STATIC, plotly_js, plotly_version, templates
from af_metrics.web.auth import OAuthCallbackHandler, ViewerHandler, WebAuth

CACHE_ENTRIES = 512
COMPUTE_THREADS = 2  # SQL passes at once (the machine's cores are shared with the collector)
SLOW_MS = 1000.0  # answers slower than this are logged
COMPUTE_NICENESS = 10  # refreshes and first computations run behind answered requests
log = logging.getLogger(__name__)
FACILITY_FIGURES = [f for f in FIGURES.values() if f.scope == "facility"]
USER_FIGURES = [f for f in FIGURES.values() if f.scope == "user"]

class Answer:
    """A computed result with its JSON encoding and ETag, made once."""

    def __init__(self, value: dict) -> None:
        self.value = value
        self.json = json.dumps(value, default=str).encode()
        self.etag = '"' + hashlib.sha256(self.json).hexdigest()[:32] + '"'


class AnswerCache:
    """Answers reused for ``ttl`` seconds, then served stale while one refresh runs behind,
    so a request waits only for an answer never computed before. LRU-bounded. Computations
    run on a small pool: a burst of new requests queues instead of starving the event loop."""

    def __init__(self, ttl: float, max_entries: int = CACHE_ENTRIES, workers: int = COMPUTE_THREADS) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="af-metrics-answers", initializer=_lower_priority)
        self._done: OrderedDict[tuple, tuple[Answer, float]] = OrderedDict()
        self._running: dict[tuple, asyncio.Future] = {}

    async def get(self, key: tuple, compute: Callable[[], dict]) -> Answer:
        hit = self._done.get(key)
        if hit is not None:
            self._done.move_to_end(key)
            if hit[1] <= time.monotonic() and key not in self._running:
                self._start(key, compute)  # refresh behind; this request gets the last answer
            return hit[0]
        running = self._running.get(key) or self._start(key, compute)
        return await asyncio.shield(running)

    def _start(self, key: tuple, compute: Callable[[], dict]) -> asyncio.Future:
        fut = asyncio.get_running_loop().run_in_executor(self._pool, lambda: Answer(compute()))
        self._running[key] = fut
        fut.add_done_callback(lambda done: self._finished(key, done))
        return fut

    def _finished(self, key: tuple, fut: asyncio.Future) -> None:
        self._running.pop(key, None)
        if fut.cancelled():
            return
        if fut.exception() is not None:  # waiters get it; a failed refresh keeps the last answer
            if key in self._done and not isinstance(fut.exception(), KPIError):
                log.warning("refreshing %s failed: %s", key[:2], fut.exception())
            return
        if self.ttl > 0:
            self._done[key] = (fut.result(), time.monotonic() + self.ttl)
            self._done.move_to_end(key)
            while len(self._done) > self.max_entries:
                self._done.popitem(last=False)


def _lower_priority() -> None:
    """Linux: this computing thread yields the CPU to the threads answering requests."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPUTE_NICENESS)


# -- JSON / CSV API ----------------------------------------------------------------------------


class APIHandler(ViewerHandler):
    """Range arguments in, a cached answer out as JSON or (``format=csv``) CSV."""

    _etag: str | None = None

    def compute_etag(self) -> str | None:
        return self._etag  # the answer's, hashed once (tornado would hash every response body)

    def range_args(self) -> dict[str, str | None]:
        return {k: self.get_query_argument(k, None) for k in ("from", "to", "period", "by")}

    def output_format(self) -> str:
        fmt = self.get_query_argument("format", "json")
        if fmt not in ("json", "csv"):
            raise tornado.web.HTTPError(400, f"bad format {fmt!r}: use json or csv")
        return fmt

    async def answer(self, key: tuple, compute: Callable[[], dict], csv: Callable[[dict, io.StringIO], None], filename: str) -> None:
        fmt = self.output_format()
        cache: AnswerCache = self.settings["answers"]
        try:
            result = await cache.get(key, compute)
        except KPIError as exc:
            raise tornado.web.HTTPError(404 if exc.unknown else 400, str(exc)) from None
        if fmt == "csv":
            out = io.StringIO()
            csv(result.value, out)
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{re.sub(r"[^A-Za-z0-9._-]", "_", filename)}.csv"')
            self.finish(out.getvalue())
            return
        self._etag = result.etag
        self.set_header("Content-Type", "application/json")
        self.finish(result.json)


def _csv(result: dict, out: io.StringIO) -> None:
    write_kpi(result, "csv", out)  # columns, then rows: the same for KPIs and figures


class MeHandler(APIHandler):
    def get(self) -> None:
        self.write_json({"name": self.viewer.name, "admin": self.viewer.admin})


class KPIListHandler(APIHandler):
    def get(self) -> None:
        self.write_json({"kpis": kpi_catalogue()})


class KPIHandler(APIHandler):
    async def get(self, name: str) -> None:
        self.require_admin()
        args = self.range_args()
        await self.answer(("kpi", name, *args.values()), lambda: compute_kpi(self.ledger, name, **args), _csv,
                          f"{name}_{args['period'] or args['from'] or 'last30'}")


class ReportHandler(APIHandler):
    async def get(self) -> None:
        self.require_admin()
        args = {k: v for k, v in self.range_args().items() if k != "by"}
        await self.answer(("report", *args.values()), lambda: period_report(self.ledger, **args),
                          lambda r, out: write_report(r, "csv", out), f"report_{args['period'] or args['from'] or 'last30'}")


class FigureListHandler(APIHandler):
    def get(self) -> None:
        self.write_json({"figures": figure_catalogue(None if self.viewer.admin else "user")})


class FigureHandler(APIHandler):
    """``/api/v1/figures/<name>`` (facility, admins) and ``/api/v1/users/<user>/figures/<name>``."""

    async def get(self, *path: str) -> None:
        user, name = path if len(path) == 2 else (None, path[0])
        fig = FIGURES.get(name)
        if user is None:
            self.require_admin()
            if fig is not None and fig.scope != "facility":
                raise tornado.web.HTTPError(404, f"{name} is a user figure: /api/v1/users/<name>/figures/{name}")
        else:
            self.require_may_see(user)
            if fig is not None and fig.scope != "user":
                raise tornado.web.HTTPError(404, f"{name} is a facility figure: /api/v1/figures/{name}")
        if fig is None:
            raise tornado.web.HTTPError(404, f"unknown figure {name!r}")
        try:
            period, by = resolve_range(self.ledger, **_renamed(self.range_args()))
        except KPIError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        uid = None
        if user is not None:
            uid = await asyncio.to_thread(user_id, self.ledger, user)
            if uid is None and user != self.viewer.name:
                raise tornado.web.HTTPError(404, f"no user {user!r} in the ledger")
        key = ("figure", name, uid, period, by)
        stem = f"{name}{'_' + user if user else ''}_{iso_day(period.first)}_{iso_day(period.last)}"
        await self.answer(key, lambda: compute_figure(self.ledger, name, period, by, uid), _csv, stem)


def _renamed(args: dict[str, str | None]) -> dict[str, str | None]:
    return {"from_": args["from"], "to": args["to"], "period": args["period"], "by": args["by"]}


# -- pages -------------------------------------------------------------------------------------


class PageHandler(ViewerHandler):
    login_redirect = True

    def render_page(self, template: str, **context: Any) -> None:
        auth: WebAuth = self.settings["web_auth"]
        page = templates.get_template(template).render(
            prefix=auth.prefix, viewer=self.viewer, version=__version__, plotly_version=plotly_version(),
            xsrf=self.xsrf_token.decode() if auth.hub_auth else "",
            logout=f"{auth.hub_base}hub/logout" if auth.hub_base and auth.hub_auth else None,
            **context,
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page)

    def range_context(self) -> dict[str, Any]:
        args = {k: self.get_query_argument(k, None) for k in ("from", "to", "period", "by")}
        try:
            period, _ = resolve_range(self.ledger, **_renamed(args))
        except KPIError as exc:
            raise tornado.web.HTTPError(400, str(exc)) from None
        return {"first": iso_day(period.first), "last": iso_day(period.last), "by": args["by"] or "auto"}

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self.error_message(**kwargs)
        self.set_status(status_code)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(templates.get_template("error.html").render(status=status_code, message=message, prefix=self.settings["web_auth"].prefix))


class HomeHandler(PageHandler):
    def get(self) -> None:
        prefix = self.settings["web_auth"].prefix
        self.redirect(f"{prefix}users/{tornado.escape.url_escape(self.viewer.name, plus=False)}" if self.viewer.name else f"{prefix}facility")


class FacilityPageHandler(PageHandler):
    def get(self) -> None:
        self.require_admin()
        self.render_page("page.html", title="Facility usage", page="facility", figures=[f.describe() for f in FACILITY_FIGURES],
                         api="api/v1/figures/", **self.range_context())


class UserPageHandler(PageHandler):
    def get(self, user: str) -> None:
        self.require_may_see(user)
        api = f"api/v1/users/{tornado.escape.url_escape(user, plus=False)}/figures/"
        own = user == self.viewer.name
        self.render_page("page.html", title="My usage" if own else f"Usage of {user}", page="me" if own else "user",
                         figures=[f.describe() for f in USER_FIGURES], api=api, **self.range_context())


@cache
def _plotly_gzipped() -> tuple[bytes, str]:
    body = gzip.compress(plotly_js(), 6)
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class PlotlyHandler(tornado.web.RequestHandler):
    """plotly.min.js from the installed package, gzipped once, cached by browsers for a year."""

    def get(self) -> None:
        gzipped, etag = _plotly_gzipped()
        self.set_header("Content-Type", "application/javascript; charset=utf-8")
        self.set_header("Cache-Control", "public, max-age=31536000, immutable")
        self.set_header("ETag", etag)
        self.set_header("Vary", "Accept-Encoding")
        if self.request.headers.get("If-None-Match") == etag:
            self.set_status(304)
            self.finish()
        elif "gzip" in self.request.headers.get("Accept-Encoding", ""):
            self.set_header("Content-Encoding", "gzip")
            self.finish(gzipped)
        else:
            self.finish(plotly_js())


class StaticHandler(tornado.web.StaticFileHandler):
    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")  # small files; revalidated by ETag


def routes(auth: WebAuth) -> list[tuple]:
    """Pages under the service prefix; the API there and at the root."""
    p = auth.prefix
    api = [
        (r"api/v1/me", MeHandler),
        (r"api/v1/kpis", KPIListHandler),
        (r"api/v1/kpis/([a-z0-9_]+)", KPIHandler),
        (r"api/v1/report", ReportHandler),
        (r"api/v1/figures", FigureListHandler),
        (r"api/v1/figures/([a-z0-9_]+)", FigureHandler),
        (r"api/v1/users/([^/]+)/figures/([a-z0-9_]+)", FigureHandler),
    ]
    out: list[tuple] = [
        (p, HomeHandler),
        (rf"{p}facility", FacilityPageHandler),
        (rf"{p}users/([^/]+)", UserPageHandler),
        (rf"{p}oauth_callback", OAuthCallbackHandler),
        (rf"{p}static/plotly\.min\.js", PlotlyHandler),
        (rf"{p}static/(.+)", StaticHandler, {"path": str(STATIC)}),
    ]
    for base in dict.fromkeys((p, "/")):
        out += [(base + pattern, handler) for pattern, handler in api]
    return out


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Access log: errors and slow answers; the rest (scrapes, chart loads) only at debug level."""
    status, ms = handler.get_status(), 1000.0 * handler.request.request_time()
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO if ms >= SLOW_MS else logging.DEBUG
    if access_log.isEnabledFor(level):
        access_log.log(level, "%d %s %s (%s) %.2fms", status, handler.request.method, handler.request.uri, handler.request.remote_ip, ms)


def app_settings(settings: Settings) -> dict[str, Any]:
    """Tornado application settings the pages need."""
    auth = WebAuth(settings)
    return {
        "web_auth": auth,
        "answers": AnswerCache(settings.web_cache_seconds),
        "cookie_secret": auth.cookie_secret,
        "log_function": log_request,
    }
