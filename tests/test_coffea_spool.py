"""The spool and the push client against a real HTTP server on loopback that answers per record
as a facility can: accepted, refused (4xx), broken on that record (500) or down for all (503)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from af_metrics.coffea.push import PUSH_PATH, PushClient
from af_metrics.coffea.spool import MAX_ATTEMPTS, Spool


class Facility(ThreadingHTTPServer):
    """Answers ``status[record["kind"]]``, else 201; remembers what it accepted."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Answer)
        self.status: dict[str, int] = {}
        self.accepted: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Answer(BaseHTTPRequestHandler):
    server: Facility

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        record = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        code = self.server.status.get(record["kind"], 201) if self.path == PUSH_PATH else 404
        if code == 201:
            self.server.accepted.append(record)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def facility() -> Iterator[Facility]:
    server = Facility()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def line(kind: str, n: int) -> str:
    return json.dumps({"kind": kind, "n": n})


def test_a_record_the_facility_breaks_on_does_not_block_the_others(facility: Facility, tmp_path: Path) -> None:
    spool, client = Spool(tmp_path), PushClient(facility.url, "token")
    facility.status["poison"] = 500
    for entry in (line("poison", 0), line("good", 1), line("good", 2)):
        spool.add(entry)
    first = spool.drain(client.send)
    assert (first.sent, first.rejected, first.left) == (2, 0, 1)
    assert [r["n"] for r in facility.accepted] == [1, 2]
    spool.add(line("good", 3))
    results = [spool.drain(client.send) for _ in range(MAX_ATTEMPTS - 1)]
    assert [(r.sent, r.rejected, r.left) for r in results] == [(1, 0, 1)] + [(0, 0, 1)] * (MAX_ATTEMPTS - 3) + [(0, 1, 0)]
    assert spool.pending() == [] and spool.rejected_path.read_text().splitlines() == [line("poison", 0)]
    assert [r["n"] for r in facility.accepted] == [1, 2, 3]
    client.close()


def test_a_refused_record_is_set_aside_and_an_unavailable_facility_keeps_everything(facility: Facility, tmp_path: Path) -> None:
    spool, client = Spool(tmp_path), PushClient(facility.url, "token")
    for entry in (line("good", 1), line("huge", 2), line("good", 3)):
        spool.add(entry)
    facility.status["good"] = 503  # the hub is down: nothing is counted against the records
    for _ in range(MAX_ATTEMPTS + 1):
        assert spool.drain(client.send).left == 3
    facility.status.update(good=201, huge=400)
    result = spool.drain(client.send)
    assert (result.sent, result.rejected, result.left) == (2, 1, 0)
    assert spool.rejected_path.read_text().splitlines() == [line("huge", 2)]
    client.close()
