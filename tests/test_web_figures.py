"""The figures behind the pages' charts, on both ledger backends, from usage the ledger's own
writers stored (sessions, Dask samples, analysis runs)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import threading
import time

import pytest

from af_metrics.figures import FIGURES, compute_figure, compute_figures, resolve_range, user_id
from af_metrics.kpis import KPIError
from af_metrics.ledger.store import Ledger
from af_metrics.report import write_kpi
from af_metrics.web.pages import AnswerCache
from tests.web_support import BATCH, DASK_THREADS, RUNS, SESSIONS, seed_usage


def last_30_days(ledger: Ledger, by: str | None = "range"):  # noqa: ANN201
    return resolve_range(ledger, None, None, None, by)


def test_user_figures_hold_only_that_users_usage(ledger: Ledger) -> None:
    seed_usage(ledger)
    period, by = last_30_days(ledger)
    alice, bob = user_id(ledger, "alice"), user_id(ledger, "bob")

    sessions = compute_figure(ledger, "my_sessions", period, by, alice)
    assert sessions["columns"] == ["period", "hours", "sessions"]
    assert sessions["rows"][0][1:] == [pytest.approx(2.0 * SESSIONS["alice"]), SESSIONS["alice"]]
    assert compute_figure(ledger, "my_sessions", period, by, bob)["rows"][0][2] == SESSIONS["bob"]

    dask = compute_figure(ledger, "my_dask", period, by, alice)
    # one hour at 4 threads, plus the minute from the scheduler start to its first read
    assert dask["rows"][0][1] == pytest.approx(DASK_THREADS["alice"] * (1 + 60 / 3600))

    throughput = compute_figure(ledger, "my_throughput", period, by, alice)
    runs, events, mine, facility = throughput["rows"][0][1:]
    assert (runs, events) == (3, sum(e for e, _, _ in RUNS["alice"]))
    assert mine == pytest.approx(7500.0)  # nearest-rank median of 5000, 7500, 7500 events/s/thread
    assert facility == pytest.approx(5000.0)  # ... of 5000, 5000, 7500, 7500 (bob's run included)

    listed = compute_figure(ledger, "my_runs", period, by, bob)
    assert [r[4] for r in listed["rows"]] == [e for e, _, _ in RUNS["bob"]]


def test_a_user_unknown_to_the_ledger_gets_empty_figures(ledger: Ledger) -> None:
    seed_usage(ledger)
    period, by = last_30_days(ledger, "week")
    for fig in compute_figures(ledger, "user", period, by, None):
        own = [i for i, c in enumerate(fig["columns"]) if i and not c.startswith("facility_")]
        assert [row[i] for row in fig["rows"] for i in own if row[i] not in (None, 0, 0.0)] == [], fig["name"]
        if fig["name"] == "my_throughput":  # the facility's median is there to compare with
            assert any(row[-1] for row in fig["rows"])


def test_facility_figures(ledger: Ledger) -> None:
    seed_usage(ledger)
    period, by = last_30_days(ledger, None)
    figures = {f["name"]: f for f in compute_figures(ledger, "facility", period, by)}
    assert set(figures) == {name for name, f in FIGURES.items() if f.scope == "facility"}

    active = figures["active_users"]
    assert by == "day" and len(active["rows"]) == 30 and active["plot"] == ["dau", "wau", "mau"]
    assert max(r[3] for r in active["rows"]) == len(SESSIONS)  # MAU reaches the three users
    assert sum(r[1] for r in figures["new_returning"]["rows"]) == len(SESSIONS)

    how = figures["hour_of_week"]["matrix"]
    assert len(how["y"]) == 7 and len(how["x"]) == 24 and all(len(row) == 24 for row in how["z"])
    retention = figures["retention"]["matrix"]
    assert retention["z"] and retention["x"][0] == "month_0"
    assert all(row[0] == 1.0 for row in retention["z"])  # everyone is active in their first month

    assert [r[0] for r in figures["top_core_hours"]["rows"]] == ["alice", "bob"]
    assert [r[0] for r in figures["top_events"]["rows"]] == ["alice", "bob"]
    assert {r[0]: r[1] for r in figures["profiles"]["rows"]} == {"coffea-base": 4, "coffea-dask": 2}
    failures = [r[1] for r in figures["spawn_failures"]["rows"] if r[1]]
    assert failures == [pytest.approx(1.0)]  # bob's failed spawn, alone on its day


def test_csv_is_the_figures_columns_and_rows(ledger: Ledger) -> None:
    seed_usage(ledger)
    period, by = last_30_days(ledger, "week")
    fig = compute_figure(ledger, "active_users", period, by)
    out = io.StringIO()
    write_kpi(fig, "csv", out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "period,dau,wau,mau" and len(lines) == 1 + len(fig["rows"])


@pytest.mark.parametrize("args, message", [
    ({"period": "2026Q5"}, "bad period"),
    ({"by": "fortnight"}, "bad bucketing"),
    ({"from": "2026-05-01", "to": "2026-04-01"}, "after it ends"),
])
def test_bad_ranges_are_one_line_errors(tmp_path, args: dict, message: str) -> None:  # noqa: ANN001
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    with pytest.raises(KPIError, match=message) as err:
        resolve_range(led, args.get("from"), args.get("to"), args.get("period"), args.get("by"))
    assert "\n" not in str(err.value)


def test_too_many_points_is_refused(tmp_path) -> None:  # noqa: ANN001
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    period, _ = resolve_range(led, "2001-01-01", "2010-12-31", None, None)
    with pytest.raises(KPIError, match="too many points"):
        compute_figure(led, "active_users", period, "day")
    assert compute_figure(led, "active_users", period, "month")["rows"]


def test_answer_cache_shares_one_computation_and_expires() -> None:
    calls: list[int] = []
    release = threading.Event()

    def compute() -> dict:
        release.wait(10)
        calls.append(1)
        return {"n": len(calls)}

    async def scenario() -> list[dict]:
        cache = AnswerCache(ttl=3600)
        waiting = [asyncio.ensure_future(cache.get(("k",), compute)) for _ in range(20)]
        await asyncio.sleep(0.05)
        release.set()
        first = [a.value for a in await asyncio.gather(*waiting)]
        again = (await cache.get(("k",), compute)).value
        expired = AnswerCache(ttl=0)
        fresh = [(await expired.get(("k",), compute)).value for _ in range(2)]
        return [*first, again, *fresh]

    values = asyncio.run(scenario())
    assert values[:21] == [{"n": 1}] * 21  # 20 concurrent requests and a later one: one computation
    assert values[21:] == [{"n": 2}, {"n": 3}]  # with no reuse time, every request computes


def test_answer_cache_serves_the_last_answer_while_it_refreshes() -> None:
    calls: list[float] = []

    def compute() -> dict:
        calls.append(time.monotonic())
        return {"n": len(calls)}

    async def scenario() -> list[dict]:
        cache = AnswerCache(ttl=0.05)
        first = (await cache.get(("k",), compute)).value
        await asyncio.sleep(0.1)  # expired
        stale = (await cache.get(("k",), compute)).value  # at once, and a refresh starts
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(calls) == 2:
                break
        return [first, stale, (await cache.get(("k",), compute)).value]

    assert asyncio.run(scenario()) == [{"n": 1}, {"n": 1}, {"n": 2}]


def test_the_range_defaults_to_the_last_30_days(tmp_path) -> None:  # noqa: ANN001
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    period, by = resolve_range(led, None, None, None, "auto")
    assert period.days == 30 and by == "day" and period.last == dt.datetime.now(dt.timezone.utc).date().toordinal()
    assert resolve_range(led, None, None, "2026", "auto")[1] == "week"
    assert resolve_range(led, "2020-01-01", "2026-12-31", None, "auto")[1] == "month"



def test_my_core_hours_are_the_users_accounted_cores(ledger: Ledger) -> None:
    seed_usage(ledger)  # alice's one batch job (BATCH), no pods
    alice, bob = user_id(ledger, "alice"), user_id(ledger, "bob")
    cores, wall, cpu = BATCH["alice"]

    period, _ = last_30_days(ledger)
    fig = compute_figure(ledger, "my_core_hours", period, "range", alice)
    assert fig["chart"] == "stacked" and fig["plot"] == ["notebook_core_hours", "pod_core_hours", "batch_core_hours"]
    [[_, notebook, pods, batch, dask, efficiency]] = fig["rows"]
    assert (notebook, pods, batch) == (0.0, 0.0, pytest.approx(cores * wall))
    assert efficiency == pytest.approx(cpu / (cores * wall))
    assert dask == pytest.approx(compute_figure(ledger, "my_dask", period, "range", alice)["rows"][0][1])
    assert compute_figure(ledger, "my_core_hours", period, "range", bob)["rows"][0][1:4] == [0.0, 0.0, 0.0]

    daily = compute_figure(ledger, "my_core_hours", *last_30_days(ledger, "day"), alice)["rows"]
    assert len(daily) == 30 and sum(r[3] for r in daily) == pytest.approx(cores * wall)
    assert len([r for r in daily if r[3]]) in (1, 2)  # the job's hours, on one day or across a midnight
