"""Real coffea processors on real CMS NanoAOD: what is recorded equals what coffea/uproot report.

Few, large chunks (building NanoEvents for these wide files costs about a second per chunk).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

coffea = pytest.importorskip("coffea")  # the 'coffea' extra, part of 'test'

import uproot  # noqa: E402
from coffea import processor  # noqa: E402
from coffea.nanoevents import NanoAODSchema  # noqa: E402

from af_metrics.coffea import Runner, track  # noqa: E402
from af_metrics.coffea.examples import DimuonZPeak, MetHistogram  # noqa: E402
from af_metrics.coffea.record import RunRecord  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "nanoaod"  # shared/ sits beside the repo
FILESET = {
    "DYJetsToLL": [str(SAMPLES / "nano_dy.root")],
    "DoubleMuon": [str(SAMPLES / "nano_dimuon.root")],
    "TTbar_v15": [str(SAMPLES / "nano_tt_v15.root")],
}
CHUNKSIZE = 100  # the 200-event ttbar file gives two chunks: 4 chunks in all


@pytest.fixture(autouse=True)
def _quiet_schema_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NanoAOD cross-references missing in small files
        yield


@pytest.fixture(autouse=True)
def _journal_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AF_METRICS_ANALYSIS_DIR", str(tmp_path / "analysis"))
    monkeypatch.delenv("AF_METRICS_PUSH_URL", raising=False)
    return tmp_path / "analysis"


def entries(path: str) -> int:
    with uproot.open(path) as f:
        return f["Events"].num_entries


def assert_matches_coffea(record: RunRecord, metrics: dict) -> None:
    """The record against coffea's own savemetrics of the same run, and uproot's entry counts."""
    assert record.status == "success"
    assert record.events == metrics["entries"] == sum(entries(f) for files in FILESET.values() for f in files) == 280
    assert record.bytes_read == metrics["bytesread"] > 0
    assert record.chunks == metrics["chunks"] == 4
    assert record.process_seconds == pytest.approx(metrics["processtime"])
    assert record.columns_read == len({c.rsplit("-", 1)[0] for c in metrics["columns"]}) > 0
    assert {d.name: d.events for d in record.datasets} == {ds: entries(files[0]) for ds, files in FILESET.items()}
    assert sum(d.bytes_read for d in record.datasets) == record.bytes_read
    assert sum(record.chunk_duration.counts) == sum(record.chunk_events.counts) == 4
    assert record.wall_seconds >= record.chunk_seconds / record.threads > 0
    assert 0 < record.cpu_efficiency <= 1
    assert record.events_per_thread_second == pytest.approx(280 / (record.wall_seconds * record.threads))


def test_met_histogram_with_futures_records_what_coffea_reports(_journal_here: Path) -> None:
    runner = Runner(processor.FuturesExecutor(workers=2, status=False), schema=NanoAODSchema, chunksize=CHUNKSIZE,
                    savemetrics=True)
    out, metrics = runner(FILESET, MetHistogram(), treename="Events")

    record = runner.last_record
    assert record is not None and (record.processor, record.executor, record.threads) == ("MetHistogram", "futures", 2)
    assert_matches_coffea(record, metrics)
    assert "af_metrics" not in metrics  # the user's metrics are coffea's, nothing added
    assert out["met"].sum() == 280 and out["events"] == {"DYJetsToLL": 40, "DoubleMuon": 40, "TTbar_v15": 200}
    journal = (_journal_here / "runs.jsonl").read_text().splitlines()
    assert [RunRecord.model_validate_json(line) for line in journal] == [record]


def test_same_return_as_coffea_without_savemetrics() -> None:
    """Drop-in: without savemetrics the user gets the bare output, exactly as coffea returns it."""
    fileset = {"DYJetsToLL": FILESET["DYJetsToLL"]}
    plain = processor.Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)(fileset, DimuonZPeak(), treename="Events")
    runner = Runner(processor.IterativeExecutor(status=False), schema=NanoAODSchema)
    ours = runner(fileset, DimuonZPeak(), treename="Events")
    assert isinstance(ours, dict) and ours.keys() == plain.keys()
    assert ours["selected"] == plain["selected"] and (ours["mass"].values() == plain["mass"].values()).all()
    assert runner.savemetrics is False and runner.checkpointer is None  # put back as it was
    assert runner.last_record.events == 40 and runner.last_record.threads == 1


@pytest.fixture(scope="module")
def dask_client() -> Iterator[object]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def test_zpeak_with_dask_recorded_by_track(dask_client: object) -> None:
    """Code that builds coffea's own Runner is recorded inside ``track()``; threads come from the client."""
    runner = processor.Runner(processor.DaskExecutor(client=dask_client, status=False), schema=NanoAODSchema,
                              chunksize=CHUNKSIZE, savemetrics=True)
    delivered: list[RunRecord] = []
    with track(delivered.append) as tracker:
        out, metrics = runner(FILESET, DimuonZPeak(), treename="Events")
    assert tracker.records == delivered and len(delivered) == 1
    record = delivered[0]
    assert (record.processor, record.executor, record.threads) == ("DimuonZPeak", "dask", 2)
    assert_matches_coffea(record, metrics)
    assert out["selected"]["DoubleMuon"] > 0  # real Z candidates in the dimuon data
    assert processor.Runner.run.__name__ == "run" and processor.Runner.run.__qualname__ == "Runner.run"  # unpatched


class Broken(processor.ProcessorABC):
    def process(self, events):  # noqa: ANN001, ANN201
        raise ZeroDivisionError("the user's bug")

    def postprocess(self, accumulator):  # noqa: ANN001, ANN201
        return accumulator


def test_failed_run_is_recorded_and_the_error_reaches_the_user() -> None:
    runner = Runner(processor.IterativeExecutor(status=False, retries=0), schema=NanoAODSchema)
    with pytest.raises(Exception, match="the user's bug"):
        runner({"DYJetsToLL": FILESET["DYJetsToLL"]}, Broken(), treename="Events")
    record = runner.last_record
    assert record.status == "failure" and "the user's bug" in record.error and record.events == 0
