"""End to end: Debian's Prometheus runs the generated configuration and rules against the real
local facility (a real JupyterHub, two users' real Dask LocalClusters, ``af-metrics serve``).

One module-scoped setup drives activity while Prometheus scrapes every second: two spawns that
succeed and one that fails, tasks that err on bob's cluster, an analysis run pushed with alice's
server token, requests the hub answers with 404. Before that, an HTCondor history (ClassAds
written by the ClassAd library: a batch job of alice's pod among other people's) is ingested,
so that the accounting families are in af-metrics' /metrics too. The tests then ask Prometheus over its HTTP
API for per-user series and recording-rule results, check that every metric name the rules
and dashboards use appears in live scrapes, and run every dashboard query.
"""

from __future__ import annotations

import re
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from af_metrics.accounting.ingest import ingest_history
from af_metrics.accounting.settings import DEFAULT_RULES
from af_metrics.cli import cli
from af_metrics.coffea.push import PUSH_PATH
from af_metrics.discovery.hub import escape
from af_metrics.ledger.store import Ledger
from af_metrics.grafana.dashboards import build_all, expressions
from af_metrics.promconfig.rules import REQUEST_ERROR_RATIO, SPAWN_FAILURE_RATIO, SPAWN_P95, alerting_rules, recording_rules
from conftest import wait_until
from dask_support import PrometheusServer, UserCluster, write_targets
from facility import ServeProcess, hub_env
from test_analysis_facility import sample_record, server_token
from test_htcondor import HISTORY, finished, text

promql_parser = pytest.importorskip("promql_parser")
distributed = pytest.importorskip("distributed")

pytestmark = [pytest.mark.hub, pytest.mark.prometheus]

ERRED_TASKS = 5
NOT_FOUND_REQUESTS = 4
SPAWN_BUCKETS = (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600)  # JupyterHub's default
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


@dataclass
class Live:
    prom: PrometheusServer
    hub_url: str
    hub_token: str
    users: dict[str, str]  # role (alice, bob, carol) -> hub user name
    spawn_walls: list[float]  # request-to-ready seconds of the spawns made while scraped
    scrapes: dict[str, str] = field(default_factory=dict)  # what -> exposition text

    def query(self, expr: str) -> list[dict]:
        return self.prom.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None


def _text(url: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(url, headers=headers, timeout=10)
    resp.raise_for_status()
    return resp.text


def _generate(out: Path, *args: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output


def _timed_spawn(facility, user: str, server: str = "") -> float:  # noqa: ANN001 - LocalFacility
    start = time.monotonic()
    facility.driver.start_server(user, server)
    facility.driver.wait_ready(user, server)
    return time.monotonic() - start


def _fail_tasks(scheduler: str) -> None:
    with distributed.Client(scheduler, timeout=30) as client:
        futures = client.map(int, ["not-a-number"] * ERRED_TASKS, pure=False)
        distributed.wait(futures, timeout=60)
        assert all(f.status == "error" for f in futures)


def _ingest_batch_history(ledger_url: str, alice: str, base: Path) -> None:
    """A batch job of alice's pod (so hers), plus test_htcondor's history of nobody known here."""
    ledger = Ledger.open(ledger_url)
    try:
        with ledger.begin() as conn:
            ledger.user_ids(conn, [alice], time.time())
        ads = [*HISTORY, finished(201, "2026-10-20T08:00", "2026-10-20T12:00", 4, 10 * 3600.0, f"jupyter-{escape(alice)}")]
        (base / "history.ads").write_text(text(ads, "file"))
        with (base / "history.ads").open() as history:
            ingest_history(ledger, history, DEFAULT_RULES, time.time())
    finally:
        ledger.engine.dispose()


@pytest.fixture(scope="module")
def live(facility, tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Live]:  # noqa: ANN001, C901
    base = tmp_path_factory.mktemp("prom-live")
    facility.start_hub()
    tag = secrets.token_hex(3)
    users = {role: f"prom{role}-{tag}" for role in ("alice", "bob", "carol")}
    facility.driver.create_users(list(users.values()))
    clusters: list[UserCluster] = []
    serve = prom = None
    try:
        clusters = [UserCluster(base / "alice-cluster.log", 1, 2, processes=False),
                    UserCluster(base / "bob-cluster.log", 1, 1, processes=False)]
        alice_cluster, bob_cluster = clusters
        targets = write_targets(base / "dask-targets.yml",
                                {users["alice"]: [alice_cluster.url], users["bob"]: [bob_cluster.url]})
        facility.driver.start_server(users["alice"])  # before scraping: its token pushes the analysis run
        facility.driver.wait_ready(users["alice"])

        ledger_url = f"sqlite:///{base / 'ledger.db'}"
        _ingest_batch_history(ledger_url, users["alice"], base)
        env = hub_env(facility, ledger_url, poll_interval=1, user_sweep_interval=5,
                      dask_static_file=targets, dask_interval=1)
        serve = ServeProcess(env, base / "serve.log")
        af_url = f"http://127.0.0.1:{serve.port}"
        wait_until(lambda: serve.metrics_text() is not None, 60, what="af-metrics serve")
        pushed = httpx.post(f"{af_url}{PUSH_PATH}", content=sample_record().model_dump_json(),
                            headers={"Authorization": f"token {server_token(facility, users['alice'])}"}, timeout=10)
        assert pushed.status_code == 201, pushed.text

        def not_found() -> None:
            httpx.get(f"{facility.hub_url}/hub/api/users/nobody-{tag}",
                      headers={"Authorization": f"token {facility.af_token}"}, timeout=10)

        not_found()  # before scraping: rate() cannot see the first increment of a new series
        token = base / "hub-token"
        token.write_text(facility.af_token)
        _generate(base / "gen", "prometheus", "config", "--hub-url", facility.hub_url, "--hub-token-file", str(token),
                  "--af-metrics-url", af_url, "--scrape-interval", "1s")
        _generate(base / "gen", "prometheus", "rules", "--interval", "1s")
        config = yaml.safe_load((base / "gen" / "prometheus.yml").read_text())
        # the shared test server starts on the generated jobs, then reloads the whole generated file
        prom = PrometheusServer(base / "prometheus", config["scrape_configs"])
        (base / "prometheus" / "af-metrics-rules.yml").write_text((base / "gen" / "af-metrics-rules.yml").read_text())
        (base / "prometheus" / "prometheus.yml").write_text((base / "gen" / "prometheus.yml").read_text())
        prom.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(prom.api("rules")["groups"]) == 2, 30, what="Prometheus loading the generated rules")

        def all_up() -> bool:
            active = prom.api("targets")["activeTargets"]
            jobs = {(t["labels"]["job"], t["labels"].get("user", "")) for t in active if t["health"] == "up"}
            return {("jupyterhub", ""), ("af-metrics", ""), ("dask", users["alice"]), ("dask", users["bob"])} <= jobs

        wait_until(all_up, 60, what="every generated scrape job up (hub, af-metrics, both schedulers)")
        def scraped_thrice() -> bool:  # a few scrapes of every job before the activity, so that rates see it
            counts = prom.api("query", query="count_over_time(up[1m])")["result"]
            return len(counts) >= 4 and all(float(c["value"][1]) >= 3 for c in counts)

        wait_until(scraped_thrice, 60, what="three scrapes of every target")

        walls = [_timed_spawn(facility, users["bob"]), _timed_spawn(facility, users["alice"], "extra")]
        facility.driver.start_server(users["carol"], profile="broken-image")
        wait_until(lambda: not (facility.driver.server(users["carol"]) or {}).get("pending"), 60,
                   what="carol's spawn to fail")
        _fail_tasks(bob_cluster.scheduler)
        for _ in range(NOT_FOUND_REQUESTS):
            not_found()
        live = Live(prom, facility.hub_url, facility.af_token, users, walls)
        # settled: af-metrics sampled bob's erred tasks and Prometheus recorded the spawns
        wait_until(lambda: live.value(f'sum(af_dask_tasks_erred_total{{user="{users["bob"]}"}})') == ERRED_TASKS,
                   60, what="bob's erred tasks in Prometheus")
        wait_until(lambda: (live.value(SPAWN_FAILURE_RATIO) or 0) > 0.3, 60, what="the failed spawn in the ratio")
        wait_until(lambda: (live.value(f'{REQUEST_ERROR_RATIO}{{code="404"}}') or 0) > 0, 60, what="the 404s in the error ratio")
        # Prometheus' own scrapes (of the schedulers, of af-metrics) run at their own phase: wait for each
        for query, expected in [
            (f'sum(dask_scheduler_prefix_state_totals_total{{user="{users["bob"]}",state="erred",task_prefix_name="int"}})',
             ERRED_TASKS),
            (f'sum(af_user_servers_running{{user="{users["alice"]}"}})', 2),
            (f'sum(af_analysis_events_total{{user="{users["alice"]}"}})', 1000),
        ]:
            wait_until(lambda q=query, e=expected: live.value(q) == e, 60, what=f"{query} == {expected}")
        live.scrapes = {
            "hub": _text(f"{facility.hub_url}/hub/metrics", facility.af_token),
            "af-metrics": _text(f"{af_url}/metrics"),
            **{f"dask {c.url}": _text(f"{c.url}/metrics") for c in clusters},
        }
        yield live
    finally:
        if prom is not None:
            prom.stop()
        if serve is not None:
            serve.terminate()
        for c in clusters:
            c.stop()
        for name in users.values():
            try:
                facility.driver.delete_user(name)
            except Exception:  # noqa: BLE001 - best effort; the facility's teardown stops every server
                pass
        for log in ("serve.log", "prometheus/prometheus.log"):
            if (base / log).exists():
                (artifacts / f"promconfig-live-{Path(log).name}").write_text((base / log).read_text())


# -- metric names -----------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (or a Grafana ``label_values(sel, label)``)."""
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    expr = expr.replace("$user", "someone")
    grafana = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr.strip(), re.S)
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            by_matcher = [m for m in node.matchers.matchers if m.name == "__name__"]
            assert node.name or by_matcher, f"selector without a metric name in {expr!r}"
            assert all(m.op == promql_parser.MatchOp.Equal for m in by_matcher), f"regex on __name__ in {expr!r}"
            names.update([node.name] if node.name else [m.value for m in by_matcher])

    promql_parser.walk(promql_parser.parse(grafana.group(1) if grafana else expr), visit)
    return names


def all_expressions() -> dict[str, str]:
    """Where -> PromQL, for every rule and every dashboard query."""
    out = {f"rule {r.record}": r.expr for r in recording_rules()}
    out.update({f"alert {a.alert}": a.expr for a in alerting_rules()})
    for uid, model in build_all().items():
        out.update({f"dashboard {uid} #{i}": e for i, e in enumerate(expressions(model))})
    return out


def scraped_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_metric_names_parse_out_of_promql() -> None:
    assert metric_names('sum by (user) (rate(a_total{x="y"}[5m])) / on (user) group_left b') == {"a_total", "b"}
    assert metric_names('histogram_quantile(0.9, sum by (le) (rate({__name__="h_bucket"}[$__rate_interval])))') == {
        "h_bucket"
    }
    assert metric_names("label_values(af_user_sessions_total, user)") == {"af_user_sessions_total"}
    assert metric_names("count(x > 0) or vector(0)") == {"x"}
    with pytest.raises(AssertionError):
        metric_names('{__name__=~"af_.*"}')


def test_every_metric_name_in_rules_and_dashboards_exists_in_live_scrapes(live: Live) -> None:
    known: set[str] = set().union(*(scraped_names(t) for t in live.scrapes.values()))
    # series Prometheus itself adds for every target (up, scrape_*), as the live server holds them
    known |= {r["metric"]["__name__"] for r in live.query('count by (__name__) ({__name__=~"up|scrape_.+"})')}
    recorded = {r.record for r in recording_rules()}
    used: dict[str, set[str]] = {}
    for where, expr in all_expressions().items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    unknown = {name: sorted(places) for name, places in used.items() if name not in known | recorded}
    assert unknown == {}
    # each live source is actually read by some rule or panel
    for source, text in live.scrapes.items():
        assert scraped_names(text) & set(used), source
    assert {"af_analysis_events_total", "af_dask_core_seconds_total", "dask_scheduler_prefix_state_totals_total",
            "jupyterhub_request_duration_seconds_bucket"} <= set(used)


# -- what Prometheus computes -----------------------------------------------------------------


def test_prometheus_evaluates_every_rule(live: Live) -> None:
    groups = live.prom.api("rules")["groups"]
    rules = {r.get("name"): r for g in groups for r in g["rules"]}
    expected = {r.record for r in recording_rules()} | {a.alert for a in alerting_rules()}
    assert set(rules) == expected
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


def test_per_user_series(live: Live) -> None:
    alice, bob, carol = (live.users[k] for k in ("alice", "bob", "carol"))
    assert live.value(f'sum(af_user_servers_running{{user="{alice}"}})') == 2  # default and "extra"
    assert live.value(f'sum(af_user_servers_running{{user="{bob}"}})') == 1
    assert not live.value(f'sum(af_user_servers_running{{user="{carol}"}})')  # its only spawn failed
    # from af-metrics' own sampling of the schedulers
    assert live.value(f'sum(af_dask_threads{{user="{alice}"}})') == 2
    assert live.value(f'sum(af_dask_threads{{user="{bob}"}})') == 1
    assert live.value(f'sum(af_dask_tasks_erred_total{{user="{bob}"}})') == ERRED_TASKS
    assert not live.value(f'sum(af_dask_tasks_erred_total{{user="{alice}"}})')
    # from Prometheus scraping each scheduler through /sd/dask, labelled with its user
    assert live.value(f'sum(dask_scheduler_workers{{user="{alice}"}})') == 1
    assert live.value(
        f'sum(dask_scheduler_prefix_state_totals_total{{user="{bob}",state="erred",task_prefix_name="int"}})'
    ) == ERRED_TASKS
    # the analysis run pushed with alice's token
    assert live.value(f'sum(af_analysis_events_total{{user="{alice}"}})') == 1000
    # the batch job of alice's pod: 4 cores for 4 hours
    assert live.value(f'sum(af_user_core_seconds_total{{user="{alice}",infrastructure="htcondor"}})') == 4 * 4 * 3600


def test_recording_rules(live: Live) -> None:
    alice, bob = live.users["alice"], live.users["bob"]
    for rule in recording_rules():
        assert live.query(f"count({rule.record})"), f"{rule.record} recorded nothing"
    # two spawns succeeded and one failed while Prometheus watched (earlier ones are outside its
    # data); rate() extrapolates a counter that starts at 0 less than others, hence a few %
    assert live.value(SPAWN_FAILURE_RATIO) == pytest.approx(1 / 3, rel=0.05)
    # the p95 is interpolated inside the histogram bucket of the slower spawn
    upper = next(b for b in SPAWN_BUCKETS if b >= max(live.spawn_walls))
    assert 0 < live.value(SPAWN_P95) <= upper
    # users with a server, as the hub lists them
    listed = httpx.get(f"{live.hub_url}/hub/api/users", params={"state": "active"},
                       headers={"Authorization": f"token {live.hub_token}"}, timeout=10)
    assert live.value("facility:af_users_active:count") == len({u["name"] for u in listed.json()})
    # core-hours follow threads: alice's cluster has 2, bob's 1, both up the whole time
    hours = {r["metric"]["user"]: float(r["value"][1]) for r in live.query("user:af_core_hours:increase1h")}
    assert hours[alice] / hours[bob] == pytest.approx(2.0, rel=0.15)
    first, last = _first_last(live, f'af_dask_core_seconds_total{{user="{alice}"}}')
    # af-metrics' core-seconds move a sampling cycle at a time: allow two cycles of 2 threads at the ends
    assert hours[alice] == pytest.approx((last[1] - first[1]) / 3600, rel=0.15, abs=8 / 3600)
    assert (last[1] - first[1]) == pytest.approx(2 * (last[0] - first[0]), rel=0.15, abs=8)
    # the hub answered the unknown-user lookups with 404
    codes = {r["metric"]["code"]: float(r["value"][1]) for r in live.query("code:jupyterhub_request_errors:ratio_rate5m")}
    assert 0 < codes["404"] < 1


def _first_last(live: Live, selector: str) -> tuple[tuple[float, float], tuple[float, float]]:
    values = live.query(f"{selector}[10m]")[0]["values"]
    return (values[0][0], float(values[0][1])), (values[-1][0], float(values[-1][1]))


def test_every_dashboard_query_runs_in_prometheus(live: Live) -> None:
    for uid, model in build_all().items():
        for expr in expressions(model):
            if expr.startswith("label_values("):
                continue
            for var, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(var, value)
            expr = expr.replace("$user", live.users["alice"])
            answer = httpx.get(f"{live.prom.url}/api/v1/query", params={"query": expr}, timeout=10).json()
            assert answer["status"] == "success", (uid, expr, answer)
