"""Who may see what, with a real JupyterHub: af-metrics serve runs as an external hub service
and each request carries a real hub token of a real hub user (or nothing, or garbage).

A user reads their own figures and nobody else's; admins (hub admins, the admin group, the
admin role) read the facility's and anyone's; Prometheus' endpoints stay open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import time

import httpx
import pytest
import sqlalchemy as sa

from af_metrics.coffea.push import PUSH_PATH
from af_metrics.demo.facility import AF_SERVICE, LocalFacility, free_port
from af_metrics.ledger.schema import analysis_runs
from af_metrics.ledger.store import Ledger
from tests.conftest import _proxy, wait_until
from tests.facility import AfProcess
from tests.web_support import PREFIX, SESSIONS, TOKENS_SERVICE, _run, routed, seed_usage, user_token, web_hub, web_settings

pytestmark = pytest.mark.hub


class Site:
    def __init__(self, facility: LocalFacility, port: int, tokens: dict[str, str], ledger_url: str, log: Path) -> None:
        self.facility, self.tokens, self.ledger_url, self.log = facility, tokens, ledger_url, log
        self.direct = f"http://127.0.0.1:{port}"

    def push(self, token: str) -> httpx.Response:
        record = _run(time.time() - 60, 1000, 10.0, 2)
        return httpx.post(f"{self.direct}{PUSH_PATH}", content=record.model_dump_json(),
                          headers={"Authorization": f"token {token}"}, timeout=30)

    def run_ids(self) -> set[str]:
        led = Ledger.open(self.ledger_url)
        try:
            with led.engine.connect() as conn:
                return set(conn.execute(sa.select(analysis_runs.c.run_id)).scalars())
        finally:
            led.engine.dispose()

    def get(self, path: str, user: str | None = None, token: str | None = None, via_hub: bool = False, **params: str) -> httpx.Response:
        token = token or (self.tokens[user] if user else None)
        headers = {"Authorization": f"token {token}"} if token else {}
        base = self.facility.public_url if via_hub else self.direct
        return httpx.get(f"{base}{PREFIX}{path}", headers=headers, params=params, timeout=30, follow_redirects=False)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("web-auth")
    ledger_url = f"sqlite:///{base / 'ledger.db'}"
    led = Ledger.open(ledger_url)
    seed_usage(led)
    led.engine.dispose()
    port = free_port()
    with web_hub(base / "hub", _proxy(), port) as facility:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTERHUB_"))}
        env.update(web_settings(ledger_url, base / "none.toml", AF_METRICS_HUB_URL=facility.hub_url,
                                AF_METRICS_HUB_API_TOKEN=facility.af_token))
        with AfProcess(["serve", "--port", str(port)], env, base / "serve.log") as serve:
            def up() -> bool:
                serve.running()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, 60, what="af-metrics serve to answer")
            wait_until(lambda: routed(facility), 60, what="the hub's proxy to route to af-metrics")
            tokens = {u: user_token(facility, u) for u in ("alice", "bob", "olga", "rita", "adam")}
            yield Site(facility, port, tokens, ledger_url, base / "serve.log")
            serve.terminate()


def test_a_user_sees_their_own_figures_and_not_others(site: Site) -> None:
    me = site.get("api/v1/me", "alice")
    assert me.status_code == 200 and me.json() == {"name": "alice", "admin": False}
    own = site.get("api/v1/users/alice/figures/my_sessions", "alice", by="range")
    assert own.status_code == 200 and own.json()["rows"][0][2] == SESSIONS["alice"]

    for path in ("api/v1/users/bob/figures/my_sessions", "api/v1/users/nobody/figures/my_runs",
                 "api/v1/figures/active_users", "api/v1/kpis/dau", "api/v1/report"):
        resp = site.get(path, "alice")
        assert resp.status_code == 403, path
        assert "\n" not in resp.json()["error"]
    assert site.get("users/bob", "alice").status_code == 403  # the page too
    assert site.get("api/v1/users/bob/figures/my_sessions", "bob").status_code == 200


def test_admins_see_the_facility_and_every_user(site: Site) -> None:
    for admin in ("olga", "rita", "adam"):  # admin group, admin role, hub admin
        assert site.get("api/v1/me", admin).json() == {"name": admin, "admin": True}
        facility = site.get("api/v1/figures/active_users", admin)
        assert facility.status_code == 200 and facility.json()["columns"] == ["period", "dau", "wau", "mau"]
        bob = site.get("api/v1/users/bob/figures/my_sessions", admin, by="range")
        assert bob.status_code == 200 and bob.json()["rows"][0][2] == SESSIONS["bob"]
        assert site.get("api/v1/kpis/mau", admin).status_code == 200
        assert site.get("facility", admin).status_code == 200
    unknown = site.get("api/v1/users/nobody/figures/my_sessions", "olga")
    assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]


def test_csv_download(site: Site) -> None:
    resp = site.get("api/v1/figures/hour_of_week", "olga", format="csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    lines = resp.text.splitlines()
    assert lines[0] == "weekday,hour,users" and len(lines) == 1 + 7 * 24
    kpi = site.get("api/v1/kpis/dau", "olga", format="csv", by="week")
    assert kpi.text.splitlines()[0] == "period,value"


def test_without_credentials_the_api_says_401_and_pages_send_to_the_hub_login(site: Site) -> None:
    resp = site.get("api/v1/users/alice/figures/my_sessions")
    assert resp.status_code == 401 and "log in" in resp.json()["error"]
    assert site.get("api/v1/me", token="0" * 32).status_code == 401  # a token the hub does not know
    page = site.get("users/alice")
    assert page.status_code == 302
    assert page.headers["location"].startswith("/hub/api/oauth2/authorize?")
    assert "client_id=service-af-metrics" in page.headers["location"]


def test_a_service_token_is_not_a_user(site: Site) -> None:
    resp = site.get("api/v1/me", token=site.facility.af_token)
    assert resp.status_code == 403 and "for users" in resp.json()["error"]


def test_through_the_hubs_proxy(site: Site) -> None:
    resp = site.get("api/v1/users/alice/figures/my_dask", "alice", via_hub=True)
    assert resp.status_code == 200 and resp.json()["name"] == "my_dask"


def test_prometheus_endpoints_stay_open(site: Site) -> None:
    assert httpx.get(f"{site.direct}/metrics", timeout=10).status_code == 200
    assert httpx.get(f"{site.direct}/sd/dask", timeout=10).status_code == 200
    assert httpx.get(f"{site.direct}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{site.direct}{PREFIX}static/plotly.min.js", timeout=30).text.startswith("/**")


@pytest.mark.parametrize("params, status, message", [
    ({"period": "2026Q5"}, 400, "bad period"),
    ({"from": "2001-01-01", "to": "2010-12-31", "by": "day"}, 400, "too many points"),
    ({"format": "xml"}, 400, "bad format"),
])
def test_bad_requests_are_one_line_errors(site: Site, params: dict, status: int, message: str) -> None:
    resp = site.get("api/v1/figures/active_users", "olga", **params)
    assert resp.status_code == status and message in resp.json()["error"] and "\n" not in resp.json()["error"]
    assert site.get("api/v1/figures/no_such_figure", "olga").status_code == 404
    assert site.get("api/v1/figures/my_sessions", "olga").status_code == 404  # a user figure has a user


def test_the_api_is_also_at_the_root_for_scripts(site: Site) -> None:
    headers = {"Authorization": f"token {site.tokens['olga']}"}
    resp = httpx.get(f"{site.direct}/api/v1/kpis/dau", headers=headers, params={"by": "range"}, timeout=30)
    assert resp.status_code == 200 and resp.json()["name"] == "dau"
    assert httpx.get(f"{site.direct}/api/v1/kpis/dau", timeout=30).status_code == 401


def hub_token(site: Site, user: str, scopes: list[str]) -> str:
    """A token of ``user`` limited to ``scopes``, as the hub gives an OAuth client or a user makes one."""
    headers = {"Authorization": f"token {site.facility.tokens[TOKENS_SERVICE]}"}
    resp = httpx.post(f"{site.facility.hub_url}/hub/api/users/{user}/tokens", headers=headers, timeout=30,
                      json={"note": "af-metrics: another client", "scopes": scopes})
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def test_a_push_needs_a_token_acting_for_the_user(site: Site) -> None:
    before = site.run_ids()
    # what a token issued to another client carries: it identifies alice, and reaches that client
    identify_only = hub_token(site, "alice", ["read:users:name!user"])
    service = hub_token(site, "alice", ["read:users!user", f"access:services!service={AF_SERVICE}"])
    refused = {name: site.push(token) for name, token in (("identify", identify_only), ("service", service))}
    assert {name: r.status_code for name, r in refused.items()} == {"identify": 401, "service": 401}
    assert "JUPYTERHUB_API_TOKEN" in refused["identify"].json()["error"]
    assert site.run_ids() == before
    own = site.push(site.tokens["alice"])  # the user's own API token acts for the user
    assert own.status_code == 201 and own.json()["user"] == "alice"
    assert site.run_ids() == before | {own.json()["run_id"]}


def test_logs_name_no_token(site: Site) -> None:
    pushed = site.push(site.tokens["bob"])
    assert pushed.status_code == 201
    assert site.get("api/v1/users/alice/figures/my_sessions", "bob").status_code == 403
    text = wait_until(lambda: "of bob stored" in site.log.read_text() and site.log.read_text(), 30, what="the push in the log")
    assert pushed.json()["run_id"] in text
    assert all(token not in text for token in site.tokens.values())
