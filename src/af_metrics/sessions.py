"""Where a session is decided.

A *session* is one run of one server of one user: from the hub's ``started`` time (the start
of the spawn) to its end. ``decide`` compares what the ledger holds open with what one poll
of the hub saw and returns the changes to write. It is a pure function, so replaying a poll,
or polling again after a crash, yields the same changes: the ledger keys sessions and spawn
attempts by (user, server, started) and applies changes idempotently.

End of a session:
- the hub lists the server as stopped: the hub's stop time (it sets the server's
  ``last_activity`` when it stops it, also when it noticed the server had died) - ``stopped``;
- the server runs again with a newer ``started``: the old run ended at its last observed
  activity - ``replaced``;
- the server (or its user) is gone from the hub altogether: its last observed activity,
  else the last time it was seen running - ``vanished``.
A poll that failed decides nothing: sessions are never closed because a source was down.
"""

from __future__ import annotations

from dataclasses import dataclass

from af_metrics.facts import HubSnapshot, ServerSeen

Key = tuple[str, str, float]  # (user, server, started)


@dataclass(frozen=True, slots=True)
class OpenRun:
    """A session the ledger holds open, or a spawn attempt still pending."""

    user: str
    server: str
    started: float
    last_activity: float | None
    last_seen: float

    @property
    def key(self) -> Key:
        return (self.user, self.server, self.started)


@dataclass(frozen=True, slots=True)
class SessionSeen:
    """A running server: open the session, or extend it if already open."""

    user: str
    server: str
    started: float
    profile: str | None
    last_activity: float | None
    seen_at: float


@dataclass(frozen=True, slots=True)
class SessionEnd:
    key: Key
    ended: float
    reason: str


@dataclass(frozen=True, slots=True)
class SpawnSeen:
    """A spawn attempt and what is known of its outcome so far."""

    user: str
    server: str
    started: float
    profile: str | None
    outcome: str  # pending | success | failure
    finished: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else max(0.0, self.finished - self.started)


@dataclass(slots=True)
class Decision:
    seen: list[SessionSeen]
    ended: list[SessionEnd]
    spawns: list[SpawnSeen]

    def users(self) -> set[str]:
        return {s.user for s in self.seen} | {s.user for s in self.spawns}


def users_to_check(snapshot: HubSnapshot, open_sessions: list[OpenRun], pending: list[OpenRun]) -> set[str]:
    """Users whose open runs are not among the active servers: ask the hub about them."""
    active = {(s.user, s.server, s.started) for s in snapshot.servers}
    return {run.user for run in [*open_sessions, *pending] if run.key not in active}


def decide(snapshot: HubSnapshot, open_sessions: list[OpenRun], pending: list[OpenRun]) -> Decision:
    """Turn one hub observation into session and spawn changes (see module docstring)."""
    now = snapshot.observed_at
    by_server: dict[tuple[str, str], ServerSeen] = {(s.user, s.server): s for s in snapshot.servers}
    stopped = {(s.user, s.server): s.last_activity for s in snapshot.stopped}
    decision = Decision(seen=[], ended=[], spawns=[])
    pending_keys = {run.key for run in pending}
    open_keys = {run.key for run in open_sessions}

    for server in snapshot.servers:
        key = (server.user, server.server, server.started)
        if server.ready or (server.pending == "stop" and key in open_keys):
            # a server being stopped is still running; one that never became ready is no session
            decision.seen.append(
                SessionSeen(server.user, server.server, server.started, server.profile, server.last_activity, now)
            )
            if server.ready:
                decision.spawns.append(
                    SpawnSeen(server.user, server.server, server.started, server.profile, "success")
                )
        elif key not in pending_keys and key not in open_keys:
            # spawning, or a failed or cancelled spawn being stopped: settles when it is gone
            decision.spawns.append(SpawnSeen(server.user, server.server, server.started, server.profile, "pending"))

    for run in open_sessions:
        end = _end_of(run, by_server.get((run.user, run.server)), stopped, snapshot.users_checked)
        if end is not None:
            decision.ended.append(SessionEnd(run.key, *end))

    for run in pending:
        current = by_server.get((run.user, run.server))
        if current is not None and current.started == run.started:
            continue  # still pending (or just became ready, handled above)
        end = _end_of(run, current, stopped, snapshot.users_checked)
        if end is not None:
            decision.spawns.append(SpawnSeen(run.user, run.server, run.started, None, "failure", end[0]))
    return decision


def _end_of(
    run: OpenRun,
    current: ServerSeen | None,
    stopped: dict[tuple[str, str], float | None],
    users_checked: set[str],
) -> tuple[float, str] | None:
    """When and why ``run`` ended, or None if it is still running or the poll cannot tell."""
    if current is not None:
        if current.started == run.started:
            return None
        return _clamp(run, run.last_activity or run.last_seen), "replaced"
    if run.user not in users_checked:
        return None  # the poll did not ask about this user: decide nothing
    stop_time = stopped.get((run.user, run.server))
    if stop_time is not None and stop_time >= run.started:
        return _clamp(run, stop_time), "stopped"
    return _clamp(run, run.last_activity or run.last_seen), "vanished"


def _clamp(run: OpenRun, ended: float) -> float:
    return max(run.started, ended)
