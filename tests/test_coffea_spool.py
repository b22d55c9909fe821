"""The spool and the push client against a real HTTP server on loopback that answers per record
as a facility can: accepted, refused (4xx), broken on that record (500) or down for all (503)."""

from __future__ import annotations

import json
import subprocess
import sys
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


ROTATING_KERNEL = """
import sys
import time
from pathlib import Path
from af_metrics.coffea import delivery
from af_metrics.coffea.record import RunRecord
delivery.JOURNAL_MAX_BYTES = int(sys.argv[2])
journal = delivery.Delivery(Path(sys.argv[1]))
records = [RunRecord.model_validate_json(line) for line in sys.stdin]
deadline = time.monotonic() + 60
while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:  # all kernels start together
    time.sleep(0.01)
for record in records:
    journal.deliver(record)
"""


def test_kernels_rotating_the_journal_at_once_keep_one_whole_generation(tmp_path: Path) -> None:
    from af_metrics.coffea.delivery import journal_path
    from af_metrics.coffea.record import RunRecord
    from tests.web_support import _run

    max_bytes, kernels, runs = 6000, 4, 150
    go = tmp_path / "go"
    batches = [[_run(1.7e9 + k * 1000 + i, 1000 + i, 10.0, 2).model_dump_json() for i in range(runs)] for k in range(kernels)]
    procs = [
        subprocess.Popen([sys.executable, "-c", ROTATING_KERNEL, str(tmp_path / "analysis"), str(max_bytes), str(go)], stdin=subprocess.PIPE, text=True)
        for _ in batches
    ]
    for proc, batch in zip(procs, batches):
        proc.stdin.write("\n".join(batch) + "\n")
        proc.stdin.close()
    go.touch()
    assert [p.wait(120) for p in procs] == [0] * kernels

    current = journal_path(tmp_path / "analysis")
    previous = current.with_name("runs.jsonl.1")
    assert previous.stat().st_size > max_bytes, "a rotation replaced the previous generation with a younger, shorter one"
    kept = [RunRecord.model_validate_json(line).run_id for f in (previous, current) for line in f.read_text().splitlines()]
    assert len(kept) == len(set(kept)) >= max_bytes // len(batches[0][0])
