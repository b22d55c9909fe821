"""Helpers for the tests that run against the real local facility (see conftest's ``facility``).

``AfProcess`` runs the af-metrics CLI as a real subprocess with the hub settings in its
environment; ``LedgerView`` reads what the collector wrote, per user, on either backend.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from af_metrics.collector import Collector
from af_metrics.config import Settings
from af_metrics.demo.facility import LocalFacility, free_port
from af_metrics.ledger.schema import session_hours, sessions, source_state, spawns, users
from af_metrics.ledger.store import Ledger
from af_metrics.sources.jupyterhub import parse_time


def hub_settings(facility: LocalFacility, ledger_url: str, **overrides: object) -> Settings:
    return Settings(hub_url=facility.hub_url, hub_api_token=facility.af_token, ledger=ledger_url, **overrides)


def run_cycle(collector: Collector) -> None:
    asyncio.run(collector.cycle())


def hub_env(facility: LocalFacility, ledger_url: str, token: str | None = None, **settings: object) -> dict[str, str]:
    """Environment for an af-metrics subprocess reading the facility's hub into ``ledger_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTERHUB_"))}
    env.update(
        AF_METRICS_HUB_URL=facility.hub_url,
        AF_METRICS_HUB_API_TOKEN=facility.af_token if token is None else token,
        AF_METRICS_LEDGER=ledger_url,
    )
    env.update({f"AF_METRICS_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def af_metrics(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "af_metrics", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


class AfProcess:
    """``af-metrics <args>`` running in the background; its output goes to ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "af_metrics", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def running(self) -> bool:
        """True while it runs; an AssertionError with its log if it exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"af-metrics exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return True

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM and wait (bounded); SIGKILL if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def __enter__(self) -> "AfProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


class ServeProcess(AfProcess):
    """``af-metrics serve`` on a free loopback port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        super().__init__(["serve", "--port", str(self.port)], env, log)

    def metrics(self) -> dict[tuple[str, tuple], float] | None:
        """The current /metrics samples keyed by (name, sorted labels), or None if not answering."""
        text = self.metrics_text()
        if text is None:
            return None
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metrics_text(self) -> str | None:
        self.running()
        try:
            resp = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        except httpx.HTTPError:
            return None
        return resp.text if resp.status_code == 200 else None

    def source(self, name: str, source: str = "jupyterhub") -> float | None:
        samples = self.metrics()
        return None if samples is None else samples.get((name, (("source", source),)))


class LedgerView:
    """What the ledger holds for some users (the shared hub has other tests' users too)."""

    def __init__(self, ledger: Ledger, names: list[str]) -> None:
        self.ledger = ledger
        self.names = names

    def _rows(self, query: sa.Select) -> list[dict]:
        with self.ledger.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _per_user(self, table: sa.Table) -> list[dict]:
        """Rows of ``table`` (sessions or spawns) of our users, with the user's name."""
        return self._rows(
            sa.select(users.c.name.label("user"), table)
            .join(users, users.c.id == table.c.user_id)
            .where(users.c.name.in_(self.names))
            .order_by(users.c.name, table.c.server, table.c.started)
        )

    def sessions(self) -> list[dict]:
        return self._per_user(sessions)

    def spawns(self) -> list[dict]:
        return self._per_user(spawns)

    def users(self) -> dict[str, dict]:
        return {r["name"]: r for r in self._rows(sa.select(users).where(users.c.name.in_(self.names)))}

    def hours(self, session_id: int) -> list[dict]:
        return self._rows(
            sa.select(session_hours).where(session_hours.c.session_id == session_id).order_by(session_hours.c.hour_start)
        )

    def last_commit(self) -> float:
        """When a collection cycle last committed (the hub histogram state is written with it);
        0 while the ledger has no tables yet."""
        try:
            with self.ledger.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.max(source_state.c.updated))).scalar() or 0.0
        except sa.exc.DBAPIError:
            return 0.0


def hub_time(model: dict, field: str) -> float:
    value = parse_time(model[field])
    assert value is not None, f"hub model has no {field}: {model}"
    return value


def assert_hours_cover(view: LedgerView, session: dict) -> None:
    """session_hours covers [started, hours_until] exactly once: no gap, no duplicate."""
    hours = view.hours(session["id"])
    assert hours, f"no session_hours for {session}"
    covered = sum(h["seconds"] for h in hours)
    assert covered == pytest.approx(session["hours_until"] - session["started"], abs=1e-3)
    starts = [h["hour_start"] for h in hours]
    assert starts == sorted(set(starts))
    assert all(b - a == 3600.0 for a, b in zip(starts, starts[1:])), "an hour missing inside the session"
