"""The /metrics of a running ``af-metrics serve`` over the real hub passes ``promtool check metrics``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from facility import ServeProcess, hub_env

from conftest import wait_until

pytestmark = [pytest.mark.hub, pytest.mark.prometheus]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_serve_metrics_pass_promtool(hub, hub_users, tmp_path: Path, artifacts: Path) -> None:  # noqa: ANN001
    (user,) = hub_users(1)
    hub.driver.start_server(user, "analysis", profile="cms-coffea")
    hub.driver.wait_ready(user, "analysis")
    env = hub_env(hub, f"sqlite:///{tmp_path / 'ledger.db'}", poll_interval=0.5)
    with ServeProcess(env, tmp_path / "serve.log") as serve:
        # wait for a scrape that shows the running server, so per-user and per-profile series are in it
        text = wait_until(
            lambda: (t := serve.metrics_text()) and f'af_user_servers_running{{user="{user}"}} 1.0' in t and t,
            timeout=60,
            what="/metrics to show the running server",
        )
        assert serve.terminate() == 0
    (artifacts / "serve-metrics.txt").write_text(text)
    assert 'af_source_up{source="jupyterhub"} 1.0' in text
    assert 'af_servers_running{profile="cms-coffea"}' in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""  # not even a lint warning
