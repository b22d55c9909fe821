"""Kubernetes pods' requests and usage per hour, from a Prometheus with kube-state-metrics and cAdvisor.

The usual z2jh + kube-prometheus-stack setup: kube-state-metrics exports pod labels
(``kube_pod_labels``; ``hub.jupyter.org/username`` and ``component`` must be allowlisted with
``--metric-labels-allowlist=pods=[hub.jupyter.org/username,component]``) and container requests
(``kube_pod_container_resource_requests``); the kubelet's cAdvisor exports container CPU time
(``container_cpu_usage_seconds_total``) and memory (``container_memory_working_set_bytes``).

Raw samples are read (a range selector evaluated at the hour's end), never rates or
``*_over_time`` results, so nothing is extrapolated: a gauge sample holds until the next sample
of its series, for at most ``STALE`` seconds (a series' last sample holds for its scrape
interval); a counter's increase is the sum of its rises between consecutive samples, a drop
being a restart counted from zero. A counter's very first sample is not counted (its value
covers an unknown time): at most one scrape interval of CPU time per container start is lost.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import httpx

from af_metrics.timeutil import hour_floor

REQUESTS = "kube_pod_container_resource_requests"
LABELS = "kube_pod_labels"
ANNOTATIONS = "kube_pod_annotations"
CPU_USED = "container_cpu_usage_seconds_total"
MEMORY_USED = "container_memory_working_set_bytes"
CONTAINERS = 'container!="",container!="POD"'  # cAdvisor's per-pod cgroup series would count twice
STALE = 300.0  # Prometheus' lookback: a sample older than this says nothing
HOUR = 3600.0
_EPSILON = 0.001  # Prometheus keeps milliseconds; evaluating 1 ms before the hour's end excludes it


def one_of(values: Iterable[str]) -> str:
    """A PromQL string literal holding a regular expression that matches exactly these values.

    ``re.escape`` writes ``\\-`` for '-' (RE2 reads it as '-'), but in a PromQL string a lone
    backslash starts an escape sequence, and ``\\-`` is none: the backslashes must be doubled.
    A JSON string is a valid PromQL string (Go escapes), so json.dumps quotes it.
    """
    return json.dumps("|".join(re.escape(v) for v in values), ensure_ascii=False)


class PrometheusError(RuntimeError):
    """Prometheus cannot be read or answered something unusable; the message is one line."""


@dataclass(frozen=True, slots=True)
class PodHour:
    """A pod's integrated requests and usage over one hour."""

    namespace: str
    pod: str
    hour_start: float
    labels: dict[str, str]  # kube-state-metrics labels of the pod (label_*, annotation_*)
    seconds: float  # time its series were present
    cpu_request_seconds: float
    cpu_used_seconds: float
    memory_request_byte_seconds: float
    memory_used_byte_seconds: float
    gpu_request_seconds: float
    first_seen: float
    last_seen: float


Samples = list[tuple[float, float]]


def gauge_integral(samples: Samples, interval: float) -> tuple[float, float]:
    """(value x seconds, seconds present) of one gauge series' samples, in time order."""
    total = present = 0.0
    for i, (t, v) in enumerate(samples):
        hold = min(samples[i + 1][0] - t, STALE) if i + 1 < len(samples) else interval
        total += v * hold
        present += hold
    return total, present


def counter_increase(samples: Samples, since: float) -> float:
    """Sum of the rises between consecutive samples whose later sample is at or after ``since``."""
    total = 0.0
    for (_, prev), (t, v) in zip(samples, samples[1:]):
        if t >= since:
            total += v - prev if v >= prev else v
    return total


def series_interval(samples: Samples, default: float) -> float:
    """The series' scrape interval: the median gap between its samples."""
    gaps = [b[0] - a[0] for a, b in zip(samples, samples[1:]) if b[0] > a[0]]
    return min(statistics.median(gaps), STALE) if gaps else default


@dataclass
class PrometheusPods:
    """Reads pods' hourly requests and usage from Prometheus' HTTP API, with caps on every answer."""

    url: str
    timeout: float = 30.0
    body_max: int = 64 * 1024 * 1024
    series_max: int = 50000
    scrape_interval: float = 30.0
    namespaces: Sequence[str] = ()
    gpu_resources: Sequence[str] = ("nvidia_com_gpu", "amd_com_gpu")
    annotations: bool = True  # also read kube_pod_annotations (kept with each pod: later rules may read them)

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout)

    def close(self) -> None:
        self._client.close()

    def _query(self, promql: str, at: float) -> list[dict]:
        try:
            with self._client.stream("GET", "/api/v1/query", params={"query": promql, "time": f"{at:.3f}"}) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > self.body_max:
                        raise PrometheusError(f"Prometheus answer to {promql[:80]!r} exceeds {self.body_max} bytes")
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot query Prometheus at {self.url}: {exc}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise PrometheusError(f"Prometheus at {self.url} answered HTTP {resp.status_code} with non-JSON") from None
        if not isinstance(data, dict) or data.get("status") != "success":
            error = data.get("error", "") if isinstance(data, dict) else ""
            raise PrometheusError(f"Prometheus query {promql[:80]!r} failed: HTTP {resp.status_code} {str(error)[:200]}")
        result = data.get("data", {}).get("result", [])
        if len(result) > self.series_max:
            raise PrometheusError(f"Prometheus answer to {promql[:80]!r} has more than {self.series_max} series")
        return result

    def _selector(self, extra: str = "") -> str:
        parts = [extra] if extra else []
        if self.namespaces:
            parts.append(f"namespace=~{one_of(self.namespaces)}")
        return "{" + ",".join(parts) + "}"

    def _matrix(self, metric: str, extra: str, at: float, seconds: float) -> list[tuple[dict, Samples]]:
        result = self._query(f"{metric}{self._selector(extra)}[{int(seconds)}s]", at)
        return [(r["metric"], [(float(t), float(v)) for t, v in r.get("values", [])]) for r in result]

    def _labels(self, metric: str, at: float) -> dict[tuple[str, str], dict[str, str]]:
        result = self._query(f"last_over_time({metric}{self._selector()}[{int(HOUR)}s])", at)
        out: dict[tuple[str, str], dict[str, str]] = {}
        for r in result:
            m = r["metric"]
            if "namespace" in m and "pod" in m:
                out.setdefault((m["namespace"], m["pod"]), {}).update(
                    {k: v for k, v in m.items() if k.startswith(("label_", "annotation_"))}
                )
        return out

    def hour(self, hour_start: float) -> list[PodHour]:
        """Every pod with series in [hour_start, hour_start + 1 h), integrated over that hour."""
        at = hour_start + HOUR - _EPSILON
        figures: dict[tuple[str, str], dict[str, float]] = {}

        def pod(metric: dict, inside: Samples) -> dict[str, float] | None:
            """The pod's figures, if the series has samples in the hour (not only in the lookback)."""
            if "namespace" not in metric or "pod" not in metric or not inside:
                return None
            row = figures.setdefault(
                (metric["namespace"], metric["pod"]),
                {"seconds": 0.0, "cpu": 0.0, "cpu_used": 0.0, "mem": 0.0, "mem_used": 0.0, "gpu": 0.0, "first": inside[0][0], "last": inside[-1][0]},
            )
            row["first"], row["last"] = min(row["first"], inside[0][0]), max(row["last"], inside[-1][0])
            return row

        def gauges(metric: str, extra: str, kind_of) -> None:  # noqa: ANN001 - metric labels -> figure name
            for labels, samples in self._matrix(metric, extra, at, HOUR):
                samples = [s for s in samples if s[0] >= hour_start]
                kind = kind_of(labels)
                row = pod(labels, samples) if kind is not None else None
                if row is None:
                    continue
                value, present = gauge_integral(samples, series_interval(samples, self.scrape_interval))
                row[kind] += value
                row["seconds"] = max(row["seconds"], present)

        gpus = set(self.gpu_resources)
        gauges(REQUESTS, f"resource=~{one_of(('cpu', 'memory', *gpus))}",
               lambda m: {"cpu": "cpu", "memory": "mem"}.get(m.get("resource", ""), "gpu" if m.get("resource") in gpus else None))
        gauges(MEMORY_USED, CONTAINERS, lambda m: "mem_used")
        for labels, samples in self._matrix(CPU_USED, CONTAINERS, at, HOUR + STALE):
            row = pod(labels, [s for s in samples if s[0] >= hour_start])
            if row is not None:
                row["cpu_used"] += counter_increase(samples, hour_start)
        labels = self._labels(LABELS, at)
        if self.annotations:
            for key, values in self._labels(ANNOTATIONS, at).items():
                labels.setdefault(key, {}).update(values)
        return [
            PodHour(
                namespace=ns, pod=name, hour_start=hour_start, labels=labels.get((ns, name), {}),
                seconds=f["seconds"], cpu_request_seconds=f["cpu"], cpu_used_seconds=f["cpu_used"],
                memory_request_byte_seconds=f["mem"], memory_used_byte_seconds=f["mem_used"],
                gpu_request_seconds=f["gpu"], first_seen=f["first"], last_seen=f["last"],
            )
            for (ns, name), f in sorted(figures.items())
        ]


def hours_between(start: float, end: float, tz: str) -> Iterator[float]:
    """Starts of the whole local hours in [start, end)."""
    h = hour_floor(start, tz)
    if h < start:
        h += HOUR
    while h + HOUR <= end:
        yield h
        h += HOUR
