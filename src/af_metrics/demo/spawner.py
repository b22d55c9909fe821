"""The demo hub's spawner: local single-user servers started from named profiles.

Loaded inside the JupyterHub process. A profile stands for a container image: starting it
waits for the image "pull", then runs ``jupyterhub.singleuser``. The ``broken-image`` profile
fails the way a bad image does: after the pull its command cannot be started.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web
from traitlets import Unicode

from af_metrics.demo.processes import is_zombie


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    image: str
    pull_seconds: float
    broken: bool = False

    def command(self) -> list[str]:
        if self.broken:
            return [f"/nonexistent/{self.image}/bin/jupyterhub-singleuser"]
        # containers often run as root; jupyter_server refuses that unless told
        return [sys.executable, "-m", "jupyterhub.singleuser", "--ServerApp.allow_root=True"]


PROFILES = {
    p.name: p
    for p in (
        Profile("minimal", "quay.io/jupyter/minimal-notebook:2025-01", 0.2),
        Profile("cms-coffea", "coffeateam/coffea-casa:2025.1", 0.5),
        Profile("atlas-columnar", "atlas/columnar-analysis:v3", 0.5),
        Profile("broken-image", "registry.invalid/broken-image:latest", 5.0, broken=True),
    )
}
DEFAULT_PROFILE = "minimal"


class ProfileSpawner(SimpleLocalProcessSpawner):
    """SimpleLocalProcessSpawner choosing its command from ``user_options["profile"]``."""

    run_dir = Unicode("", config=True, help="Directory where the pid of each running server is written.")

    async def start(self):  # noqa: ANN201 - JupyterHub's signature
        name = (self.user_options or {}).get("profile") or DEFAULT_PROFILE
        profile = PROFILES.get(name)
        if profile is None:
            raise web.HTTPError(400, f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
        self.environment = {**self.environment, "AF_METRICS_PROFILE": profile.name, "AF_METRICS_IMAGE": profile.image}
        await asyncio.sleep(profile.pull_seconds)  # the image pull a container spawner waits for
        self.cmd = profile.command()
        address = await super().start()
        if self.run_dir:
            Path(self.run_dir, str(self.pid)).write_text(f"{self.user.name}/{self.name}")
        return address

    def clear_state(self) -> None:
        if self.pid and self.run_dir:
            Path(self.run_dir, str(self.pid)).unlink(missing_ok=True)
        super().clear_state()

    async def _signal(self, sig: int) -> bool:
        # after a hub restart the servers are not our children: a dead one may linger as a zombie
        if sig == 0 and is_zombie(self.pid):
            return False
        return await super()._signal(sig)
