"""Pure parts of the hub source: scopes, profiles, the spawn histogram and its increase."""

from __future__ import annotations

import sqlalchemy as sa

from af_metrics.facts import SpawnHistogram
from af_metrics.ledger.schema import INF_LE, spawn_buckets
from af_metrics.sources.jupyterhub import missing_scopes, parse_spawn_histogram, profile_of

HUB_METRICS = """\
# HELP jupyterhub_server_spawn_duration_seconds Time taken for server spawning operation
# TYPE jupyterhub_server_spawn_duration_seconds histogram
jupyterhub_server_spawn_duration_seconds_bucket{le="0.5",reason="",status="success"} 0.0
jupyterhub_server_spawn_duration_seconds_bucket{le="5.0",reason="",status="success"} 3.0
jupyterhub_server_spawn_duration_seconds_bucket{le="+Inf",reason="",status="success"} 4.0
jupyterhub_server_spawn_duration_seconds_count{reason="",status="success"} 4.0
jupyterhub_server_spawn_duration_seconds_sum{reason="",status="success"} 12.0
jupyterhub_server_spawn_duration_seconds_bucket{le="+Inf",reason="",status="failure"} 1.0
jupyterhub_server_spawn_duration_seconds_bucket{le="+Inf",reason="throttled",status="failure"} 2.0
# HELP jupyterhub_running_servers The number of user servers currently running
# TYPE jupyterhub_running_servers gauge
jupyterhub_running_servers 3.0
"""


def test_missing_scopes_names_exactly_what_is_missing() -> None:
    assert missing_scopes(["list:users", "read:users", "read:servers", "read:users:activity"]) == ["read:metrics"]
    assert missing_scopes(["admin:users", "admin:servers", "list:users", "read:metrics"]) == []
    assert missing_scopes(["read:users!group=cms", "list:users!group=cms", "read:servers", "read:users:activity", "read:metrics"]) == []
    assert missing_scopes([]) == ["list:users", "read:users", "read:servers", "read:users:activity", "read:metrics"]


def test_profile_from_user_options() -> None:
    assert profile_of({"profile": "cms-coffea"}) == "cms-coffea"
    assert profile_of({"image": "coffeateam/coffea-dask:latest"}) == "coffeateam/coffea-dask:latest"
    assert profile_of({}) is None
    assert profile_of(None) is None
    assert profile_of({"profile": 3}) is None


def test_spawn_histogram_sums_reasons_per_status() -> None:
    hist = parse_spawn_histogram(HUB_METRICS, 100.0)
    assert hist.buckets[("success", 5.0)] == 3.0
    assert hist.buckets[("success", float("inf"))] == 4.0
    assert hist.buckets[("failure", float("inf"))] == 3.0


def test_histogram_increase_handles_first_sight_and_counter_reset(ledger) -> None:  # noqa: ANN001
    inf = float("inf")
    observations = [
        {("success", inf): 10.0, ("failure", inf): 1.0},  # first sight: history unknown, nothing stored
        {("success", inf): 13.0, ("failure", inf): 1.0},  # +3 successes
        {("success", inf): 2.0, ("failure", inf): 1.0},  # hub restarted: success reset to 0 then +2
    ]
    for i, buckets in enumerate(observations):
        with ledger.begin() as conn:
            ledger._record_histogram(conn, SpawnHistogram(1_767_225_600.0 + 60 * i, buckets))
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(spawn_buckets.c.status, sa.func.sum(spawn_buckets.c["count"]))
            .where(spawn_buckets.c.le == INF_LE)
            .group_by(spawn_buckets.c.status)
            .order_by(spawn_buckets.c.status)
        ).all()
    # the single failure was there before the first observation and never repeated: not counted
    assert rows == [("success", 5.0)]
