"""Chart datasets ("figures") for the web pages and the HTML report, read from the ledger.

A figure is a small table (``columns``, ``rows``) and how to draw it (``chart``, ``unit``,
which columns to plot). Facility figures put KPIs side by side (``af_metrics.kpis``: the
same definitions as the CLI and /api/v1/kpis) or rank users; user figures read one user's
rows only. The same dict is the JSON (and CSV) of the API and what ``web/static/charts.js``
draws, live and in the HTML report, so a chart and its CSV always hold the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from af_metrics.accounting.totals import Totals, usage_totals
from af_metrics.kpis.analysis import EVENTS_SUM, RUNS_IN_RANGE, SUCCESS
from af_metrics.kpis.compute import evaluate
from af_metrics.kpis.dask import TOP_USERS  # the top-users charts show as many users as this KPI
from af_metrics.kpis.periods import BY_CHOICES, Period, PeriodError, buckets, iso_day, resolve
from af_metrics.kpis.registry import KPIError, Query, Table, lookup
from af_metrics.kpis.sql import epoch_bounds, nearest_rank, started_in_range
from af_metrics.ledger.schema import users
from af_metrics.ledger.store import Ledger
from af_metrics.timeutil import iso

MAX_BUCKETS = 1500  # a chart of more points is unreadable; ask for a coarser --by
RUNS_LISTED = 200
Chart = Literal["line", "bar", "stacked", "hbar", "heatmap", "table"]


@dataclass(frozen=True)
class Figure:
    name: str
    title: str
    scope: Literal["facility", "user"]
    chart: Chart
    unit: str  # of the plotted values: users, seconds, share, core-hours, events/s ...
    note: str  # one line: what is shown and where it comes from
    build: Callable[[Query, int | None], Table]  # (query, user id for user figures)
    periodic: bool = True  # one row per bucket (takes ``by``); else one table for the range
    plot: tuple[str, ...] = ()  # value columns drawn (default: all but the first)
    labels: dict[str, str] = field(default_factory=dict)  # column -> legend label
    secondary: tuple[str, ...] = ()  # columns drawn as lines on a right-hand axis
    secondary_unit: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "scope": self.scope, "chart": self.chart, "unit": self.unit, "note": self.note}


FIGURES: dict[str, Figure] = {}


def _add(fig: Figure) -> None:
    FIGURES[fig.name] = fig


def figure_catalogue(scope: str | None = None) -> list[dict]:
    return [f.describe() for f in FIGURES.values() if scope in (None, f.scope)]


def auto_by(period: Period) -> str:
    """Days up to a quarter, weeks up to two years, then months."""
    return "day" if period.days <= 92 else "week" if period.days <= 731 else "month"


def resolve_range(ledger: Ledger, from_: str | None, to: str | None, period: str | None, by: str | None) -> tuple[Period, str]:
    """The range and bucketing asked for (``by`` may be ``auto`` or empty); KPIError if bad."""
    try:
        p = resolve(from_ or None, to or None, period or None, ledger.tz)
    except PeriodError as exc:
        raise KPIError(str(exc)) from None
    chosen = auto_by(p) if by in (None, "", "auto") else by
    if chosen not in BY_CHOICES:
        raise KPIError(f"bad bucketing {by!r}: use auto or one of {', '.join(BY_CHOICES)}")
    return p, chosen


def compute_figure(ledger: Ledger, name: str, p: Period, by: str, user_id: int | None = None) -> dict:
    """One figure over the range ``p`` (bucketed by ``by`` when periodic)."""
    fig = FIGURES.get(name)
    if fig is None:
        raise KPIError(f"unknown figure {name!r}", unknown=True)
    with ledger.engine.connect() as conn:
        return _compute(conn, ledger.tz, fig, p, by, user_id)


def compute_figures(ledger: Ledger, scope: str, p: Period, by: str, user_id: int | None = None) -> list[dict]:
    """Every figure of ``scope`` on one connection (the HTML report)."""
    with ledger.engine.connect() as conn:
        return [_compute(conn, ledger.tz, f, p, by, user_id) for f in FIGURES.values() if f.scope == scope]


def user_id(ledger: Ledger, name: str) -> int | None:
    with ledger.engine.connect() as conn:
        return conn.execute(sa.select(users.c.id).where(users.c.name == name)).scalar()


def _compute(conn: Any, tz: str, fig: Figure, p: Period, by: str, uid: int | None) -> dict:
    by = by if fig.periodic else "range"
    try:
        q = Query(conn, tz, p, by, buckets(conn, p, by))
    except PeriodError as exc:
        raise KPIError(str(exc)) from None
    if len(q.buckets) > MAX_BUCKETS:
        raise KPIError(f"{len(q.buckets)} {by}s is too many points for a chart (at most {MAX_BUCKETS}): use a coarser bucketing")
    table = fig.build(q, uid)
    plot = list(fig.plot or table.columns[1:])
    out = {
        **fig.describe(), "from": iso_day(p.first), "to": iso_day(p.last), "by": by, "timezone": tz,
        "columns": table.columns, "rows": table.rows, "notes": list(q.notes),
        "plot": plot, "labels": {c: fig.labels.get(c, c) for c in plot},
        "secondary": list(fig.secondary), "secondary_unit": fig.secondary_unit,
    }
    if fig.chart == "heatmap":
        out["matrix"] = _matrix(table)
    return out


def _matrix(table: Table) -> dict:
    """Heat-map axes and cells: long rows (y, x, value) or wide rows (y, size, v0, v1...)."""
    if table.columns == ["weekday", "hour", "users"]:
        ys = list(dict.fromkeys(r[0] for r in table.rows))
        xs = list(dict.fromkeys(r[1] for r in table.rows))
        cells = {(r[0], r[1]): r[2] for r in table.rows}
        return {"x": xs, "y": ys, "z": [[cells.get((y, x)) for x in xs] for y in ys]}
    return {"x": table.columns[2:], "y": [f"{r[0]} ({r[1]})" for r in table.rows], "z": [r[2:] for r in table.rows]}


# -- facility figures: KPIs side by side -------------------------------------------------------


def _kpis(*names: str) -> Callable[[Query, int | None], Table]:
    """Periodic KPIs as columns of one table (one row per bucket); a table KPI as it is."""

    def build(q: Query, _uid: int | None) -> Table:
        results = [evaluate(lookup(name), q) for name in names]  # one Query: shared SQL passes
        q.notes = list(dict.fromkeys(n for r in results for n in r["notes"]))
        if len(results) == 1 and results[0]["kind"] == "table":
            return Table(results[0]["columns"], results[0]["rows"])
        rows = [[label, *(r["rows"][i][1] for r in results)] for i, (label, _) in enumerate(results[0]["rows"])]
        return Table(["period", *names], rows)

    return build


def _failure_share(q: Query, uid: int | None) -> Table:
    table = _kpis("spawn_success_rate")(q, uid)
    return Table(["period", "spawn_failure_share"], [[b, None if v is None else 1.0 - v] for b, v in table.rows])


def _first_rows(build: Callable[[Query, int | None], Table], n: int) -> Callable[[Query, int | None], Table]:
    def first(q: Query, uid: int | None) -> Table:
        table = build(q, uid)
        return Table(table.columns, table.rows[:n])

    return first


_add(Figure("active_users", "Daily, weekly and monthly active users", "facility", "line", "users",
            "Users active on the day, in the 7 and in the 30 days ending on it (means over a bucket's days).",
            _kpis("dau", "wau", "mau"), labels={"dau": "DAU", "wau": "WAU", "mau": "MAU"}))
_add(Figure("new_returning", "New and returning users", "facility", "stacked", "users",
            "Active users of each bucket, split by whether their first active day ever falls in it.",
            _kpis("new_users", "returning_users"), labels={"new_users": "new", "returning_users": "returning"}))
_add(Figure("retention", "Monthly cohort retention", "facility", "heatmap", "share",
            "Rows: users by month of first activity (cohort size). Columns: share of them active k months later.",
            _kpis("retention"), periodic=False))
_add(Figure("hour_of_week", "Activity by hour of week", "facility", "heatmap", "users",
            "Mean number of users with a server running in each local weekday hour of the range.",
            _kpis("hour_of_week"), periodic=False))
_add(Figure("profiles", "Image / profile popularity", "facility", "hbar", "sessions",
            "Sessions started in the range per profile, with their distinct users.",
            _kpis("profile_popularity"), periodic=False, plot=("sessions", "users")))
_add(Figure("spawn_latency", "Spawn latency", "facility", "line", "seconds",
            "Time to start a server, over successful spawns in the bucket.",
            _kpis("spawn_latency_p50", "spawn_latency_p95"), labels={"spawn_latency_p50": "p50", "spawn_latency_p95": "p95"}))
_add(Figure("spawn_failures", "Spawn failures", "facility", "bar", "share",
            "Share of spawns in the bucket that failed (1 - spawn success rate).",
            _failure_share, labels={"spawn_failure_share": "failed"}))
_add(Figure("top_core_hours", "Top users by Dask core-hours", "facility", "hbar", "core-hours",
            f"The {TOP_USERS} users with the most Dask core-hours (worker threads x hours) in the range.",
            _kpis("dask_top_users"), periodic=False, plot=("core_hours",), labels={"core_hours": "core-hours"}))
_add(Figure("top_events", "Top users by events processed", "facility", "hbar", "events",
            f"The {TOP_USERS} users whose analysis runs started in the range processed the most events.",
            _first_rows(_kpis("analysis_by_user"), TOP_USERS), periodic=False, plot=("events",)))


# -- user figures: one user's rows ------------------------------------------------------------


def _per_bucket(q: Query, sql: str, params: dict, fill: tuple) -> dict[str, tuple]:
    """{bucket: values} from SQL giving ``bucket, v1, v2...``; buckets without a row get ``fill``."""
    found = {bucket: tuple(values) for bucket, *values in q.conn.execute(sa.text(sql), {**q.params, **params})}
    return {b.label: found.get(b.label, fill) for b in q.buckets}


def _user_sessions(q: Query, uid: int | None) -> Table:
    started = _per_bucket(q, f"SELECT bucket, COUNT(*) FROM ({started_in_range(q, 'sessions', 'user_id', 'user_id = :uid')}) s GROUP BY bucket",
                          {"uid": uid, **epoch_bounds(q)}, (0,))
    hours = _per_bucket(q, f"SELECT {q.bucket}, SUM(sh.seconds) / 3600.0 FROM session_hours sh JOIN calendar c ON c.day = sh.day"
                           f" WHERE sh.user_id = :uid AND sh.day BETWEEN :a AND :b GROUP BY {q.bucket}", {"uid": uid}, (0.0,))
    return Table(["period", "hours", "sessions"], [[b, float(hours[b][0]), int(started[b][0])] for b in hours])


def _user_dask(q: Query, uid: int | None) -> Table:
    rows = _per_bucket(q, f"SELECT {q.bucket}, SUM(d.core_seconds) / 3600.0, SUM(d.worker_seconds) / 3600.0 FROM dask_usage d"
                          f" JOIN calendar c ON c.day = d.day WHERE d.user_id = :uid AND d.day BETWEEN :a AND :b GROUP BY {q.bucket}",
                       {"uid": uid}, (0.0, 0.0))
    return Table(["period", "core_hours", "worker_hours"], [[b, float(core), float(workers)] for b, (core, workers) in rows.items()])


def _user_core_hours(q: Query, uid: int | None) -> Table:
    """The user's accounted cores (docs/accounting.md: each core once) per bucket, Dask's beside them."""
    found = {t.bucket: t for t in usage_totals(q.conn, q.period, q.by, user_id=uid)} if uid is not None else {}
    columns = ["notebook_core_hours", "pod_core_hours", "batch_core_hours", "dask_core_hours", "batch_cpu_efficiency"]
    rows = []
    for b in q.buckets:
        hours = (found.get(b.label) or Totals(b.label, None, "")).hours()
        rows.append([b.label, *(hours[c] for c in columns)])
    return Table(["period", *columns], rows)


def _user_throughput(q: Query, uid: int | None) -> Table:
    """Own runs, events and median throughput per bucket, beside the facility's median (a KPI)."""
    counts = _per_bucket(q, f"SELECT {q.bucket}, COUNT(*), {EVENTS_SUM} {RUNS_IN_RANGE} AND ar.user_id = :uid GROUP BY {q.bucket}",
                         {"uid": uid}, (0, 0))
    mine = f"SELECT {q.bucket} AS bucket, ar.events_per_thread_second AS v {RUNS_IN_RANGE} AND {SUCCESS} AND ar.events > 0 AND ar.user_id = :uid"
    own = _per_bucket(q, nearest_rank(mine, (50,)), {"uid": uid}, (None,))
    facility = dict(_kpis("analysis_throughput_p50")(q, uid).rows)
    return Table(["period", "runs", "events", "events_per_thread_second", "facility_events_per_thread_second"],
                 [[b, int(runs), int(events or 0), own[b][0], facility[b]] for b, (runs, events) in counts.items()])


def _user_runs(q: Query, uid: int | None) -> Table:
    sql = (
        "SELECT started, processor, executor, status, events, wall_seconds, threads, events_per_thread_second FROM analysis_runs"
        " WHERE user_id = :uid AND day BETWEEN :a AND :b ORDER BY started DESC LIMIT :n"
    )
    rows = [
        [iso(started, q.tz), processor, executor, status, int(events), float(wall), int(threads), rate]
        for started, processor, executor, status, events, wall, threads, rate
        in q.conn.execute(sa.text(sql), {**q.params, "uid": uid, "n": RUNS_LISTED})
    ]
    if len(rows) == RUNS_LISTED:
        q.note(f"the latest {RUNS_LISTED} runs of the range")
    return Table(["started", "processor", "executor", "status", "events", "wall_seconds", "threads", "events_per_thread_second"], rows)


_add(Figure("my_sessions", "Sessions and server hours", "user", "bar", "hours",
            "Hours the user's servers ran (bars) and sessions started (line) per bucket.",
            _user_sessions, labels={"hours": "server hours", "sessions": "sessions started"},
            secondary=("sessions",), secondary_unit="sessions"))
_add(Figure("my_dask", "Dask core-hours", "user", "bar", "core-hours",
            "Threads x time of the user's Dask workers, per bucket (sampled from the schedulers).",
            _user_dask, plot=("core_hours",), labels={"core_hours": "core-hours"}))
_add(Figure("my_core_hours", "Accounted core-hours", "user", "stacked", "core-hours",
            "Cores allocated to the user x hours, per bucket: notebook pods, other pods, batch jobs "
            "(each core once; Dask workers run in these, so their core-hours are inside, shown apart above).",
            _user_core_hours, plot=("notebook_core_hours", "pod_core_hours", "batch_core_hours"),
            labels={"notebook_core_hours": "notebook pods", "pod_core_hours": "other pods", "batch_core_hours": "batch jobs"}))
_add(Figure("my_throughput", "Analysis throughput", "user", "line", "events/s/thread",
            "Median events per second per thread of the user's successful analysis runs, against the facility median.",
            _user_throughput, plot=("events_per_thread_second", "facility_events_per_thread_second"),
            labels={"events_per_thread_second": "mine", "facility_events_per_thread_second": "facility median"}))
_add(Figure("my_runs", "Analysis runs", "user", "table", "",
            f"The user's analysis runs started in the range, newest first (at most {RUNS_LISTED}).",
            _user_runs, periodic=False))
