"""Targets from the hub's server state: each running server's scheduler, by URL template.

On coffea-casa the scheduler runs in the user's pod, so ``http://{pod}:8787`` for every ready
server is its dashboard. Template fields: ``{username}``, ``{servername}`` (URL-quoted) and
``{escaped_username}``, ``{escaped_servername}`` (KubeSpawner's escapism: a-z0-9 kept, every
other byte as ``-xx``), e.g. ``http://jupyter-{escaped_username}.jhub.svc:8787``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from urllib.parse import quote

from af_metrics.discovery import DaskTarget, DiscoveryError
from af_metrics.sources.jupyterhub import HubClient, HubError

FIELDS = {"username", "servername", "escaped_username", "escaped_servername"}
SAFE = set(string.ascii_lowercase + string.digits)


def escape(name: str) -> str:
    """KubeSpawner-compatible escapism (safe: a-z0-9, escape character '-')."""
    return "".join(c if c in SAFE else "".join(f"-{b:02x}" for b in c.encode()) for c in name)


def check_template(template: str) -> str:
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    unknown = used - FIELDS
    if unknown:
        raise DiscoveryError(f"unknown field(s) {', '.join(sorted(unknown))} in dask URL template; use {', '.join(sorted(FIELDS))}")
    return template


@dataclass
class HubTemplateProvider:
    hub_url: str
    token: str
    template: str
    timeout: float = 10.0
    name: str = "hub"

    def __post_init__(self) -> None:
        check_template(self.template)

    async def targets(self) -> list[DaskTarget]:
        try:
            async with HubClient(self.hub_url, self.token, timeout=self.timeout) as hub:
                snap = await hub.active()
        except HubError as exc:
            raise DiscoveryError(str(exc)) from None
        out = []
        for server in snap.servers:
            if not server.ready:
                continue
            url = self.template.format(
                username=quote(server.user, safe=""),
                servername=quote(server.server, safe=""),
                escaped_username=escape(server.user),
                escaped_servername=escape(server.server),
            )
            out.append(DaskTarget.make(server.user, server.server or "default", url))
        return out
