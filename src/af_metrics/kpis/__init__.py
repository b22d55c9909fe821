"""Where the KPIs are defined: each one a SQL query over the ledger with a written definition.

Interface used by the CLI, the JSON API and reports (implemented in this package):

- ``kpi_catalogue() -> list[dict]``: name, title, one-line definition, kind, unit, periodic.
- ``compute_kpi(ledger, name, *, from_=None, to=None, period=None, by=None) -> dict``
- ``period_report(ledger, *, from_=None, to=None, period=None) -> dict``
- ``KPIError`` for bad input (``unknown`` is True for an unknown KPI name).
"""

from __future__ import annotations

from typing import Any


class KPIError(ValueError):
    def __init__(self, message: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown


def kpi_catalogue() -> list[dict]:
    raise NotImplementedError


def compute_kpi(ledger: Any, name: str, **kwargs: Any) -> dict:
    raise NotImplementedError


def period_report(ledger: Any, **kwargs: Any) -> dict:
    raise NotImplementedError
