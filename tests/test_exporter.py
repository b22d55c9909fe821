"""/metrics content from the ledger: facility and per-user series, the per-user cap."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from af_metrics.collector import Collector
from af_metrics.config import Settings
from af_metrics.exporter import build_registry, read_figures
from af_metrics.ledger.store import SessionRecord, SpawnRecord

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
H = 3600.0


def _history(ledger) -> None:  # noqa: ANN001
    ledger.add_history(
        [
            SessionRecord("alice", "", "cms", NOW - 5 * H, NOW - 4 * H, "import"),
            SessionRecord("alice", "gpu", "cms", NOW - 2 * H, None, "import"),  # still running
            SessionRecord("bob", "", "atlas", NOW - 3 * 86400, NOW - 3 * 86400 + H, "import"),
            SessionRecord("carol", "", None, NOW - 60 * 86400, NOW - 60 * 86400 + H, "import"),  # not active in 30 d
        ],
        [SpawnRecord("alice", "", "cms", NOW - 5 * H, "success", 4.0, "import"), SpawnRecord("bob", "", "atlas", NOW - 9 * H, "failure", 30.0, "import")],
        now=NOW,
    )


def _scrape(ledger, cap: int) -> tuple[str, dict]:  # noqa: ANN001
    registry, ledger_metrics, _ = build_registry(Collector(Settings(ledger="sqlite://"), ledger))
    ledger_metrics.figures = read_figures(ledger, cap, now=NOW)
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def test_facility_and_per_user_series(ledger) -> None:  # noqa: ANN001
    _history(ledger)
    _, s = _scrape(ledger, cap=100)
    assert s[("af_users", ())] == 3
    assert s[("af_active_users", (("window", "1d"),))] == 1  # alice
    assert s[("af_active_users", (("window", "7d"),))] == 2  # alice, bob
    assert s[("af_active_users", (("window", "30d"),))] == 2
    assert s[("af_servers_running", (("profile", "cms"),))] == 1
    assert s[("af_sessions_total", ())] == 4
    assert s[("af_spawns_total", (("outcome", "failure"),))] == 1
    assert s[("af_user_servers_running", (("user", "alice"),))] == 1
    assert s[("af_user_sessions_total", (("user", "alice"),))] == 2
    assert s[("af_user_session_seconds_total", (("user", "alice"),))] == pytest.approx(3 * H)
    assert ("af_user_sessions_total", (("user", "carol"),)) not in s  # inactive for 30 days
    assert s[("af_source_up", (("source", "jupyterhub"),))] == 0


def test_per_user_cap_keeps_most_recent_and_counts_the_rest(ledger) -> None:  # noqa: ANN001
    _history(ledger)
    _, s = _scrape(ledger, cap=1)
    users = {dict(labels)["user"] for (name, labels) in s if name == "af_user_sessions_total"}
    assert users == {"alice"}
    assert s[("af_user_series_dropped", ())] == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian prometheus)")
def test_exposition_passes_promtool(ledger) -> None:  # noqa: ANN001
    _history(ledger)
    text, _ = _scrape(ledger, cap=100)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

