"""Wall-time overhead of recording a coffea run: the same analysis with and without af-metrics.

The input is >= 1M real NanoAOD events: the muon and PuppiMET branches of the three CMS samples
in ``shared/data/nanoaod`` tiled into one narrow file (built once, cached), listed several times
in the fileset. Runs alternate plain / recorded (then recorded / plain, to cancel drift) after
one warm-up run of each; the figures are the difference of the medians and the median of the
differences within each adjacent pair; the recording's own costs are also timed in isolation. The recorded runs do the
whole delivery: journal, spool, and a push attempt to a facility that is down (worst case).

Run: ``python -m bench.coffea_overhead [--repeats 15] [--events 1000000] [--executor futures]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path

import awkward as ak
import coffea
import numpy as np
import platformdirs
import uproot
from coffea import processor
from coffea.nanoevents import NanoAODSchema
from rich.progress import Progress

import af_metrics.coffea as afc
from af_metrics.coffea.examples import DimuonZPeak

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "nanoaod"
CACHE = Path(platformdirs.user_cache_dir("af-metrics")) / "bench"
RESULTS = REPO / "bench" / "results"
MUON = ("pt", "eta", "phi", "mass", "charge", "tightId", "pfRelIso04_all")
EVENT_ID = ("run", "luminosityBlock", "event")
FILE_COPIES = 4  # the fileset lists the tiled file this many times


def tiled_file(events_per_file: int) -> Path:
    """A NanoAOD-shaped file of ``events_per_file`` events tiled from the real samples (cached)."""
    path = CACHE / f"nano_tiled_{events_per_file}.root"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    branches = [*EVENT_ID, "PuppiMET_pt", "PuppiMET_phi", "nMuon", *(f"Muon_{m}" for m in MUON)]
    parts = [uproot.open(f"{SAMPLES / name}:Events").arrays(branches) for name in ("nano_dy.root", "nano_dimuon.root", "nano_tt_v15.root")]
    sample = ak.concatenate(parts)
    idx = np.resize(np.arange(len(sample)), events_per_file)
    tiled = sample[idx]
    tmp = path.with_suffix(".tmp")
    data = {
        **{b: tiled[b] for b in EVENT_ID},
        "PuppiMET_pt": tiled.PuppiMET_pt, "PuppiMET_phi": tiled.PuppiMET_phi,
        "Muon": ak.zip({m: tiled[f"Muon_{m}"] for m in MUON}),
    }
    with uproot.recreate(tmp) as out:  # a TTree (nMuon, Muon_pt, ...) as NanoAOD has, not an RNTuple
        out.mktree("Events", {k: v.type for k, v in data.items()}).extend(data)
    os.replace(tmp, path)
    return path


def executor(kind: str) -> processor.executor.ExecutorBase:
    if kind == "futures":
        return processor.FuturesExecutor(workers=2, status=False)
    return processor.IterativeExecutor(status=False)


def one_run(recorded: bool, fileset: dict, kind: str, chunksize: int) -> float:
    runner_class = afc.Runner if recorded else processor.Runner
    runner = runner_class(executor(kind), schema=NanoAODSchema, chunksize=chunksize)
    tic = time.perf_counter()
    out = runner(fileset, DimuonZPeak(), treename="Events")
    wall = time.perf_counter() - tic
    assert sum(out["events"].values()) == sum(n for n in fileset_events(fileset))
    return wall


def fileset_events(fileset: dict) -> list[int]:
    return [uproot.open(f"{f}:Events").num_entries for files in fileset.values() for f in files]


def fixed_costs(directory: Path, n: int = 50) -> dict[str, float]:
    """The recording's own costs, measured in isolation (the wall-time difference is within noise):
    the delivery at the end of a run (journal, fsync'ed spool, start of the background push) and
    the probe's work per chunk on the worker."""
    from af_metrics.coffea.delivery import Delivery, journal_path, wait_for_delivery
    from af_metrics.coffea.probe import ChunkProbe
    from af_metrics.coffea.record import RunRecord

    record = RunRecord.model_validate_json(journal_path(directory).read_text().splitlines()[-1])
    delivery, deliver_s = Delivery.from_env(), []
    for _ in range(n):
        wait_for_delivery()
        tic = time.perf_counter()
        delivery.deliver(record.model_copy(update={"run_id": uuid.uuid4().hex}))
        deliver_s.append(time.perf_counter() - tic)
    wait_for_delivery()
    probe, meta = ChunkProbe("bench"), {"dataset": "d", "filename": "f", "treename": "Events", "entrystart": 0, "entrystop": 1}
    tic = time.perf_counter()
    for _ in range(1000):
        probe.load(meta, None)
        probe.save({"metrics": {"entries": 125_000, "bytesread": 10**7, "processtime": 0.1}}, meta, None)
    return {"delivery_ms_median": 1000 * statistics.median(deliver_s), "probe_us_per_chunk": 1000 * (time.perf_counter() - tic)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="measured runs of each kind (>= 5)")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the whole fileset (>= 1M)")
    parser.add_argument("--executor", choices=("futures", "iterative"), default="futures")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # NanoAOD cross-references absent from narrow files
    os.environ["PYTHONWARNINGS"] = "ignore::RuntimeWarning"  # ... and in the futures workers

    per_file = -(-args.events // FILE_COPIES)
    path = tiled_file(per_file)
    fileset = {"ZToMuMu_tiled": [str(path)] * FILE_COPIES}
    total = per_file * FILE_COPIES
    chunksize = -(-per_file // 2)  # two chunks per file

    with tempfile.TemporaryDirectory() as spool:
        os.environ["AF_METRICS_ANALYSIS_DIR"] = spool
        os.environ["AF_METRICS_PUSH_URL"] = "http://127.0.0.1:9"  # discard port: the facility is down
        os.environ["JUPYTERHUB_API_TOKEN"] = "bench"
        order = [(False, True) if i % 2 == 0 else (True, False) for i in range(args.repeats)]
        walls: dict[bool, list[float]] = {False: [], True: []}
        with Progress() as progress:
            task = progress.add_task("coffea runs", total=2 * (args.repeats + 1))
            for recorded in (False, True):  # warm-up: imports, numba, page cache
                one_run(recorded, fileset, args.executor, chunksize)
                progress.advance(task)
            for pair in order:
                for recorded in pair:
                    walls[recorded].append(one_run(recorded, fileset, args.executor, chunksize))
                    progress.advance(task)
        spooled = len(Path(spool, "spool.jsonl").read_text().splitlines())
        fixed = fixed_costs(Path(spool))

    plain, recorded = statistics.median(walls[False]), statistics.median(walls[True])
    result = {
        "benchmark": "coffea_overhead", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "coffea": coffea.__version__, "executor": args.executor,
        "events": total, "chunks": FILE_COPIES * 2, "repeats": args.repeats,
        "plain_wall_s": walls[False], "recorded_wall_s": walls[True],
        "plain_median_s": plain, "recorded_median_s": recorded,
        "overhead_percent": 100 * (recorded - plain) / plain, "overhead_ms": 1000 * (recorded - plain),
        "fastest_overhead_percent": 100 * (min(walls[True]) - min(walls[False])) / min(walls[False]),
        # each recorded run against the plain run next to it: drifts of the machine's load cancel
        "paired_overhead_percent": 100 * statistics.median((r - p) / p for p, r in zip(walls[False], walls[True])),
        "load_average": os.getloadavg()[0], "records_spooled": spooled, **fixed,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"coffea-overhead-{result['date'][:19].replace(':', '')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_wall_s")}, indent=2))
    print(f"| {result['date'][:10]} | {args.executor} | {total:,} | {args.repeats} | {plain:.3f} s | {recorded:.3f} s "
          f"| {result['overhead_percent']:+.1f} % ({result['overhead_ms']:+.0f} ms) | {result['paired_overhead_percent']:+.1f} % "
          f"| {result['delivery_ms_median']:.1f} ms | {result['probe_us_per_chunk']:.0f} us | {result['load_average']:.1f} |")
    print(f"fixed costs: delivery {result['delivery_ms_median']:.1f} ms per run, probe {result['probe_us_per_chunk']:.0f} us per chunk")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
