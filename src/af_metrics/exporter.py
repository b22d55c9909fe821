"""What ``/metrics`` exposes: source health, collector timing, facility and per-user series.

Facility and per-user figures come from the ledger, computed after each collection cycle
(never at scrape time), so a scrape costs the same whatever the ledger's size. Per-user
series are capped (``per_user_series_max``, most recently active users first).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from af_metrics.accounting.exposition import AccountingFigures, accounting_families, read_accounting_figures
from af_metrics.coffea.exposition import AnalysisFigures, analysis_families
from af_metrics.collector import Collector as SourceCollector
from af_metrics.ledger.analysis import read_analysis_figures
from af_metrics.ledger.schema import sessions, spawns, users
from af_metrics.ledger.store import Ledger

WINDOWS = {"1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}


@dataclass(slots=True)
class UserFigures:
    running: int
    sessions: int
    session_seconds: float
    last_activity: float | None


@dataclass(slots=True)
class FacilityFigures:
    """One consistent read of the ledger for the exporter."""

    at: float = 0.0
    users_known: int = 0
    active: dict[str, int] = field(default_factory=dict)
    running_by_profile: dict[str, int] = field(default_factory=dict)
    sessions_total: int = 0
    spawns_by_outcome: dict[str, int] = field(default_factory=dict)
    per_user: dict[str, UserFigures] = field(default_factory=dict)
    users_dropped: int = 0
    analysis: AnalysisFigures = field(default_factory=AnalysisFigures)
    accounting: AccountingFigures = field(default_factory=AccountingFigures)


def read_figures(ledger: Ledger, cap: int, now: float | None = None) -> FacilityFigures:
    now = time.time() if now is None else now
    fig = FacilityFigures(at=now)
    end = sa.func.coalesce(sessions.c.ended, sessions.c.last_seen)
    with ledger.engine.connect() as conn:
        fig.users_known = conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()
        for label, seconds in WINDOWS.items():
            fig.active[label] = conn.execute(
                sa.select(sa.func.count(sa.distinct(sessions.c.user_id))).where(
                    sessions.c.started <= now, end >= now - seconds
                )
            ).scalar_one()
        fig.running_by_profile = {
            (p or ""): n
            for p, n in conn.execute(
                sa.select(sessions.c.profile, sa.func.count()).where(sessions.c.ended.is_(None)).group_by(sessions.c.profile)
            )
        }
        fig.sessions_total = conn.execute(sa.select(sa.func.count()).select_from(sessions)).scalar_one()
        fig.spawns_by_outcome = dict(
            conn.execute(sa.select(spawns.c.outcome, sa.func.count()).group_by(spawns.c.outcome)).all()
        )
        recent = sa.func.max(end)
        per_user = conn.execute(
            sa.select(
                users.c.name,
                sa.func.sum(sa.case((sessions.c.ended.is_(None), 1), else_=0)),
                sa.func.count(),
                # through the later of its end and the last time it was seen running: never revised down
                sa.func.sum(sa.case((sessions.c.last_seen > end, sessions.c.last_seen), else_=end) - sessions.c.started),
                sa.func.max(sessions.c.last_activity),
            )
            .join(users, users.c.id == sessions.c.user_id)
            .group_by(users.c.name)
            .having(recent >= now - WINDOWS["30d"])
            .order_by(recent.desc())
        ).all()
    for name, running, count, seconds, last in per_user[:cap]:
        fig.per_user[name] = UserFigures(int(running or 0), int(count), float(seconds or 0.0), last)
    fig.users_dropped = max(0, len(per_user) - cap)
    fig.analysis = read_analysis_figures(ledger, cap)
    fig.accounting = read_accounting_figures(ledger, cap)
    return fig


class LedgerMetrics(Collector):
    """A prometheus_client collector over the latest ``FacilityFigures`` and source health."""

    def __init__(self, sources: SourceCollector) -> None:
        self.sources = sources
        self.figures = FacilityFigures()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("af_source_up", "1 if the last read of the source succeeded", labels=["source"])
        last = GaugeMetricFamily(
            "af_source_last_success_timestamp_seconds", "When the source was last read successfully", labels=["source"]
        )
        errors = CounterMetricFamily("af_source_errors", "Failed reads of the source", labels=["source"])
        skipped = CounterMetricFamily(
            "af_source_records_skipped", "Unreadable records of the source passed over by reads that succeeded", labels=["source"]
        )
        for name, health in self.sources.health.items():
            up.add_metric([name], 1.0 if health.up else 0.0)
            if health.last_success is not None:
                last.add_metric([name], health.last_success)
            errors.add_metric([name], health.errors_total)
            skipped.add_metric([name], health.skipped_total)
        yield from (up, last, errors, skipped)

        f = self.figures
        yield GaugeMetricFamily("af_users", "Users known to the ledger", value=f.users_known)
        active = GaugeMetricFamily(
            "af_active_users", "Distinct users with a server running in the trailing window", labels=["window"]
        )
        for window, n in f.active.items():
            active.add_metric([window], n)
        yield active
        running = GaugeMetricFamily("af_servers_running", "Servers running now, by profile", labels=["profile"])
        for profile, n in sorted(f.running_by_profile.items()):
            running.add_metric([profile], n)
        yield running
        yield CounterMetricFamily("af_sessions", "Server sessions recorded in the ledger", value=f.sessions_total)
        spawn = CounterMetricFamily("af_spawns", "Settled spawn attempts recorded in the ledger, by outcome", labels=["outcome"])
        for outcome, n in sorted(f.spawns_by_outcome.items()):
            if outcome != "pending":
                spawn.add_metric([outcome], n)
        yield spawn
        yield GaugeMetricFamily("af_spawns_pending", "Spawn attempts not settled yet", value=f.spawns_by_outcome.get("pending", 0))

        u_running = GaugeMetricFamily("af_user_servers_running", "Servers the user has running", labels=["user"])
        u_sessions = CounterMetricFamily("af_user_sessions", "Server sessions of the user", labels=["user"])
        u_seconds = CounterMetricFamily(
            "af_user_session_seconds", "Seconds the user's servers have run (until their end or last sighting)", labels=["user"]
        )
        u_last = GaugeMetricFamily(
            "af_user_last_activity_timestamp_seconds", "Last activity the hub reported for the user", labels=["user"]
        )
        for name, uf in f.per_user.items():
            u_running.add_metric([name], uf.running)
            u_sessions.add_metric([name], uf.sessions)
            u_seconds.add_metric([name], uf.session_seconds)
            if uf.last_activity is not None:
                u_last.add_metric([name], uf.last_activity)
        yield from (u_running, u_sessions, u_seconds, u_last)
        yield GaugeMetricFamily(
            "af_user_series_dropped", "Active users left out of per-user series by the cap", value=f.users_dropped
        )
        yield from analysis_families(f.analysis)
        yield from accounting_families(f.accounting)


def build_registry(sources: SourceCollector) -> tuple[CollectorRegistry, LedgerMetrics, Histogram]:
    registry = CollectorRegistry()
    ledger_metrics = LedgerMetrics(sources)
    registry.register(ledger_metrics)
    cycle = Histogram(
        "af_collector_cycle_duration_seconds",
        "Wall time of one collection cycle",
        registry=registry,
        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )
    return registry, ledger_metrics, cycle
