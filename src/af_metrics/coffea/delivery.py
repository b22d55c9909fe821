"""Where a run record goes: the user's journal, then the facility (through the spool).

- The journal (``runs.jsonl``) is the user's own history; the Jupyter server extension serves
  it at ``.../af-metrics/metrics``.
- When a facility URL is configured, the record is spooled first and then pushed from a
  background thread, off the analysis' critical path; what cannot be sent now stays in the
  spool for the next run or the extension's periodic flush.

Configuration comes from the user's environment: ``AF_METRICS_PUSH_URL`` (the facility's
``af-metrics serve`` base URL), ``JUPYTERHUB_API_TOKEN`` (set by JupyterHub in every user
server), ``AF_METRICS_ANALYSIS_DIR`` (default: the user data dir's ``af-metrics/analysis``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from af_metrics.coffea.record import RunRecord
from af_metrics.coffea.spool import DrainResult, Spool, append_line, locked

ENV_PUSH_URL = "AF_METRICS_PUSH_URL"
ENV_DIR = "AF_METRICS_ANALYSIS_DIR"
JOURNAL_MAX_BYTES = 32 * 2**20  # then runs.jsonl becomes runs.jsonl.1 (one generation kept)
EXIT_WAIT_SECONDS = 2.0  # at interpreter exit, a push under way gets this long; the spool keeps the rest

log = logging.getLogger("af_metrics.coffea")
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()


def analysis_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or Path(platformdirs.user_data_dir("af-metrics")) / "analysis")


def journal_path(directory: Path) -> Path:
    return directory / "runs.jsonl"


@dataclass
class Delivery:
    directory: Path
    push_url: str = ""
    token: str = ""

    @classmethod
    def from_env(cls) -> "Delivery":
        return cls(analysis_dir(), os.environ.get(ENV_PUSH_URL, ""), os.environ.get("JUPYTERHUB_API_TOKEN", ""))

    @property
    def spool(self) -> Spool:
        return Spool(self.directory)

    @property
    def pushes(self) -> bool:
        return bool(self.push_url and self.token)

    def deliver(self, record: RunRecord) -> None:
        """Journal and spool the record durably, then push it in the background."""
        line = record.model_dump_json()
        journal = journal_path(self.directory)
        with locked(journal.with_name("journal.lock")):  # kernels rotating at once would drop a generation
            if journal.exists() and journal.stat().st_size > JOURNAL_MAX_BYTES:
                os.replace(journal, journal.with_name(journal.name + ".1"))
            append_line(journal, line, durable=False)  # the user's history; the spool is the durable outbox
        if self.pushes:
            self.spool.add(line)
            self.flush_soon()

    def flush_soon(self) -> None:
        """Start a background flush unless one is under way (it will be followed by later ones)."""
        global _flusher
        with _flusher_lock:
            if _flusher is None or not _flusher.is_alive():
                _flusher = threading.Thread(target=self._flush_quietly, name="af-metrics-push", daemon=True)
                _flusher.start()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # the spool keeps the records; the next flush tries again
            log.warning("af-metrics could not send spooled analysis records", exc_info=True)

    def flush(self) -> DrainResult:
        """Send what the spool holds, if a facility is configured."""
        if not self.pushes:
            return DrainResult(left=len(self.spool.pending()))
        from af_metrics.coffea.push import PushClient  # httpx: imported off the critical path

        client = PushClient(self.push_url, self.token)
        try:
            return self.spool.drain(client.send)
        finally:
            client.close()


def wait_for_delivery(timeout: float | None = None) -> None:
    """Wait for the background push under way, if any (bounded by ``timeout``)."""
    with _flusher_lock:
        flusher = _flusher
    if flusher is not None:
        flusher.join(timeout)


atexit.register(wait_for_delivery, EXIT_WAIT_SECONDS)
