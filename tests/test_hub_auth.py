"""A bad or under-scoped hub token: ``collect --once`` fails with one line naming the problem."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from facility import LedgerView, af_metrics, hub_env

from af_metrics.ledger.store import Ledger
from af_metrics.sources.jupyterhub import REQUIRED_SCOPES, missing_scopes

pytestmark = pytest.mark.hub


def _one_line_failure(result) -> str:  # noqa: ANN001 - CompletedProcess
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stdout
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    return lines[0]


def test_af_metrics_token_is_least_privilege(hub) -> None:  # noqa: ANN001
    me = httpx.get(f"{hub.hub_url}/hub/api/user", headers={"Authorization": f"token {hub.af_token}"}, timeout=10).json()
    assert missing_scopes(me["scopes"]) == []
    assert {s.split("!")[0] for s in me["scopes"]} <= {*REQUIRED_SCOPES, "read:users:name", "read:users:groups"}
    assert httpx.get(f"{hub.hub_url}/hub/metrics", timeout=10).status_code == 403  # metrics need a token


def test_good_token_collects(hub, tmp_path: Path) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    result = af_metrics("collect", "--once", env=hub_env(hub, url))
    assert result.returncode == 0, result.stderr
    assert LedgerView(Ledger.open(url), []).last_commit() > 0


def test_rejected_token_is_one_line(hub, tmp_path: Path) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    line = _one_line_failure(af_metrics("collect", "--once", env=hub_env(hub, url, token="not-a-token")))
    assert "refused the token" in line
    assert LedgerView(Ledger.open(url), []).last_commit() == 0  # nothing written


@pytest.mark.parametrize(
    ("service", "missing"),
    [("no-read-metrics", "read:metrics"), ("no-read-users-activity", "read:users, read:users:activity")],
)
def test_missing_scope_is_named(hub, tmp_path: Path, service: str, missing: str) -> None:  # noqa: ANN001
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    line = _one_line_failure(af_metrics("collect", "--once", env=hub_env(hub, url, token=hub.tokens[service])))
    assert f"token of service '{service}' lacks scope(s) {missing}:" in line
