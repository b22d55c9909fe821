"""Time helpers: facility-local days (as date ordinals) and hour slices of an interval."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import lru_cache
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc


@lru_cache(maxsize=16)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def parse_timestamp(text: str) -> float:
    """ISO 8601 (with offset, or 'Z') to epoch seconds; naive times are taken as UTC."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def iso(ts: float | None, tz: str = "UTC") -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, zone(tz)).isoformat(timespec="seconds")


def day_of(ts: float, tz: str) -> int:
    """The facility-local calendar day containing ``ts``, as a date ordinal."""
    return dt.datetime.fromtimestamp(ts, zone(tz)).date().toordinal()


def day_start(day: int, tz: str) -> float:
    """Epoch seconds of local midnight starting ``day``."""
    d = dt.date.fromordinal(day)
    return dt.datetime(d.year, d.month, d.day, tzinfo=zone(tz)).timestamp()


def hour_slices(start: float, end: float, tz: str) -> Iterator[tuple[float, int, int, float]]:
    """Split [start, end) at local hour boundaries.

    Yields (hour start epoch, local day ordinal, hour of week 0..167 with Monday 00:00 = 0,
    seconds inside the interval).
    """
    z = zone(tz)
    t = start
    while t < end:
        local = dt.datetime.fromtimestamp(t, z)
        floor = local.replace(minute=0, second=0, microsecond=0)
        hour_start = floor.timestamp()
        boundary = hour_start + 3600.0
        stop = min(end, boundary)
        yield hour_start, local.date().toordinal(), local.weekday() * 24 + local.hour, stop - t
        t = stop


def hour_floor(ts: float, tz: str) -> float:
    """Start of the local hour containing ``ts``."""
    local = dt.datetime.fromtimestamp(ts, zone(tz))
    return local.replace(minute=0, second=0, microsecond=0).timestamp()
