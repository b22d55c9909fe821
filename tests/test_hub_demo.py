"""``af-metrics demo`` end to end, as a user runs it."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from af_metrics.ledger.schema import session_hours, sessions
from af_metrics.ledger.store import Ledger

from conftest import _proxy

pytestmark = pytest.mark.hub


def _demo(*args: str, proxy: str | None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTERHUB_"))}
    if proxy:
        env["AF_METRICS_CHP"] = proxy
    return subprocess.run([sys.executable, "-m", "af_metrics", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_demo_without_the_proxy_says_how_to_get_it(tmp_path: Path) -> None:
    result = _demo("demo", proxy=str(tmp_path / "configurable-http-proxy"), timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: configurable-http-proxy not found: npm install configurable-http-proxy (or set AF_METRICS_CHP to its path)"
    ]


def _not_across_midnight(minutes: int) -> None:
    """The demo reports "today" (UTC, its default zone): a run across midnight would split its sessions."""
    now = dt.datetime.now(dt.timezone.utc)
    left = (dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), dt.timezone.utc) - now).total_seconds()
    if left < minutes * 60:
        time.sleep(left + 1)


def test_demo_runs_and_reports_activity(tmp_path: Path, artifacts: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    _not_across_midnight(minutes=6)
    # the budget is generous (the demo ends when its steps end): a loaded machine must not skip steps
    result = _demo("--ledger", url, "demo", "--users", "3", "--seconds", "150", proxy=_proxy(), timeout=300)
    (artifacts / "demo-output.txt").write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time budget" not in result.stdout + result.stderr

    summary = re.search(r"Demo facility today: DAU (\d+), sessions (\d+), spawn success (\d+)%", result.stdout)
    assert summary, result.stdout[-2000:]
    dau, count, success = map(int, summary.groups())
    with Ledger.open(url).engine.connect() as conn:
        assert dau == conn.execute(sa.select(sa.func.count(sa.distinct(session_hours.c.user_id)))).scalar_one() == 3
        assert count == conn.execute(sa.select(sa.func.count()).select_from(sessions)).scalar_one() == 5
    assert 0 < success < 100  # one spawn of the scenario fails

    # everything it started is gone
    hub = re.search(r"JupyterHub at (http://127\.0\.0\.1:\d+)", result.stderr)
    assert hub, result.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{hub[1]}/hub/api/", timeout=5)
