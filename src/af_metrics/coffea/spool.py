"""A JSON-lines outbox shared by every kernel and the Jupyter server of one user.

A record is appended (and fsync'ed) before anyone tries to send it and removed only after the
facility accepted it, so a crash or a kill at any point loses nothing; a record sent twice
(accepted, then killed before removal) is stored once because the facility keys runs by id.
``spool.lock`` guards the file for short reads and rewrites; ``drain.lock`` lets one process
at a time send, without blocking the kernels that append. A record the facility refuses, or
fails on ``MAX_ATTEMPTS`` times, is moved to ``rejected.jsonl`` so it cannot block the others.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# sent: accepted; retry: nothing can be sent now (stop, keep all); reject: the facility refuses
# this record; failed: the facility broke on this record (counted, then rejected)
Outcome = Literal["sent", "retry", "reject", "failed"]

DRAIN_MAX_RECORDS = 1000
DRAIN_MAX_SECONDS = 30.0
MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class DrainResult:
    sent: int = 0
    rejected: int = 0
    left: int = 0
    busy: bool = False  # another process was draining


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "spool.jsonl"
        self.rejected_path = directory / "rejected.jsonl"
        self.attempts_path = directory / "attempts.json"

    def add(self, line: str) -> None:
        with self._locked("spool.lock"):
            append_line(self.path, line)

    def pending(self) -> list[str]:
        with self._locked("spool.lock"):
            return self._read()

    def drain(self, send: Callable[[str], Outcome]) -> DrainResult:
        """Send pending lines in order until one must wait (service down); bounded in count and time."""
        try:
            with self._locked("drain.lock", blocking=False):
                with self._locked("spool.lock"):
                    lines = self._read()
                attempts = self._attempts()
                done: set[str] = set()
                rejected: list[str] = []
                failed = False
                deadline = time.monotonic() + DRAIN_MAX_SECONDS
                for line in lines[:DRAIN_MAX_RECORDS]:
                    if time.monotonic() > deadline:
                        break
                    outcome = send(line)
                    if outcome == "retry":
                        break
                    if outcome == "failed":
                        failed = True
                        key = _key(line)
                        attempts[key] = attempts.get(key, 0) + 1
                        if attempts[key] < MAX_ATTEMPTS:
                            continue  # kept for the next drain; the records behind it go on
                        outcome = "reject"
                    done.add(line)
                    if outcome == "reject":
                        rejected.append(line)
                if not done and not failed:
                    return DrainResult(left=len(lines))
                with self._locked("spool.lock"):
                    for line in rejected:  # kept for the user to see; never retried
                        append_line(self.rejected_path, line)
                    left = [line for line in self._read() if line not in done]
                    _replace(self.path, left)
                    kept = {_key(line) for line in left}
                    _replace(self.attempts_path, [json.dumps({k: n for k, n in attempts.items() if k in kept})])
                return DrainResult(sent=len(done) - len(rejected), rejected=len(rejected), left=len(left))
        except BlockingIOError:
            return DrainResult(busy=True)

    def _attempts(self) -> dict[str, int]:
        """Failed sends per record (by hash), across drains and processes."""
        try:
            data = json.loads(self.attempts_path.read_text() or "{}")
        except (FileNotFoundError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}

    def _read(self) -> list[str]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # a line cut short by a kill mid-append is not a record
        return [line for line in text.splitlines() if line.startswith("{") and line.endswith("}")]

    def _locked(self, name: str, blocking: bool = True) -> AbstractContextManager[None]:
        return locked(self.directory / name, blocking)


@contextmanager
def locked(path: Path, blocking: bool = True) -> Iterator[None]:
    """An exclusive lock between the kernels and the server of one user (BlockingIOError if
    ``blocking`` is false and another holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_line(path: Path, line: str, durable: bool = True) -> None:
    """Append one line; once this returns a ``durable`` line survives a crash of the machine too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab+") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":  # a line cut short by a kill: end it, keep ours whole
                handle.write(b"\n")
        handle.write(line.rstrip("\n").encode() + b"\n")
        handle.flush()
        if durable:
            os.fsync(handle.fileno())


def _key(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()[:32]


def _replace(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.writelines(line + "\n" for line in lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
