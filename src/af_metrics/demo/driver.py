"""Drive a hub through its REST API as an admin service: users, server starts and stops.

Used by the demo and the tests to make activity happen; af-metrics itself never does this.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")


class DriverError(RuntimeError):
    """The hub did not do what the driver asked; the message says what and why."""


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``probe`` until it returns something truthy, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DriverError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _server_path(user: str, server: str) -> str:
    base = f"users/{quote(user, safe='')}"
    return f"{base}/servers/{quote(server, safe='')}" if server else f"{base}/server"


class HubDriver:
    """A synchronous Hub API client holding an admin service token."""

    def __init__(self, hub_url: str, token: str, timeout: float = 30.0) -> None:
        self._client = httpx.Client(
            base_url=f"{hub_url.rstrip('/')}/hub/api/",
            headers={"Authorization": f"token {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, ok: tuple[int, ...], **kwargs: object) -> httpx.Response:
        try:
            resp = self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise DriverError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from None
        if resp.status_code not in ok:
            try:
                message = resp.json().get("message", resp.text)
            except ValueError:
                message = resp.text
            raise DriverError(f"{method} {path} answered {resp.status_code}: {message}")
        return resp

    def create_users(self, names: list[str]) -> None:
        for name in names:
            self._call("POST", f"users/{quote(name, safe='')}", ok=(201, 409))

    def delete_user(self, name: str, timeout: float = 60.0) -> None:
        """Stop the user's servers, then delete the user (the hub refuses while a stop is pending)."""
        user = self.user(name)
        if user is None:
            return
        for server, model in (user.get("servers") or {}).items():
            if not model["stopped"]:
                if model["pending"] != "stop":
                    self.stop_server(name, server)
                self.wait_stopped(name, server, timeout)
        self._call("DELETE", f"users/{quote(name, safe='')}", ok=(204, 404))

    def start_server(self, user: str, server: str = "", profile: str | None = None) -> None:
        """Ask for a spawn; returns at once (the hub answers 202 while it spawns)."""
        body = {"profile": profile} if profile else {}
        self._call("POST", _server_path(user, server), ok=(201, 202), json=body)

    def stop_server(self, user: str, server: str = "", remove: bool = False) -> None:
        body = {"remove": True} if remove else None
        self._call("DELETE", _server_path(user, server), ok=(202, 204), json=body)

    def user(self, name: str) -> dict | None:
        """The hub's user model with every server (stopped ones included), or None."""
        resp = self._call("GET", f"users/{quote(name, safe='')}", ok=(200, 404), params={"include_stopped_servers": "1"})
        return None if resp.status_code == 404 else resp.json()

    def server(self, user: str, server: str = "") -> dict | None:
        """The hub's model of one server (stopped ones included), or None if there is none."""
        return ((self.user(user) or {}).get("servers") or {}).get(server)

    def wait_ready(self, user: str, server: str = "", timeout: float = 60.0) -> dict:
        """Wait until the server is ready; DriverError if its spawn failed."""

        def probe() -> dict | None:
            model = self.server(user, server)
            if model is not None and model["ready"]:
                return model
            if model is None or (model["stopped"] and not model["pending"]):
                raise DriverError(f"spawn of {user}/{server} failed (see the hub log)")
            return None

        return wait_for(probe, timeout, f"{user}/{server} to be ready")

    def wait_stopped(self, user: str, server: str = "", timeout: float = 60.0) -> dict:
        """Wait until the server is stopped; returns its model (``last_activity`` is the stop time)."""

        def probe() -> dict | None:
            model = self.server(user, server)
            if model is None:
                raise DriverError(f"{user}/{server} no longer exists")
            return model if model["stopped"] and not model["pending"] else None

        return wait_for(probe, timeout, f"{user}/{server} to stop")
