"""Helpers for the Dask tests: a sampling loop in its own thread, real schedulers, a real Prometheus."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from af_metrics.config import Settings
from af_metrics.dask_collector import DaskCollector
from af_metrics.ledger.store import Ledger

from tests.conftest import free_port, wait_until


def write_targets(path: Path, targets: dict[str, list[str]]) -> Path:
    """Replace the static discovery file atomically (the sampler may be reading it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(targets))
    tmp.replace(path)
    return path


def dask_settings(ledger_url: str, static_file: Path, **overrides: object) -> Settings:
    return Settings(ledger=ledger_url, dask_static_file=str(static_file), **overrides)  # type: ignore[arg-type]


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate, then kill if it does not exit in time (bounded)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class SamplerThread:
    """``DaskCollector.run`` on an event loop of its own, stopped on exit (bounded join)."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        collector = DaskCollector.from_settings(settings, ledger)
        assert collector is not None
        self.collector = collector
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self.collector.run(self._stop)

    def __enter__(self) -> "SamplerThread":
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "sampling loop did not stop"

    def wait_cycles(self, n: int, timeout: float = 30) -> None:
        target = self.collector.cycles + n
        wait_until(lambda: self.collector.cycles >= target, timeout, 0.05, f"{n} sampling cycles")


class UserCluster:
    """A user's real LocalCluster in its own process (``dask_user_cluster.py``); bounded start and stop."""

    def __init__(self, log: Path, workers: int, threads: int = 1, processes: bool = True) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("dask_user_cluster.py")), str(workers), str(threads), str(int(processes))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        ready = threading.Thread(target=self._read_ready, daemon=True)
        ready.start()
        ready.join(120)
        if not getattr(self, "url", None):
            self.stop()
            raise AssertionError(f"user cluster did not start (see {log})")
        self.up = time.time()

    def _read_ready(self) -> None:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line:
            info = json.loads(line)
            self.scheduler, self.url = info["scheduler"], info["dashboard"]

    def stop(self, timeout: float = 60) -> float:
        """Close the cluster; returns when it was asked to (the end of its lifetime)."""
        down = time.time()
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("close\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError):
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc)
        self._log.close()
        return down


class PrometheusServer:
    """Debian's prometheus on a loopback port with a throw-away TSDB; bounded start and stop."""

    def __init__(
        self, base: Path, scrape_configs: list[dict], extra_args: tuple[str, ...] = (),
        start_timeout: float = 60.0, query_timeout: float = 10.0,
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus not installed (apt-get install prometheus)")
        base.mkdir(parents=True, exist_ok=True)
        config = base / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": scrape_configs}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (base / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{self.port}",
             f"--storage.tsdb.path={base / 'tsdb'}", "--log.level=warn", *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.query_timeout = query_timeout
        wait_until(self._ready, start_timeout, 0.2, "prometheus ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited (see its log)"
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> dict:
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=self.query_timeout).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in an exposition text, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None

