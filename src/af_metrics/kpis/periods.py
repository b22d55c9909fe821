"""Periods: what ``--period``, ``--from``/``--to`` and ``--by`` mean, as facility-local day ordinals.

A period is an inclusive range of local days. ``--period`` accepts a day ``2026-01-31``, an ISO
week ``2026-W05``, a month ``2026-10``, a quarter ``2026Q3`` (or ``2026-Q3``), a year ``2026``,
or a range ``2026-01-01..2026-03-31`` (either end may be any of these: ``2026-01..2026-03``). Without any, the range is the last 30 days up to today.
Buckets (``--by``) are calendar days, ISO weeks, months, quarters or years, clipped to the range;
``range`` makes the whole range a single bucket.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from af_metrics.timeutil import zone

# --by value -> calendar column holding the bucket label
GRANULARITIES = {"day": "date", "week": "week", "month": "month", "quarter": "quarter", "year": "year"}
BY_CHOICES = (*GRANULARITIES, "range")
DEFAULT_DAYS = 30
FIRST_DAY = dt.date(2000, 1, 1)  # the calendar table's span
LAST_DAY = dt.date(2100, 12, 31)


class PeriodError(ValueError):
    """A date, period or bucketing that cannot be understood; the message is one line."""


@dataclass(frozen=True)
class Period:
    first: int  # day ordinal, inclusive
    last: int  # day ordinal, inclusive

    @property
    def label(self) -> str:
        return f"{iso_day(self.first)}..{iso_day(self.last)}"

    @property
    def days(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Bucket:
    label: str
    first: int
    last: int


def iso_day(day: int) -> str:
    return dt.date.fromordinal(day).isoformat()


def parse_date(text: str, what: str = "date") -> dt.date:
    try:
        value = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise PeriodError(f"bad {what} {text!r}: use YYYY-MM-DD") from None
    if not FIRST_DAY <= value <= LAST_DAY:
        raise PeriodError(f"{what} {text!r} is outside {FIRST_DAY}..{LAST_DAY}")
    return value


_WEEK = re.compile(r"(\d{4})-W(\d{2})")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_QUARTER = re.compile(r"(\d{4})-?Q([1-4])")
_YEAR = re.compile(r"\d{4}")


def parse_period(text: str) -> Period:
    """A ``--period`` value as a range of days."""
    spec = text.strip().upper()
    if ".." in spec:  # from the start of one period to the end of another: 2026-01..2026-03-15
        lo, _, hi = spec.partition("..")
        if ".." in hi or not lo or not hi:
            raise PeriodError(f"bad period {text!r}: use START..END, e.g. 2026-01-01..2026-03-31")
        first, last = parse_period(lo).first, parse_period(hi).last
        return _checked(dt.date.fromordinal(first), dt.date.fromordinal(last))
    if m := _WEEK.fullmatch(spec):
        try:
            monday = dt.date.fromisocalendar(int(m[1]), int(m[2]), 1)
        except ValueError:
            raise PeriodError(f"bad period {text!r}: year {m[1]} has no ISO week {m[2]}") from None
        return _checked(monday, monday + dt.timedelta(days=6))
    if m := _MONTH.fullmatch(spec):
        year, month = int(m[1]), int(m[2])
        if not 1 <= month <= 12:
            raise PeriodError(f"bad period {text!r}: no month {month}")
        return _checked(dt.date(year, month, 1), _month_end(year, month))
    if m := _QUARTER.fullmatch(spec):
        year, quarter = int(m[1]), int(m[2])
        return _checked(dt.date(year, 3 * quarter - 2, 1), _month_end(year, 3 * quarter))
    if _YEAR.fullmatch(spec):
        return _checked(dt.date(int(spec), 1, 1), dt.date(int(spec), 12, 31))
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", spec):
        day = parse_date(spec, "period")
        return _checked(day, day)
    raise PeriodError(
        f"bad period {text!r}: use 2026-01-31, 2026-W05, 2026-10, 2026Q3, 2026 or 2026-01-01..2026-03-31"
    )


def resolve(from_: str | None, to: str | None, period: str | None, tz: str, today: dt.date | None = None) -> Period:
    """The range asked for: ``period``, else ``from``/``to`` (each defaulting around the other), else the last 30 days."""
    if period:
        if from_ or to:
            raise PeriodError("give either a period or from/to dates, not both")
        return parse_period(period)
    today = today or dt.datetime.now(zone(tz)).date()
    span = dt.timedelta(days=DEFAULT_DAYS - 1)
    hi = parse_date(to, "to date") if to else None
    lo = parse_date(from_, "from date") if from_ else None
    if lo is None:
        hi = hi or today
        lo = max(hi - span, FIRST_DAY)
    hi = hi or max(today, lo)
    return _checked(lo, hi)


def _checked(lo: dt.date, hi: dt.date) -> Period:
    if lo > hi:
        raise PeriodError(f"period starts ({lo}) after it ends ({hi})")
    if not (FIRST_DAY <= lo and hi <= LAST_DAY):
        raise PeriodError(f"period {lo}..{hi} is outside {FIRST_DAY}..{LAST_DAY}")
    return Period(lo.toordinal(), hi.toordinal())


def _month_end(year: int, month: int) -> dt.date:
    first_next = dt.date(year + month // 12, month % 12 + 1, 1)
    return first_next - dt.timedelta(days=1)


def buckets(conn: Connection, period: Period, by: str) -> list[Bucket]:
    """The buckets of ``period`` in order, each clipped to it (from the calendar table)."""
    if by == "range":
        return [Bucket(period.label, period.first, period.last)]
    if by not in GRANULARITIES:
        raise PeriodError(f"bad bucketing {by!r}: use one of {', '.join(BY_CHOICES)}")
    col = GRANULARITIES[by]
    rows = conn.execute(
        sa.text(f"SELECT {col}, MIN(day), MAX(day) FROM calendar WHERE day BETWEEN :a AND :b GROUP BY {col} ORDER BY MIN(day)"),
        {"a": period.first, "b": period.last},
    )
    return [Bucket(label, lo, hi) for label, lo, hi in rows]
