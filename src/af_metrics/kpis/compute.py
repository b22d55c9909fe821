"""Running KPIs for callers: one KPI over a range, the catalogue, and the whole-period report."""

from __future__ import annotations

from collections.abc import Callable

from typing import Any

from af_metrics.kpis.periods import BY_CHOICES, PeriodError, buckets, iso_day, resolve
from af_metrics.kpis.registry import KPI, REGISTRY, KPIError, Query, Table, lookup


def kpi_catalogue() -> list[dict]:
    return [kpi.describe() for kpi in REGISTRY.values()]


def compute_kpi(ledger: Any, name: str, **kwargs: Any) -> dict:
    """One KPI over a range: ``{name, title, ..., from, to, by, columns, rows, notes}``.

    Series have columns ``period, value`` and one row per bucket (``by``, default day);
    tables have their own columns and cover the whole range.
    """
    kpi = lookup(name)
    args = _arguments(kwargs, ("from", "to", "period", "by"))
    by = args["by"] or "day"
    if by not in BY_CHOICES:
        raise KPIError(f"bad bucketing {by!r}: use one of {', '.join(BY_CHOICES)}")
    if args["by"] and not kpi.periodic:
        raise KPIError(f"{name} covers the whole range: it takes no bucketing")
    with ledger.engine.connect() as conn:
        return evaluate(kpi, _query(conn, ledger.tz, args, by if kpi.periodic else "range"))


def period_report(ledger: Any, progress: Callable[[str], None] | None = None, **kwargs: Any) -> dict:
    """Every KPI over one range: series as one headline value each, tables in full.

    ``progress`` is called with each KPI's name before it is computed (for a progress bar).
    """
    args = _arguments(kwargs, ("from", "to", "period"))
    results = []
    with ledger.engine.connect() as conn:
        q = _query(conn, ledger.tz, args, "range")
        for kpi in REGISTRY.values():
            if progress is not None:
                progress(kpi.name)
            results.append(evaluate(kpi, q))
    keep = ("name", "title", "definition", "unit", "notes")
    return {
        "from": iso_day(q.period.first), "to": iso_day(q.period.last), "timezone": q.tz,
        "headline": [{**{k: r[k] for k in keep}, "value": r["rows"][0][1]} for r in results if r["kind"] == "series"],
        "tables": [{**{k: r[k] for k in keep}, "columns": r["columns"], "rows": r["rows"]} for r in results if r["kind"] == "table"],
    }


def evaluate(kpi: KPI, q: Query) -> dict:
    """Run one KPI; a series gets one row per bucket (``kpi.missing`` where it has no value)."""
    q.notes = []
    value = kpi.compute(q)
    if isinstance(value, Table):
        columns, rows = value.columns, value.rows
    else:
        columns = ["period", "value"]
        rows = [[b.label, value.get(b.label, kpi.missing)] for b in q.buckets]
    return {
        **kpi.describe(),
        "from": iso_day(q.period.first), "to": iso_day(q.period.last), "by": q.by, "timezone": q.tz,
        "columns": columns, "rows": rows, "notes": q.notes,
    }


def _query(conn: Any, tz: str, args: dict[str, str | None], by: str) -> Query:
    try:
        period = resolve(args["from"], args["to"], args["period"], tz)
        return Query(conn, tz, period, by, buckets(conn, period, by))
    except PeriodError as exc:
        raise KPIError(str(exc)) from None


def _arguments(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, str | None]:
    """Accept ``from`` or ``from_``; reject anything unexpected."""
    args = {k.rstrip("_"): v for k, v in kwargs.items()}
    unexpected = set(args) - set(names)
    if unexpected:
        raise KPIError(f"unexpected argument(s): {', '.join(sorted(unexpected))}")
    return {n: (args.get(n) or None) for n in names}
