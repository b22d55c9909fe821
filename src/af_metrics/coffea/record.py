"""The record of one analysis run: what the user's kernel sends and what the ledger keeps.

One strict pydantic model serves both sides, so the push endpoint validates exactly what the
client produces; every string and list is bounded because the endpoint is user-controlled.
Only light dependencies here: the facility's ``serve`` imports this module without coffea.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from af_metrics.coffea.buckets import CHUNK_EVENTS_BOUNDS, CHUNK_SECONDS_BOUNDS

MAX_DATASETS = 200
Name = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
# the ledger keeps chunk-level counts in 32-bit columns and event/byte totals in 64-bit ones; sums
# are taken as doubles, exact up to 2**53 (a petabyte is 2**50 bytes)
SmallCount = Annotated[int, Field(ge=0, le=2**31 - 1)]
Count = Annotated[int, Field(ge=0, le=2**53)]
Seconds = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
Epoch = Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetFigures(Strict):
    """What a run did on one dataset."""

    name: Name
    events: Count = 0
    bytes_read: Count = 0
    process_seconds: Seconds = 0.0
    chunks: SmallCount = 0


class Distribution(Strict):
    """Counts per bucket of a fixed-bound histogram; the last count is the +Inf bucket."""

    counts: list[SmallCount]


class RunRecord(Strict):
    """One analysis run. ``user`` is informational: the facility takes identity from the token."""

    schema_version: Literal[1] = 1
    run_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
    user: Annotated[str, StringConstraints(max_length=255)] = ""
    processor: Name
    executor: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,32}$")]
    status: Literal["success", "failure"]
    error: Annotated[str, StringConstraints(max_length=500)] | None = None
    started: Epoch
    ended: Epoch
    wall_seconds: Seconds
    events: Count
    chunks: SmallCount
    bytes_read: Count
    columns_read: SmallCount
    process_seconds: Seconds
    chunk_seconds: Seconds = 0.0  # summed wall time of chunks on the workers (open + build + process)
    threads: Annotated[int, Field(ge=1, le=1_000_000)]
    datasets: Annotated[list[DatasetFigures], Field(max_length=MAX_DATASETS)] = []
    chunk_duration: Distribution
    chunk_events: Distribution
    coffea_version: Annotated[str, StringConstraints(max_length=64)] = ""

    @model_validator(mode="after")
    def _consistent(self) -> "RunRecord":
        if self.ended < self.started:
            raise ValueError("ended is before started")
        if len(self.chunk_duration.counts) != len(CHUNK_SECONDS_BOUNDS) + 1:
            raise ValueError(f"chunk_duration needs {len(CHUNK_SECONDS_BOUNDS) + 1} counts")
        if len(self.chunk_events.counts) != len(CHUNK_EVENTS_BOUNDS) + 1:
            raise ValueError(f"chunk_events needs {len(CHUNK_EVENTS_BOUNDS) + 1} counts")
        if len({d.name for d in self.datasets}) != len(self.datasets):
            raise ValueError("a dataset is listed twice")
        return self

    # -- derived figures (never sent: computed wherever they are needed) ---------------------

    @property
    def events_per_second(self) -> float | None:
        return _ratio(self.events, self.wall_seconds)

    @property
    def events_per_thread_second(self) -> float | None:
        return _ratio(self.events, self.wall_seconds * self.threads)

    @property
    def megabytes_per_second(self) -> float | None:
        return _ratio(self.bytes_read / 1e6, self.wall_seconds)

    @property
    def cpu_efficiency(self) -> float | None:
        """Summed process time over what the threads could have done in the wall time."""
        return _ratio(self.process_seconds, self.wall_seconds * self.threads)

    def derived(self) -> dict[str, float | None]:
        return {
            "events_per_second": self.events_per_second,
            "events_per_thread_second": self.events_per_thread_second,
            "megabytes_per_second": self.megabytes_per_second,
            "cpu_efficiency": self.cpu_efficiency,
        }


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 and math.isfinite(den) else None
