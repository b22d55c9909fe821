"""A simulated JupyterHub REST API, large and fast, for timing the collector against it.

Serves what ``af_metrics.sources.jupyterhub`` reads, shaped like JupyterHub 5:
``GET /hub/api/user`` (the token's owner and scopes), ``GET /hub/api/users`` (offset/limit
pagination in the ``application/jupyterhub-pagination+json`` format, ``state=active``,
``include_stopped_servers``), ``GET /hub/api/users/{name}`` and ``GET /hub/metrics`` (the
spawn-duration histogram). ``POST /bench/tick?n=N`` stops N running servers and starts N
others, so that a following poll has sessions to close and open.

Run: ``python -m bench.fakehub --port 8081 --users 10000 --running 2000 --token secret``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import time
from dataclasses import dataclass

import tornado.web
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from af_metrics.simulate import PROFILES, SPAWN_BUCKETS
from af_metrics.sources.jupyterhub import PAGINATION, REQUIRED_SCOPES

PAGE_MAX = 200  # JupyterHub's api_page_max_limit default
NAMED_SHARE = 0.1


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Server:
    started: float | None  # None once stopped, as JupyterHub clears it
    last_activity: float
    profile: str

    def model(self, user: str, name: str) -> dict:
        return {
            "name": name,
            "full_name": f"{user}/{name}",
            "ready": self.started is not None,
            "pending": None,
            "stopped": self.started is None,
            "started": iso(self.started),
            "last_activity": iso(self.last_activity),
            "url": f"/user/{user}/{name}",
            "progress_url": f"/hub/api/users/{user}/servers/{name}/progress",
            "user_options": {"profile": self.profile},
        }


class Hub:
    """The hub's users and servers, generated from a seed."""

    def __init__(self, users: int, running: int, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        now = time.time()
        self.names = [f"user{i:05d}" for i in range(users)]
        self.created = {n: now - self.rng.uniform(86400, 365 * 86400) for n in self.names}
        self.servers: dict[str, dict[str, Server]] = {n: {} for n in self.names}
        self.registry = CollectorRegistry()
        self.spawn_duration = Histogram(
            "jupyterhub_server_spawn_duration_seconds", "Time taken for server spawning operation",
            ["status"], buckets=SPAWN_BUCKETS[:-1], registry=self.registry,
        )
        for name in self.rng.sample(self.names, running):
            self._start(name, now - self.rng.uniform(60, 8 * 3600))

    def _start(self, user: str, at: float) -> None:
        name = self.rng.choice(("analysis", "gpu")) if self.rng.random() < NAMED_SHARE else ""
        profile = self.rng.choices(list(PROFILES), list(PROFILES.values()))[0]
        self.servers[user][name] = Server(at, at, profile)
        self.spawn_duration.labels(status="success").observe(self.rng.lognormvariate(2.0, 0.6))

    def tick(self, n: int) -> None:
        now = time.time()
        running = [(u, s) for u, servers in self.servers.items() for s, srv in servers.items() if srv.started is not None]
        for user, name in self.rng.sample(running, min(n, len(running))):
            self.servers[user][name] = Server(None, now, self.servers[user][name].profile)
        idle = [u for u, servers in self.servers.items() if not any(s.started for s in servers.values())]
        for user in self.rng.sample(idle, min(n, len(idle))):
            self._start(user, now)
        for server in (s for servers in self.servers.values() for s in servers.values() if s.started is not None):
            server.last_activity = now

    def active(self, user: str) -> bool:
        return any(s.started is not None for s in self.servers[user].values())

    def user_model(self, user: str, include_stopped: bool) -> dict:
        servers = {n: s.model(user, n) for n, s in self.servers[user].items() if include_stopped or s.started is not None}
        activity = max((s.last_activity for s in self.servers[user].values()), default=self.created[user])
        return {
            "kind": "user", "name": user, "admin": False, "roles": ["user"], "groups": [],
            "server": f"/user/{user}/" if "" in servers and servers[""]["ready"] else None,
            "pending": None, "created": iso(self.created[user]), "last_activity": iso(activity),
            "servers": servers,
        }


class Base(tornado.web.RequestHandler):
    @property
    def hub(self) -> Hub:
        return self.settings["hub"]

    def prepare(self) -> None:
        if self.request.headers.get("Authorization") != f"token {self.settings['token']}":
            raise tornado.web.HTTPError(403)

    def send(self, payload: object) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def flag(self, name: str) -> bool:
        return self.get_query_argument(name, "") not in ("", "0", "false")


class WhoAmI(Base):
    def get(self) -> None:
        self.send({"kind": "service", "name": "af-metrics", "scopes": list(REQUIRED_SCOPES)})


class Users(Base):
    def get(self) -> None:
        offset = int(self.get_query_argument("offset", "0"))
        limit = min(PAGE_MAX, int(self.get_query_argument("limit", str(PAGE_MAX))))
        state = self.get_query_argument("state", "")
        names = [n for n in self.hub.names if self.hub.active(n)] if state == "active" else self.hub.names
        include_stopped = self.flag("include_stopped_servers")
        items = [self.hub.user_model(n, include_stopped) for n in names[offset : offset + limit]]
        if PAGINATION not in self.request.headers.get("Accept", ""):
            self.send(items)
            return
        nxt = offset + limit
        self.send({
            "items": items,
            "_pagination": {
                "offset": offset, "limit": limit, "total": len(names),
                "next": {"offset": nxt, "limit": limit, "url": f"/hub/api/users?offset={nxt}&limit={limit}"} if nxt < len(names) else None,
            },
        })


class User(Base):
    def get(self, name: str) -> None:
        if name not in self.hub.servers:
            raise tornado.web.HTTPError(404)
        self.send(self.hub.user_model(name, self.flag("include_stopped_servers")))


class Metrics(Base):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4")
        self.finish(generate_latest(self.hub.registry))


class Tick(Base):
    def post(self) -> None:
        self.hub.tick(int(self.get_query_argument("n", "40")))
        self.send({"ok": True})


def make_app(hub: Hub, token: str) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/hub/api/user", WhoAmI),
            (r"/hub/api/users", Users),
            (r"/hub/api/users/([^/]+)", User),
            (r"/hub/metrics", Metrics),
            (r"/bench/tick", Tick),
        ],
        hub=hub, token=token,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=2_000)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    make_app(Hub(args.users, args.running), args.token).listen(args.port, address="127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
