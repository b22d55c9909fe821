"""The KPI registry: one ``KPI`` record per indicator, added with the ``@register`` decorator.

Adding a KPI (e.g. in a new module ``kpis/dask.py``; every module of this package is imported
by ``af_metrics.kpis``, so nothing else needs editing)::

    from af_metrics.kpis.registry import Query, Series, register

    @register("dask_clusters", title="Dask clusters", unit="clusters",
              definition="Dask clusters started in the period.", missing=0)
    def dask_clusters(q: Query) -> Series:
        rows = q.conn.execute(sa.text(f"SELECT {q.bucket} AS bucket, COUNT(*) FROM ... "
                                      f"JOIN calendar c ON c.day = x.day "
                                      f"WHERE x.day BETWEEN :a AND :b GROUP BY {q.bucket}"), q.params)
        return dict(rows.all())

- ``kind="series"`` KPIs return ``{bucket label: value}``; ``q.bucket`` is the SQL expression of
  the bucket label over ``calendar c`` (or the whole range as one bucket), ``q.params`` binds
  ``:a``/``:b`` (first/last day ordinal) and ``:range_label``. Buckets without a value get
  ``missing`` (0 for counts, None for ratios), so the output has one row per bucket.
- ``kind="table"`` KPIs return a ``Table`` (columns, rows) over the whole range.
- ``q.once(key, fn)`` shares one SQL pass among related KPIs (DAU/WAU/MAU use one query).
- ``q.note(text)`` records how a value was obtained (e.g. which data source was used).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Connection

from af_metrics.kpis.periods import GRANULARITIES, Bucket, Period

Value = int | float | None
Series = dict[str, Value]


class KPIError(ValueError):
    """Bad input to a KPI (unknown name, bad dates); ``unknown`` marks an unknown KPI name."""

    def __init__(self, message: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class KPI:
    name: str
    title: str
    definition: str  # one line, also in docs/kpis.md
    kind: Literal["series", "table"]
    unit: str
    periodic: bool  # True: one value per --by bucket; False: one result for the whole range
    compute: Callable[["Query"], Series | Table]
    missing: Value = None  # value of a bucket with no data

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "title": self.title, "definition": self.definition,
            "kind": self.kind, "unit": self.unit, "periodic": self.periodic,
        }


REGISTRY: dict[str, KPI] = {}


def register(
    name: str, *, title: str, definition: str, unit: str, kind: Literal["series", "table"] = "series",
    periodic: bool | None = None, missing: Value = None,
) -> Callable[[Callable[["Query"], Series | Table]], Callable[["Query"], Series | Table]]:
    """Add the decorated function to the registry as KPI ``name`` (series are periodic by default)."""

    def add(fn: Callable[["Query"], Series | Table]) -> Callable[["Query"], Series | Table]:
        if name in REGISTRY:
            raise ValueError(f"KPI {name!r} registered twice")
        REGISTRY[name] = KPI(name, title, definition, kind, unit, kind == "series" if periodic is None else periodic, fn, missing)
        return fn

    return add


def lookup(name: str) -> KPI:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KPIError(f"unknown KPI {name!r} (see 'af-metrics kpi --list')", unknown=True) from None


@dataclass
class Query:
    """What a KPI's compute function gets: a connection, the range, the bucketing, the zone."""

    conn: Connection
    tz: str
    period: Period
    by: str  # one of GRANULARITIES or "range"
    buckets: list[Bucket]
    notes: list[str] = field(default_factory=list)
    _cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    @property
    def bucket(self) -> str:
        """SQL for the bucket label of a row joined to ``calendar c``."""
        if self.by == "range":
            return "CAST(:range_label AS VARCHAR(32))"
        return f"c.{GRANULARITIES[self.by]}"

    @property
    def params(self) -> dict[str, Any]:
        return {"a": self.period.first, "b": self.period.last, "range_label": self.period.label}

    def once(self, key: Any, fn: Callable[[], Any]) -> Any:
        """``fn()``, computed once per (key, bucketing) for this query."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
