"""Discovery of per-user schedulers: the static file, the hub's servers (a real JupyterHub), a
real dask-gateway, the http_sd answer, and a provider outage keeping its last good list."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from af_metrics.discovery import DaskTarget, Discovery, DiscoveryError
from af_metrics.discovery.gateway import GatewayProvider
from af_metrics.discovery.hub import HubTemplateProvider, escape
from af_metrics.discovery.http_sd import http_sd
from af_metrics.discovery.static import StaticFileProvider
from af_metrics.sources.dask import SchedulerHTTP, ScrapeLimits, scrape

from conftest import free_port, wait_until
from dask_support import stop_process

GATEWAY_PASSWORD = "not-a-secret"


def targets_of(provider) -> list[DaskTarget]:  # noqa: ANN001
    return asyncio.run(provider.targets())


def test_static_file_lists_urls_and_clusters(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("alice:\n  - http://10.0.0.5:8787/\n  - {url: 'https://gw.example/clusters/abc', cluster: big}\nbob: http://10.0.0.6:8787\n")
    assert targets_of(StaticFileProvider(path)) == [
        DaskTarget("alice", "10.0.0.5:8787", "http://10.0.0.5:8787"),
        DaskTarget("alice", "big", "https://gw.example/clusters/abc"),
        DaskTarget("bob", "10.0.0.6:8787", "http://10.0.0.6:8787"),
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("alice: [file:///etc/passwd]", "is not an http(s) URL"),
    ("- http://10.0.0.5:8787", "expected a mapping of user -> list of URLs"),
    ("alice: [{cluster: x}]", "is neither a URL nor {url: ...}"),
    ("alice: [http://a:1\n  bad: :", "is not valid YAML"),
])
def test_static_file_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(DiscoveryError, match=re.escape(message)) as err:
        targets_of(StaticFileProvider(path))
    assert "\n" not in str(err.value)


def test_a_failing_provider_keeps_its_last_good_list(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("alice: [http://127.0.0.1:8787]\n")
    discovery = Discovery([StaticFileProvider(path)])
    first = asyncio.run(discovery.targets())
    path.unlink()
    assert asyncio.run(discovery.targets()) == first
    health = discovery.health["static"]
    assert not health.up and "cannot read" in (health.last_error or "")


def test_http_sd_keeps_path_prefix_and_labels() -> None:
    groups = http_sd([DaskTarget("alice", "abc", "https://gw.example:8000/services/gw/clusters/abc")])
    assert groups == [{
        "targets": ["gw.example:8000"],
        "labels": {"user": "alice", "cluster": "abc", "__scheme__": "https", "__metrics_path__": "/services/gw/clusters/abc/metrics"},
    }]


def test_escape_matches_kubespawner() -> None:
    assert escape("alice") == "alice"
    assert escape("Bob.Smith@fnal.gov") == "-42ob-2e-53mith-40fnal-2egov"
    assert escape("émile") == "-c3-a9mile"


def test_template_with_unknown_field_is_refused() -> None:
    with pytest.raises(DiscoveryError, match="unknown field"):
        HubTemplateProvider("http://127.0.0.1:1", "t", "http://{user}:8787")


@pytest.mark.hub
def test_hub_provider_lists_ready_servers_by_template(hub, hub_users) -> None:  # noqa: ANN001
    running, stopped = hub_users(2)
    hub.driver.start_server(running)
    hub.driver.wait_ready(running)
    provider = HubTemplateProvider(hub.hub_url, hub.af_token, "http://127.0.0.1:9/{escaped_username}/{servername}")
    found = [t for t in targets_of(provider) if t.user in (running, stopped)]
    assert found == [DaskTarget(running, "default", f"http://127.0.0.1:9/{escape(running)}")]


@pytest.fixture
def gateway(tmp_path: Path):  # noqa: ANN201
    """A real dask-gateway (local backend, shared password) on loopback ports."""
    pytest.importorskip("dask_gateway_server")
    pytest.importorskip("dask_gateway")
    public, private, tcp = free_port(), free_port(), free_port()
    config = tmp_path / "gateway_config.py"
    config.write_text("\n".join([
        "import sys",
        f"c.DaskGateway.address = '127.0.0.1:{private}'",
        f"c.Proxy.address = '127.0.0.1:{public}'",
        f"c.Proxy.tcp_address = '127.0.0.1:{tcp}'",
        "c.DaskGateway.backend_class = 'dask_gateway_server.backends.local.UnsafeLocalBackend'",
        "c.DaskGateway.authenticator_class = 'dask_gateway_server.auth.SimpleAuthenticator'",
        f"c.SimpleAuthenticator.password = {GATEWAY_PASSWORD!r}",
        f"c.LocalBackend.clusters_directory = {str(tmp_path / 'clusters')!r}",
        "c.ClusterConfig.scheduler_cmd = [sys.executable, '-m', 'distributed.cli.dask_scheduler']",
        "c.ClusterConfig.worker_cmd = [sys.executable, '-m', 'distributed.cli.dask_worker']",
    ]))
    log = (tmp_path / "gateway.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dask_gateway_server", "-f", str(config)], cwd=tmp_path, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{public}"

    def answers() -> bool:
        assert proc.poll() is None, "dask-gateway-server exited"
        try:
            return httpx.get(f"{url}/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, 60, 0.3, "dask-gateway")
        yield url
    finally:
        stop_process(proc)
        log.close()


def _start_cluster(gateway: str, user: str) -> str:
    auth = (user, GATEWAY_PASSWORD)
    name = httpx.post(f"{gateway}/api/v1/clusters/", json={}, auth=auth, timeout=30).json()["name"]
    wait_until(lambda: httpx.get(f"{gateway}/api/v1/clusters/{name}", auth=auth, timeout=10).json()["status"] == "RUNNING",
               120, 0.5, f"{user}'s gateway cluster running")
    return name


def test_gateway_provider_finds_each_users_clusters_behind_the_proxy(gateway: str) -> None:
    names = {user: _start_cluster(gateway, user) for user in ("alice", "carol")}

    async def candidates() -> list[str]:
        return ["alice", "bob", "carol"]

    found = targets_of(GatewayProvider(gateway, GATEWAY_PASSWORD, candidates))
    assert found == sorted(DaskTarget(u, n, f"{gateway}/clusters/{n}") for u, n in names.items())

    async def read_all() -> list:
        http = SchedulerHTTP(10.0)
        return [await scrape(http, t.url, ScrapeLimits()) for t in found]

    for sample in asyncio.run(read_all()):  # each scheduler's own dashboard, through the gateway's proxy
        assert sample.workers == 0 and sample.threads == 0 and sample.workers_by_state
    with pytest.raises(DiscoveryError, match=r"refused the password for user '(alice|bob|carol)' \(401\)"):
        targets_of(GatewayProvider(gateway, "wrong", candidates))
