"""Where a spawn that failed between two polls is found and attributed to its user.

A poll sees a spawn pending and settles it once it is gone; a spawn that starts and fails
between two polls is never seen pending. The hub's spawn histogram still counts it, so when its
failure count grew by more than the failures this poll settled, the hub is asked: servers it
stopped since the last poll, of users with no active server, whose progress stream says their
last spawn failed. Such a failure is keyed by the time the hub stopped the server, so finding it
again in a later poll changes nothing.

Limits (the hub keeps only the last failure of each server, in memory): two failures of one
server between two polls count once, a failure is not found across a hub restart, and a user
with another server running is not asked about.
"""

from __future__ import annotations

import asyncio

from af_metrics.facts import SpawnHistogram
from af_metrics.ledger.store import Ledger
from af_metrics.sessions import Decision, SpawnSeen
from af_metrics.sources.jupyterhub import HubClient

SLACK_SECONDS = 60.0  # the hub's clock and ours may disagree a little; finding one twice is harmless
PROBES_MAX = 32  # servers asked per poll, newest stops first


async def failed_between_polls(hub: HubClient, ledger: Ledger, decision: Decision, histogram: SpawnHistogram) -> list[SpawnSeen]:
    """Failed spawns no poll saw pending, at most as many as the hub counted and nobody settled."""
    counted, since = await asyncio.to_thread(ledger.failed_spawns_since_last, histogram)
    settled = {(s.user, s.server) for s in decision.spawns if s.outcome == "failure"}
    unexplained = counted - len(settled)
    if unexplained <= 0 or since is None:
        return []
    stopped = [(srv, profile) for srv, profile in await hub.stopped_since(since - SLACK_SECONDS) if (srv.user, srv.server) not in settled]
    stopped.sort(key=lambda sp: sp[0].last_activity or 0.0, reverse=True)
    stopped = stopped[:PROBES_MAX]
    failed = await asyncio.gather(*(hub.spawn_failed(srv.user, srv.server) for srv, _ in stopped))
    found = []
    for (srv, profile), fail in zip(stopped, failed):
        if fail and srv.last_activity is not None and not await asyncio.to_thread(ledger.failure_recorded, srv.user, srv.server, srv.last_activity):
            found.append(SpawnSeen(srv.user, srv.server, srv.last_activity, profile, "failure"))
    return found[:unexplained]
