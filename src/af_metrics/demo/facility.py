"""A real JupyterHub on loopback ports in a temporary directory, for the demo and the tests.

The hub runs as a subprocess with configurable-http-proxy, DummyAuthenticator, named servers
and ``ProfileSpawner``. Two services hold tokens: ``af-metrics`` with exactly the read-only
scopes af-metrics needs, and ``demo-driver`` (admin) used only to make activity happen.
Single-user servers outlive a hub stop (``cleanup_servers = False``), as in production,
so the hub can be stopped and restarted around them; ``stop()`` removes everything.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from af_metrics.demo.driver import DriverError, HubDriver, wait_for
from af_metrics.demo.processes import alive, kill_group
from af_metrics.sources.jupyterhub import REQUIRED_SCOPES

AF_SERVICE = "af-metrics"
DRIVER_SERVICE = "demo-driver"
DRIVER_SCOPES = ["admin:users", "admin:servers"]
PROXY_HINT = "npm install configurable-http-proxy (or set AF_METRICS_CHP to its path)"

CONFIG = """\
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = {public_url!r}
c.JupyterHub.hub_bind_url = {hub_url!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.pid_file = {hub_pid!r}
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.ConfigurableHTTPProxy.api_url = {proxy_api_url!r}
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "af_metrics.demo.spawner.ProfileSpawner"
c.ProfileSpawner.run_dir = {run_dir!r}
c.SimpleLocalProcessSpawner.home_dir_template = {home_template!r}
c.Spawner.poll_interval = {spawner_poll_interval!r}
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 60
c.JupyterHub.allow_named_servers = True
c.JupyterHub.cleanup_servers = False
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0, "slow_stop_timeout": 0}}
c.JupyterHub.services = {services!r}
c.JupyterHub.load_roles = {roles!r}
"""


class FacilityError(RuntimeError):
    """The facility could not be started or driven; the message is one actionable line."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_proxy(path: str | None = None) -> str:
    """configurable-http-proxy from ``path``, else $AF_METRICS_CHP, else PATH."""
    found = path or os.environ.get("AF_METRICS_CHP") or shutil.which("configurable-http-proxy")
    if not found or not os.access(found, os.X_OK):
        raise FacilityError(f"configurable-http-proxy not found: {PROXY_HINT}")
    return found


class LocalFacility:
    """Start with ``with LocalFacility() as f:``; ``f.hub_url``, ``f.af_token``, ``f.driver``."""

    def __init__(
        self,
        workdir: Path | None = None,
        proxy: str | None = None,
        extra_services: dict[str, list[str]] | None = None,
        spawner_poll_interval: float = 1.0,
        startup_timeout: float = 60.0,
        service_options: dict[str, dict] | None = None,
        extra_config: str = "",
    ) -> None:
        """``service_options``: more keys for a service's entry in ``c.JupyterHub.services``
        (e.g. ``url`` and ``oauth_no_confirm`` to reach af-metrics' pages through the hub);
        ``extra_config``: Python lines appended to the hub's config file."""
        self.proxy = find_proxy(proxy)
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="af-metrics-facility-"))
        self.run_dir = self.workdir / "run"
        self.log_path = self.workdir / "jupyterhub.log"
        self.hub_port, self.public_port, self.proxy_api_port = free_port(), free_port(), free_port()
        self.scopes = {AF_SERVICE: list(REQUIRED_SCOPES), DRIVER_SERVICE: DRIVER_SCOPES, **(extra_services or {})}
        self.tokens = {name: secrets.token_hex(32) for name in self.scopes}
        self.spawner_poll_interval = spawner_poll_interval
        self.service_options = service_options or {}
        self.extra_config = extra_config
        self.startup_timeout = startup_timeout
        self._hub: subprocess.Popen | None = None
        self._driver: HubDriver | None = None

    # -- addresses and credentials --------------------------------------------------------

    @property
    def hub_url(self) -> str:
        """Where the hub itself listens (what a service uses): ``<hub_url>/hub/api``."""
        return f"http://127.0.0.1:{self.hub_port}"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def af_token(self) -> str:
        return self.tokens[AF_SERVICE]

    @property
    def driver(self) -> HubDriver:
        if self._driver is None:
            raise FacilityError("the facility is not started")
        return self._driver

    # -- life cycle -----------------------------------------------------------------------

    def __enter__(self) -> "LocalFacility":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> "LocalFacility":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "home").mkdir(exist_ok=True)
        (self.workdir / "jupyterhub_config.py").write_text(self._config())
        self.start_hub()
        self._driver = HubDriver(self.hub_url, self.tokens[DRIVER_SERVICE])
        return self

    def stop(self) -> None:
        """Stop the hub, the proxy and every single-user server; remove our temp dir."""
        if self._driver is not None:
            self._driver.close()
            self._driver = None
        self.stop_hub()
        for pid in self.server_pids():
            kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in self.server_pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.server_pids():
            kill_group(pid, signal.SIGKILL)
            (self.run_dir / str(pid)).unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start_hub(self) -> None:
        """Start the hub (on the same database, ports and tokens as before) and wait until it answers."""
        if self._hub is not None and self._hub.poll() is None:
            return
        env = {**os.environ, "PATH": f"{Path(self.proxy).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        with open(self.log_path, "ab") as log:
            self._hub = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.workdir / "jupyterhub_config.py")],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for us reaches the hub only through stop()
            )
        try:
            wait_for(self._hub_answers, self.startup_timeout, "JupyterHub to answer", interval=0.25)
        except DriverError:
            raise FacilityError(
                f"JupyterHub did not start within {self.startup_timeout:.0f}s: {self.log_tail()}"
            ) from None

    def stop_hub(self, timeout: float = 20.0) -> None:
        """Stop the hub (and its proxy) as an operator would; single-user servers keep running."""
        hub, self._hub = self._hub, None
        if hub is not None and hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_group(hub.pid, signal.SIGKILL)
                hub.wait(5)
        proxy_pid = self.workdir / "proxy.pid"
        if proxy_pid.exists():  # the hub did not get to stop its proxy
            try:
                kill_group(int(proxy_pid.read_text().strip()), signal.SIGKILL)
            except ValueError:
                pass
            proxy_pid.unlink(missing_ok=True)

    # -- single-user server processes -----------------------------------------------------

    def server_pids(self) -> dict[int, str]:
        """Processes of single-user servers started by this facility: pid -> 'user/server'."""
        if not self.run_dir.is_dir():
            return {}
        return {int(p.name): p.read_text() for p in self.run_dir.iterdir() if p.name.isdigit()}

    def kill_server(self, user: str, server: str = "") -> int:
        """SIGKILL a single-user server behind the hub's back (a crash, an OOM kill)."""
        for pid, owner in self.server_pids().items():
            if owner == f"{user}/{server}":
                kill_group(pid, signal.SIGKILL)
                return pid
        raise FacilityError(f"no running server process for {user}/{server}")

    # -- internals ------------------------------------------------------------------------

    def _hub_answers(self) -> bool:
        if self._hub is None or self._hub.poll() is not None:
            raise FacilityError(f"JupyterHub exited while starting: {self.log_tail()}")
        try:
            return httpx.get(f"{self.hub_url}/hub/api/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no hub log)"
        return " | ".join(text[-lines:]) + f" (full log: {self.log_path})"

    def _config(self) -> str:
        services = [{"name": name, "api_token": token, **self.service_options.get(name, {})} for name, token in self.tokens.items()]
        roles = [{"name": f"{name}-role", "scopes": scopes, "services": [name]} for name, scopes in self.scopes.items()]
        return CONFIG.format(
            public_url=self.public_url,
            hub_url=self.hub_url,
            db_url=f"sqlite:///{self.workdir / 'jupyterhub.sqlite'}",
            cookie_secret=str(self.workdir / "cookie_secret"),
            hub_pid=str(self.workdir / "hub.pid"),
            proxy=self.proxy,
            proxy_api_url=f"http://127.0.0.1:{self.proxy_api_port}",
            proxy_pid=str(self.workdir / "proxy.pid"),
            run_dir=str(self.run_dir),
            home_template=str(self.workdir / "home" / "{username}"),
            spawner_poll_interval=self.spawner_poll_interval,
            services=services,
            roles=roles,
        ) + (self.extra_config + "\n" if self.extra_config else "")

