"""Where a user's Dask scheduler is read: its dashboard's ``/metrics`` and ``/json/counts.json``.

A scheduler runs in a user's pod or cluster, so its answers are hostile input. Every read is
bounded: one deadline for the whole target (both requests), a byte cap per answer, a line cap
on ``/metrics`` (checked while streaming, before any parsing), no redirects. Only the metric
families af-metrics uses are handed to prometheus_client's parser, line by line.

What distributed (2024.1 .. 2026.8) exposes: ``/metrics`` has workers by state, tasks by state,
clients, suspicious-task and per-prefix state counters, but no thread or memory figures;
``/json/counts.json`` has ``workers``, ``cores`` (threads) and ``bytes`` (Dask-managed data held
by the workers). Every figure must be a finite number in a plausible range, or the whole read
fails (a lie must not poison running totals or overflow ledger columns); ``state`` labels outside
Dask's own states are summed under ``other`` (a scheduler must not add series to af-metrics). ``/json/identity.json`` has memory limits but answers HTTP 500 whenever a
worker heartbeat carries timing digests (tuple keys it cannot encode), so it is not read.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_fd_to_metric_families

from af_metrics.sources.http import ReadError, read_capped

COUNTS_MAX = 64 * 1024  # counts.json is ~300 bytes; anything much larger is not a scheduler

# sample name -> what it feeds; every other line of the answer is skipped unparsed
WORKERS = "dask_scheduler_workers"
TASKS = "dask_scheduler_tasks"
CLIENTS = "dask_scheduler_clients"
SUSPICIOUS = "dask_scheduler_tasks_suspicious_total"
PREFIX_STATES = "dask_scheduler_prefix_state_totals_total"
TICKS = "dask_scheduler_tick_count_total"
PROCESS_START = "process_start_time_seconds"
WANTED = (WORKERS, TASKS, CLIENTS, SUSPICIOUS, PREFIX_STATES, TICKS, PROCESS_START)
_WANTED_NAMES = frozenset(w.encode() for w in WANTED)

# plausible upper bounds; every figure is also >= 0 and finite
WORKERS_MAX = 1e5
THREADS_MAX = 1e7
BYTES_MAX = 1e15
COUNT_MAX = 1e15  # tasks, clients, cumulative counters, event-loop ticks
TIME_MAX = 1e11  # process start time, epoch seconds

# the states distributed 2024.1 .. 2026.8 uses as the ``state`` label; any other is summed as OTHER
WORKER_STATES = frozenset({"idle", "partially_saturated", "saturated", "paused", "retiring", "paused_or_retiring"})
TASK_STATES = frozenset({"released", "waiting", "no-worker", "queued", "processing", "memory", "erred", "forgotten"})
OTHER = "other"


class ScrapeError(ReadError):
    """One scheduler could not be read; the message is one line naming why."""


def describe(exc: BaseException) -> str:
    """One line naming an unexpected exception: its class and the start of its message."""
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"unexpected {exc.__class__.__name__}: {text}"


def plausible(what: str, value: object, high: float) -> float:
    """``value`` as a float if it is a number in [0, ``high``] (so finite); ScrapeError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise ScrapeError(f"implausible {what}: not a number in 0..{high:g}")
    return float(value)


def _state(labels: dict[str, str], known: frozenset[str]) -> str:
    state = labels.get("state", "")
    return state if state in known else OTHER


def _add(by_state: dict[str, float], state: str, value: float) -> None:
    by_state[state] = by_state.get(state, 0.0) + value


@dataclass(frozen=True, slots=True)
class ScrapeLimits:
    timeout: float = 5.0  # seconds for the whole target, both requests
    body_max: int = 10 * 1024 * 1024  # bytes of one /metrics answer
    lines_max: int = 20_000  # lines of one /metrics answer (series plus HELP/TYPE lines)


@dataclass(frozen=True, slots=True)
class SchedulerSample:
    """One successful read of a scheduler."""

    observed_at: float
    workers: int
    threads: int
    memory_bytes: float  # Dask-managed data held by the workers
    workers_by_state: dict[str, float] = field(default_factory=dict)
    tasks: dict[str, float] = field(default_factory=dict)  # tasks now in each state
    clients: int = 0
    erred_total: float = 0.0  # tasks that ever erred (sum over task prefixes)
    finished_total: float = 0.0  # tasks that ever reached memory or erred
    suspicious_total: float = 0.0  # times a task was marked suspicious
    started: float | None = None  # the scheduler process's start time
    ticks: float | None = None  # event-loop ticks since the scheduler started (resets on restart)


def _lines(body: bytes | bytearray) -> Iterator[str]:
    """Lines of ``body`` that belong to a wanted family (samples and their HELP/TYPE)."""
    start, end = 0, len(body)
    while start < end:
        nl = body.find(b"\n", start)
        stop = end if nl < 0 else nl
        head = bytes(body[start : min(stop, start + 128)])
        if head.startswith((b"# HELP ", b"# TYPE ")):
            head = head[7:]
        if head.split(b" ", 1)[0].split(b"{", 1)[0] in _WANTED_NAMES:
            yield bytes(body[start:stop]).decode("utf-8", "replace")
        start = stop + 1


def parse_metrics(body: bytes | bytearray) -> dict[str, float | dict]:
    """The figures af-metrics needs from a scheduler's ``/metrics`` text."""
    out: dict = {"workers_by_state": {}, "tasks": {}, "erred": 0.0, "finished": 0.0, "suspicious": 0.0}
    try:
        for family in text_fd_to_metric_families(_lines(body)):
            for s in family.samples:
                if s.name == WORKERS:
                    _add(out["workers_by_state"], _state(s.labels, WORKER_STATES), plausible(s.name, s.value, WORKERS_MAX))
                elif s.name == TASKS:
                    _add(out["tasks"], _state(s.labels, TASK_STATES), plausible(s.name, s.value, COUNT_MAX))
                elif s.name == CLIENTS:
                    out["clients"] = plausible(s.name, s.value, COUNT_MAX)
                elif s.name == SUSPICIOUS:
                    out["suspicious"] += plausible(s.name, s.value, COUNT_MAX)
                elif s.name == PREFIX_STATES and s.labels.get("state") in ("memory", "erred"):
                    value = plausible(s.name, s.value, COUNT_MAX)
                    out["finished"] += value
                    if s.labels["state"] == "erred":
                        out["erred"] += value
                elif s.name == TICKS:
                    out["ticks"] = plausible(s.name, s.value, COUNT_MAX)
                elif s.name == PROCESS_START:
                    out["started"] = plausible(s.name, s.value, TIME_MAX)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ScrapeError(f"unparsable /metrics: {str(exc)[:120]}") from None
    if not out["workers_by_state"]:
        raise ScrapeError("no dask_scheduler_workers in /metrics: not a Dask scheduler dashboard")
    return out


def parse_counts(body: bytes | bytearray) -> tuple[int, int, float]:
    """(workers, threads, managed bytes) from ``/json/counts.json``."""
    try:
        counts = json.loads(body)
        return (
            int(plausible("workers in /json/counts.json", counts["workers"], WORKERS_MAX)),
            int(plausible("cores in /json/counts.json", counts["cores"], THREADS_MAX)),
            plausible("bytes in /json/counts.json", counts["bytes"], BYTES_MAX),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ScrapeError(f"unusable /json/counts.json: {str(exc)[:120]}") from None


async def scrape(http: "SchedulerHTTP", base_url: str, limits: ScrapeLimits) -> SchedulerSample:
    """Read one scheduler dashboard at ``base_url``; raise ScrapeError on any failure."""
    base = base_url.rstrip("/")
    try:
        async with asyncio.timeout(limits.timeout), http.client() as client:
            figures = parse_metrics(await read_capped(client, f"{base}/metrics", limits.body_max, limits.lines_max))
            workers, threads, memory = parse_counts(await read_capped(client, f"{base}/json/counts.json", COUNTS_MAX))
            observed = time.time()
    except ScrapeError:
        raise
    except ReadError as exc:
        raise ScrapeError(str(exc), exc.status) from None
    except TimeoutError:
        raise ScrapeError(f"{base} did not answer within {limits.timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ScrapeError(f"cannot read {base}: {exc.__class__.__name__}: {str(exc)[:120]}") from None
    return SchedulerSample(
        observed_at=observed,
        workers=workers,
        threads=threads,
        memory_bytes=memory,
        workers_by_state=figures["workers_by_state"],
        tasks=figures["tasks"],
        clients=int(figures.get("clients", 0)),
        erred_total=figures["erred"],
        finished_total=figures["finished"],
        suspicious_total=figures["suspicious"],
        started=figures.get("started"),
        ticks=figures.get("ticks"),
    )


class SchedulerHTTP:
    """HTTP clients for scheduler reads: no redirects, no environment proxies, one connection each.

    Each target gets a client of its own (its two requests share one connection, closed after):
    one pool over thousands of origins costs httpcore time quadratic in the pool size. The TLS
    context, the costly part of a client, is made once and shared.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = httpx.Timeout(timeout)
        self.ssl = ssl.create_default_context()

    def client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(verify=self.ssl, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        return httpx.AsyncClient(
            transport=transport, timeout=self.timeout, follow_redirects=False, trust_env=False,
            headers={"Accept": "text/plain", "Accept-Encoding": "identity"},
        )
