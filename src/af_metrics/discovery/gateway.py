"""Targets from a dask-gateway server: every running cluster of every user, by its API.

The gateway's ``GET /api/v1/clusters/`` lists only the authenticated user's clusters, and no
API lists all of them, so af-metrics asks once per candidate user (the hub's recently active
users, plus any configured ones) with the gateway's shared-password (Basic) authentication
(``SimpleAuthenticator``). The gateway proxies each dashboard at ``/clusters/<name>/``.

Users are asked independently: one user's time-out or refusal keeps that user's last good list
(and is logged); only when every user fails does the provider fail. Each user's list is capped
at ``CLUSTERS_PER_USER`` running clusters (the first by name).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from af_metrics.collector import SourceHealth
from af_metrics.discovery import DaskTarget, DiscoveryError
from af_metrics.sources.dask import describe
from af_metrics.sources.http import ReadError, read_capped

ANSWER_MAX = 4 * 1024 * 1024
CLUSTERS_PER_USER = 20  # more running clusters than this is not one person's analysis


@dataclass
class GatewayProvider:
    url: str
    password: str
    users: Callable[[], Awaitable[list[str]]]
    timeout: float = 10.0
    concurrency: int = 8
    name: str = "gateway"
    _last: dict[str, list[DaskTarget]] = field(default_factory=dict, repr=False)  # per user: last good list
    _health: dict[str, SourceHealth] = field(default_factory=dict, repr=False)  # per user: logs each new error once

    async def targets(self) -> list[DaskTarget]:
        base = self.url.rstrip("/")
        names = sorted(set(await self.users()))
        limit = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), follow_redirects=False, trust_env=False) as client:

            async def one(user: str) -> list[DaskTarget] | DiscoveryError:
                async with limit:
                    try:
                        return self._parse(user, base, await self._list(client, base, user))
                    except DiscoveryError as exc:
                        return exc
                    except Exception as exc:  # an unforeseen answer costs this user's list only
                        return DiscoveryError(f"gateway at {base}, user {user!r}: {describe(exc)}")

            found = await asyncio.gather(*(one(u) for u in names))
        errors = [r for r in found if isinstance(r, DiscoveryError)]
        if errors and len(errors) == len(names):
            raise errors[0]
        last: dict[str, list[DaskTarget]] = {}
        health: dict[str, SourceHealth] = {}
        for user, result in zip(names, found):
            h = health[user] = self._health.get(user) or SourceHealth()
            if isinstance(result, DiscoveryError):
                h.failed(f"dask discovery {self.name}: {result}")
                last[user] = self._last.get(user, [])
            else:
                h.ok(time.time())
                last[user] = result
        self._last, self._health = last, health
        return [t for ts in last.values() for t in ts]

    async def _list(self, client: httpx.AsyncClient, base: str, user: str) -> dict:
        auth = base64.b64encode(f"{user}:{self.password}".encode()).decode()
        try:
            async with asyncio.timeout(self.timeout):
                body = await read_capped(
                    client, f"{base}/api/v1/clusters/?status=running", ANSWER_MAX, headers={"Authorization": f"Basic {auth}"}
                )
        except ReadError as exc:
            if exc.status in (401, 403):
                raise DiscoveryError(f"gateway at {base} refused the password for user {user!r} ({exc.status})") from None
            raise DiscoveryError(f"gateway at {base}: {exc}") from None
        except TimeoutError:
            raise DiscoveryError(f"gateway at {base} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DiscoveryError(f"cannot reach gateway at {base}: {exc.__class__.__name__}") from None
        try:
            clusters = json.loads(body)
        except ValueError:
            raise DiscoveryError(f"gateway at {base} sent a non-JSON cluster list") from None
        if not isinstance(clusters, dict):
            raise DiscoveryError(f"gateway at {base} sent a cluster list that is not a mapping")
        return clusters

    @staticmethod
    def _parse(user: str, base: str, clusters: dict) -> list[DaskTarget]:
        out: list[DaskTarget] = []
        for name, model in sorted(clusters.items()):
            route = model.get("dashboard_route") if isinstance(model, dict) else None
            if not isinstance(route, str) or model.get("status") != "RUNNING":
                continue
            if len(out) == CLUSTERS_PER_USER:
                break
            dashboard = route.removesuffix("/status") if route.endswith("/status") else f"/clusters/{quote(str(name), safe='')}"
            out.append(DaskTarget.make(user, str(name), base + dashboard))
        return out
