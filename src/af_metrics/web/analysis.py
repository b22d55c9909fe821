"""``POST /api/v1/analysis/runs``: users' kernels push the record of each analysis run.

The endpoint is user-controlled, so it is treated as hostile: the body is capped (413), parsed
strictly (400), and the run is filed under the user the hub says owns the bearer token (401
otherwise); the ``user`` written in the payload is never used. Only a token that acts for its
user (the user's server token, ``JUPYTERHUB_API_TOKEN``, or the user's own API token) is
accepted: an OAuth token the user gave another client (someone's shared server, a service) only
identifies the user and must not let that client file runs in their name. Token checks are
cached briefly and bounded in concurrency, so a burst of pushes costs the hub little.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict

import httpx
import sqlalchemy as sa
import tornado.web
from pydantic import ValidationError

from af_metrics.coffea.record import RunRecord
from af_metrics.ledger.analysis import store_run
from af_metrics.web.app import BaseHandler

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 256 * 1024
HUB_TIMEOUT = 5.0
HUB_CONCURRENCY = 8  # token lookups in flight at once; the rest wait (bounded by the time-out)


class HubUnavailable(RuntimeError):
    """The hub could not say who owns a token (down, slow, or answering nonsense)."""


class HubIdentity:
    """Who owns a JupyterHub token, as ``GET {hub}/hub/api/user`` with that token says."""

    def __init__(self, hub_url: str, timeout: float = HUB_TIMEOUT, ttl: float = 60.0, negative_ttl: float = 10.0,
                 max_entries: int = 4096, concurrency: int = HUB_CONCURRENCY) -> None:
        self.endpoint = f"{hub_url.rstrip('/')}/hub/api/user"
        self.timeout = timeout
        self.ttl, self.negative_ttl, self.max_entries = ttl, negative_ttl, max_entries
        self._cache: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._lookups = asyncio.Semaphore(concurrency)

    async def user_of(self, token: str) -> str | None:
        """The user's name, or None if the hub does not accept the token as one acting for its user."""
        key = hashlib.sha256(token.encode()).hexdigest()
        if (hit := self._cached(key)) is not None:
            return hit[0]
        try:
            async with asyncio.timeout(self.timeout):
                await self._lookups.acquire()
        except TimeoutError:
            raise HubUnavailable("too many token checks under way") from None
        try:
            if (hit := self._cached(key)) is not None:  # answered while this one waited
                return hit[0]
            name = await self._ask(token)
        finally:
            self._lookups.release()
        self._cache[key] = (name, time.monotonic() + (self.ttl if name else self.negative_ttl))
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return name

    def _cached(self, key: str) -> tuple[str | None, float] | None:
        hit = self._cache.get(key)
        return hit if hit is not None and hit[1] > time.monotonic() else None

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
        if not isinstance(model, dict):
            raise HubUnavailable("hub answered with something that is not a user model")
        name = model.get("name")
        if model.get("kind", "user") != "user" or not isinstance(name, str) or not name:
            return None  # a service's token: services do not run analyses
        return name if acts_for_user(name, model.get("scopes")) else None


def acts_for_user(name: str, scopes: object) -> bool:
    """Whether a token with these (expanded) scopes acts for user ``name``.

    A server's ``JUPYTERHUB_API_TOKEN`` (the hub's ``server`` role) and the user's own API tokens
    carry ``users:activity!user=<name>``; a token the user gave another OAuth client carries only
    the identify scopes (``read:users:name!user=<name>``...) plus access to that client.
    """
    return isinstance(scopes, list) and (f"users:activity!user={name}" in scopes or "users:activity" in scopes)


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
            raise tornado.web.HTTPError(
                401, "the hub does not accept this token as one acting for its user: send your server's JUPYTERHUB_API_TOKEN")
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
        try:
            stored = await asyncio.to_thread(store_run, self.ledger, self.user, record, time.time())
        except (sa.exc.DataError, sa.exc.IntegrityError, OverflowError) as exc:  # the record, not the ledger
            raise tornado.web.HTTPError(400, f"the ledger cannot store this run record: {exc.__class__.__name__}") from None
        if stored:
            log.info("analysis run %s of %s stored", record.run_id, self.user)
        self.write_json({"run_id": record.run_id, "user": self.user, "stored": stored}, 201 if stored else 200)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
