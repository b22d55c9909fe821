"""Backfill the ledger with sessions from a CSV file (``af-metrics import sessions``).

The file is checked whole before anything is written, so a bad row costs one line of error
and leaves the ledger as it was; the write is one transaction keyed by (user, server, start),
so importing the same file twice adds nothing the second time. Both passes stream the file.

Format: a header ``user,server,profile,start,end``; times ISO 8601 with a UTC offset; an
empty server is the default server, an empty profile is unknown, an empty end is a session
still running.
"""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from af_metrics.ledger.store import Ledger, SessionRecord

HEADER = ("user", "server", "profile", "start", "end")
NAME_MAX = 255  # the ledger's column width
LINE_MAX = 64 * 1024  # bytes; a longer line is refused rather than read into memory
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc).timestamp()  # the calendar's first day
FUTURE_SLACK = 300.0  # seconds of clock skew tolerated for times "now"
CHUNK = 5000
SOURCE = "import"

Advance = Callable[[int], None]


class ImportFileError(ValueError):
    """A file that cannot be imported; the message is ``file:line: what is wrong``."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    rows: int
    new: int

    @property
    def present(self) -> int:
        return self.rows - self.new


def import_sessions(ledger: Ledger, path: str | Path, now: float | None = None, advance: Advance | None = None) -> ImportResult:
    """Check the whole file, then write it in one transaction.

    ``advance(n)`` is called with the bytes read so far by each pass (two passes in all).
    """
    now = time.time() if now is None else now
    rows = check_sessions(path, now, advance)
    new = 0
    with ledger.begin() as conn:
        records = read_sessions(path, now, advance)
        while chunk := list(islice(records, CHUNK)):
            new += ledger.add_history_in(conn, chunk, (), now)
    return ImportResult(rows, new)


def check_sessions(path: str | Path, now: float, advance: Advance | None = None) -> int:
    """Number of sessions in the file; ImportFileError at the first bad row or repeated key."""
    first_line: dict[tuple[str, str, float], int] = {}
    names: dict[str, str] = {}  # one string object per user name, to keep the key set small
    for line, record in _numbered(path, now, advance):
        user = names.setdefault(record.user, record.user)
        key = (user, record.server, record.started)
        if key in first_line:
            raise ImportFileError(f"{path}:{line}: same user, server and start as line {first_line[key]}")
        first_line[key] = line
    return len(first_line)


def read_sessions(path: str | Path, now: float, advance: Advance | None = None) -> Iterator[SessionRecord]:
    """The file's sessions, in file order; ImportFileError at the first bad row."""
    return (record for _, record in _numbered(path, now, advance))


def _numbered(path: str | Path, now: float, advance: Advance | None) -> Iterator[tuple[int, SessionRecord]]:
    reader = csv.reader(_lines(path, advance), strict=True)
    line = 1
    try:
        header = next(reader, None)
        if header is None:
            raise ImportFileError(f"{path}:1: empty file: expected the header {','.join(HEADER)}")
        if tuple(cell.strip() for cell in header) != HEADER:
            raise ImportFileError(f"{path}:1: header must be {','.join(HEADER)}, found {','.join(header)!r}")
        while True:
            line = reader.line_num + 1  # where the next record starts
            row = next(reader, None)
            if row is None:
                return
            if row:  # blank lines are skipped
                yield line, _record(row, f"{path}:{line}", now)
    except csv.Error as exc:
        raise ImportFileError(f"{path}:{line}: {exc}") from None


def _lines(path: str | Path, advance: Advance | None) -> Iterator[str]:
    with open(path, "rb") as fh:
        number = 0
        while raw := fh.readline(LINE_MAX + 1):
            number += 1
            if len(raw) > LINE_MAX:
                raise ImportFileError(f"{path}:{number}: line longer than {LINE_MAX} bytes")
            if advance is not None:
                advance(len(raw))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ImportFileError(f"{path}:{number}: not UTF-8 text") from None
            yield text.removeprefix("\ufeff") if number == 1 else text


def _record(row: list[str], where: str, now: float) -> SessionRecord:
    if len(row) != len(HEADER):
        raise ImportFileError(f"{where}: expected {len(HEADER)} columns ({','.join(HEADER)}), found {len(row)}")
    user, server, profile, start, end = (cell.strip() for cell in row)
    if not user:
        raise ImportFileError(f"{where}: user is empty")
    for label, value in (("user", user), ("server", server), ("profile", profile)):
        if len(value) > NAME_MAX:
            raise ImportFileError(f"{where}: {label} is longer than {NAME_MAX} characters")
    started = _timestamp(start, "start", where, now)
    ended = _timestamp(end, "end", where, now) if end else None
    if ended is not None and ended < started:
        raise ImportFileError(f"{where}: end {end} is before start {start}")
    return SessionRecord(user=user, server=server, profile=profile or None, started=started, ended=ended, source=SOURCE)


def _timestamp(text: str, label: str, where: str, now: float) -> float:
    if not text:
        raise ImportFileError(f"{where}: {label} is empty")
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ImportFileError(f"{where}: {label} {text!r} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        raise ImportFileError(f"{where}: {label} {text} has no UTC offset (write e.g. {value.isoformat()}+00:00)")
    ts = value.timestamp()
    if ts < EARLIEST:
        raise ImportFileError(f"{where}: {label} {text} is before 2000-01-01")
    if ts > now + FUTURE_SLACK:
        raise ImportFileError(f"{where}: {label} {text} is in the future")
    return ts
