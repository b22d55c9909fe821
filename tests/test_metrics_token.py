"""The machine endpoints behind a bearer token: ``af-metrics serve`` with ``metrics_token_file``
and Debian's Prometheus running the generated ``af-metrics`` and ``dask`` jobs (made with
``prometheus config --af-metrics-token-file``), once with the right token and once, as extra
jobs of the same server, with a wrong one.
"""

from __future__ import annotations

import copy
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from af_metrics.cli import cli
from conftest import free_port, wait_until
from dask_support import PrometheusServer, metric_value, write_targets
from facility import ServeProcess, af_metrics

pytestmark = pytest.mark.prometheus
GUARDED = ("/metrics", "/sd/dask")


@dataclass
class Guarded:
    url: str
    token: str
    prom: PrometheusServer

    def targets(self, job: str) -> list[dict]:
        return [t for t in self.prom.api("targets")["activeTargets"] if t["labels"]["job"] == job]


def _env(base: Path, **settings: str) -> dict[str, str]:
    """A serve environment without a hub: only the machine endpoints matter here."""
    (base / "none.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTERHUB_"))}
    env.update(AF_METRICS_CONFIG=str(base / "none.toml"), AF_METRICS_LEDGER=f"sqlite:///{base / 'ledger.db'}",
               AF_METRICS_POLL_INTERVAL="3600", **{f"AF_METRICS_{k.upper()}": v for k, v in settings.items()})
    return env


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Guarded]:
    base = tmp_path_factory.mktemp("metrics-token")
    token, wrong = secrets.token_hex(32), secrets.token_hex(32)
    (base / "token").write_text(token + "\n")
    (base / "wrong-token").write_text(wrong + "\n")
    # a scheduler nobody runs: discovery lists it all the same, which is what is checked here
    targets = write_targets(base / "dask.yml", {"alice": [f"http://127.0.0.1:{free_port()}"]})
    serve = ServeProcess(_env(base, metrics_token_file=str(base / "token"), dask_static_file=str(targets)), base / "serve.log")
    prom = None
    try:
        url = f"http://127.0.0.1:{serve.port}"
        wait_until(lambda: serve.running() and _answers(url), 60, what="af-metrics serve")
        auth = {"Authorization": f"Bearer {token}"}
        wait_until(lambda: httpx.get(f"{url}/sd/dask", headers=auth, timeout=10).json(), 60, what="a first discovery")
        result = CliRunner().invoke(cli, ["prometheus", "config", "--af-metrics-url", url, "--scrape-interval", "1s",
                                          "--af-metrics-token-file", str(base / "token"), "--out", str(base / "gen")])
        assert result.exit_code == 0, result.output
        jobs = {j["job_name"]: j for j in yaml.safe_load((base / "gen" / "prometheus.yml").read_text())["scrape_configs"]}
        mine = [jobs["af-metrics"], jobs["dask"]]
        wrong_jobs = copy.deepcopy(mine)
        for job in wrong_jobs:
            job["job_name"] += "-wrong"
            for auth in [job.get("authorization"), *(sd.get("authorization") for sd in job.get("http_sd_configs", []))]:
                if auth:
                    auth["credentials_file"] = str(base / "wrong-token")
        prom = PrometheusServer(base / "prometheus", mine + wrong_jobs)
        yield Guarded(url, token, prom)
    finally:
        if prom is not None:
            prom.stop()
        serve.terminate()
        for log in ("serve.log", "prometheus/prometheus.log"):
            if (base / log).exists():
                (artifacts / f"metrics-token-{Path(log).name}").write_text((base / log).read_text())


def test_prometheus_with_the_token_scrapes_af_metrics_and_discovers_the_schedulers(guarded: Guarded) -> None:
    up = wait_until(lambda: [t for t in guarded.targets("af-metrics") if t["health"] == "up"], 60, 0.5,
                    what="the af-metrics target up")
    assert up[0]["scrapeUrl"] == f"{guarded.url}/metrics"
    # what it scraped is af-metrics' exposition
    assert wait_until(lambda: guarded.prom.api("query", query='count(af_source_up{job="af-metrics"})')["result"], 30, 0.5,
                      what="af-metrics series in Prometheus")
    found = wait_until(lambda: guarded.targets("dask"), 60, 0.5, what="the dask job's targets from /sd/dask")
    assert [t["labels"]["user"] for t in found] == ["alice"]


def test_prometheus_with_a_wrong_token_gets_401(guarded: Guarded) -> None:
    down = wait_until(lambda: [t for t in guarded.targets("af-metrics-wrong") if t["health"] == "down"], 60, 0.5,
                      what="the wrongly authorized af-metrics target down")
    assert "401" in down[0]["lastError"]

    def sd_failures() -> float:
        return metric_value(httpx.get(f"{guarded.prom.url}/metrics", timeout=10).text, "prometheus_sd_http_failures_total") or 0

    # the right token's discovery has succeeded by now; only the wrong one fails, and finds nothing
    wait_until(lambda: guarded.targets("dask"), 60, 0.5, what="the dask job's targets from /sd/dask")
    assert wait_until(sd_failures, 60, 0.5, what="Prometheus counting the refused discovery") >= 1
    assert guarded.targets("dask-wrong") == []


@pytest.mark.parametrize("authorization", [
    None, "Bearer", "Bearer wrong-token-of-the-right-sort", "token {token}", "Basic {token}", "Bearer {token}x",
])
def test_requests_without_the_token_get_401_and_nothing_else(guarded: Guarded, authorization: str | None) -> None:
    headers = {"Authorization": authorization.format(token=guarded.token)} if authorization else {}
    for path in GUARDED:
        resp = httpx.get(f"{guarded.url}{path}", headers=headers, timeout=10)
        assert resp.status_code == 401, path
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert resp.text.count("\n") == 1 and list(resp.json()) == ["error"]
        assert "af_" not in resp.text and "alice" not in resp.text and guarded.token not in resp.text


def test_the_token_opens_them(guarded: Guarded) -> None:
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} {guarded.token}"}
        metrics = httpx.get(f"{guarded.url}/metrics", headers=headers, timeout=10)
        assert metrics.status_code == 200 and "af_source_up" in metrics.text
        sd = httpx.get(f"{guarded.url}/sd/dask", headers=headers, timeout=10)
        assert sd.status_code == 200 and [g["labels"]["user"] for g in sd.json()] == ["alice"]


def test_healthz_stays_open_and_gives_details_only_with_the_token(guarded: Guarded) -> None:
    anonymous = httpx.get(f"{guarded.url}/healthz", timeout=10)
    assert anonymous.status_code == 200 and set(anonymous.json()) == {"status"}
    full = httpx.get(f"{guarded.url}/healthz", headers={"Authorization": f"Bearer {guarded.token}"}, timeout=10)
    assert full.status_code == 200 and "jupyterhub" in full.json()["sources"]


@pytest.mark.parametrize("content, message", [
    (None, "cannot read metrics_token_file"),
    ("short\n", "at least 16 visible characters"),
    ("two words-of-a-token-here\n", "one token"),
])
def test_an_unusable_token_file_is_one_line(tmp_path: Path, content: str | None, message: str) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    done = af_metrics("serve", "--port", "0", env=_env(tmp_path, metrics_token_file=str(token)))
    assert done.returncode == 1
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not content or content.strip() not in done.stderr  # the file's content is never shown


def _replace(path: Path, content: str) -> None:
    """Write ``path`` at once, as a Secret volume or ``mv`` does."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(content)
    os.replace(tmp, path)


def test_a_rotated_token_file_is_used_without_a_restart(tmp_path: Path) -> None:
    token = tmp_path / "token"
    first, second = secrets.token_hex(32), secrets.token_hex(32)
    token.write_text(first + "\n")
    with ServeProcess(_env(tmp_path, metrics_token_file=str(token)), tmp_path / "serve.log") as serve:
        url = f"http://127.0.0.1:{serve.port}/metrics"

        def status(sent: str) -> int:
            return httpx.get(url, headers={"Authorization": f"Bearer {sent}"}, timeout=10).status_code

        wait_until(lambda: serve.running() and _answers(f"http://127.0.0.1:{serve.port}"), 60, what="af-metrics serve")
        assert status(first) == 200
        _replace(token, second + "\n")
        wait_until(lambda: status(second) == 200, 30, what="the new token accepted")
        assert status(first) == 401

        def warned(times: int) -> bool:  # the file is looked at when a request comes
            status(second)
            return (tmp_path / "serve.log").read_text().count("the previous token stays in use") >= times

        for n, spoil in enumerate([lambda: _replace(token, "not a token\n"), token.unlink], 1):
            spoil()  # a bad rotation, then none at all: the token in use stays, with one warning each
            wait_until(lambda n=n: warned(n), 30, what=f"warning {n} about the unusable file")
            assert status(second) == 200 and status(first) == 401
        assert serve.running()
    log = (tmp_path / "serve.log").read_text()
    assert first not in log and second not in log and "not a token" not in log and "Traceback" not in log
