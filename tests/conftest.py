"""Shared fixtures: ledgers on SQLite and on a real PostgreSQL server started here."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from af_metrics.ledger.store import Ledger

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def pytest_configure(config: pytest.Config) -> None:
    """af-metrics' default data directory (default ledger, login cookie key) of this process and
    of every af-metrics it starts is a temporary one, never the user's own."""
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="af-metrics-tests-data-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return None
    versions = sorted((p for p in root.iterdir() if (p / "bin" / "initdb").exists()), key=lambda p: int(p.name))
    return versions[-1] / "bin" if versions else None


class PostgresServer:
    """A throwaway PostgreSQL cluster on a loopback port, run as the 'postgres' system user."""

    def __init__(self, base: Path) -> None:
        bindir = _pg_bin()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.data = base / "pgdata"
        self.port = free_port()
        self._counter = itertools.count()
        as_root = os.geteuid() == 0
        self._prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        base.mkdir(parents=True, exist_ok=True)
        if as_root:
            shutil.chown(base, "postgres")
        self._run(str(bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._run(
            str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(base / "pg.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {base} -h 127.0.0.1 -c fsync=off -c full_page_writes=off", "start",
        )

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._prefix, *cmd], check=True, capture_output=True, timeout=120)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # not under pytest's tmp dir: that is private to root, and the server runs as 'postgres'
    base = Path(tempfile.mkdtemp(prefix="af-metrics-pg-"))
    server = PostgresServer(base)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    led = Ledger.open(ledger_url)
    yield led
    led.engine.dispose()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):  # noqa: ANN001
    """Poll ``predicate`` until truthy (bounded in time); return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# -- the real local facility (JupyterHub + proxy + single-user servers) ------------------------


def _proxy() -> str | None:
    """configurable-http-proxy: $AF_METRICS_CHP, PATH, else the copy `make test` installs."""
    if os.environ.get("AF_METRICS_CHP") or shutil.which("configurable-http-proxy"):
        return None
    local = REPO / ".tools" / "node" / "node_modules" / ".bin" / "configurable-http-proxy"
    return str(local) if local.exists() else None


@pytest.fixture(scope="session")
def facility(tmp_path_factory: pytest.TempPathFactory, artifacts: Path):
    """One real JupyterHub for the whole session; tests use their own users (``hub_users``).

    Besides the ``af-metrics`` service it has two tokens each missing one required scope.
    """
    from af_metrics.demo.facility import LocalFacility
    from af_metrics.sources.jupyterhub import REQUIRED_SCOPES

    # read:users implies read:users:activity in JupyterHub: lacking the latter means lacking both
    narrow = {
        "no-read-metrics": [s for s in REQUIRED_SCOPES if s != "read:metrics"],
        "no-read-users-activity": [s for s in REQUIRED_SCOPES if s not in ("read:users", "read:users:activity")],
    }
    fac = LocalFacility(workdir=tmp_path_factory.mktemp("facility"), proxy=_proxy(), extra_services=narrow)
    try:
        with fac:
            yield fac
    finally:
        if fac.log_path.exists():
            shutil.copy(fac.log_path, artifacts / "jupyterhub.log")


@pytest.fixture
def hub(facility):  # noqa: ANN001, ANN201
    """The shared facility with its hub up (a test that stopped the hub is not held against the next)."""
    facility.start_hub()
    return facility


@pytest.fixture
def hub_users(hub, request: pytest.FixtureRequest):  # noqa: ANN001, ANN201
    """``hub_users(n)``: n new hub users named after the test; deleted (servers stopped) afterwards."""
    import re
    import secrets

    slug = re.sub(r"[^a-z0-9]", "", request.node.originalname.removeprefix("test_").lower())[:16]
    made: list[str] = []

    def make(n: int) -> list[str]:
        names = [f"{slug}-{i}-{secrets.token_hex(3)}" for i in range(n)]
        hub.driver.create_users(names)
        made.extend(names)
        return names

    yield make
    hub.start_hub()
    for name in made:
        try:
            hub.driver.delete_user(name)
        except Exception:  # noqa: BLE001 - best effort: the session teardown stops every server anyway
            pass
