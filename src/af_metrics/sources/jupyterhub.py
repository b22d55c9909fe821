"""Where the hub is read: the JupyterHub REST API and ``/hub/metrics``.

Least privilege: the service token needs only ``list:users``, ``read:users``,
``read:servers``, ``read:users:activity`` and ``read:metrics``. Listing uses the API's
pagination; each poll asks for active servers only, and for stopped servers only of users
whose sessions the ledger holds open.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client.parser import text_string_to_metric_families

from af_metrics.facts import HubSnapshot, ServerSeen, ServerStopped, SpawnHistogram, UserSeen
from af_metrics.sources.http import ReadError, read_capped
from af_metrics.timeutil import parse_timestamp

REQUIRED_SCOPES = ("list:users", "read:users", "read:servers", "read:users:activity", "read:metrics")
PAGINATION = "application/jupyterhub-pagination+json"
MAX_BODY = 64 * 1024 * 1024  # a hub answer larger than this is refused
MAX_PAGES = 10_000  # users listing: 2 million users at the default page size
PROFILE_KEYS = ("profile", "image", "profile_slug", "flavor")
PROGRESS_MAX = 64 * 1024  # a finished spawn's progress stream is one short event
PROGRESS_SECONDS = 2.0


class HubError(RuntimeError):
    """The hub could not be read; the message is one actionable line."""


class HubAuthError(HubError):
    """The token is rejected or lacks scopes: retrying will not help."""


class HubNotFound(HubError):
    """The hub answered 404 (a user deleted between two requests, say)."""


def parse_time(value: str | None) -> float | None:
    return parse_timestamp(value) if value else None


def profile_of(user_options: dict | None) -> str | None:
    """The profile or image a server was started with, from its user options."""
    if not isinstance(user_options, dict):
        return None
    for key in PROFILE_KEYS:
        value = user_options.get(key)
        if isinstance(value, str) and value:
            return value[:255]
    return None


def missing_scopes(granted: Iterable[str]) -> list[str]:
    """Required scopes not covered by ``granted`` (filtered scopes like ``read:users!group=x`` count)."""
    have = {s.split("!", 1)[0] for s in granted}
    implied = {"admin:users": {"list:users", "read:users", "read:users:activity"}, "admin:servers": {"read:servers"}}
    for scope, extra in implied.items():
        if scope in have:
            have |= extra
    return [s for s in REQUIRED_SCOPES if s not in have]


class HubClient:
    """A small async client for the parts of the Hub API af-metrics reads."""

    def __init__(self, url: str, token: str, timeout: float = 10.0, page_size: int = 200, concurrency: int = 8) -> None:
        if not url:
            raise HubError("no hub URL: set hub_url (AF_METRICS_HUB_URL) or run as a JupyterHub service")
        if not token:
            raise HubAuthError("no hub API token: set hub_api_token (AF_METRICS_HUB_API_TOKEN) or JUPYTERHUB_API_TOKEN")
        self.url = url.rstrip("/")
        self.page_size = page_size
        self._limit = asyncio.Semaphore(concurrency)
        self._client = httpx.AsyncClient(
            headers={"Authorization": f"token {token}"},
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "HubClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get(self, path: str, params: dict | None = None, accept: str = "application/json") -> bytes:
        url = f"{self.url}/hub/{path.lstrip('/')}"
        try:
            async with self._limit:
                return bytes(await read_capped(self._client, url, MAX_BODY, headers={"Accept": accept}, params=params))
        except ReadError as exc:
            if exc.status in (401, 403):
                raise HubAuthError(
                    f"hub refused the token ({exc.status}) for {path}: check the token and that its role "
                    f"grants {', '.join(REQUIRED_SCOPES)}"
                ) from None
            if exc.status == 404:
                raise HubNotFound(f"hub has no {path}") from None
            raise HubError(f"hub answered {exc.status} for {path}" if exc.status else f"hub: {exc}") from None
        except httpx.TimeoutException:
            raise HubError(f"hub at {self.url} did not answer within the time-out") from None
        except httpx.HTTPError as exc:
            raise HubError(f"cannot reach hub at {self.url}: {exc.__class__.__name__}: {exc}") from None

    async def _json(self, path: str, params: dict | None = None, accept: str = "application/json") -> Any:
        body = await self._get(path, params, accept)
        try:
            return json.loads(body)
        except ValueError:
            raise HubError(f"hub answered {path} with something that is not JSON") from None

    async def check_token(self) -> None:
        """Fail with one actionable line if the token is bad or lacks a required scope."""
        whoami = await self._json("api/user")
        missing = missing_scopes(whoami.get("scopes", []))
        if missing:
            who = whoami.get("name", "?")
            raise HubAuthError(
                f"token of {whoami.get('kind', 'owner')} {who!r} lacks scope(s) {', '.join(missing)}: "
                f"add them to its role in JupyterHub's load_roles"
            )

    async def users(self, state: str | None = None, include_stopped: bool = False) -> AsyncIterator[dict]:
        """Every user model, page by page (the offset must advance; at most MAX_PAGES pages)."""
        offset = pages = 0
        while True:
            params: dict = {"offset": offset, "limit": self.page_size}
            if state:
                params["state"] = state
            if include_stopped:
                params["include_stopped_servers"] = "1"
            page = await self._json("api/users", params, accept=PAGINATION)
            if isinstance(page, list):  # hubs older than 2.0 do not paginate
                for user in page:
                    yield user
                return
            for user in page.get("items", []):
                yield user
            nxt = (page.get("_pagination") or {}).get("next")
            if not nxt:
                return
            pages += 1
            try:
                following = int(nxt["offset"])
            except (KeyError, TypeError, ValueError):
                raise HubError("hub's pagination has no usable next offset") from None
            if following <= offset or pages >= MAX_PAGES:
                raise HubError(f"hub's pagination does not advance (offset {offset} -> {following}, page {pages})")
            offset = following

    async def user(self, name: str) -> dict | None:
        try:
            return await self._json(f"api/users/{quote(name, safe='')}", {"include_stopped_servers": "1"})
        except HubNotFound:
            return None

    async def active(self, sweep: bool = False) -> HubSnapshot:
        """Active servers of every user; every user too if ``sweep``."""
        snap = HubSnapshot(observed_at=time.time())
        with _unexpected_answer():
            async for model in self.users(state="active"):
                snap.servers.extend(_servers_of(model))
            if sweep:
                async for model in self.users():
                    snap.users.append(_user_of(model))
        return snap

    async def check(self, snap: HubSnapshot, names: Iterable[str]) -> None:
        """Add what the hub says of ``names``' servers (stopped ones included) to ``snap``."""
        names = sorted(set(names))
        models = await asyncio.gather(*(self.user(n) for n in names), return_exceptions=True)
        active = {(s.user, s.server) for s in snap.servers}
        for name, model in zip(names, models):
            if isinstance(model, HubAuthError):
                raise model
            if isinstance(model, HubError):
                continue  # not checked this time: its sessions stay as they are until a poll can tell
            if isinstance(model, BaseException):
                raise model
            snap.users_checked.add(name)
            with _unexpected_answer():
                for server_name, server in ((model or {}).get("servers") or {}).items():
                    seen = _server_of(name, server_name, server)
                    if seen is None:
                        snap.stopped.append(ServerStopped(name, server_name, parse_time(server.get("last_activity"))))
                    elif (name, seen.server) not in active:
                        snap.servers.append(seen)

    async def stopped_since(self, since: float) -> list[tuple[ServerStopped, str | None]]:
        """Stopped servers (with their profile) that the hub stopped at ``since`` or later, of
        users with no active server: one listing of inactive users, stopped servers included."""
        found = []
        with _unexpected_answer():
            async for model in self.users(state="inactive", include_stopped=True):
                for server_name, server in (model.get("servers") or {}).items():
                    stopped_at = parse_time(server.get("last_activity"))
                    if server.get("stopped") and stopped_at is not None and stopped_at >= since:
                        found.append((ServerStopped(model["name"], server_name or "", stopped_at), profile_of(server.get("user_options"))))
        return found

    async def spawn_failed(self, user: str, server: str) -> bool:
        """Whether the last spawn of this server failed: the hub keeps the failure (until the
        next spawn) and tells it on the progress stream, which then ends at once. A server that
        is starting again keeps the stream open: that is no failure (yet), the read times out."""
        path = f"api/users/{quote(user, safe='')}/" + (f"servers/{quote(server, safe='')}/progress" if server else "server/progress")
        try:
            async with self._limit:
                body = await asyncio.wait_for(
                    read_capped(self._client, f"{self.url}/hub/{path}", PROGRESS_MAX, headers={"Accept": "text/event-stream"}),
                    PROGRESS_SECONDS,
                )
        except (ReadError, httpx.HTTPError, asyncio.TimeoutError):
            return False  # not starting (HTTP 400), gone, or starting again
        for line in bytes(body).decode("utf-8", "replace").splitlines():
            if line.startswith("data:"):
                try:
                    event = json.loads(line[5:])
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("failed") is True:
                    return True
        return False

    async def spawn_histogram(self) -> SpawnHistogram:
        """The hub's cumulative spawn-duration histogram from ``/hub/metrics``."""
        text = (await self._get("metrics", accept="text/plain")).decode("utf-8", "replace")
        return parse_spawn_histogram(text, time.time())


def parse_spawn_histogram(text: str, observed_at: float) -> SpawnHistogram:
    buckets: dict[tuple[str, float], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "jupyterhub_server_spawn_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                key = (sample.labels.get("status", ""), float(sample.labels["le"]))
                buckets[key] = buckets.get(key, 0.0) + sample.value  # summed over 'reason'
    return SpawnHistogram(observed_at, buckets)


@contextmanager
def _unexpected_answer() -> Iterator[None]:
    """A hub answer of the wrong shape is a failed read (one line), not a crash."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HubError(f"unexpected answer from the hub: {exc.__class__.__name__}: {exc}") from None


def _user_of(model: dict) -> UserSeen:
    return UserSeen(model["name"], parse_time(model.get("created")), parse_time(model.get("last_activity")))


def _servers_of(model: dict) -> list[ServerSeen]:
    out = []
    for server_name, server in (model.get("servers") or {}).items():
        seen = _server_of(model["name"], server_name, server)
        if seen is not None:
            out.append(seen)
    return out


def _server_of(user: str, server_name: str, server: dict) -> ServerSeen | None:
    started = parse_time(server.get("started"))
    if started is None or server.get("stopped"):
        return None
    return ServerSeen(
        user=user,
        server=server_name or "",
        started=started,
        last_activity=parse_time(server.get("last_activity")),
        ready=bool(server.get("ready")),
        pending=server.get("pending"),
        profile=profile_of(server.get("user_options")),
    )
