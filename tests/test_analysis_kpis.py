"""Analysis KPIs on both ledger backends, from runs stored the way the push endpoint stores them."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from af_metrics.coffea.exposition import AnalysisCollector
from af_metrics.coffea.record import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS, RunRecord
from af_metrics.figures import compute_figure, resolve_range, user_id
from af_metrics.kpis import compute_kpi
from af_metrics.ledger.analysis import read_analysis_figures, store_run
from af_metrics.ledger.store import Ledger, SessionRecord

UTC = dt.timezone.utc


def at(day: int, hour: int = 12) -> float:
    return dt.datetime(2026, 3, day, hour, tzinfo=UTC).timestamp()


def run(started: float, events: int, wall: float, threads: int, status: str = "success", datasets: tuple[str, ...] = ("DY",)) -> RunRecord:
    per = events // len(datasets)
    return RunRecord(
        run_id=uuid.uuid4().hex, processor="P", executor="dask", status=status, started=started, ended=started + wall,
        wall_seconds=wall, events=events, chunks=1, bytes_read=events * 100, columns_read=2, process_seconds=wall,
        threads=threads, datasets=[{"name": d, "events": per, "bytes_read": per * 100, "chunks": 1} for d in datasets],
        chunk_duration={"counts": [0] * 4 + [1] + [0] * (len(CHUNK_SECONDS_BOUNDS) - 4)},
        chunk_events={"counts": [1] + [0] * len(CHUNK_EVENTS_BOUNDS)},
    )


def series(ledger: Ledger, name: str, by: str = "day") -> dict[str, float | None]:
    return dict(map(tuple, compute_kpi(ledger, name, **{"from": "2026-03-01", "to": "2026-03-03", "by": by})["rows"]))


def test_analysis_kpis(ledger: Ledger) -> None:
    ledger.add_history([
        SessionRecord("ann", "", None, at(1, 8), at(1, 18), "import"),
        SessionRecord("ben", "", None, at(1, 9), at(1, 10), "import"),
    ])
    # ann: 10 ev/s/thread on day 1, 30 and 50 on day 2; ben fails on day 1 and succeeds on day 3
    for user, record in [
        ("ann", run(at(1, 12), 1000, 10, 10)),
        ("ann", run(at(2), 3000, 10, 10)),
        ("ann", run(at(2, 13), 5000, 10, 10, datasets=("DY", "TT"))),
        ("ben", run(at(1, 11), 0, 5, 1, status="failure")),
        ("ben", run(at(3, 9), 200, 10, 2)),
    ]:
        assert store_run(ledger, user, record, record.ended)

    assert series(ledger, "analysis_runs") == {"2026-03-01": 2, "2026-03-02": 2, "2026-03-03": 1}
    assert series(ledger, "analysis_users") == {"2026-03-01": 1, "2026-03-02": 1, "2026-03-03": 1}
    assert series(ledger, "analysis_events", "month") == {"2026-03": 9200}
    assert series(ledger, "analysis_bytes_read", "month") == {"2026-03": 920_000}
    assert series(ledger, "analysis_throughput_p50") == {"2026-03-01": 10.0, "2026-03-02": 30.0, "2026-03-03": 10.0}
    assert series(ledger, "analysis_throughput_p90", "month") == {"2026-03": 50.0}
    assert series(ledger, "analysis_throughput_p50", "month") == {"2026-03": 10.0}  # nearest rank of 10, 10, 30, 50
    assert series(ledger, "analysis_activations") == {"2026-03-01": 1, "2026-03-02": 0, "2026-03-03": 1}
    # ann: first login 08:00, first success 12:00 -> 4 h; ben: 09:00 day 1 -> 09:00 day 3 = 48 h
    assert series(ledger, "analysis_time_to_first_run") == {"2026-03-01": 4.0, "2026-03-02": None, "2026-03-03": 48.0}

    table = compute_kpi(ledger, "analysis_by_user", **{"from": "2026-03-01", "to": "2026-03-31"})
    assert table["rows"] == [["ann", 3, 3, 9000, 900_000, 30.0, 50.0], ["ben", 2, 1, 200, 20_000, 10.0, 10.0]]


def test_sums_past_the_64_bit_range_do_not_break_reports(ledger: Ledger) -> None:
    """Runs stored before the record's bounds (2**62 events each): SQLite's integer SUM overflows on two."""
    huge = 2**62
    for hour in (10, 11, 12):
        record = run(at(1, hour), 1000, 10, 1)
        record = record.model_copy(update={
            "events": huge, "bytes_read": huge,
            "datasets": [record.datasets[0].model_copy(update={"events": huge, "bytes_read": huge})],
        })
        assert store_run(ledger, "ann", record, at(1, 23))
    assert series(ledger, "analysis_events", "month") == {"2026-03": pytest.approx(3 * huge)}
    assert series(ledger, "analysis_bytes_read", "month") == {"2026-03": pytest.approx(3 * huge)}
    table = compute_kpi(ledger, "analysis_by_user", **{"from": "2026-03-01", "to": "2026-03-31"})
    assert table["rows"][0][:5] == ["ann", 3, 3, pytest.approx(3 * huge), pytest.approx(3 * huge)]
    fig = read_analysis_figures(ledger, user_cap=10)
    assert fig.per_user["ann"].datasets["DY"][:2] == (pytest.approx(3 * huge), pytest.approx(3 * huge))
    period, by = resolve_range(ledger, "2026-03-01", "2026-03-03", None, "range")
    mine = compute_figure(ledger, "my_throughput", period, by, user_id(ledger, "ann"))
    assert mine["rows"][0][1:3] == [3, pytest.approx(3 * huge)]


def test_exporter_figures_cap_users_and_datasets(ledger: Ledger) -> None:
    for i, user in enumerate(["u1", "u2", "u3"]):
        store_run(ledger, user, run(at(1, 10 + i), 300, 10, 1, datasets=("A", "B", "C")), at(1, 23))
    fig = read_analysis_figures(ledger, user_cap=2, dataset_cap=2)
    assert sorted(fig.per_user) == ["u2", "u3"] and fig.users_dropped == 1  # the latest runs are kept
    assert fig.per_user["u3"].datasets == {"A": (100, 10_000, 0.0), "B": (100, 10_000, 0.0), "_other": (100, 10_000, 0.0)}
    assert fig.per_user["u3"].chunk_duration[4] == 1 and fig.per_user["u3"].runs == {"success": 1}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian prometheus)")
def test_analysis_exposition_passes_promtool(ledger: Ledger) -> None:
    store_run(ledger, "ann", run(at(1), 1000, 10, 4, datasets=("DY", "TT")), at(1, 23))
    store_run(ledger, "ben", run(at(2), 0, 1, 1, status="failure"), at(2, 23))
    registry = CollectorRegistry()
    registry.register(AnalysisCollector(read_analysis_figures(ledger, user_cap=10)))
    text = generate_latest(registry).decode()
    assert 'af_analysis_events_total{dataset="TT",user="ann"} 500.0' in text
    assert 'af_analysis_chunk_duration_seconds_bucket{le="+Inf",user="ben"} 1.0' in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
