"""Recording coffea analysis runs: ``Runner`` (drop-in for ``coffea.processor.Runner``), ``track()``
for code that builds its own Runner, ``track_compute()`` for the dask-awkward path.

Imports are lazy so that the facility side (record model, exposition) works without coffea.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Runner", "track", "track_compute", "record_read_report"]


def __getattr__(name: str) -> Any:
    if name in ("Runner", "track"):
        from af_metrics.coffea import runner

        return getattr(runner, name)
    if name in ("track_compute", "record_read_report"):
        from af_metrics.coffea import dask_awkward

        return getattr(dask_awkward, name)
    raise AttributeError(name)
