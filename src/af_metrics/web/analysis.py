"""``POST /api/v1/analysis/runs``: users' kernels push the record of each analysis run.

The endpoint is user-controlled, so it is treated as hostile: the body is capped (413), parsed
strictly (400), and the run is filed under the user the hub says owns the bearer token (401
otherwise); the ``user`` written in the payload is never used. Token checks are cached briefly
so a burst of pushes costs one hub request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict

import httpx
import tornado.web
from pydantic import ValidationError

from af_metrics.coffea.record import RunRecord
from af_metrics.ledger.analysis import store_run
from af_metrics.web.app import BaseHandler

MAX_BODY_BYTES = 256 * 1024
HUB_TIMEOUT = 5.0


class HubUnavailable(RuntimeError):
    """The hub could not say who owns a token (down, slow, or answering nonsense)."""


class HubIdentity:
    """Who owns a JupyterHub token, as ``GET {hub}/hub/api/user`` with that token says."""

    def __init__(self, hub_url: str, timeout: float = HUB_TIMEOUT, ttl: float = 60.0, negative_ttl: float = 10.0,
                 max_entries: int = 4096) -> None:
        self.endpoint = f"{hub_url.rstrip('/')}/hub/api/user"
        self.timeout = timeout
        self.ttl, self.negative_ttl, self.max_entries = ttl, negative_ttl, max_entries
        self._cache: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    async def user_of(self, token: str) -> str | None:
        """The user's name, or None if the hub does not accept the token as a user's."""
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._cache.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        name = await self._ask(token)
        self._cache[key] = (name, time.monotonic() + (self.ttl if name else self.negative_ttl))
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return name

    async def _ask(self, token: str) -> str | None:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                resp = await client.get(self.endpoint, headers={"Authorization": f"token {token}"})
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"hub unreachable: {exc.__class__.__name__}") from None
        if resp.status_code in (401, 403):
            return None
        if resp.status_code != 200:
            raise HubUnavailable(f"hub answered {resp.status_code}")
        try:
            model = resp.json()
        except ValueError:
            raise HubUnavailable("hub answered with something that is not JSON") from None
        name = model.get("name") if isinstance(model, dict) else None
        if model.get("kind", "user") != "user" or not isinstance(name, str) or not name:
            return None  # a service's token: services do not run analyses
        return name


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: token X`` or ``Bearer X`` header."""
    scheme, _, value = (header or "").strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() in ("token", "bearer") and value else None


@tornado.web.stream_request_body
class AnalysisPushHandler(BaseHandler):
    """Accept one ``RunRecord``; 201 when stored, 200 when that run was already stored."""

    user: str
    _body: bytearray
    _too_big: bool

    async def prepare(self) -> None:
        self._body, self._too_big = bytearray(), False
        if self.request.method != "POST":
            return
        declared = self.request.headers.get("Content-Length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            raise tornado.web.HTTPError(413, f"a run record is at most {MAX_BODY_BYTES} bytes")
        self.request.connection.set_max_body_size(4 * MAX_BODY_BYTES)  # chunked uploads: hard stop
        token = bearer_token(self.request.headers.get("Authorization"))
        if token is None:
            raise tornado.web.HTTPError(401, "send the JupyterHub token of your server: Authorization: token <token>")
        identity: HubIdentity = self.settings["hub_identity"]
        try:
            user = await identity.user_of(token)
        except HubUnavailable as exc:
            raise tornado.web.HTTPError(503, f"cannot check the token now ({exc}); try again later") from None
        if user is None:
            raise tornado.web.HTTPError(401, "the hub does not accept this token as a user's token")
        self.user = user

    def data_received(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._too_big = True
            self._body.clear()
        elif not self._too_big:
            self._body.extend(chunk)

    async def post(self) -> None:
        if self._too_big:
            raise tornado.web.HTTPError(413, f"a run record is at most {MAX_BODY_BYTES} bytes")
        try:
            record = RunRecord.model_validate_json(bytes(self._body))
        except ValidationError as exc:
            raise tornado.web.HTTPError(400, f"invalid run record: {_first_error(exc)}") from None
        stored = await asyncio.to_thread(store_run, self.ledger, self.user, record, time.time())
        self.write_json({"run_id": record.run_id, "user": self.user, "stored": stored}, 201 if stored else 200)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
