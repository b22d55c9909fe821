"""Prometheus HTTP service discovery (``http_sd_configs``) of the discovered schedulers.

A Prometheus server pointed at ``/sd/dask`` scrapes every user's scheduler ``/metrics`` itself,
with ``user`` and ``cluster`` labels attached to each series.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit


from af_metrics.discovery import DaskTarget
from af_metrics.web.bearer import BearerRequired


def http_sd(targets: Iterable[DaskTarget]) -> list[dict]:
    """Target groups in Prometheus' http_sd format, one group per scheduler."""
    groups = []
    for t in targets:
        parts = urlsplit(t.url)
        groups.append({
            "targets": [parts.netloc],
            "labels": {
                "user": t.user,
                "cluster": t.cluster,
                "__scheme__": parts.scheme,
                "__metrics_path__": f"{parts.path}/metrics",
            },
        })
    return groups


class DaskSDHandler(BearerRequired):
    """``GET /sd/dask``: the schedulers the last discovery found."""

    def get(self) -> None:
        dask = self.settings.get("dask")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(http_sd(dask.targets if dask is not None else [])))
