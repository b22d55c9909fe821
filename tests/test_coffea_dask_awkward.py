"""The dask-awkward path: uproot's read report turned into a run record.

dask-awkward itself cannot be installed next to this project's Dask (it needs dask < 2025.4),
so the report entries are made by uproot's own report builder from real reads of the real
NanoAOD samples, with the source's real performance counters, exactly as uproot's dask reader
makes them per partition.
"""

from __future__ import annotations

import time
from pathlib import Path

import awkward as ak
import pytest
import uproot
from uproot._dask import _report_failure, _report_success

from af_metrics.coffea import track_compute
from af_metrics.coffea.record import RunRecord

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "nanoaod"
FILES = {"DYJetsToLL": SAMPLES / "nano_dy.root", "TTbar_v15": SAMPLES / "nano_tt_v15.root"}


def read_partition(path: Path, start: int, stop: int) -> tuple[ak.Array, int]:
    """One partition as uproot's dask reader does it: open, read the columns, report."""
    tic = time.monotonic()
    with uproot.open(path) as f:
        tree = f["Events"]
        tree.arrays(["PuppiMET_pt", "Muon_pt"], entry_start=start, entry_stop=stop)
        counters = tree.source.performance_counters
        entry = _report_success(time.monotonic() - tic, str(path), "Events", start, stop, True, counters=counters)
    return entry, counters.num_requested_bytes


def test_read_report_becomes_a_record() -> None:
    parts = [read_partition(FILES["DYJetsToLL"], 0, 40), read_partition(FILES["TTbar_v15"], 0, 100),
             read_partition(FILES["TTbar_v15"], 100, 200)]
    report = ak.concatenate([entry for entry, _ in parts])
    delivered: list[RunRecord] = []
    with track_compute("DimuonZPeak", {name: [str(p)] for name, p in FILES.items()}, threads=2,
                       deliver=delivered.append) as run:
        run.add_report(report)
    [record] = delivered
    assert record is run.record and (record.executor, record.status, record.threads) == ("dask-awkward", "success", 2)
    assert record.events == 240 and record.chunks == 3
    assert record.bytes_read == sum(b for _, b in parts) > 0
    assert {d.name: (d.events, d.chunks) for d in record.datasets} == {"DYJetsToLL": (40, 1), "TTbar_v15": (200, 2)}
    assert sum(record.chunk_duration.counts) == 3


def test_failed_partition_marks_the_run_failed() -> None:
    entry, _ = read_partition(FILES["DYJetsToLL"], 0, 40)
    failed = _report_failure(OSError("file vanished"), time.time_ns(), str(FILES["TTbar_v15"]), "Events", 0, 200, True)
    delivered: list[RunRecord] = []
    with track_compute("MetHistogram", "mixed", deliver=delivered.append, threads=1) as run:
        run.add_report(ak.concatenate([entry, failed]))
    assert delivered[0].status == "failure" and "file vanished" in delivered[0].error


def test_an_exception_in_the_block_is_recorded_and_raised() -> None:
    delivered: list[RunRecord] = []
    with pytest.raises(RuntimeError, match="worker died"):
        with track_compute("MetHistogram", "DY", deliver=delivered.append, threads=1):
            raise RuntimeError("worker died")
    assert delivered[0].status == "failure" and delivered[0].events == 0
