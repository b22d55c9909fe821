"""Incremental reading of the user's run journal (``runs.jsonl``) for the server extension.

Only the bytes appended since the last read are parsed, bounded per read; a rotation (new
inode) is followed from the start of the new file while the totals carry on, so the counters
served stay monotonic for the life of the server.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from pydantic import ValidationError

from af_metrics.coffea.exposition import AnalysisFigures, UserAnalysis
from af_metrics.coffea.record import RunRecord

READ_MAX_BYTES = 16 * 2**20
RECENT_RUNS = 200
DATASETS_CAP = 50


class JournalTail:
    def __init__(self, path: Path, user: str) -> None:
        self.path = path
        self.user = user
        self.totals = UserAnalysis()
        self.recent: deque[RunRecord] = deque(maxlen=RECENT_RUNS)
        self.skipped = 0  # lines that are not valid records
        self._inode: int | None = None
        self._offset = 0

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._inode, self._offset = st.st_ino, 0
        if st.st_size == self._offset:
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            data = handle.read(READ_MAX_BYTES)
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next read
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                record = RunRecord.model_validate_json(line)
            except ValidationError:
                self.skipped += 1
                continue
            self.totals.add(record, DATASETS_CAP)
            self.recent.append(record)

    def figures(self) -> AnalysisFigures:
        self.refresh()
        return AnalysisFigures(per_user={self.user: self.totals} if self.totals.runs else {})
