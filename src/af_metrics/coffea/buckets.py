"""Bucket bounds of the per-chunk distributions, light enough to import on every worker.

Fixed bounds (upper, +Inf implicit), so that chunk histograms add up across runs, users and
the facility.
"""

from __future__ import annotations

from collections.abc import Iterable

CHUNK_SECONDS_BOUNDS: tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
CHUNK_EVENTS_BOUNDS: tuple[float, ...] = (1e2, 1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 1e6, 5e6)


def bucket_index(value: float, bounds: tuple[float, ...]) -> int:
    """Index of the first bucket whose upper bound is >= value (Prometheus ``le``)."""
    for i, upper in enumerate(bounds):
        if value <= upper:
            return i
    return len(bounds)


def bucket_counts(values: Iterable[float], bounds: tuple[float, ...]) -> list[int]:
    """Histogram counts (last = +Inf) of ``values`` over ``bounds``."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bucket_index(v, bounds)] += 1
    return counts
