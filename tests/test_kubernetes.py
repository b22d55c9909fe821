"""Pod usage from a real Prometheus (Debian's) holding kube-state-metrics and cAdvisor series,
backfilled with ``promtool tsdb create-blocks-from openmetrics``: per-user core-hours match
values computed by hand from the series written.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from af_metrics.accounting.ingest import ingest_pods, pods_reader
from af_metrics.accounting.settings import AccountingSettings
from af_metrics.accounting.totals import usage_totals
from af_metrics.cli import cli
from af_metrics.kpis.periods import parse_period
from af_metrics.ledger.schema import pod_hours, pods
from af_metrics.ledger.store import Ledger
from af_metrics.sources.kubernetes import hours_between
from dask_support import PrometheusServer

pytestmark = pytest.mark.prometheus
H = 3600.0
STEP = 30  # scrape interval of the written series
GIB = 1024.0**3


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


@dataclass
class Pod:
    """What a pod requested and used, as kube-state-metrics and cAdvisor would have exported it."""

    namespace: str
    name: str
    start: float
    end: float  # no sample at or after this
    cpu: float = 0.0
    memory: float = 0.0
    gpu: float = 0.0
    used_cores: float = 0.0
    working_set: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    restart_at: float | None = None  # the container restarts: its CPU counter starts again from zero

    def times(self) -> list[int]:
        return list(range(int(self.start), int(self.end), STEP))

    def cpu_counter(self, t: float) -> float:
        since = self.start - STEP if self.restart_at is None or t < self.restart_at else self.restart_at - STEP
        return self.used_cores * (t - since)  # the container started one scrape before its first sample


def openmetrics(pod_list: list[Pod]) -> str:
    """The pods' series in OpenMetrics text, one family after the other, as promtool reads them."""
    lines: list[str] = []

    def family(name: str, kind: str, rows: list[tuple[str, float, int]]) -> None:
        lines.append(f"# TYPE {name.removesuffix('_total') if kind == 'counter' else name} {kind}")
        lines.extend(f"{name}{{{labels}}} {value} {t}" for labels, value, t in rows)

    def ident(p: Pod, **extra: str) -> str:
        return ",".join(f'{k}="{v}"' for k, v in {"namespace": p.namespace, "pod": p.name, **extra}.items())

    family("kube_pod_labels", "gauge", [
        (ident(p, **p.labels), 1, t) for p in pod_list for t in p.times()
    ])
    requests = []
    for p in pod_list:
        for resource, unit, value in (("cpu", "core", p.cpu), ("memory", "byte", p.memory), ("nvidia_com_gpu", "integer", p.gpu)):
            if value:
                requests += [(ident(p, container="main", node="n1", resource=resource, unit=unit), value, t) for t in p.times()]
    family("kube_pod_container_resource_requests", "gauge", requests)
    family("container_cpu_usage_seconds_total", "counter", [
        row for p in pod_list if p.used_cores for t in p.times() for row in (
            (ident(p, container="main", cpu="total", image="img"), p.cpu_counter(t), t),
            (ident(p, container="", cpu="total"), 1000 + 10 * p.cpu_counter(t), t),  # the pod's cgroup: not counted
        )
    ])
    family("container_memory_working_set_bytes", "gauge", [
        row for p in pod_list if p.working_set for t in p.times() for row in (
            (ident(p, container="main", image="img"), p.working_set, t),
            (ident(p, container="POD", image="pause"), 10 * p.working_set, t),  # the pause container: not counted
        )
    ])
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfilled_prometheus(base: Path, pod_list: list[Pod]) -> PrometheusServer:
    """Debian's prometheus serving blocks made by promtool from the pods' series."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    base.mkdir(parents=True, exist_ok=True)
    source = base / "series.om"
    source.write_text(openmetrics(pod_list))
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(base / "tsdb")],
                   check=True, capture_output=True, timeout=120)
    return PrometheusServer(base, [])


USER_LABEL = "label_hub_jupyter_org_username"
NOTEBOOK = {"label_component": "singleuser-server"}
T0 = utc("2026-10-20T10:00")
FACILITY = [
    Pod("jhub-prod", "jupyter-alice", T0, T0 + 3 * H, cpu=2, memory=4 * GIB, used_cores=0.75, working_set=1 * GIB,
        labels={USER_LABEL: "alice", **NOTEBOOK}),
    Pod("jhub-prod", "dask-worker-alice-1", T0 + H, T0 + 1.5 * H, cpu=1, gpu=1, used_cores=0.5, labels={USER_LABEL: "alice"},
        restart_at=T0 + 1.25 * H),
    Pod("jhub-prod", "jupyter-bob-40fnal-2egov", T0 + 0.5 * H, T0 + 1.5 * H, cpu=1, labels={USER_LABEL: "bob-40fnal-2egov", **NOTEBOOK}),
    Pod("kube-system", "coredns-5d78c9869d-x2x7q", T0, T0 + 3 * H, cpu=0.1),
]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = backfilled_prometheus(tmp_path_factory.mktemp("prom"), FACILITY)
    yield server
    server.stop()


def test_per_user_core_hours_match_the_series(prometheus: PrometheusServer, ledger: Ledger) -> None:
    with ledger.begin() as conn:
        ledger.user_ids(conn, ["alice", "bob@fnal.gov"], T0)  # bob's label holds KubeSpawner's escaped name
    cfg = AccountingSettings()
    reader = pods_reader(cfg, prometheus.url)
    try:
        hours = list(hours_between(T0, T0 + 3 * H, "UTC"))
        stats = ingest_pods(ledger, reader, cfg, hours, T0 + 4 * H)
        first = _pod_rows(ledger)
        ingest_pods(ledger, reader, cfg, hours[1:], T0 + 5 * H)  # reading hours again replaces them
    finally:
        reader.close()
    assert stats.hours == 3 and _pod_rows(ledger) == first
    with ledger.engine.connect() as conn:
        by_user = {t.user: t for t in usage_totals(conn, parse_period("2026-10-20"), "range")}
        roles = dict(conn.execute(sa.select(pods.c.name, pods.c.role)).all())
    alice, bob, nobody = by_user["alice"], by_user["bob@fnal.gov"], by_user[None]
    # by hand: requests x time present (samples every 30 s, each holding for 30 s)
    assert alice.notebook_core_seconds == pytest.approx(2 * 3 * H)
    assert alice.pod_core_seconds == pytest.approx(1 * 0.5 * H)
    assert alice.pod_gpu_seconds == pytest.approx(0.5 * H)
    assert alice.core_seconds == pytest.approx(6.5 * H)
    assert alice.pod_memory_gib_seconds == pytest.approx(4 * 3 * H)
    assert alice.pod_memory_used_gib_seconds == pytest.approx(1 * 3 * H)
    # used CPU: the counter's rises; the first sample of a container (30 s of use) is not counted
    assert alice.notebook_used_core_seconds == pytest.approx(0.75 * (3 * H - STEP))
    assert alice.pod_used_core_seconds == pytest.approx(0.5 * (0.5 * H - STEP))  # the restart counts from zero
    assert bob.notebook_core_seconds == pytest.approx(1 * H) and bob.pods == 1
    assert nobody.pod_core_seconds == pytest.approx(0.1 * 3 * H)
    assert roles == {"jupyter-alice": "notebook", "dask-worker-alice-1": "other", "jupyter-bob-40fnal-2egov": "notebook",
                     "coredns-5d78c9869d-x2x7q": "other"}


@pytest.mark.parametrize("namespaces", [("jhub-prod",), ("kube-system", "jhub-prod")])
def test_namespaces_with_dashes_select_their_pods(prometheus: PrometheusServer, ledger: Ledger, namespaces: tuple[str, ...]) -> None:
    with ledger.begin() as conn:
        ledger.user_ids(conn, ["alice", "bob@fnal.gov"], T0)
    cfg = AccountingSettings(namespaces=namespaces)
    reader = pods_reader(cfg, prometheus.url)
    try:
        ingest_pods(ledger, reader, cfg, list(hours_between(T0, T0 + 3 * H, "UTC")), T0 + 4 * H)
    finally:
        reader.close()
    with ledger.engine.connect() as conn:
        by_user = {t.user: t for t in usage_totals(conn, parse_period("2026-10-20"), "range")}
    assert by_user["alice"].core_seconds == pytest.approx(6.5 * H)
    assert by_user["alice"].pod_gpu_seconds == pytest.approx(0.5 * H)
    assert by_user["bob@fnal.gov"].notebook_core_seconds == pytest.approx(1 * H)
    if "kube-system" in namespaces:
        assert by_user[None].pod_core_seconds == pytest.approx(0.1 * 3 * H)
    else:  # coredns' namespace was not read
        assert None not in by_user


@pytest.mark.parametrize("namespace", ["jhub.prod", "JHub", "-jhub", "jhub_prod", "x" * 64, ""])
def test_a_namespace_that_is_no_dns_label_is_one_line(tmp_path: Path, namespace: str) -> None:
    cfg = tmp_path / "af.toml"
    cfg.write_text(f'[accounting]\nnamespaces = ["jhub-prod", "{namespace}"]\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "accounting", "ingest-pods",
                                      "--prometheus", "http://127.0.0.1:9", "--from", "2026-10-20T10:00:00Z", "--to", "2026-10-20T11:00:00Z"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "accounting.namespaces" in lines[0] and "is not a DNS label" in lines[0], result.output
    assert not (tmp_path / "l.db").exists()


def _pod_rows(ledger: Ledger) -> list:
    with ledger.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(pod_hours).order_by(pod_hours.c.pod, pod_hours.c.hour_start))]


def test_cli_backfills_and_resumes(prometheus: PrometheusServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    runner = CliRunner()
    args = ["--ledger", url, "accounting", "ingest-pods", "--prometheus", prometheus.url]
    result = runner.invoke(cli, [*args, "--from", "2026-10-20T10:00:00Z", "--to", "2026-10-20T12:00:00Z"])
    assert result.exit_code == 0, result.output
    assert "hours read: 2, pod-hours: 7, unattributed pod-hours: 2" in result.output
    result = runner.invoke(cli, [*args, "--to", "2026-10-20T13:30:00Z"])  # resumes at 12:00, stops at the last whole hour
    assert result.exit_code == 0, result.output
    assert "hours read: 1, " in result.output
    with Ledger.open(url).engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count(sa.distinct(pod_hours.c.hour_start)))).scalar() == 3


def test_unreachable_prometheus_is_one_line(tmp_path: Path) -> None:
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--ledger", f"sqlite:///{tmp_path / 'l.db'}", "accounting", "ingest-pods", "--prometheus", url,
                                      "--from", "2026-10-20T10:00:00Z", "--to", "2026-10-20T11:00:00Z"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot query Prometheus at {url}")
