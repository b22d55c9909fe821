"""SQL building blocks shared by KPIs, portable across SQLite and PostgreSQL.

- ``local_day``: the facility-local day ordinal of an epoch column, computed in SQL from the
  zone's UTC offsets over the range (so rows can be bucketed through ``calendar``).
- ``nearest_rank``: percentiles without percentile functions (SQLite has none). The P-th
  percentile of n sorted values is the value of rank ceil(P*n/100) = (P*n + 99) / 100 in
  integer arithmetic (the "nearest-rank" definition: always an observed value).
- ``histogram_quantile``: a quantile from cumulative histogram buckets, interpolated like
  Prometheus' ``histogram_quantile``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache

from af_metrics.kpis.registry import Query
from af_metrics.timeutil import day_start, zone

EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
DAY_SECONDS = 86400


def epoch_bounds(q: Query) -> dict[str, float]:
    """``:t0``/``:t1``: epoch seconds of the range's first local midnight and the one after it."""
    return {"t0": day_start(q.period.first, q.tz), "t1": day_start(q.period.last + 1, q.tz)}


def started_in_range(q: Query, table: str, columns: str, where: str = "1 = 1") -> str:
    """SQL for ``columns`` of the ``table`` rows whose ``started`` is in the range, with the
    ``bucket`` of their local start day (no day arithmetic when the range is one bucket)."""
    if q.by == "range":
        return f"SELECT {q.bucket} AS bucket, {columns} FROM {table} WHERE started >= :t0 AND started < :t1 AND {where}"
    return (
        f"SELECT {q.bucket} AS bucket, s.* FROM"
        f" (SELECT {columns}, {local_day(q, 'started')} AS day FROM {table}"
        f"  WHERE started >= :t0 AND started < :t1 AND {where}) s"
        f" JOIN calendar c ON c.day = s.day"
    )


def local_day(q: Query, column: str) -> str:
    """SQL for the local day ordinal of epoch ``column`` (valid for times within the range)."""
    bounds = epoch_bounds(q)
    spans = _offset_spans(q.tz, bounds["t0"], bounds["t1"])
    if len(spans) == 1:
        offset = str(spans[0][1])
    else:
        whens = " ".join(f"WHEN {column} < {start!r} THEN {prev}" for (start, _), (_, prev) in zip(spans[1:], spans))
        offset = f"CASE {whens} ELSE {spans[-1][1]} END"
    shifted = f"({column} + {offset}) / {DAY_SECONDS}"
    floor = f"CAST(FLOOR({shifted}) AS INTEGER)" if q.dialect == "postgresql" else f"CAST({shifted} AS INTEGER)"
    return f"({floor} + {EPOCH_ORDINAL})"  # times after 1970: SQLite's truncation is floor


@lru_cache(maxsize=64)
def _offset_spans(tz: str, t0: float, t1: float) -> tuple[tuple[float, int], ...]:
    """(start epoch, UTC offset in seconds) for each stretch of constant offset in [t0, t1]."""
    z = zone(tz)

    def offset(t: float) -> int:
        return int(dt.datetime.fromtimestamp(t, z).utcoffset().total_seconds())

    spans = [(t0, offset(t0))]
    t = t0
    while t < t1:  # one step per day of the range, a bisection per change of offset
        nxt = min(t + DAY_SECONDS, t1)
        if offset(nxt) != spans[-1][1]:
            lo, hi = t, nxt  # offset(lo) is the old one, offset(hi) the new one
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == spans[-1][1] else (lo, mid)
            spans.append((float(hi), offset(hi)))
        t = nxt
    return tuple(spans)


def nearest_rank(values_sql: str, percentiles: Sequence[int]) -> str:
    """SQL giving ``bucket, p<P>...`` from a query of ``bucket, v`` rows (NULL ``v`` ignored)."""
    ranks = [f"({p} * n + 99) / 100" for p in percentiles]
    picks = ", ".join(f"MAX(CASE WHEN rn = {rank} THEN v END) AS p{p}" for p, rank in zip(percentiles, ranks))
    return (
        f"SELECT bucket, {picks} FROM ("
        f" SELECT bucket, v, ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY v) AS rn,"
        f" COUNT(*) OVER (PARTITION BY bucket) AS n FROM ({values_sql}) vals WHERE v IS NOT NULL"
        f") ranked WHERE rn IN ({', '.join(ranks)}) GROUP BY bucket"
    )


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Quantile ``q`` (0..1) of cumulative ``(upper bound, count)`` buckets, the last being +Inf.

    As Prometheus: find the bucket holding rank q*total and interpolate linearly inside it
    (from 0 for the first bucket); a rank in the +Inf bucket gives the highest finite bound.
    """
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for i, (le, count) in enumerate(buckets):
        if count >= rank:
            if i == len(buckets) - 1:
                return lower if i > 0 else None
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower
