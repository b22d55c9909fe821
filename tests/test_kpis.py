"""KPIs against hand-built histories on SQLite and PostgreSQL, with the expected values
computed by hand in the comments."""

from __future__ import annotations

import datetime as dt

import pytest

from af_metrics.kpis import KPIError, compute_kpi, kpi_catalogue, period_report
from af_metrics.kpis.periods import PeriodError, parse_period, resolve
from af_metrics.ledger.schema import INF_LE
from af_metrics.ledger.store import Ledger, SessionRecord, SpawnRecord
from af_metrics.timeutil import day_of, parse_timestamp


def at(text: str) -> float:
    return parse_timestamp(text)


def session(user: str, start: str, end: str | None, profile: str | None = None, server: str = "") -> SessionRecord:
    return SessionRecord(user, server, profile, at(start), None if end is None else at(end), "imported")


def day(user: str, date: str) -> SessionRecord:
    """One hour of activity at noon UTC: active on that day."""
    return session(user, f"{date}T12:00:00Z", f"{date}T13:00:00Z")


def values(ledger: Ledger, name: str, frm: str, to: str, by: str | None = None) -> list:
    result = compute_kpi(ledger, name, **{"from": frm, "to": to, "period": None, "by": by})
    return [value for _period, value in result["rows"]]


def labels(ledger: Ledger, name: str, frm: str, to: str, by: str | None = None) -> list[str]:
    return [p for p, _ in compute_kpi(ledger, name, **{"from": frm, "to": to, "by": by})["rows"]]


def test_session_across_midnight_counts_on_both_days(ledger: Ledger) -> None:
    ledger.add_history([session("alice", "2026-01-05T23:00:00Z", "2026-01-06T01:00:00Z")])
    # active on the 5th and the 6th; the session started on the 5th
    assert values(ledger, "dau", "2026-01-04", "2026-01-07") == [0, 1, 1, 0]
    assert values(ledger, "sessions", "2026-01-04", "2026-01-07") == [0, 1, 0, 0]
    assert values(ledger, "active_days_per_user", "2026-01-04", "2026-01-07", by="range") == [2.0]
    assert values(ledger, "session_duration_p50", "2026-01-05", "2026-01-05") == [7200.0]


def test_dau_wau_mau_windows_and_edges(ledger: Ledger) -> None:
    ledger.add_history([
        day("u1", "2026-01-10"),
        day("u2", "2026-01-01"), day("u2", "2026-01-09"),  # gap of 8 days: two weekly islands
        day("u3", "2026-01-20"), day("u3", "2026-01-27"),  # gap of 7 days: one weekly island
    ])
    jan = ("2026-01-01", "2026-01-31")
    # DAU: one user on the 1st, 9th, 10th, 20th, 27th
    assert values(ledger, "dau", *jan) == [1 if d in (1, 9, 10, 20, 27) else 0 for d in range(1, 32)]
    # WAU (7 days ending on the day): u2 on 1-7 and 9-15, u1 on 10-16, u3 on 20-33
    wau = {d: (d <= 7 or 9 <= d <= 15) + (10 <= d <= 16) + (d >= 20) for d in range(1, 32)}
    assert values(ledger, "wau", *jan) == [wau[d] for d in range(1, 32)]
    assert wau[8] == 0 and wau[16] == 1 and wau[17] == 0
    # MAU (30 days): u2 on 1..Feb 7, u1 on 10..Feb 8, u3 on 20..Feb 25
    assert values(ledger, "mau", *jan) == [1] * 9 + [2] * 10 + [3] * 12
    # after the range starts, activity before it still counts (the window looks back)
    assert values(ledger, "mau", "2026-02-07", "2026-02-10") == [3, 2, 1, 1]
    assert values(ledger, "wau", "2026-01-16", "2026-01-17") == [1, 0]
    # stickiness = DAU/MAU: 1/1 on the 1st and 9th, 1/2 on the 10th, 1/3 on the 20th and 27th
    sticky = values(ledger, "stickiness", *jan)
    assert sticky[0] == sticky[8] == 1.0 and sticky[9] == 0.5
    assert sticky[19] == pytest.approx(1 / 3) and sticky[26] == pytest.approx(1 / 3) and sticky[1] == 0.0
    # by ISO week, the mean over the week's days in the range:
    # W01 = Jan 1-4 (clipped): WAU 1,1,1,1 -> 1; W02 = Jan 5-11: 1,1,1,0,1,2,2 -> 8/7
    assert labels(ledger, "wau", *jan, by="week")[:2] == ["2026-W01", "2026-W02"]
    assert values(ledger, "wau", *jan, by="week")[:2] == [1, pytest.approx(8 / 7)]
    # peak DAU per month; mean DAU over January = 5 active user-days / 31 days
    assert values(ledger, "dau_peak", *jan, by="month") == [1]
    assert values(ledger, "dau", *jan, by="range") == [pytest.approx(5 / 31)]


def test_new_and_returning_users_at_bucket_boundaries(ledger: Ledger) -> None:
    ledger.add_history([
        session("carol", "2025-12-31T23:30:00Z", "2026-01-01T00:30:00Z"),  # first active day Dec 31
        day("dan", "2026-01-31"), day("dan", "2026-02-01"),
        day("erin", "2026-02-01"),
    ])
    by_month = ("2026-01-01", "2026-02-28", "month")
    # January: carol (first day before the bucket: returning), dan (new on the 31st)
    # February: dan (first day in January: returning), erin (new)
    assert values(ledger, "active_users", *by_month) == [2, 2]
    assert values(ledger, "new_users", *by_month) == [1, 1]
    assert values(ledger, "returning_users", *by_month) == [1, 1]
    # the whole range: carol returning; dan and erin new. Active days 1 + 2 + 1 over 3 users
    whole = ("2026-01-01", "2026-02-28", "range")
    assert values(ledger, "active_users", *whole) == [3]
    assert values(ledger, "new_users", *whole) == [2]
    assert values(ledger, "returning_users", *whole) == [1]
    assert values(ledger, "active_days_per_user", *whole) == [pytest.approx(4 / 3)]
    # a range starting in February: dan's first day (Jan 31) is before it
    assert values(ledger, "new_users", "2026-02-01", "2026-02-28", "range") == [1]
    # per day, with empty days as 0
    assert values(ledger, "new_users", "2026-01-30", "2026-02-02") == [0, 1, 1, 0]


def test_monthly_cohort_retention(ledger: Ledger) -> None:
    months = {
        "u0": ["2025-12", "2026-01"],  # first active before the range: in no cohort
        "u1": ["2026-01", "2026-02", "2026-03"],
        "u2": ["2026-01", "2026-03"],
        "u3": ["2026-01"],
        "u4": ["2026-01", "2026-02"],
        "u5": ["2026-02", "2026-03"],
        "u6": ["2026-02"],
        "u7": ["2026-03"],
    }
    ledger.add_history([day(user, f"{m}-15") for user, ms in months.items() for m in ms])
    # January cohort u1-u4: a month later u1, u4 (2/4); two months later u1, u2 (2/4)
    # February cohort u5, u6: a month later u5 (1/2); March cohort u7. Later months unobservable.
    expected = {
        "columns": ["cohort", "users", "month_0", "month_1", "month_2"],
        "rows": [["2026-01", 4, 1.0, 0.5, 0.5], ["2026-02", 2, 1.0, 0.5, None], ["2026-03", 1, 1.0, None, None]],
    }
    for frm in ("2026-01-01", "2026-01-20"):  # cohorts are whole months touching the range
        result = compute_kpi(ledger, "retention", **{"from": frm, "to": "2026-03-31"})
        assert {k: result[k] for k in expected} == expected


def test_sessions_and_nearest_rank_duration_percentiles(ledger: Ledger) -> None:
    monday = [session("ann" if i < 3 else "ben", f"2026-03-02T0{i}:00:00Z", f"2026-03-02T0{i}:{10 * (i + 1)}:00Z") for i in range(5)]
    tuesday = [session("ann", "2026-03-03T10:00:00Z", f"2026-03-03T{10 + h}:00:00Z", server=f"s{h}") for h in range(1, 5)]
    running = session("ben", "2026-03-02T09:00:00Z", None)
    ledger.add_history([*monday, *tuesday, running], now=at("2026-03-02T10:00:00Z"))
    days = ("2026-03-02", "2026-03-03")
    # Monday: 6 sessions (one still running) by 2 users; Tuesday: 4 by 1
    assert values(ledger, "sessions", *days) == [6, 4]
    assert values(ledger, "sessions_per_user", *days) == [3.0, 4.0]
    # Monday's ended durations 10,20,30,40,50 min: p50 rank (50*5+99)/100 = 3 -> 30 min,
    # p90 rank (90*5+99)/100 = 5 -> 50 min. Tuesday 1,2,3,4 h: ranks 2 and 4 -> 2 h and 4 h.
    assert values(ledger, "session_duration_p50", *days) == [1800.0, 7200.0]
    assert values(ledger, "session_duration_p90", *days) == [3000.0, 14400.0]
    # both days: 9 values, ranks 5 and 9 -> 50 min and 4 h
    assert values(ledger, "session_duration_p50", *days, by="range") == [3000.0]
    assert values(ledger, "session_duration_p90", *days, by="range") == [14400.0]
    assert values(ledger, "sessions_per_user", *days, by="range") == [5.0]  # 10 sessions, 2 users


def test_profile_popularity(ledger: Ledger) -> None:
    ledger.add_history([
        session("a", "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", "gpu"),
        session("a", "2026-03-03T08:00:00Z", "2026-03-03T09:00:00Z", "gpu"),
        session("a", "2026-03-04T08:00:00Z", "2026-03-04T09:00:00Z"),
        session("b", "2026-03-04T08:00:00Z", "2026-03-04T09:00:00Z"),
        session("b", "2026-03-05T08:00:00Z", "2026-03-05T09:00:00Z"),
        session("c", "2026-03-05T08:00:00Z", "2026-03-05T09:00:00Z", "cpu"),
        session("c", "2026-04-01T08:00:00Z", "2026-04-01T09:00:00Z", "cpu"),  # outside the range
    ])
    result = compute_kpi(ledger, "profile_popularity", period="2026-03")
    assert result["columns"] == ["profile", "sessions", "users"]
    assert result["rows"] == [["default", 3, 2], ["gpu", 2, 1], ["cpu", 1, 1]]


@pytest.fixture
def zurich(ledger_url: str) -> Ledger:
    led = Ledger.open(ledger_url, tz="Europe/Zurich")
    yield led
    led.engine.dispose()


def test_local_days_and_hour_of_week_in_a_non_utc_zone(zurich: Ledger) -> None:
    zurich.add_history([
        session("z1", "2026-01-05T08:30:00Z", "2026-01-05T10:00:00Z"),  # Mon 09:30-11:00 CET
        session("z2", "2026-01-11T22:30:00Z", "2026-01-11T23:30:00Z"),  # Sun 23:30 - Mon 00:30 CET
        session("z3", "2026-01-12T23:30:00Z", "2026-01-13T00:00:00Z"),  # Tue 00:30-01:00 CET
        session("z5", "2026-01-14T23:15:00Z", "2026-01-14T23:45:00Z"),  # Thu 00:15-00:45 CET
        session("z4", "2026-03-29T22:30:00Z", "2026-03-29T23:00:00Z"),  # Mon Mar 30 00:30 CEST (after DST)
    ])
    # local days: z2 active Sunday 11th and Monday 12th, z3 Tuesday 13th, z5 Thursday 15th
    # (in UTC z5 would be active on the 14th and the sessions would start on the 11th and 12th)
    assert values(zurich, "dau", "2026-01-11", "2026-01-15") == [1, 1, 1, 0, 1]
    assert values(zurich, "sessions", "2026-01-11", "2026-01-13") == [1, 0, 1]
    assert values(zurich, "sessions", "2026-03-29", "2026-03-30") == [0, 1]
    # two weeks (Jan 5-18): every slot occurs twice; mean users = running hours / 2
    result = compute_kpi(zurich, "hour_of_week", **{"from": "2026-01-05", "to": "2026-01-18"})
    cells = {(weekday, hour): users for weekday, hour, users in result["rows"]}
    assert len(cells) == 168 and result["columns"] == ["weekday", "hour", "users"]
    expected = {("Mon", 9): 0.25, ("Mon", 10): 0.5, ("Sun", 23): 0.25, ("Mon", 0): 0.25, ("Tue", 0): 0.25, ("Thu", 0): 0.25}
    assert {k: v for k, v in cells.items() if v} == pytest.approx(expected)
    assert day_of(at("2026-01-12T23:30:00Z"), "Europe/Zurich") == dt.date(2026, 1, 13).toordinal()


def _spawn(user: str, start: str, outcome: str, duration: float | None) -> SpawnRecord:
    return SpawnRecord(user, "", None, at(start), outcome, duration, "imported")


def test_spawn_kpis_from_records_and_from_the_hub_histogram(ledger: Ledger) -> None:
    ledger.add_history([], [
        _spawn("a", "2026-03-02T08:00:00Z", "success", 10.0),
        _spawn("b", "2026-03-02T09:00:00Z", "success", 20.0),
        _spawn("c", "2026-03-02T10:00:00Z", "success", 40.0),
        _spawn("d", "2026-03-02T11:00:00Z", "failure", 300.0),
        _spawn("e", "2026-03-02T12:00:00Z", "pending", None),
    ])
    # records: 3 successes / (3 + 1 failure); latency nearest rank over 10, 20, 40 s:
    # p50 rank (50*3+99)/100 = 2 -> 20 s; p95 rank (95*3+99)/100 = 3 -> 40 s
    assert values(ledger, "spawn_success_rate", "2026-03-02", "2026-03-02") == [0.75]
    assert values(ledger, "spawn_latency_p50", "2026-03-02", "2026-03-02") == [20.0]
    assert values(ledger, "spawn_latency_p95", "2026-03-02", "2026-03-02") == [40.0]
    assert "records" in compute_kpi(ledger, "spawn_success_rate", period="2026-03-02")["notes"][0]

    # the hub's histogram on the 3rd, two observations of the same increase:
    # success cumulative le=1: 1, le=5: 3, le=10: 4, +Inf: 5; failure +Inf: 1
    obs = [(1.0, "success", 1), (5.0, "success", 3), (10.0, "success", 4), (INF_LE, "success", 5), (INF_LE, "failure", 1)]
    rows = [
        {"observed_at": at(t), "status": status, "le": le, "day": dt.date(2026, 3, 3).toordinal(), "count": n}
        for t in ("2026-03-03T08:00:00Z", "2026-03-03T09:00:00Z") for le, status, n in obs
    ]
    with ledger.begin() as conn:
        ledger.add_spawn_buckets(conn, rows)
    # success rate: 10 / (10 + 2); p50: rank 5 of 10 in (1, 5] holding counts 2..6 ->
    # 1 + (5 - 1) * (5 - 2) / (6 - 2) = 4 s; p95: rank 9.5 in +Inf -> highest finite bound, 10 s
    assert values(ledger, "spawn_success_rate", "2026-03-03", "2026-03-03") == [pytest.approx(10 / 12)]
    assert values(ledger, "spawn_latency_p50", "2026-03-03", "2026-03-03") == [4.0]
    assert values(ledger, "spawn_latency_p95", "2026-03-03", "2026-03-03") == [10.0]
    # with the histogram in the range it is used throughout (the 2nd has no histogram data)
    both = compute_kpi(ledger, "spawn_success_rate", **{"from": "2026-03-02", "to": "2026-03-03"})
    assert [v for _, v in both["rows"]] == [None, pytest.approx(10 / 12)]
    assert "histogram" in both["notes"][0]


def test_period_report_holds_every_kpi(ledger: Ledger) -> None:
    ledger.add_history([day("dan", "2026-01-31"), day("dan", "2026-02-01"), day("erin", "2026-02-01")])
    report = period_report(ledger, **{"from": None, "to": None, "period": "2026-02"})
    assert (report["from"], report["to"], report["timezone"]) == ("2026-02-01", "2026-02-28", "UTC")
    catalogue = {k["name"]: k for k in kpi_catalogue()}
    headline = {h["name"]: h["value"] for h in report["headline"]}
    tables = {t["name"]: t for t in report["tables"]}
    assert set(headline) | set(tables) == set(catalogue)
    assert set(tables) == {k for k, v in catalogue.items() if v["kind"] == "table"}
    # February: 2 users on the 1st only; dan first active Jan 31
    assert (headline["active_users"], headline["new_users"], headline["returning_users"]) == (2, 1, 1)
    assert headline["dau"] == pytest.approx(2 / 28) and headline["dau_peak"] == 2
    assert headline["sessions"] == 2 and headline["session_duration_p50"] == 3600.0
    assert headline["spawn_success_rate"] is None  # no spawns recorded
    assert tables["profile_popularity"]["rows"] == [["default", 2, 2]]
    assert tables["retention"]["rows"] == [["2026-02", 1, 1.0]]


def test_docs_define_every_engagement_and_spawn_kpi() -> None:
    from pathlib import Path

    from af_metrics.kpis.registry import REGISTRY

    doc = (Path(__file__).parents[1] / "docs" / "kpis.md").read_text()
    mine = [k.name for k in REGISTRY.values() if k.compute.__module__.endswith((".engagement", ".spawns"))]
    assert len(mine) == 19
    assert [name for name in mine if f"`{name}`" not in doc] == []


def test_bad_input_is_a_kpi_error(ledger: Ledger) -> None:
    with pytest.raises(KPIError) as err:
        compute_kpi(ledger, "nonsense")
    assert err.value.unknown
    for kwargs in ({"period": "2026-13"}, {"from": "2026-02-30"}, {"from": "2026-03-01", "to": "2026-02-01"},
                   {"period": "2026Q1", "from": "2026-01-01"}, {"by": "fortnight"}, {"colour": "red"}):
        with pytest.raises(KPIError) as err:
            compute_kpi(ledger, "dau", **kwargs)
        assert not err.value.unknown and "\n" not in str(err.value)
    with pytest.raises(KPIError, match="no bucketing"):
        compute_kpi(ledger, "retention", by="week")


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("2026Q3", "2026-07-01", "2026-09-30"), ("2026-q1", "2026-01-01", "2026-03-31"),
        ("2026-10", "2026-10-01", "2026-10-31"), ("2024-02", "2024-02-01", "2024-02-29"),
        ("2026", "2026-01-01", "2026-12-31"), ("2026-W05", "2026-01-26", "2026-02-01"),
        ("2026-W53", "2026-12-28", "2027-01-03"), ("2026-01-31", "2026-01-31", "2026-01-31"),
        ("2026-01-01..2026-03-31", "2026-01-01", "2026-03-31"), ("2026-01..2026-W10", "2026-01-01", "2026-03-08"),
    ],
)
def test_parse_period(text: str, first: str, last: str) -> None:
    period = parse_period(text)
    assert period.label == f"{first}..{last}"


@pytest.mark.parametrize("text", ["2025-W53", "2026Q5", "2026-00", "26", "last week", "2026-01-31..2026-01-01", "1999", "2026..", "2026..2027..2028"])
def test_bad_periods(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(text)


def test_default_range_is_the_last_30_days() -> None:
    today = dt.date(2026, 3, 10)
    assert resolve(None, None, None, "UTC", today).label == "2026-02-09..2026-03-10"
    assert resolve("2026-03-01", None, None, "UTC", today).label == "2026-03-01..2026-03-10"
    assert resolve(None, "2026-01-30", None, "UTC", today).label == "2026-01-01..2026-01-30"
