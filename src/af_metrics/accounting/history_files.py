"""HTCondor history files re-read by ``serve``: only what is new, only whole ads.

A schedd appends each job's ad to its history file, closes it with a ``***`` banner line and
rotates the file by renaming it. So af-metrics remembers, per file (ledger state
``htcondor_files``), its inode, size and modification time, and the byte offset after the last
banner it read with the bytes just before it: an unchanged file is not opened, a grown one is
read from that offset up to its last banner (the ad after it may be half written), and a
replaced or rewritten one is read from the start. A file without banners (``condor_history
-long`` or ``-json`` output) is read whole whenever it changes. Reading a job twice changes
nothing (jobs are keyed by GlobalJobId); this only spares the parsing.

An unreadable ad among readable ones (with a schedd that crashed while writing it, the next ad
too: no banner separates them) is skipped with a warning and counted
(``af_source_records_skipped_total``), so one bad ad does not stop the accounting of every job
after it; a read in which no ad at all is readable is an error (a wrong file, or the bad ad is
alone so far: it is read again with what follows it). A file read whole again (rotated, or
without banners) counts its bad ads again.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import BinaryIO

from af_metrics.accounting.ingest import ingest_history_bytes
from af_metrics.accounting.settings import AttributionRule
from af_metrics.ledger.accounting import JobIngest
from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import HistoryError

log = logging.getLogger("af_metrics.accounting")

STATE = "htcondor_files"
FILES_MAX = 1000  # files one set of patterns may name (rotated histories included)
QUIET = 5.0  # seconds a file without banners must not have changed before it is read (it may be being written)
TAIL = 64  # bytes before the offset that must be unchanged for a file to be read on from there
_BLOCK = 1 << 20
_BANNER = b"\n***"
_LINE_MAX = 4096  # a banner line longer than this counts as not written yet


@dataclass(frozen=True, slots=True)
class FileMark:
    """How far a file was read, and what it looked like then."""

    inode: int
    size: int
    mtime_ns: int
    offset: int | None  # after the last banner read; None: a file without banners (read whole when changed)
    tail: str  # hex of the TAIL bytes before ``offset``


def expand(patterns: Sequence[str]) -> list[str]:
    """The files the patterns name, at most FILES_MAX; a plain path must exist, a pattern may match
    nothing, but not all of them together (a mistyped path must not look healthy)."""
    paths: dict[str, None] = {}
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            paths.update(dict.fromkeys(sorted(glob.glob(pattern))))
        else:
            paths[pattern] = None
    if len(paths) > FILES_MAX:
        raise HistoryError(f"accounting.history_files name {len(paths)} files, more than {FILES_MAX}")
    if not paths and patterns:
        raise HistoryError(f"accounting.history_files match no file: {', '.join(patterns)}")
    return list(paths)


def _last_banner_end(raw: BinaryIO, start: int, end: int) -> int | None:
    """The offset just after the last complete ``***`` line in [start, end), if any; read backwards, block by block."""
    floor = max(0, start - 1)  # the newline before ``start`` may begin a banner at ``start``
    hi = end
    while hi > floor:
        lo = max(floor, hi - _BLOCK)
        raw.seek(lo)
        block = raw.read(min(hi + len(_BANNER) - 1, end) - lo)  # a banner may straddle ``hi``
        at = block.rfind(_BANNER)
        while at >= 0:
            raw.seek(lo + at + 1)
            line = raw.read(min(_LINE_MAX, end - lo - at - 1))
            if b"\n" in line:
                return lo + at + 1 + line.index(b"\n") + 1
            at = block.rfind(_BANNER, 0, at)  # the last banner is still being written
        hi = lo
    return None


def _tail(raw: BinaryIO, offset: int) -> str:
    raw.seek(max(0, offset - TAIL))
    return raw.read(min(offset, TAIL)).hex()


def _read_from(raw: BinaryIO, size: int, mark: FileMark | None, inode: int) -> int:
    """Where reading the file goes on: the mark's offset if the file only grew past it, else 0."""
    if mark is None or mark.offset is None or mark.inode != inode or size < mark.offset:
        return 0
    return mark.offset if _tail(raw, mark.offset) == mark.tail else 0


def ingest_file(ledger: Ledger, path: str, mark: FileMark | None, rules: Iterable[AttributionRule],
                now: float) -> tuple[JobIngest | None, FileMark | None]:
    """Read what is new in one file; (None, mark) if there is nothing to read yet. Raises OSError or HistoryError."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise HistoryError(f"{path} is not a regular file")  # a pipe or device would block the read
    if mark is not None and (mark.inode, mark.size, mark.mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns):
        return None, mark
    with open(path, "rb") as raw:  # one open file throughout: a file replaced meanwhile is read next time
        start = _read_from(raw, st.st_size, mark, st.st_ino)
        end = _last_banner_end(raw, start, st.st_size)
        if end is None and (start > 0 or now - st.st_mtime < QUIET):  # no new whole ad yet, or a dump being written
            return None, mark
        new = FileMark(st.st_ino, st.st_size, st.st_mtime_ns, end, _tail(raw, end) if end is not None else "")
        try:
            stats = ingest_history_bytes(ledger, raw, rules, now, start=start, end=end, skip_bad=True)
        except HistoryError as exc:
            raise HistoryError(f"{path}: {exc}" + (f" (reading on from byte {start})" if start else "")) from None
    if stats.skipped:
        log.warning("%s: %d unreadable ads skipped, the first at %s%s", path, stats.skipped, stats.first_skipped,
                    f" (counting from byte {start})" if start else "")
    return stats, new


def ingest_history_files(ledger: Ledger, patterns: Sequence[str], rules: Iterable[AttributionRule], now: float,
                         on_read: Callable[[JobIngest], None] = lambda stats: None) -> tuple[JobIngest, int]:
    """Read what is new in every file the patterns name; (jobs, files read).

    Every file is tried; the first error is raised after the others were read (its mark stays,
    so the file is read again next time). Each file is one transaction, its mark saved after it,
    then ``on_read`` is told what it held (also when another file fails afterwards).
    """
    rules = tuple(rules)
    with ledger.begin() as conn:
        saved = ledger.get_state(conn, STATE) or {}
    paths = expand(patterns)
    marks = {p: FileMark(**saved[p]) for p in paths if isinstance(saved.get(p), dict)}
    total, read, errors = JobIngest(), 0, []
    for path in paths:
        try:
            stats, mark = ingest_file(ledger, path, marks.get(path), rules, now)
        except OSError as exc:
            errors.append(f"cannot read {path}: {exc.strerror or exc}")
            continue
        except HistoryError as exc:
            errors.append(str(exc))
            continue
        if stats is not None and mark is not None:
            marks[path] = mark
            total.add(stats)
            read += 1
            with ledger.begin() as conn:
                ledger.set_state(conn, STATE, {p: asdict(m) for p, m in marks.items()}, now)
            on_read(stats)
    if errors:
        raise HistoryError(errors[0] + (f" (and {len(errors) - 1} more files)" if len(errors) > 1 else ""))
    if set(saved) - set(paths):  # files gone (rotated away) or no longer configured
        with ledger.begin() as conn:
            ledger.set_state(conn, STATE, {p: asdict(m) for p, m in marks.items()}, now)
    return total, read
