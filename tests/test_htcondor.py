"""HTCondor accounting from real-format records: ClassAds made with the bindings, written as
condor_history / condor_q print them (-long, -json, the schedd's history file) and read back.

The facility: alice@cern.ch's notebook pod is jupyter-alice-40cern-2ech and her workers' jobs
carry AccountingGroup cms.other.coffea.jupyter-alice-40cern-2ech; bob's pod is jupyter-bob.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from af_metrics.accounting.ingest import ingest_history
from af_metrics.accounting.settings import DEFAULT_RULES
from af_metrics.accounting.totals import Totals, usage_totals
from af_metrics.cli import cli
from af_metrics.kpis.periods import parse_period
from af_metrics.ledger.schema import batch_job_days, batch_jobs
from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import COMPLETED, HELD, REMOVED, RUNNING, HistoryError, read_ads, write_ads

classad2 = pytest.importorskip("classad2")

H = 3600.0
HUB_USERS = ("alice@cern.ch", "bob")


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


def job_ad(cluster: int, **attrs: object) -> object:
    """A job ad as the schedd writes it: MemoryUsage and RequestMemory are expressions."""
    ad = classad2.ClassAd({
        "ClusterId": cluster, "ProcId": 0, "GlobalJobId": f"schedd.example.org#{cluster}.0#1791000000",
        "Owner": "cms-jovyan", "RequestCpus": 1, "RequestGpus": 0, "ResidentSetSize": 1_048_576, "ImageSize": 2_097_152,
        "RemoteUserCpu": 0.0, "RemoteSysCpu": 0.0, "ExitCode": 0, "Cmd": "/usr/local/bin/dask-worker",
    })
    ad["MemoryUsage"] = classad2.ExprTree("((ResidentSetSize + 1023) / 1024)")
    ad["RequestMemory"] = classad2.ExprTree("ifthenelse(MemoryUsage =!= undefined, MemoryUsage, (ImageSize + 1023) / 1024)")
    for key, value in attrs.items():
        ad[key] = value
    return ad


def coffea(pod: str) -> dict:
    return {"AccountingGroup": f"cms.other.coffea.{pod}", "AcctGroup": "cms.other.coffea", "AcctGroupUser": pod}


def finished(cluster: int, start: str, end: str, cpus: int, cpu_seconds: float, pod: str | None = None, **extra: object) -> object:
    t0, t1 = utc(start), utc(end)
    return job_ad(
        cluster, JobStatus=COMPLETED, RequestCpus=cpus, JobStartDate=int(t0), JobCurrentStartDate=int(t0),
        CompletionDate=int(t1), EnteredCurrentStatus=int(t1), RemoteWallClockTime=t1 - t0,
        RemoteUserCpu=cpu_seconds * 0.9, RemoteSysCpu=cpu_seconds * 0.1, **(coffea(pod) if pod else {}), **extra,
    )


# The October 2026 history ----------------------------------------------------------------------
ALICE_POD, BOB_POD = "jupyter-alice-40cern-2ech", "jupyter-bob"
MIDNIGHT = finished(101, "2026-10-10T22:00", "2026-10-11T02:00", 2, 6.5 * H, ALICE_POD)  # 4 h over midnight
MONTH_END = finished(102, "2026-10-31T20:00", "2026-11-01T04:00", 4, 30 * H, ALICE_POD)  # 8 h over the month end
LATER = finished(103, "2026-10-12T10:00", "2026-10-12T14:00", 1, 3 * H, BOB_POD)  # seen running at 12:00 first
REMOVED_AD = job_ad(  # ran 09:00-10:00, held, removed at 15:00
    104, JobStatus=REMOVED, JobStartDate=int(utc("2026-10-13T09:00")), CompletionDate=0,
    EnteredCurrentStatus=int(utc("2026-10-13T15:00")), RemoteWallClockTime=H, RemoteUserCpu=1800.0, ExitCode=classad2.Value.Undefined,
    **coffea(BOB_POD),
)
NOBODY = finished(105, "2026-10-14T08:00", "2026-10-14T10:00", 8, 10 * H, "jupyter-carol")  # carol is no hub user
GRID = finished(106, "2026-10-15T00:00", "2026-10-15T06:00", 1, 5 * H, None, Owner="cmsgli")  # a pilot: no pod, no hub user
HISTORY = [MIDNIGHT, MONTH_END, LATER, REMOVED_AD, NOBODY, GRID]

LATER_RUNNING = job_ad(  # condor_q at 12:00: running since 10:00
    103, JobStatus=RUNNING, RequestCpus=1, JobStartDate=int(utc("2026-10-12T10:00")),
    JobCurrentStartDate=int(utc("2026-10-12T10:00")), RemoteWallClockTime=0.0, RemoteUserCpu=5000.0,
    ServerTime=int(utc("2026-10-12T12:00")), **coffea(BOB_POD),
)
HELD_AD = job_ad(  # condor_q at 12:00: held since 10:00 after one hour
    104, JobStatus=HELD, JobStartDate=int(utc("2026-10-13T09:00")), EnteredCurrentStatus=int(utc("2026-10-13T10:00")),
    RemoteWallClockTime=H, RemoteUserCpu=1800.0, ServerTime=int(utc("2026-10-13T12:00")), **coffea(BOB_POD),
)


def text(ads: list, fmt: str) -> str:
    out = io.StringIO()
    write_ads(ads, out, fmt)
    return out.getvalue()


def hub(ledger: Ledger) -> None:
    with ledger.begin() as conn:
        ledger.user_ids(conn, HUB_USERS, utc("2026-09-01T00:00"))


def ingest(ledger: Ledger, ads: list, fmt: str = "file", queue: bool = False):  # noqa: ANN201
    return ingest_history(ledger, io.StringIO(text(ads, fmt)), DEFAULT_RULES, utc("2026-11-20T00:00"), queue=queue)


def totals(ledger: Ledger, period: str = "2026-10", by: str = "month") -> dict[tuple[str, str | None], Totals]:
    with ledger.engine.connect() as conn:
        return {(t.bucket, t.user): t for t in usage_totals(conn, parse_period(period), by)}


def snapshot(ledger: Ledger) -> list:
    with ledger.engine.connect() as conn:
        jobs = conn.execute(sa.select(batch_jobs).order_by(batch_jobs.c.global_job_id)).all()
        days = conn.execute(sa.select(batch_job_days).order_by(batch_job_days.c.job_id, batch_job_days.c.day)).all()
    return [tuple(r) for r in jobs] + [tuple(r) for r in days]


# -- reading ---------------------------------------------------------------------------------------


def test_every_format_reads_back_the_same_jobs() -> None:
    facts = {}
    for fmt in ("long", "json", "file"):
        ads = list(read_ads(io.StringIO(text(HISTORY, fmt))))
        assert [ad["GlobalJobId"] for ad in ads] == [ad["GlobalJobId"] for ad in HISTORY]
        facts[fmt] = [(ad["GlobalJobId"], ad.eval("MemoryUsage"), ad.eval("RequestMemory"), ad.get("AccountingGroup")) for ad in ads]
    assert facts["long"] == facts["json"] == facts["file"]
    assert facts["file"][0][1:3] == (1024, 1024)  # expressions evaluated by the ClassAd library


def test_a_record_that_is_not_a_classad_stops_with_its_line() -> None:
    broken = text(HISTORY[:2], "file") + "Owner = \"x\"\nthis is not an attribute\nRequestCpus = 1\n*** ProcId = 0\n"
    with pytest.raises(HistoryError, match=r"line \d+: ClassAd with an unreadable attribute"):
        list(read_ads(io.StringIO(broken)))
    with pytest.raises(HistoryError, match=r"line 2: not a ClassAd \('\{'\)"):
        list(read_ads(io.StringIO('[\n{\n  "Owner": "x",\n  "Bad": [1, },\n  "RequestCpus": 1\n}\n]\n')))
    with pytest.raises(HistoryError, match="JSON ad not closed"):
        list(read_ads(io.StringIO(text(HISTORY, "json")[:-40])))


# -- ingesting -------------------------------------------------------------------------------------


def test_history_attributes_splits_and_counts_once(ledger: Ledger) -> None:
    hub(ledger)
    first = ingest(ledger, HISTORY, "json")
    assert (first.read, first.written, first.unchanged, first.unattributed) == (6, 6, 0, 2)
    before = snapshot(ledger)
    oct_ = totals(ledger)
    alice, bob, nobody = oct_[("2026-10", "alice@cern.ch")], oct_[("2026-10", "bob")], oct_[("2026-10", None)]
    assert alice.batch_core_seconds == pytest.approx(2 * 4 * H + 4 * 4 * H)  # midnight job whole, month-end job half
    assert alice.batch_jobs == 1  # the month-end job ended in November
    assert bob.batch_core_seconds == pytest.approx(4 * H + 1 * H)  # completed + removed after running 1 h
    assert bob.batch_jobs == 2
    assert nobody.batch_core_seconds == pytest.approx(8 * 2 * H + 6 * H) and nobody.batch_jobs == 2
    assert alice.batch_cpu_seconds == pytest.approx(6.5 * H + 30 * H / 2)
    assert totals(ledger, "2026-11")[("2026-11", "alice@cern.ch")].batch_core_seconds == pytest.approx(16 * H)
    days = totals(ledger, "2026-10-10..2026-10-11", "day")
    assert days[("2026-10-10", "alice@cern.ch")].batch_core_seconds == pytest.approx(2 * 2 * H)
    assert days[("2026-10-11", "alice@cern.ch")].batch_core_seconds == pytest.approx(2 * 2 * H)

    again = ingest(ledger, HISTORY, "long")  # the same history in another format
    assert (again.written, again.unchanged) == (0, 6)
    assert snapshot(ledger) == before
    with ledger.engine.connect() as conn:
        carol = conn.execute(sa.select(batch_jobs.c.user_id, batch_jobs.c.pod).where(batch_jobs.c.global_job_id.like("%#105.0#%"))).one()
        alice_rule = conn.execute(sa.select(batch_jobs.c.rule).where(batch_jobs.c.global_job_id.like("%#101.0#%"))).scalar()
    assert carol == (None, "jupyter-carol")  # named a pod that maps to nobody: kept, unattributed
    assert alice_rule == "group-names-pod"


def test_running_job_is_counted_to_now_then_settled_once(ledger: Ledger) -> None:
    hub(ledger)
    ingest(ledger, [LATER_RUNNING, HELD_AD], "long", queue=True)
    bob = totals(ledger)[("2026-10", "bob")]
    assert bob.batch_core_seconds == pytest.approx(2 * H + 1 * H)  # running 2 h so far; held after 1 h
    assert bob.batch_jobs == 0  # neither has ended
    ingest(ledger, [LATER, REMOVED_AD], "file")
    settled = snapshot(ledger)
    bob = totals(ledger)[("2026-10", "bob")]
    assert bob.batch_core_seconds == pytest.approx(4 * H + 1 * H) and bob.batch_jobs == 2
    stale = ingest(ledger, [LATER_RUNNING, HELD_AD], "json", queue=True)  # an old queue dump after completion
    assert (stale.written, stale.unchanged) == (0, 2)
    assert snapshot(ledger) == settled


def test_days_are_the_facility_time_zone(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url, tz="America/Chicago")  # UTC-5 in October: the job runs 17:00-21:00 on the 10th
    try:
        hub(ledger)
        ingest(ledger, [MIDNIGHT])
        days = totals(ledger, "2026-10-10..2026-10-11", "day")
        assert days[("2026-10-10", "alice@cern.ch")].batch_core_seconds == pytest.approx(8 * H)
        assert ("2026-10-11", "alice@cern.ch") not in days
    finally:
        ledger.engine.dispose()


def test_jobs_seen_before_their_pod_get_its_user_later(ledger: Ledger) -> None:
    from af_metrics.ledger.accounting import attributor, record_pod_hours
    from af_metrics.sources.kubernetes import PodHour

    ingest(ledger, [NOBODY])  # carol is not (yet) a hub user the ledger knows
    assert totals(ledger)[("2026-10", None)].batch_core_seconds == pytest.approx(16 * H)
    t = utc("2026-10-14T08:00")
    seen = PodHour("jhub", "jupyter-carol", t, {"label_hub_jupyter_org_username": "carol"}, H, H, 0.5 * H, 0.0, 0.0, 0.0, t, t + H)
    with ledger.begin() as conn:
        record_pod_hours(ledger, conn, [seen], attributor(conn, DEFAULT_RULES), "component=singleuser-server", t + H)
    carol = totals(ledger)[("2026-10", "carol")]
    assert carol.batch_core_seconds == pytest.approx(16 * H) and ("2026-10", None) not in totals(ledger)


def test_cli_ingests_a_file_and_refuses_a_bad_one_whole(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    good, bad = tmp_path / "history", tmp_path / "bad.json"
    good.write_text(text(HISTORY, "file"))
    bad.write_text(text(HISTORY[:3], "json").replace('"GlobalJobId"', '"GlobalJobId" "x"', 1))
    runner = CliRunner()
    result = runner.invoke(cli, ["--ledger", url, "accounting", "ingest-history", str(good)])
    assert result.exit_code == 0, result.output
    assert "6 records, 6 jobs written, 0 already settled" in result.output
    before = snapshot(Ledger.open(url))
    result = runner.invoke(cli, ["--ledger", url, "accounting", "ingest-history", str(bad)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {bad}: line 2: job ad without GlobalJobId"]
    assert snapshot(Ledger.open(url)) == before
    usage = runner.invoke(cli, ["--ledger", url, "accounting", "ingest-history"])
    assert usage.exit_code == 2 and "give a history FILE or --schedd" in usage.output

    # --skip-bad: the readable ads of the bad file are written, the unreadable one counted
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = runner.invoke(cli, ["--ledger", fresh, "accounting", "ingest-history", "--skip-bad", str(bad)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (f"{bad}: 2 records, 2 jobs written, 0 already settled, 2 unattributed,"
                                     " 1 unreadable ads skipped (the first at line 2: job ad without GlobalJobId)")
    with Ledger.open(fresh).engine.connect() as conn:
        stored = sorted(conn.execute(sa.select(batch_jobs.c.global_job_id)).scalars())
    assert stored == sorted(ad["GlobalJobId"] for ad in HISTORY[1:3])
    # ... but a file with no readable ad at all is still an error (a wrong file), and writes nothing
    nothing = tmp_path / "not-a-history"
    nothing.write_text("this is not an attribute\n*** banner\nneither is this\n")
    result = runner.invoke(cli, ["--ledger", fresh, "accounting", "ingest-history", "--skip-bad", str(nothing)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {nothing}: line 1: not a ClassAd ('this is not an attribute') (and 1 more unreadable ads)"


def test_unreachable_schedd_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    from conftest import free_port

    cfg = tmp_path / "af.toml"
    cfg.write_text(f'[accounting]\npool = "127.0.0.1:{free_port()}"\n')
    url = f"sqlite:///{tmp_path / 'l.db'}"
    result = CliRunner().invoke(cli, ["--config", str(cfg), "--ledger", url, "accounting", "ingest-history", "--schedd"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: schedd: cannot locate schedd (local): Failed communication with collector."]
    assert snapshot(Ledger.open(url)) == []
