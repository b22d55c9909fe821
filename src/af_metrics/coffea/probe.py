"""Per-chunk measurement inside coffea's own work function, through its Checkpointer hook.

coffea calls ``checkpointer.load`` before a chunk's file is opened and ``checkpointer.save``
after the processor returned, on the worker that ran the chunk. ``ChunkProbe`` times that span
and adds the chunk's figures to the chunk's ``metrics`` dict, which coffea then merges across
chunks with its accumulators (numbers add, arrays add element-wise, sets unite): the per-run
distributions arrive with the output at no extra round trip. A user's own checkpointer keeps
working: the probe wraps it. The user's processor is untouched.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np
from coffea.processor import CheckpointerABC

from af_metrics.coffea.buckets import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS, bucket_index

KEY = "af_metrics"
# per-dataset vector layout
EVENTS, BYTES, PROCESS, CHUNKS, CHUNK_SECONDS = range(5)


class ChunkProbe(CheckpointerABC):
    """A checkpointer that measures each chunk and delegates storage to ``inner`` (if any)."""

    def __init__(self, run_id: str, inner: CheckpointerABC | None = None) -> None:
        self.run_id = run_id
        self.inner = inner
        self._starts: dict[tuple, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "inner": self.inner}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["run_id"], state["inner"])

    def __dask_tokenize__(self) -> tuple:
        # Dask keys tasks by their function's token: one per run, never reused across runs
        return ("af-metrics-chunk-probe", self.run_id)

    def load(self, metadata: Any, processor_instance: Any) -> Any:
        self._starts[_chunk_key(metadata)] = time.perf_counter()
        return None if self.inner is None else self.inner.load(metadata, processor_instance)

    def save(self, output: Any, metadata: Any, processor_instance: Any) -> None:
        started = self._starts.pop(_chunk_key(metadata), None)
        elapsed = 0.0 if started is None else time.perf_counter() - started
        metrics = output.get("metrics") if isinstance(output, dict) else None
        if isinstance(metrics, dict):
            metrics[KEY] = chunk_figures(metadata["dataset"], metrics, elapsed)
        if self.inner is not None:
            self.inner.save(output, metadata, processor_instance)


def chunk_figures(dataset: str, metrics: dict, elapsed: float) -> dict[str, Any]:
    """One chunk's contribution, shaped to merge with coffea's accumulate()."""
    events = int(metrics.get("entries", 0))
    vector = np.zeros(5)
    vector[[EVENTS, BYTES, PROCESS, CHUNKS, CHUNK_SECONDS]] = (
        events, metrics.get("bytesread", 0), metrics.get("processtime", 0.0), 1, elapsed,
    )
    duration = np.zeros(len(CHUNK_SECONDS_BOUNDS) + 1, dtype=np.int64)
    duration[bucket_index(elapsed, CHUNK_SECONDS_BOUNDS)] = 1
    size = np.zeros(len(CHUNK_EVENTS_BOUNDS) + 1, dtype=np.int64)
    size[bucket_index(events, CHUNK_EVENTS_BOUNDS)] = 1
    return {"datasets": {dataset: vector}, "duration": duration, "events": size, "workers": {_where()}}


def _chunk_key(metadata: Any) -> tuple:
    return (
        metadata["dataset"], metadata["filename"], metadata["treename"],
        metadata["entrystart"], metadata["entrystop"], threading.get_ident(),
    )


def _where() -> tuple[str, int]:
    """The Dask worker (address, threads) running this chunk, else this process with one thread."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            worker = distributed.get_worker()
            return worker.address, int(worker.state.nthreads)
        except ValueError:
            pass
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}", 1
