"""Engagement KPIs: who is active, how often, for how long, with which profile, and when.

A user is *active on a day* when they have a ``session_hours`` row on that (facility-local)
day, so a session spanning midnight counts on both days. Definitions are in docs/kpis.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from af_metrics.kpis.registry import Query, Series, Table, Value, register
from af_metrics.kpis.sql import epoch_bounds, nearest_rank, started_in_range

WINDOWS = (1, 7, 30)  # DAU, WAU, MAU: users active in the W days ending on a day
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# -- daily active users over sliding windows ---------------------------------------------------
#
# Gaps and islands: a user active on day d is counted on days d .. d+W-1. Over a user's sorted
# active days, a gap larger than W ends an island [s, e], which covers days s .. e+W-1: +1 on
# day s and -1 on day e+W. One pass marks island starts and ends for every W; the events are
# summed per day, and their running sum over the days is the count. Events before the range
# are folded into its first day.
_WINDOWS_SQL = """
WITH ud AS (
  SELECT DISTINCT user_id, day FROM session_hours WHERE day BETWEEN :lo AND :b
), gaps AS (
  SELECT day, day - LAG(day) OVER byuser AS before, LEAD(day) OVER byuser - day AS after
  FROM ud WINDOW byuser AS (PARTITION BY user_id ORDER BY day)
), per_day AS (
  SELECT day, {flag_sums} FROM gaps GROUP BY day
), events AS (
  {events}
  UNION ALL
  SELECT ws.w, c.day, 0 FROM calendar c CROSS JOIN ({window_values}) ws WHERE c.day BETWEEN :a AND :b
), clipped AS (
  SELECT w, CASE WHEN day < :a THEN :a ELSE day END AS day, SUM(delta) AS delta FROM events
  WHERE day <= :b GROUP BY w, CASE WHEN day < :a THEN :a ELSE day END
)
SELECT w, day, SUM(delta) OVER (PARTITION BY w ORDER BY day ROWS UNBOUNDED PRECEDING) FROM clipped
""".format(
    flag_sums=", ".join(
        f"SUM(CASE WHEN {edge} IS NULL OR {edge} > {w} THEN 1 ELSE 0 END) AS {name}{w}"
        for w in WINDOWS for edge, name in (("before", "s"), ("after", "e"))
    ),
    events="\n  UNION ALL\n  ".join(
        f"SELECT {w} AS w, day, s{w} AS delta FROM per_day UNION ALL SELECT {w}, day + {w}, -e{w} FROM per_day"
        for w in WINDOWS
    ),
    window_values=" UNION ALL ".join(f"SELECT {w} AS w" for w in WINDOWS),
)


def _window_counts(q: Query) -> dict[int, dict[int, int]]:
    """{W: {day: users active in the W days ending that day}} for every day of the range."""

    def run() -> dict[int, dict[int, int]]:
        out: dict[int, dict[int, int]] = {w: {} for w in WINDOWS}
        params = {**q.params, "lo": q.period.first - max(WINDOWS) + 1}
        for w, day, users in q.conn.execute(sa.text(_WINDOWS_SQL), params):
            out[w][day] = int(users)
        return out

    return q.once("windows", run)


def _per_bucket(q: Query, daily: dict[int, Value], combine: Callable[[Sequence[float]], float]) -> Series:
    """Combine a daily series over each bucket's days (days without a value are skipped)."""
    out: Series = {}
    for b in q.buckets:
        values = [v for d in range(b.first, b.last + 1) if (v := daily.get(d)) is not None]
        out[b.label] = (values[0] if len(values) == 1 else combine(values)) if values else None
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _daily(window: int, combine: Callable[[Sequence[float]], float]) -> Callable[[Query], Series]:
    """A KPI reading one window's daily counts, combined over each bucket's days."""
    return lambda q: _per_bucket(q, _window_counts(q)[window], combine)


register("dau", title="Daily active users", unit="users",
         definition="Users active (a server running) on the day; over a bucket, the mean of its days.")(_daily(1, _mean))
register("dau_peak", title="Peak daily active users", unit="users",
         definition="The highest daily active users of any day in the bucket.")(_daily(1, max))
register("wau", title="Weekly active users", unit="users",
         definition="Users active in the 7 days ending on the day; over a bucket, the mean of its days.")(_daily(7, _mean))
register("mau", title="Monthly active users", unit="users",
         definition="Users active in the 30 days ending on the day; over a bucket, the mean of its days.")(_daily(30, _mean))


@register("stickiness", title="Stickiness (DAU/MAU)", unit="ratio",
          definition="DAU divided by MAU on the day (days with MAU 0 have none); over a bucket, the mean of its days.")
def stickiness(q: Query) -> Series:
    counts = _window_counts(q)
    daily = {d: (users / counts[30][d] if counts[30][d] else None) for d, users in counts[1].items()}
    return _per_bucket(q, daily, _mean)


# -- activity per bucket ----------------------------------------------------------------------
#
# A user is new in a bucket when their first active day over all history falls in it: the
# first active day in the range, for users with no activity before the range.
_ACTIVITY_SQL = """
WITH ud AS (
  SELECT DISTINCT user_id, day FROM session_hours WHERE day BETWEEN :a AND :b
), firsts AS (
  SELECT user_id, MIN(day) AS day FROM ud GROUP BY user_id
), fresh AS (
  SELECT f.day FROM firsts f
  WHERE NOT EXISTS (SELECT 1 FROM session_hours p WHERE p.user_id = f.user_id AND p.day < :a)
), active AS (
  SELECT bucket, COUNT(*) AS users, SUM(days) AS user_days FROM (
    SELECT {bucket} AS bucket, ud.user_id, COUNT(*) AS days FROM ud JOIN calendar c ON c.day = ud.day
    GROUP BY {bucket}, ud.user_id
  ) per_user GROUP BY bucket
), new AS (
  SELECT {bucket} AS bucket, COUNT(*) AS users FROM fresh JOIN calendar c ON c.day = fresh.day GROUP BY {bucket}
)
SELECT active.bucket, active.users, active.user_days, COALESCE(new.users, 0)
FROM active LEFT JOIN new ON new.bucket = active.bucket
"""


def _activity(q: Query) -> dict[str, tuple[int, int, int]]:
    """{bucket: (active users, active user-days, new users)}."""

    def run() -> dict[str, tuple[int, int, int]]:
        rows = q.conn.execute(sa.text(_ACTIVITY_SQL.format(bucket=q.bucket)), q.params)
        return {bucket: (int(users), int(days), int(new)) for bucket, users, days, new in rows}

    return q.once("activity", run)


@register("active_users", title="Active users", unit="users", missing=0,
          definition="Distinct users active on at least one day of the bucket.")
def active_users(q: Query) -> Series:
    return {b: users for b, (users, _, _) in _activity(q).items()}


@register("new_users", title="New users", unit="users", missing=0,
          definition="Users whose first active day ever falls in the bucket.")
def new_users(q: Query) -> Series:
    return {b: new for b, (_, _, new) in _activity(q).items()}


@register("returning_users", title="Returning users", unit="users", missing=0,
          definition="Users active in the bucket whose first active day ever is before the bucket.")
def returning_users(q: Query) -> Series:
    return {b: users - new for b, (users, _, new) in _activity(q).items()}


@register("active_days_per_user", title="Active days per user", unit="days",
          definition="Mean number of active days in the bucket per user active in it.")
def active_days_per_user(q: Query) -> Series:
    return {b: days / users for b, (users, days, _) in _activity(q).items()}


# -- sessions -----------------------------------------------------------------------------------

def _started_in_range(q: Query) -> str:
    """Sessions started in the range with the bucket of their local start day."""
    return started_in_range(q, "sessions", "user_id, ended - started AS duration")


def _session_counts(q: Query) -> dict[str, tuple[int, int]]:
    """{bucket: (sessions started, distinct users who started them)}."""

    def run() -> dict[str, tuple[int, int]]:
        sql = (
            f"SELECT bucket, SUM(n), COUNT(*) FROM"
            f" (SELECT bucket, user_id, COUNT(*) AS n FROM ({_started_in_range(q)}) x GROUP BY bucket, user_id) per_user"
            f" GROUP BY bucket"
        )
        return {b: (int(n), int(u)) for b, n, u in q.conn.execute(sa.text(sql), {**q.params, **epoch_bounds(q)})}

    return q.once("sessions", run)


def _duration_percentiles(q: Query) -> dict[str, tuple[float, float]]:
    """{bucket: (p50, p90)} of the durations of ended sessions started in the bucket."""

    def run() -> dict[str, tuple[float, float]]:
        values = f"SELECT bucket, duration AS v FROM ({_started_in_range(q)}) x"
        rows = q.conn.execute(sa.text(nearest_rank(values, (50, 90))), {**q.params, **epoch_bounds(q)})
        return {b: (p50, p90) for b, p50, p90 in rows}

    return q.once("session_percentiles", run)


@register("sessions", title="Sessions", unit="sessions", missing=0,
          definition="Sessions (one run of one server) started in the bucket.")
def sessions(q: Query) -> Series:
    return {b: n for b, (n, _) in _session_counts(q).items()}


@register("sessions_per_user", title="Sessions per user", unit="sessions",
          definition="Sessions started in the bucket divided by the distinct users who started them.")
def sessions_per_user(q: Query) -> Series:
    return {b: n / users for b, (n, users) in _session_counts(q).items()}


@register("session_duration_p50", title="Session duration p50", unit="seconds",
          definition="Median (nearest rank) duration of the ended sessions started in the bucket.")
def session_duration_p50(q: Query) -> Series:
    return {b: p50 for b, (p50, _) in _duration_percentiles(q).items()}


@register("session_duration_p90", title="Session duration p90", unit="seconds",
          definition="90th percentile (nearest rank) duration of the ended sessions started in the bucket.")
def session_duration_p90(q: Query) -> Series:
    return {b: p90 for b, (_, p90) in _duration_percentiles(q).items()}


# -- tables over the whole range ------------------------------------------------------------

@register("profile_popularity", kind="table", title="Profile popularity", unit="sessions",
          definition="Sessions started in the range and their distinct users, per profile (none = 'default').")
def profile_popularity(q: Query) -> Table:
    sql = (
        "SELECT COALESCE(profile, 'default') AS profile, COUNT(*) AS sessions, COUNT(DISTINCT user_id) AS users"
        " FROM sessions WHERE started >= :t0 AND started < :t1"
        " GROUP BY COALESCE(profile, 'default') ORDER BY sessions DESC, profile"
    )
    rows = q.conn.execute(sa.text(sql), epoch_bounds(q))
    return Table(["profile", "sessions", "users"], [[p, int(n), int(u)] for p, n, u in rows])


@register("hour_of_week", kind="table", title="Activity by hour of week", unit="users",
          definition="Mean number of users with a server running in each local weekday hour of the range.")
def hour_of_week(q: Query) -> Table:
    # running user-seconds in the slot / 3600 / number of times the slot's weekday occurs in the range
    seconds = dict(q.conn.execute(
        sa.text("SELECT how, SUM(seconds) FROM session_hours WHERE day BETWEEN :a AND :b GROUP BY how"), q.params
    ).all())
    occurrences = dict(q.conn.execute(
        sa.text("SELECT (day - 1) % 7 AS weekday, COUNT(*) FROM calendar WHERE day BETWEEN :a AND :b GROUP BY (day - 1) % 7"),
        q.params,
    ).all())  # day ordinal 1 was a Monday
    rows = []
    for how in range(7 * 24):
        weekday, hour = divmod(how, 24)
        weeks = occurrences.get(weekday, 0)
        rows.append([WEEKDAYS[weekday], hour, (seconds.get(how, 0.0) / 3600 / weeks) if weeks else None])
    return Table(["weekday", "hour", "users"], rows)


@register("retention", kind="table", title="Monthly cohort retention", unit="share",
          definition="Per cohort (month of first active day), the share of its users active k months later.")
def retention(q: Query) -> Table:
    first = dt.date.fromordinal(q.period.first).replace(day=1).toordinal()  # whole months
    sql = """
    WITH um AS (
      SELECT DISTINCT ud.user_id, c.month FROM
        (SELECT DISTINCT user_id, day FROM session_hours WHERE day BETWEEN :first AND :b) ud
        JOIN calendar c ON c.day = ud.day
    ), cohorts AS (
      SELECT user_id, MIN(month) AS cohort FROM um GROUP BY user_id
    ), fresh AS (
      SELECT user_id, cohort FROM cohorts
      WHERE NOT EXISTS (SELECT 1 FROM session_hours p WHERE p.user_id = cohorts.user_id AND p.day < :first)
    )
    SELECT fresh.cohort, um.month, COUNT(*) FROM fresh JOIN um ON um.user_id = fresh.user_id
    GROUP BY fresh.cohort, um.month
    """
    active: dict[str, dict[int, int]] = {}
    for cohort, month, users in q.conn.execute(sa.text(sql), {"first": first, "b": q.period.last}):
        active.setdefault(cohort, {})[_month_index(month) - _month_index(cohort)] = int(users)
    last = _month_index(dt.date.fromordinal(q.period.last).strftime("%Y-%m"))
    span = last - _month_index(dt.date.fromordinal(first).strftime("%Y-%m"))
    rows = []
    for cohort in sorted(active):
        size = active[cohort][0]
        observable = last - _month_index(cohort)
        rows.append([cohort, size] + [active[cohort].get(k, 0) / size if k <= observable else None for k in range(span + 1)])
    return Table(["cohort", "users"] + [f"month_{k}" for k in range(span + 1)], rows)


def _month_index(month: str) -> int:
    year, mon = month.split("-")
    return int(year) * 12 + int(mon) - 1
