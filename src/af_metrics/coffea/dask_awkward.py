"""Recording the dask-awkward path: ``NanoEventsFactory.from_root(..., mode="dask")``.

There is no Runner there: the user builds a task graph and calls ``dask.compute``. With
``uproot_options={"allow_read_errors_with_report": True}`` uproot adds a *read report*, one
entry per partition, with its read duration and the source's performance counters (bytes
requested). ``track_compute`` times the compute and turns that report into a ``RunRecord``::

    events, report = NanoEventsFactory.from_root(fileset, mode="dask",
        uproot_options={"allow_read_errors_with_report": True}).events()
    with track_compute("DimuonZPeak", dataset="DYJetsToLL") as run:
        (hist,), (report,) = dask.compute((hist,), (report,))
        run.add_report(report)

Events per partition come from the report's entry range (a chunked read); for reads split by
``steps_per_file`` uproot reports only the step index, so pass ``events=`` when known.
"""

from __future__ import annotations

import ast
import getpass
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from af_metrics.coffea.buckets import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS, bucket_counts
from af_metrics.coffea.record import DatasetFigures, Distribution, RunRecord

OnRecord = Callable[[RunRecord], None]


@dataclass(frozen=True, slots=True)
class Partition:
    """One entry of uproot's read report."""

    file: str
    events: int | None
    seconds: float
    bytes_read: int
    error: str | None


def partitions(report: Any) -> list[Partition]:
    """Parse a computed read report (an awkward Array or a list of dicts)."""
    rows = report.tolist() if hasattr(report, "tolist") else list(report)
    return [_partition(row) for row in rows]


def _partition(row: Mapping[str, Any]) -> Partition:
    args = [_literal(a) for a in row.get("args") or []]
    events = None
    if len(args) == 3 and all(isinstance(a, int) for a in args[1:]):  # (ttree, start, stop)
        events = args[2] - args[1]
    elif len(args) == 5 and args[4] is True:  # (file, object, start, stop, is_chunk)
        events = args[3] - args[2]
    counters = row.get("performance_counters") or {}
    error = row.get("exception")
    return Partition(
        file=str(args[0]) if args else "",
        events=events,
        seconds=float(row.get("duration") or 0.0),
        bytes_read=int(counters.get("num_requested_bytes", 0)),
        error=None if error is None else f"{error}: {row.get('message') or ''}"[:500],
    )


def _literal(text: Any) -> Any:
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


@dataclass
class ComputeRun:
    """What ``track_compute`` yields: hand it the computed report(s)."""

    processor: str
    dataset: str | Mapping[str, Iterable[str]]
    events: int | None = None
    threads: int | None = None
    columns_read: int = 0
    parts: list[Partition] = field(default_factory=list)
    record: RunRecord | None = None

    def add_report(self, report: Any) -> None:
        self.parts.extend(partitions(report))

    def to_record(self, started: float, wall: float, failure: BaseException | None) -> RunRecord:
        per: dict[str, list[Partition]] = {}
        for p in self.parts:
            per.setdefault(self._dataset_of(p.file), []).append(p)
        datasets = [
            DatasetFigures(name=name, events=sum(p.events or 0 for p in ps), bytes_read=sum(p.bytes_read for p in ps),
                           process_seconds=sum(p.seconds for p in ps), chunks=len(ps))
            for name, ps in sorted(per.items())
        ]
        errors = [p.error for p in self.parts if p.error]
        if failure is not None:
            errors.insert(0, f"{type(failure).__name__}: {failure}"[:500])
        counted = sum(d.events for d in datasets)
        return RunRecord(
            run_id=uuid.uuid4().hex, user=os.environ.get("JUPYTERHUB_USER") or getpass.getuser(),
            processor=self.processor, executor="dask-awkward", status="failure" if errors else "success",
            error=errors[0] if errors else None, started=started, ended=started + wall, wall_seconds=wall,
            events=self.events if self.events is not None else counted, chunks=len(self.parts),
            bytes_read=sum(d.bytes_read for d in datasets), columns_read=self.columns_read,
            process_seconds=sum(p.seconds for p in self.parts), chunk_seconds=sum(p.seconds for p in self.parts),
            threads=self.threads or _client_threads() or os.cpu_count() or 1, datasets=datasets,
            chunk_duration=Distribution(counts=bucket_counts([p.seconds for p in self.parts], CHUNK_SECONDS_BOUNDS)),
            chunk_events=Distribution(counts=bucket_counts([p.events or 0 for p in self.parts], CHUNK_EVENTS_BOUNDS)),
        )

    def _dataset_of(self, file: str) -> str:
        if isinstance(self.dataset, str):
            return self.dataset
        for name, files in self.dataset.items():
            if any(file == f or file.endswith(f) or f.endswith(file) for f in files):
                return name
        return "_unknown"


def _client_threads() -> int | None:
    try:
        from distributed import get_client

        return sum(get_client().nthreads().values()) or None
    except (ImportError, ValueError):
        return None


@contextmanager
def track_compute(processor: str, dataset: str | Mapping[str, Iterable[str]], *, events: int | None = None,
                  threads: int | None = None, columns_read: int = 0, deliver: OnRecord | None = None) -> Iterator[ComputeRun]:
    """Time the block (a ``dask.compute``) and record it with the read report given to ``add_report``."""
    from af_metrics.coffea.runner import _default_delivery, _emit

    run = ComputeRun(processor, dataset, events, threads, columns_read)
    started, tic = time.time(), time.perf_counter()
    try:
        yield run
    except BaseException as exc:
        run.record = run.to_record(started, time.perf_counter() - tic, exc)
        _emit(deliver or _default_delivery, run.record)
        raise
    run.record = run.to_record(started, time.perf_counter() - tic, None)
    _emit(deliver or _default_delivery, run.record)


def record_read_report(report: Any, *, processor: str, dataset: str | Mapping[str, Iterable[str]], started: float,
                       ended: float, **options: Any) -> RunRecord:
    """A ``RunRecord`` from a report computed outside ``track_compute`` (not delivered)."""
    run = ComputeRun(processor, dataset, options.get("events"), options.get("threads"), options.get("columns_read", 0))
    run.add_report(report)
    return run.to_record(started, ended - started, None)
