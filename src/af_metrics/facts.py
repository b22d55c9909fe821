"""Typed facts: what a source observed, before any decision about sessions is made.

Sources produce these; ``sessions.decide`` turns them into ledger changes. Times are
UNIX epoch seconds (UTC) throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class UserSeen:
    """A hub user, as the user listing shows it."""

    name: str
    created: float | None
    last_activity: float | None


@dataclass(frozen=True, slots=True)
class ServerSeen:
    """One (possibly named) server of a user, running or pending, at observation time."""

    user: str
    server: str  # "" is the default server
    started: float
    last_activity: float | None
    ready: bool
    pending: str | None  # "spawn", "stop", ... or None
    profile: str | None


@dataclass(frozen=True, slots=True)
class ServerStopped:
    """A server the hub lists as stopped; its last_activity is when the hub stopped it."""

    user: str
    server: str
    last_activity: float | None


@dataclass(slots=True)
class HubSnapshot:
    """Everything one poll of the Hub API saw.

    ``servers`` holds every active server. ``stopped`` holds stopped-server records for the
    users the collector asked about (those whose open sessions are no longer active).
    ``users_checked`` names the users whose stopped servers were asked for: a server absent
    from both lists for such a user has vanished. ``users`` is filled on full sweeps only.
    """

    observed_at: float
    servers: list[ServerSeen] = field(default_factory=list)
    stopped: list[ServerStopped] = field(default_factory=list)
    users_checked: set[str] = field(default_factory=set)
    users: list[UserSeen] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SpawnHistogram:
    """The hub's cumulative spawn-duration histogram: (status, upper bound) -> count."""

    observed_at: float
    buckets: dict[tuple[str, float], float]
