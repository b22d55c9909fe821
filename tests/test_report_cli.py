"""``af-metrics kpi`` and ``af-metrics report`` on a SQLite ledger file."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from af_metrics.cli import cli
from af_metrics.kpis import kpi_catalogue
from af_metrics.ledger.store import Ledger, SessionRecord, SpawnRecord
from af_metrics.timeutil import parse_timestamp


def _session(user: str, start: str, end: str, profile: str | None = None) -> SessionRecord:
    return SessionRecord(user, "", profile, parse_timestamp(start), parse_timestamp(end), "imported")


@pytest.fixture
def run(tmp_path: Path):  # noqa: ANN201 - returns the invoker
    """Invoke the CLI on a ledger holding a small January 2026 (UTC) plus one session today."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    ledger = Ledger.open(url)
    ledger.add_history(
        [
            _session("alice", "2026-01-05T23:00:00Z", "2026-01-06T01:00:00Z", "gpu"),
            _session("bob", "2026-01-06T09:00:00Z", "2026-01-06T10:00:00Z"),
            _session("bob", "2026-02-02T09:00:00Z", "2026-02-02T11:00:00Z"),
            SessionRecord("carol", "", None, today.timestamp() + 60, today.timestamp() + 120, "imported"),
        ],
        [SpawnRecord("bob", "", None, parse_timestamp("2026-01-06T08:59:00Z"), "success", 30.0, "imported")],
    )
    ledger.engine.dispose()
    config = tmp_path / "af.toml"
    config.write_text('timezone = "UTC"\n')

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config), "--ledger", url, *args], env={"AF_METRICS_TIMEZONE": None})

    return invoke


def _csv(result: Result) -> list[list[str]]:
    assert result.exit_code == 0, result.output
    return list(csv.reader(io.StringIO(result.output)))


def test_kpi_csv_is_period_value_rows(run) -> None:  # noqa: ANN001
    rows = _csv(run("kpi", "dau", "--from", "2026-01-04", "--to", "2026-01-07", "--format", "csv"))
    # alice 23:00-01:00 counts on the 5th and 6th, bob on the 6th
    assert rows == [["period", "value"], ["2026-01-04", "0"], ["2026-01-05", "1"], ["2026-01-06", "2"], ["2026-01-07", "0"]]
    rows = _csv(run("kpi", "active_users", "--period", "2026Q1", "--by", "month", "--format", "csv"))
    assert rows == [["period", "value"], ["2026-01", "2"], ["2026-02", "1"], ["2026-03", "0"]]
    rows = _csv(run("kpi", "sessions", "--period", "2026-W02", "--format", "csv"))  # Mon Jan 5 .. Sun Jan 11
    assert [r[0] for r in rows[1:]] == [f"2026-01-{d:02d}" for d in range(5, 12)]
    assert [r[1] for r in rows[1:]] == ["1", "1", "0", "0", "0", "0", "0"]  # by start day


def test_kpi_default_range_is_the_last_30_days(run) -> None:  # noqa: ANN001
    rows = _csv(run("kpi", "dau", "--format", "csv"))
    today = dt.datetime.now(dt.timezone.utc).date()
    assert len(rows) == 31
    assert rows[1][0] == (today - dt.timedelta(days=29)).isoformat()
    assert rows[-1] == [today.isoformat(), "1"]  # carol, a minute after midnight


def test_table_kpis_have_their_own_columns(run) -> None:  # noqa: ANN001
    rows = _csv(run("kpi", "profile_popularity", "--period", "2026-01", "--format", "csv"))
    assert rows == [["profile", "sessions", "users"], ["default", "1", "1"], ["gpu", "1", "1"]]
    rows = _csv(run("kpi", "retention", "--period", "2026-01..2026-02-28", "--format", "csv"))
    # January cohort: alice and bob; in February bob only
    assert rows == [["cohort", "users", "month_0", "month_1"], ["2026-01", "2", "1.0", "0.5"]]
    rows = _csv(run("kpi", "hour_of_week", "--period", "2026-01", "--format", "csv"))
    assert rows[0] == ["weekday", "hour", "users"] and len(rows) == 169


def test_kpi_json_and_table(run) -> None:  # noqa: ANN001
    result = run("kpi", "session_duration_p50", "--period", "2026-01", "--by", "range", "--format", "json")
    payload = json.loads(result.output)
    assert payload["rows"] == [["2026-01-01..2026-01-31", 3600.0]]  # 2 h and 1 h: rank 1 of 2
    table = run("kpi", "session_duration_p50", "--period", "2026-01", "--by", "range")
    assert table.exit_code == 0 and "1h 00m" in table.output


def test_kpi_list(run) -> None:  # noqa: ANN001
    result = run("kpi", "--list", "--format", "csv")
    rows = _csv(result)
    assert rows[0] == ["name", "kind", "unit", "periodic", "definition"]
    assert {r[0]: r[4] for r in rows[1:]} == {k["name"]: k["definition"] for k in kpi_catalogue()}
    table = run("kpi", "--list")
    assert table.exit_code == 0 and "stickiness" in table.output and "spawn_latency_p95" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["kpi", "nonsense"], "unknown KPI 'nonsense'"),
        (["kpi", "dau", "--period", "2026-13"], "bad period '2026-13'"),
        (["kpi", "dau", "--from", "2026-02-30"], "bad from date '2026-02-30'"),
        (["kpi", "dau", "--from", "2026-03-01", "--to", "2026-02-01"], "starts (2026-03-01) after it ends"),
        (["kpi", "dau", "--period", "2026Q1", "--to", "2026-02-01"], "either a period or from/to"),
        (["kpi", "retention", "--by", "week"], "takes no bucketing"),
        (["kpi"], "give a KPI name"),
        (["report", "--period", "last-year"], "bad period 'last-year'"),
    ],
)
def test_bad_input_is_one_line(run, args: list[str], message: str) -> None:  # noqa: ANN001
    result = run(*args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


def test_a_ledger_keeps_the_time_zone_it_was_written_in(run, tmp_path: Path) -> None:  # noqa: ANN001
    before = run("kpi", "dau", "--period", "2026-01", "--format", "csv").output
    (tmp_path / "af.toml").write_text('timezone = "Europe/Zurich"\n')
    refused = run("kpi", "dau", "--period", "2026-01", "--format", "csv")
    assert refused.exit_code == 1
    assert refused.output.strip() == "Error: this ledger keeps days in time zone 'UTC', the configuration says 'Europe/Zurich': set timezone = 'UTC'"
    (tmp_path / "af.toml").write_text('timezone = "UTC"\n')
    assert run("kpi", "dau", "--period", "2026-01", "--format", "csv").output == before
    assert "days in time zone UTC" in run("db", "upgrade").output


def test_report_formats(run) -> None:  # noqa: ANN001
    payload = json.loads(run("report", "--period", "2026-01", "--format", "json").output)
    headline = {h["name"]: h["value"] for h in payload["headline"]}
    assert (headline["active_users"], headline["new_users"], headline["sessions"]) == (2, 2, 2)
    assert headline["spawn_success_rate"] == 1.0 and headline["spawn_latency_p50"] == 30.0
    assert {t["name"] for t in payload["tables"]} >= {"profile_popularity", "retention", "hour_of_week"}

    rows = _csv(run("report", "--from", "2026-01-01", "--to", "2026-01-31", "--format", "csv"))
    assert rows[0] == ["section", "row", "column", "value"]
    assert ["headline", "active_users", "value", "2"] in rows
    assert ["profile_popularity", "gpu", "sessions", "1"] in rows
    assert ["retention", "2026-01", "month_0", "1.0"] in rows
    assert ["hour_of_week", "Mon 23", "users", "0.25"] in rows  # alice's hour on Monday 5th / 4 Mondays

    table = run("report", "--period", "2026-01")
    assert table.exit_code == 0
    text = table.output
    assert "Facility usage 2026-01-01..2026-01-31 (UTC)" in text
    assert "Spawn success rate" in text and "100.0%" in text and "Monthly cohort retention" in text
    heat = [line for line in text.splitlines() if line[:4] in ("Mon ", "Tue ", "Sun ")]
    assert len(heat) == 3 and all(len(line) == 4 + 48 for line in heat)  # two characters per hour
