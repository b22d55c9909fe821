"""The per-user total counts each core once, and the usage records add up to it.

The facility scenario: alice's Dask workers are HTCondor jobs (seen by the schedd) and her
scheduler is sampled too (the Dask source sees the same cores); bob runs a LocalCluster inside
his notebook pod (the pod's requested cores hold his workers). Pods come from a real,
backfilled Prometheus; jobs from condor_history output made with the bindings; Dask samples
go through the Dask source's own ledger writer.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from af_metrics.accounting.ingest import ingest_history, ingest_pods, pods_reader
from af_metrics.accounting.settings import DEFAULT_RULES, AccountingSettings
from af_metrics.accounting.totals import usage_totals
from af_metrics.cli import cli
from af_metrics.discovery import DaskTarget
from af_metrics.kpis.periods import parse_period
from af_metrics.ledger.dask import record_cycle
from af_metrics.ledger.store import Ledger
from af_metrics.sources.dask import SchedulerSample
from af_metrics.sources.kubernetes import hours_between
from test_htcondor import HISTORY, finished, text
from test_kubernetes import NOTEBOOK, USER_LABEL, Pod, backfilled_prometheus, utc

pytestmark = pytest.mark.prometheus
H = 3600.0
DAY = "2026-10-20"
T0 = utc(f"{DAY}T10:00")
ALICE, BOB = "alice@cern.ch", "bob"
ALICE_POD, BOB_POD = "jupyter-alice-40cern-2ech", "jupyter-bob"
NOTEBOOKS = [
    Pod("jhub", ALICE_POD, T0, T0 + 3 * H, cpu=2, memory=4 * 1024**3, used_cores=0.5, labels={USER_LABEL: "alice-40cern-2ech", **NOTEBOOK}),
    Pod("jhub", BOB_POD, T0, T0 + 2 * H, cpu=4, memory=8 * 1024**3, used_cores=3.0, labels={USER_LABEL: "bob", **NOTEBOOK}),
]
WORKERS = [  # alice's 4 Dask workers: HTCondor jobs of 2 cores from 10:30 to 12:30, submitted from her pod
    finished(200 + i, f"{DAY}T10:30", f"{DAY}T12:30", 2, 1.6 * 2 * H, ALICE_POD) for i in range(4)
]
TRUTH = {ALICE: 2 * 3 + 4 * 2 * 2, BOB: 4 * 2}  # core-hours: notebook pods + batch workers; bob's workers are in his pod


def sample_schedulers(ledger: Ledger) -> None:
    """Each user's scheduler sampled every 15 s while their cluster ran (then gone for a minute)."""
    clusters = {
        DaskTarget.make(ALICE, "c1", "http://127.0.0.1:8787"): (T0 + 0.5 * H, T0 + 2.5 * H, 4, 8),
        DaskTarget.make(BOB, "local", "http://127.0.0.1:8788"): (T0 + 0.5 * H, T0 + 1.5 * H, 4, 4),
    }
    interval = 15.0
    t = T0 + 0.5 * H
    while t <= T0 + 2.5 * H + 60:
        reads = [
            (target, SchedulerSample(t, workers, threads, 0.0, started=start - 5) if start <= t <= end else None)
            for target, (start, end, workers, threads) in clusters.items()
        ]
        record_cycle(ledger, t, reads, interval)
        t += interval


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    server = backfilled_prometheus(tmp_path_factory.mktemp("prom"), NOTEBOOKS)
    yield server
    server.stop()


@pytest.fixture
def facility(prometheus, ledger: Ledger) -> Ledger:  # noqa: ANN001
    with ledger.begin() as conn:
        ledger.user_ids(conn, [ALICE, BOB], T0 - 86400)
    cfg = AccountingSettings()
    ingest_history(ledger, io.StringIO(text(WORKERS, "json")), DEFAULT_RULES, T0 + 4 * H)
    reader = pods_reader(cfg, prometheus.url)
    try:
        ingest_pods(ledger, reader, cfg, hours_between(T0, T0 + 4 * H, "UTC"), T0 + 4 * H)
    finally:
        reader.close()
    sample_schedulers(ledger)
    return ledger


def test_total_counts_cores_seen_by_two_sources_once(facility: Ledger) -> None:
    with facility.engine.connect() as conn:
        rows = {t.user: t for t in usage_totals(conn, parse_period(DAY), "range")}
    for user, truth in TRUTH.items():
        assert rows[user].core_seconds / H == pytest.approx(truth, rel=0.01), user
    alice, bob = rows[ALICE], rows[BOB]
    # the Dask source saw the same worker cores: reported beside the total, not in it
    assert alice.dask_core_seconds / H == pytest.approx(16, rel=0.01)
    assert bob.dask_core_seconds / H == pytest.approx(4, rel=0.01)
    assert alice.batch_core_seconds / H == pytest.approx(16) and alice.notebook_core_seconds / H == pytest.approx(6)
    assert alice.batch_cpu_efficiency == pytest.approx(0.8)
    assert None not in rows  # everything attributed


def test_export_records_add_up_and_pseudonymise(facility: Ledger, tmp_path: Path) -> None:
    ingest_history(facility, io.StringIO(text(HISTORY, "file")), DEFAULT_RULES, T0 + 4 * H)  # October's other jobs
    cfg = tmp_path / "af.toml"
    cfg.write_text('[accounting]\nsite = "UNL-coffea-casa"\nvo = "cms"\n')
    key = tmp_path / "key"
    key.write_bytes(b"0123456789abcdef-secret\n")
    url = str(facility.engine.url.render_as_string(hide_password=False))
    base = ["--config", str(cfg), "--ledger", url, "accounting", "export", "--period", "2026-10"]
    runner = CliRunner()
    plain = runner.invoke(cli, [*base, "--format", "csv"])
    assert plain.exit_code == 0, plain.output
    records = list(csv.DictReader(io.StringIO(plain.output)))
    with facility.engine.connect() as conn:
        month = usage_totals(conn, parse_period("2026-10"), "range")
    assert sum(float(r["CoreHours"]) for r in records) == pytest.approx(sum(t.core_seconds for t in month) / H, abs=1e-4)
    mine = [r for r in records if r["GlobalUserName"] == ALICE]
    batch = next(r for r in mine if r["Infrastructure"] == "htcondor")
    assert (batch["Site"], batch["VO"], batch["VOGroup"], batch["NumberOfJobs"]) == ("UNL-coffea-casa", "cms", "cms.other.coffea", "5")
    assert float(batch["CoreHours"]) == pytest.approx(16 + 8 + 16)  # workers + midnight job + October half of the month-end job
    pod = next(r for r in mine if r["Infrastructure"] == "kubernetes")
    assert (pod["VOGroup"], pod["NumberOfJobs"], float(pod["CoreHours"])) == ("jhub", "1", pytest.approx(6))
    rest = [r for r in records if r["Attributed"] == "false"]
    assert {r["GlobalUserName"] for r in rest} == {""} and sum(int(r["NumberOfJobs"]) for r in rest) == 2

    hidden = runner.invoke(cli, [*base, "--format", "json", "--pseudonymize", "--key-file", str(key)])
    assert hidden.exit_code == 0, hidden.output
    doc = json.loads(hidden.output)
    assert ALICE not in hidden.output and "alice" not in hidden.output and "bob" not in hidden.output
    expected = "anon-" + hmac.new(b"0123456789abcdef-secret", ALICE.encode(), hashlib.sha256).hexdigest()[:20]
    names = {r["GlobalUserName"] for r in doc["records"]}
    assert expected in names and len(doc["records"]) == len(records)

    totals = ["--ledger", url, "accounting", "totals", "--period", DAY, "--by", "day"]
    shown = runner.invoke(cli, [*totals, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    day = {r["user"]: r for r in json.loads(shown.output)}
    assert day[ALICE]["core_hours"] == pytest.approx(22) and day[ALICE]["dask_core_hours"] == pytest.approx(16, rel=0.01)
    table = runner.invoke(cli, totals)
    assert table.exit_code == 0 and f"{DAY}   {ALICE}" in table.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--pseudonymize"], 2, "--pseudonymize and --key-file go together"),
        (["--period", "2026-13"], 1, "Error: bad period '2026-13': no month 13"),
        (["--pseudonymize", "--key-file", "{short}"], 1, "holds 5 bytes: use at least 16 random bytes"),
    ],
)
def test_export_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    short = tmp_path / "short"
    short.write_text("abcde")
    args = [a.replace("{short}", str(short)) for a in args]
    cmd = ["--ledger", f"sqlite:///{tmp_path / 'l.db'}", "accounting", "export", "--period", "2026-10", *args]
    result = CliRunner().invoke(cli, cmd)
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1


def test_kpis_and_metrics_carry_accounting(facility: Ledger) -> None:
    import subprocess

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from af_metrics.accounting.exposition import accounting_families, read_accounting_figures
    from af_metrics.kpis import compute_kpi

    ingest_history(facility, io.StringIO(text(HISTORY, "long")), DEFAULT_RULES, T0 + 4 * H)
    day = compute_kpi(facility, "core_hours", period=DAY, by="day")
    assert day["rows"][0][1] == pytest.approx(sum(TRUTH.values()), rel=0.01)
    share = compute_kpi(facility, "hub_share_of_batch", period="2026-10", by="month")
    assert share["rows"][0][1] == pytest.approx((16 + 24 + 5) / (16 + 24 + 5 + 22))  # carol's and the pilot's jobs are not the hub's
    efficiency = compute_kpi(facility, "batch_cpu_efficiency", period=DAY, by="day")
    assert efficiency["rows"][0][1] == pytest.approx(0.8)
    per_user = compute_kpi(facility, "core_hours_per_user", period="2026-10")
    assert [r[0] for r in per_user["rows"]] == [ALICE, "(unattributed)", BOB]

    class Accounting:
        def collect(self):  # noqa: ANN202
            return accounting_families(read_accounting_figures(facility, cap=1))

    registry = CollectorRegistry()
    registry.register(Accounting())
    exposition = generate_latest(registry).decode()
    check = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(exposition) for s in f.samples}
    assert samples[("af_accounting_unattributed_core_seconds_total", (("infrastructure", "htcondor"),))] == pytest.approx(22 * H)
    assert {k[1] for k in samples if k[0] == "af_user_core_seconds_total"} == {
        (("infrastructure", "htcondor"), ("user", ALICE)), (("infrastructure", "kubernetes"), ("user", ALICE))}
    assert samples[("af_accounting_user_series_dropped", ())] == 1
    assert samples[("af_accounting_batch_jobs_total", (("status", "removed"),))] == 1


def test_rules_are_tried_in_order_with_templates_and_known_users() -> None:
    from af_metrics.accounting.attribution import Attributor
    from af_metrics.accounting.settings import AttributionRule
    from af_metrics.sources.htcondor import job_from_ad
    from test_htcondor import job_ad

    rules = (
        AttributionRule(name="hub-user-attribute", source="htcondor", attribute="HubUser"),
        AttributionRule(name="owner", source="htcondor", attribute="Owner", user="{user}@fnal.gov", known_only=True),
        *DEFAULT_RULES,
    )
    attr = Attributor(rules, known_users=["dave@fnal.gov", ALICE], pod_users={"jupyter-x": "xavier"})
    names = ["HubUser", "Owner", "AccountingGroup"]

    def who(**ad: object) -> tuple:
        a = attr.job(job_from_ad(job_ad(1, **ad), final=True, observed_at=T0, attributes=names))
        return a.user, a.rule, a.pod

    assert who(HubUser="carol", Owner="dave") == ("carol", "hub-user-attribute", None)  # first rule wins; a new user
    assert who(Owner="dave") == ("dave@fnal.gov", "owner", None)
    assert who(Owner="eve", AccountingGroup=f"cms.other.coffea.{ALICE_POD}") == (ALICE, "group-names-pod", ALICE_POD)  # eve unknown
    assert who(Owner="eve", AccountingGroup="cms.other.coffea.jupyter-x") == ("xavier", "group-names-pod", "jupyter-x")  # pod map
    assert who(Owner="eve", AccountingGroup="cms.other.coffea.jupyter-nobody") == (None, None, "jupyter-nobody")
    assert who(Owner="eve") == (None, None, None)


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ('name = "r"\nsource = "htcondor"\nattribute = "Owner"\npattern = "(.+)"\n', "needs exactly one of the groups"),
        ('name = "r"\nsource = "kubernetes"\nattribute = "Owner"\n', "kubernetes attribute must be"),
        ('name = "r"\nsource = "htcondor"\nattribute = "Owner"\npattern = "(?P<user>["\n', "bad regular expression"),
    ],
)
def test_a_bad_rule_is_one_line(tmp_path: Path, rule: str, needle: str) -> None:
    from af_metrics.config import ConfigError, load_settings

    cfg = tmp_path / "af.toml"
    cfg.write_text("[[accounting.rules]]\n" + rule)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in str(err.value) and "\n" not in str(err.value)
