"""Where the KPIs are defined: each one a SQL query over the ledger with a written definition.

Interface used by the CLI, the JSON API and reports:

- ``kpi_catalogue() -> list[dict]``: name, title, one-line definition, kind, unit, periodic.
- ``compute_kpi(ledger, name, *, from=None, to=None, period=None, by=None) -> dict``
- ``period_report(ledger, *, from=None, to=None, period=None) -> dict``
- ``KPIError`` for bad input (``unknown`` is True for an unknown KPI name).

Arguments are strings (or None) as they come from a command line or a URL query. KPIs live in
the modules of this package (``registry`` explains how to add one); every module here is
imported below so that its ``@register`` calls run.
"""

from __future__ import annotations

import importlib
import pkgutil

from af_metrics.kpis.compute import compute_kpi, kpi_catalogue, period_report
from af_metrics.kpis.registry import KPIError

__all__ = ["KPIError", "compute_kpi", "kpi_catalogue", "period_report"]

for _module in ("engagement", "spawns", *(m.name for m in pkgutil.iter_modules(__path__))):  # core KPIs first
    importlib.import_module(f"{__name__}.{_module}")
