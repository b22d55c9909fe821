"""Recording coffea analysis runs: ``Runner`` (drop-in for ``coffea.processor.Runner``) and ``track()``.

Imports are lazy so that the facility side (record model, exposition) works without coffea.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Runner", "track", "record_read_report"]


def __getattr__(name: str) -> Any:
    if name in ("Runner", "track"):
        from af_metrics.coffea import runner

        return getattr(runner, name)
    if name == "record_read_report":
        from af_metrics.coffea import dask_awkward

        return dask_awkward.record_read_report
    raise AttributeError(name)
