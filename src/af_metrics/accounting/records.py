"""Usage records for funding agencies and experiments: per-user per-group summaries of a period.

The record format (docs/accounting.md) follows APEL/GRACC summary records: one record per
site, period, infrastructure (htcondor | kubernetes), VO, group and user, with wall, core and
CPU durations and a job count. Users are hub names, or with a key a keyed hash (HMAC-SHA256),
stable for one key and meaningless without it; the unattributed remainder is a record of its
own with an empty user and ``Attributed`` false, so the records add up to all the usage seen.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import IO, Any

from af_metrics.accounting.totals import HOUR, Totals
from af_metrics.kpis.periods import Period, iso_day
from af_metrics.timeutil import iso

RECORD_VERSION = "af-metrics-usage-summary/1"
FIELDS = (
    "RecordVersion", "Site", "Period", "PeriodStart", "PeriodEnd", "Infrastructure", "VO", "VOGroup",
    "GlobalUserName", "Attributed", "NumberOfJobs", "WallDuration", "CpuDuration", "WallHours", "CoreHours",
    "CpuHours", "CpuEfficiency", "GpuHours", "MemoryGBHours", "EarliestEndTime", "LatestEndTime",
)
PSEUDONYM_PREFIX = "anon-"
KEY_MIN_BYTES = 16


class PseudonymKeyError(ValueError):
    """The pseudonymisation key cannot be used; the message is one line."""


def read_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            key = f.read(4097).strip()
    except OSError as exc:
        raise PseudonymKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(key) < KEY_MIN_BYTES:
        raise PseudonymKeyError(f"key file {path} holds {len(key)} bytes: use at least {KEY_MIN_BYTES} random bytes")
    return key


def pseudonym(user: str, key: bytes) -> str:
    return PSEUDONYM_PREFIX + hmac.new(key, user.encode(), hashlib.sha256).hexdigest()[:20]


def records(totals: list[Totals], *, site: str, vo: str, label: str, period: Period, tz: str, key: bytes | None = None) -> Iterator[dict[str, Any]]:
    """The records of whole-period totals with groups (``usage_totals(..., by="range", by_group=True)``)."""
    common = {
        "RecordVersion": RECORD_VERSION, "Site": site, "Period": label,
        "PeriodStart": iso_day(period.first), "PeriodEnd": iso_day(period.last),
    }
    for t in totals:
        user = "" if t.user is None else (pseudonym(t.user, key) if key is not None else t.user)
        who = {"GlobalUserName": user, "Attributed": t.user is not None}
        if t.batch_wall_seconds > 0 or t.batch_jobs:
            yield {
                **common, "Infrastructure": "htcondor", "VO": t.group.partition(".")[0] if t.group else vo, "VOGroup": t.group, **who,
                "NumberOfJobs": t.batch_jobs,
                "WallDuration": round(t.batch_wall_seconds), "CpuDuration": round(t.batch_cpu_seconds),
                "WallHours": _h(t.batch_wall_seconds), "CoreHours": _h(t.batch_core_seconds), "CpuHours": _h(t.batch_cpu_seconds),
                "CpuEfficiency": None if t.batch_cpu_efficiency is None else round(t.batch_cpu_efficiency, 4),
                "GpuHours": _h(t.batch_gpu_seconds), "MemoryGBHours": _h(t.batch_memory_gib_seconds),
                "EarliestEndTime": iso(t.batch_first_end, tz), "LatestEndTime": iso(t.batch_last_end, tz),
            }
        if t.pod_seconds > 0:
            used = t.notebook_used_core_seconds + t.pod_used_core_seconds
            requested = t.pod_requested_core_seconds
            yield {
                **common, "Infrastructure": "kubernetes", "VO": vo, "VOGroup": t.group, **who,
                "NumberOfJobs": t.pods,
                "WallDuration": round(t.pod_seconds), "CpuDuration": round(used),
                "WallHours": _h(t.pod_seconds), "CoreHours": _h(requested), "CpuHours": _h(used),
                "CpuEfficiency": round(used / requested, 4) if requested > 0 else None,
                "GpuHours": _h(t.pod_gpu_seconds), "MemoryGBHours": _h(t.pod_memory_gib_seconds),
                "EarliestEndTime": None, "LatestEndTime": None,
            }


def _h(seconds: float) -> float:
    return round(seconds / HOUR, 6)


def write_records(rows: list[dict[str, Any]], out: IO[str], fmt: str, generated: float) -> None:
    if fmt == "json":
        doc = {"record_version": RECORD_VERSION, "generated": dt.datetime.fromtimestamp(generated, dt.timezone.utc).isoformat(timespec="seconds"), "records": rows}
        json.dump(doc, out, indent=1)
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in row.items()})
