"""The hub client against hub answers of the wrong shape: one-line HubError, never a hang or crash.

A tiny HTTP server on loopback plays a broken hub (the real hub is exercised in test_collector_hub).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from af_metrics.facts import HubSnapshot
from af_metrics.sources.jupyterhub import HubClient, HubError

ANSWERS: dict[str, bytes] = {}


class BrokenHub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = ANSWERS.get(self.path.split("?")[0], b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BrokenHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    ANSWERS.clear()


def _poll(url: str, check: tuple[str, ...] = ()) -> HubSnapshot:
    async def go() -> HubSnapshot:
        async with HubClient(url, "token", timeout=5) as hub:
            snap = await hub.active(sweep=True)
            await hub.check(snap, check)
            return snap

    return asyncio.run(asyncio.wait_for(go(), 30))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"<html>proxy error</html>", "not JSON"),
        (json.dumps({"items": [], "_pagination": {"offset": 0, "next": {"offset": 0}}}).encode(), "does not advance"),
        (json.dumps({"items": [{"name": "a", "servers": {"": {"started": "yesterday"}}}]}).encode(), "unexpected answer"),
        (json.dumps({"items": [{"servers": {}}]}).encode(), "unexpected answer"),
    ],
)
def test_wrong_shaped_listing_is_one_line_error(broken_hub: str, body: bytes, needle: str) -> None:
    ANSWERS["/hub/api/users"] = body
    with pytest.raises(HubError) as err:
        _poll(broken_hub)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_user_that_cannot_be_read_is_left_undecided(broken_hub: str) -> None:
    ANSWERS["/hub/api/users"] = json.dumps({"items": []}).encode()
    ANSWERS["/hub/api/users/good"] = json.dumps({"name": "good", "servers": {"": {"started": None, "last_activity": "2026-01-01T00:00:00Z"}}}).encode()
    ANSWERS["/hub/api/users/bad"] = b"not json at all"
    snap = _poll(broken_hub, ("good", "bad"))
    assert snap.users_checked == {"good"}
    assert [(s.user, s.last_activity) for s in snap.stopped] == [("good", 1767225600.0)]
