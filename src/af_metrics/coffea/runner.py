"""Recording coffea runs: a drop-in ``Runner`` and ``track()`` for code that builds its own.

Both go through ``recorded_run``: for the length of one ``Runner.run`` it turns coffea's
``savemetrics`` on and installs a ``ChunkProbe`` as checkpointer, then puts the runner back,
removes what it added from the output, and hands a ``RunRecord`` to the delivery. The caller
gets exactly what coffea would have returned.
"""

from __future__ import annotations

import getpass
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import coffea
from coffea import processor

from af_metrics.coffea.probe import BYTES, CHUNK_SECONDS, CHUNKS, EVENTS, KEY, PROCESS, ChunkProbe
from af_metrics.coffea.record import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS, DatasetFigures, Distribution, RunRecord

log = logging.getLogger("af_metrics.coffea")

OnRecord = Callable[[RunRecord], None]
_ORIGINAL_RUN = processor.Runner.run
_OK, _ERR = getattr(processor, "Ok", ()), getattr(processor, "Err", ())  # result types: coffea >= 2026.9
_state = threading.local()  # .recording: a run of this thread is being recorded


def recorded_run(runner: processor.Runner, run: Callable[..., Any], on_record: OnRecord,
                 fileset: Any, processor_instance: Any, **kwargs: Any) -> Any:
    """``run(runner, fileset, processor_instance, **kwargs)``, recorded once (re-entry passes through)."""
    if getattr(_state, "recording", False):
        return run(runner, fileset, processor_instance, **kwargs)
    run_id = uuid.uuid4().hex
    user_metrics, user_checkpointer = runner.savemetrics, runner.checkpointer
    started, tic = time.time(), time.perf_counter()
    threads_before = _client_threads(runner.executor)
    runner.savemetrics, runner.checkpointer = True, ChunkProbe(run_id, user_checkpointer)
    _state.recording = True
    try:
        result = run(runner, fileset, processor_instance, **kwargs)
    except BaseException as exc:
        _emit(on_record, _record(run_id, runner, processor_instance, started, time.perf_counter() - tic,
                                 None, threads_before, exc))
        raise
    finally:
        _state.recording = False
        runner.savemetrics, runner.checkpointer = user_metrics, user_checkpointer
    wall = time.perf_counter() - tic
    wrapped = result.value if _OK and isinstance(result, (_OK, _ERR)) else result
    failure = result.exception if _ERR and isinstance(result, _ERR) else None
    figures, columns = None, ()
    if isinstance(wrapped, dict):
        if wrapped.get("exception", 0) != 0:
            failure = wrapped["exception"]
        metrics = wrapped.get("metrics")
        if isinstance(metrics, dict):
            figures = metrics.pop(KEY, None)
            columns = metrics.get("columns", ())
        if not user_metrics:
            wrapped.pop("metrics", None)
    _emit(on_record, _record(run_id, runner, processor_instance, started, wall, figures, threads_before, failure,
                             columns))
    return result


def _record(run_id: str, runner: processor.Runner, processor_instance: Any, started: float, wall: float,
            figures: dict | None, threads_before: int | None, failure: BaseException | None,
            columns: Any = ()) -> RunRecord:
    figures = figures or {}
    per_dataset = figures.get("datasets", {})
    datasets = [
        DatasetFigures(name=name, events=int(v[EVENTS]), bytes_read=int(v[BYTES]), process_seconds=float(v[PROCESS]),
                       chunks=int(v[CHUNKS]))
        for name, v in sorted(per_dataset.items())
    ]
    return RunRecord(
        run_id=run_id,
        user=os.environ.get("JUPYTERHUB_USER") or getpass.getuser(),
        processor=_processor_name(processor_instance),
        executor=executor_kind(runner.executor),
        status="success" if failure is None else "failure",
        error=None if failure is None else f"{type(failure).__name__}: {failure}"[:500],
        started=started,
        ended=started + wall,
        wall_seconds=wall,
        events=sum(d.events for d in datasets),
        chunks=sum(d.chunks for d in datasets),
        bytes_read=sum(d.bytes_read for d in datasets),
        columns_read=len({c.rsplit("-", 1)[0] for c in columns}),  # coffea names buffers "branch-kind"
        process_seconds=sum(d.process_seconds for d in datasets),
        chunk_seconds=float(sum(v[CHUNK_SECONDS] for v in per_dataset.values())),
        threads=_threads(runner.executor, threads_before, figures.get("workers", set())),
        datasets=datasets,
        chunk_duration=Distribution(counts=_counts(figures.get("duration"), CHUNK_SECONDS_BOUNDS)),
        chunk_events=Distribution(counts=_counts(figures.get("events"), CHUNK_EVENTS_BOUNDS)),
        coffea_version=coffea.__version__,
    )


def _counts(array: Any, bounds: tuple[float, ...]) -> list[int]:
    return [0] * (len(bounds) + 1) if array is None else [int(c) for c in array]


def _processor_name(processor_instance: Any) -> str:
    if isinstance(processor_instance, processor.ProcessorABC):
        return type(processor_instance).__name__
    return getattr(processor_instance, "__qualname__", None) or type(processor_instance).__name__


def executor_kind(executor: Any) -> str:
    """'futures', 'dask', 'iterative', ... from coffea's executor class name."""
    name = type(executor).__name__.lower().removesuffix("executor")
    return name or "other"


def _client_threads(executor: Any) -> int | None:
    client = getattr(executor, "client", None)
    if client is None:
        return None
    try:
        return sum(client.nthreads().values()) or None
    except Exception:  # a closed or unreachable client: fall back to what the chunks saw
        return None


def _threads(executor: Any, before: int | None, workers: set[tuple[str, int]]) -> int:
    """Threads the run could use: a Dask client's, a futures pool's workers, else one."""
    if executor_kind(executor) == "dask":
        seen = sum(dict(workers).values())
        return max(before or 0, _client_threads(executor) or 0, seen, 1)
    return max(int(getattr(executor, "workers", 1) or 1), 1)


def _emit(on_record: OnRecord, record: RunRecord) -> None:
    """Hand the record over; a delivery problem never breaks the user's analysis."""
    try:
        on_record(record)
    except Exception:
        log.warning("af-metrics could not deliver the record of run %s", record.run_id, exc_info=True)


def _default_delivery(record: RunRecord) -> None:
    from af_metrics.coffea.delivery import Delivery

    Delivery.from_env().deliver(record)


class Runner(processor.Runner):
    """coffea's ``processor.Runner`` (same arguments, same return) that records every run.

    The last record is kept in ``last_record``.
    """

    last_record: RunRecord | None = None

    def run(self, fileset: Any, processor_instance: Any, **kwargs: Any) -> Any:
        def keep(record: RunRecord) -> None:
            self.last_record = record
            _default_delivery(record)

        return recorded_run(self, _ORIGINAL_RUN, keep, fileset, processor_instance, **kwargs)


@dataclass
class Tracker:
    """What ``track()`` yields: the records of the runs made inside the block."""

    records: list[RunRecord] = field(default_factory=list)


@contextmanager
def track(deliver: OnRecord | None = None) -> Iterator[Tracker]:
    """Record every coffea ``Runner`` run made inside the block, whoever built the Runner."""
    tracker = Tracker()
    send = deliver or _default_delivery

    def keep(record: RunRecord) -> None:
        tracker.records.append(record)
        send(record)

    def run(runner: processor.Runner, fileset: Any, processor_instance: Any, **kwargs: Any) -> Any:
        return recorded_run(runner, _ORIGINAL_RUN, keep, fileset, processor_instance, **kwargs)

    outer, processor.Runner.run = processor.Runner.run, run
    try:
        yield tracker
    finally:
        processor.Runner.run = outer
