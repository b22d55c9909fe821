"""``af-metrics serve`` keeps accounting current by itself: HTCondor history files and Prometheus
pod hours are ingested on the ``[accounting]`` intervals, with source health in /metrics.

serve runs as a real subprocess against a hub that does not answer (the collector backs off;
accounting goes on); the pods come from Debian's Prometheus holding series backfilled by promtool
for the hours before now.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from af_metrics.accounting import history_files
from af_metrics.accounting.history_files import QUIET, ingest_history_files
from af_metrics.accounting.ingest import ingest_history, pods_resume_point
from af_metrics.accounting.settings import DEFAULT_RULES, AccountingSettings
from af_metrics.ledger.schema import batch_jobs, pod_hours
from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import HistoryError
from af_metrics.sources.kubernetes import HOUR
from conftest import free_port, wait_until
from facility import ServeProcess
from test_htcondor import GRID, HISTORY, LATER, NOBODY, REMOVED_AD, text, totals
from test_kubernetes import Pod, backfilled_prometheus

FIRST, APPENDED, HALF_WRITTEN = HISTORY[:2], [LATER], [REMOVED_AD]


def serve_env(ledger_url: str, **accounting: object) -> dict[str, str]:
    """serve with a hub that does not answer and the given [accounting] settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTERHUB_"))}
    env.update(
        AF_METRICS_HUB_URL=f"http://127.0.0.1:{free_port()}", AF_METRICS_HUB_API_TOKEN="unused", AF_METRICS_LEDGER=ledger_url,
        AF_METRICS_BACKOFF_MAX="1", AF_METRICS_TIMEZONE="UTC", AF_METRICS_ACCOUNTING=json.dumps(accounting),
    )
    return env


def job_ids(url: str) -> list[str]:
    with Ledger.open(url).engine.connect() as conn:
        return sorted(conn.execute(sa.select(batch_jobs.c.global_job_id)).scalars())


def reference(ads: list, path: Path) -> Ledger:
    """The ads ingested once, as the CLI does, into a ledger of their own."""
    ledger = Ledger.open(f"sqlite:///{path}")
    ingest_history(ledger, io.StringIO(text(ads, "file")), DEFAULT_RULES, time.time())
    return ledger


def ids(ads: list) -> list[str]:
    return sorted(ad["GlobalJobId"] for ad in ads)


def test_serve_ingests_a_history_file_once_and_what_is_appended(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    history, broken = tmp_path / "history", tmp_path / "broken.history"
    history.write_text(text(FIRST, "file"))
    env = serve_env(url, history_files=[str(history)], history_interval=0.3)
    with ServeProcess(env, tmp_path / "serve1.log") as serve:
        wait_until(lambda: job_ids(url) == ids(FIRST), 30, what="the history's jobs in the ledger")
        assert wait_until(lambda: serve.source("af_source_up", "htcondor"), 30, what="htcondor up") == 1
        assert serve.terminate() == 0
    first = totals(Ledger.open(url))
    assert first == totals(reference(FIRST, tmp_path / "once.db"))  # each job counted once, as one CLI ingest counts it

    # restarted, with a second file that is broken and a schedd that does not answer: the first file is
    # not counted again, the broken one and the schedd are reported
    broken.write_text('Owner = "x"\nthis is not an attribute\n*** ProcId = 0\n')
    env = serve_env(url, history_files=[str(history), str(broken)], history_interval=0.3, schedd_interval=0.3,
                    pool=f"127.0.0.1:{free_port()}")
    with ServeProcess(env, tmp_path / "serve2.log") as serve:
        # a source is reported down before its first read too: wait for the failed reads themselves
        for source in ("htcondor", "htcondor_schedd"):
            wait_until(lambda s=source: (serve.source("af_source_errors_total", s) or 0) >= 1, 30, what=f"{source} errors")
            assert serve.source("af_source_up", source) == 0
        health = httpx.get(f"http://127.0.0.1:{serve.port}/healthz", timeout=5).json()
        assert health["status"] == "degraded" and "broken.history: line 1" in health["sources"]["htcondor"]["last_error"]
        assert health["sources"]["htcondor_schedd"]["last_error"] == (
            "htcondor_schedd ingest: cannot locate schedd (local): Failed communication with collector."
        )
        assert totals(Ledger.open(url)) == first

        # the schedd appends a job, then half of the next one: the whole one lands, the half waits for its banner
        whole, half = text(APPENDED, "file"), text(HALF_WRITTEN, "file")
        banner = half.rindex("***")
        with history.open("a") as out:
            out.write(whole + half[:banner])
        wait_until(lambda: job_ids(url) == ids(FIRST + APPENDED), 30, what="the appended job in the ledger")
        with history.open("a") as out:
            out.write(half[banner:])
        wait_until(lambda: job_ids(url) == ids(FIRST + APPENDED + HALF_WRITTEN), 30, what="the completed job in the ledger")

        mended = tmp_path / "mended"
        mended.write_text(text([NOBODY], "file"))
        os.replace(mended, broken)  # mended at once (a truncated file read in between would look healthy): read, up again
        wait_until(lambda: job_ids(url) == ids(FIRST + APPENDED + HALF_WRITTEN + [NOBODY]), 30, what="the mended file read")
        assert wait_until(lambda: serve.source("af_source_up", "htcondor") == 1, 30, what="htcondor up again")
        assert serve.running()
    assert job_ids(url) == ids(FIRST + APPENDED + HALF_WRITTEN + [NOBODY])
    assert totals(Ledger.open(url)) == totals(reference(FIRST + APPENDED + HALF_WRITTEN + [NOBODY], tmp_path / "all.db"))
    assert "Traceback" not in (tmp_path / "serve2.log").read_text()


CORRUPT_AD = 'Owner = "x"\nthis is not an attribute\n*** ProcId = 0\n'  # a schedd that crashed in mid-ad, then wrote on


def test_serve_skips_an_unreadable_ad_among_readable_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    history = tmp_path / "history"
    history.write_text(text(FIRST[:1], "file") + CORRUPT_AD + text(FIRST[1:], "file"))
    with ServeProcess(serve_env(url, history_files=[str(history)], history_interval=0.3), tmp_path / "serve.log") as serve:
        wait_until(lambda: job_ids(url) == ids(FIRST), 30, what="the readable jobs in the ledger")
        with history.open("a") as out:  # and once more among what is appended
            out.write(CORRUPT_AD + text(APPENDED, "file"))
        wait_until(lambda: job_ids(url) == ids(FIRST + APPENDED), 30, what="the appended job in the ledger")
        wait_until(lambda: serve.source("af_source_records_skipped_total", "htcondor") == 2, 30, what="two ads skipped")
        assert serve.source("af_source_up", "htcondor") == 1 and serve.source("af_source_errors_total", "htcondor") == 0
        assert serve.terminate() == 0
    log = (tmp_path / "serve.log").read_text()
    first_bad = text(FIRST[:1], "file").count("\n") + 1
    assert f"history: 1 unreadable ads skipped, the first at line {first_bad}: job ad without GlobalJobId" in log
    assert "(counting from byte " in log and "Traceback" not in log
    assert totals(Ledger.open(url)) == totals(reference(FIRST + APPENDED, tmp_path / "once.db"))


def test_skipped_ads_are_told_even_when_another_file_fails(ledger: Ledger, tmp_path: Path) -> None:
    history = tmp_path / "history"
    history.write_text(text(FIRST[:1], "file") + CORRUPT_AD + text(FIRST[1:], "file"))
    told = []
    with pytest.raises(HistoryError, match="cannot read .*/gone"):
        ingest_history_files(ledger, [str(history), str(tmp_path / "gone")], DEFAULT_RULES, time.time(), on_read=told.append)
    assert [(t.read, t.skipped) for t in told] == [(2, 1)] and job_ids_of(ledger) == ids(FIRST)


def test_history_files_are_read_from_where_they_stopped(ledger: Ledger, tmp_path: Path) -> None:
    """Rotation (rename + new file), rewriting in place and dumps without banners, on both ledgers."""
    history = tmp_path / "history"
    history.write_text(text(FIRST, "file"))
    pattern = [str(tmp_path / "history*")]
    assert ingest_history_files(ledger, pattern, DEFAULT_RULES, time.time())[1] == 1
    assert ingest_history_files(ledger, pattern, DEFAULT_RULES, time.time())[1] == 0  # unchanged: not opened
    with history.open("a") as out:
        out.write(text(APPENDED, "file"))
    stats, read = ingest_history_files(ledger, pattern, DEFAULT_RULES, time.time())
    assert (read, stats.read) == (1, 1)  # only the appended ad was parsed
    history.rename(tmp_path / "history.20261123T000000")  # the schedd rotates: the old file is read once more, whole
    history.write_text(text(HALF_WRITTEN, "file"))
    stats, read = ingest_history_files(ledger, pattern, DEFAULT_RULES, time.time())
    assert (read, stats.read, stats.written) == (2, 4, 1)
    history.write_text(text([GRID], "file"))  # rewritten in place (same inode): read from the start
    stats, read = ingest_history_files(ledger, pattern, DEFAULT_RULES, time.time())
    assert (read, stats.read, stats.written) == (1, 1, 1)
    dump = tmp_path / "history.json"
    dump.write_text(text([NOBODY], "json")[:-30])  # condor_history -json output, being written
    assert ingest_history_files(ledger, pattern, DEFAULT_RULES, time.time())[1] == 0  # left until it is quiet
    dump.write_text(text([NOBODY], "json"))
    stats, read = ingest_history_files(ledger, pattern, DEFAULT_RULES, time.time() + QUIET)  # read whole when it changes
    assert (read, stats.read) == (1, 1)
    assert job_ids_of(ledger) == ids(FIRST + APPENDED + HALF_WRITTEN + [GRID, NOBODY])


def test_a_file_rewritten_in_place_past_the_offset_is_read_from_the_start(ledger: Ledger, tmp_path: Path) -> None:
    """Same inode and longer than where reading stopped (copytruncate, then grown): the bytes before
    the offset differ, so the file is read from its start, not from the middle of an ad."""
    history = tmp_path / "history"
    history.write_text(text([GRID], "file"))
    assert ingest_history_files(ledger, [str(history)], DEFAULT_RULES, time.time())[1] == 1
    inode = history.stat().st_ino
    history.write_text(text([NOBODY, LATER], "file"))
    assert history.stat().st_ino == inode and history.stat().st_size > len(text([GRID], "file").encode())
    stats, read = ingest_history_files(ledger, [str(history)], DEFAULT_RULES, time.time())
    assert (read, stats.read, stats.written) == (1, 2, 2)
    assert job_ids_of(ledger) == ids([GRID, NOBODY, LATER])


def job_ids_of(ledger: Ledger) -> list[str]:
    with ledger.engine.connect() as conn:
        return sorted(conn.execute(sa.select(batch_jobs.c.global_job_id)).scalars())


def test_a_missing_history_file_is_one_error_and_the_others_are_read(ledger: Ledger, tmp_path: Path) -> None:
    history = tmp_path / "history"
    history.write_text(text(FIRST, "file"))
    with pytest.raises(HistoryError, match=r"^cannot read .*/gone: No such file or directory$"):
        ingest_history_files(ledger, [str(tmp_path / "gone"), str(history)], DEFAULT_RULES, time.time())
    assert job_ids_of(ledger) == ids(FIRST)


def test_patterns_matching_nothing_and_pipes_are_errors_not_silence(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match=r"^accounting.history_files match no file: .*/history\.\*$"):
        ingest_history_files(ledger, [str(tmp_path / "history.*")], DEFAULT_RULES, time.time())
    pipe = tmp_path / "history.pipe"
    os.mkfifo(pipe)  # opening it would wait for a writer forever
    with pytest.raises(HistoryError, match=r"history\.pipe is not a regular file$"):
        ingest_history_files(ledger, [str(pipe)], DEFAULT_RULES, time.time())


USER_LABEL = "label_hub_jupyter_org_username"
NOTEBOOK = {"label_component": "singleuser-server"}


def test_serve_ingests_whole_pod_hours_by_itself(tmp_path: Path) -> None:
    if time.time() % HOUR < 90:  # alice's series ends a minute ago: it must reach the end of the last whole hour
        time.sleep(90 - time.time() % HOUR)
    now = time.time()
    hour = now - now % HOUR  # the hour in progress: serve must not read it yet
    series_end = now - 60
    prometheus = backfilled_prometheus(tmp_path / "prom", [
        Pod("jhub", "jupyter-alice", hour - 2 * HOUR, series_end, cpu=2, labels={USER_LABEL: "alice", **NOTEBOOK}),
        Pod("jhub", "dask-worker-bob", hour - 5 * HOUR, hour - 4 * HOUR, cpu=1, labels={USER_LABEL: "bob"}),
    ])
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = serve_env(url, prometheus_url=prometheus.url, pods_interval=0.3, backfill_hours_max=10)
    try:
        with ServeProcess(env, tmp_path / "serve.log") as serve:
            ledger = Ledger.open(url)
            wait_until(lambda: (pods_resume_point(ledger) or 0) >= hour, 60, what="pod hours up to the current hour")
            assert wait_until(lambda: serve.source("af_source_up", "kubernetes"), 30, what="kubernetes up") == 1
            assert serve.running()
    finally:
        prometheus.stop()
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(pod_hours.c.pod, pod_hours.c.hour_start, pod_hours.c.cpu_request_seconds)).all()
    checked = time.time()
    assert all(start + HOUR <= checked for _, start, _ in rows), "an hour was read before it was over"
    before = sorted((name, start - hour, round(cpu)) for name, start, cpu in rows if start < hour)
    assert before == [("dask-worker-bob", -5 * HOUR, 1 * HOUR), ("jupyter-alice", -2 * HOUR, 2 * HOUR), ("jupyter-alice", -HOUR, 2 * HOUR)]


def test_pods_interval_needs_a_prometheus() -> None:
    with pytest.raises(ValueError, match="pods_interval needs prometheus_url"):
        AccountingSettings(pods_interval=600)


def test_every_accounting_setting_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "accounting.md").read_text()
    assert [n for n in AccountingSettings.model_fields if f"`{n}`" not in doc] == []


@pytest.mark.parametrize("block", [7, 100, 1 << 20])
def test_the_last_whole_ad_ends_after_the_last_complete_banner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Read backwards in blocks of any size (banners straddling blocks), cut anywhere, from any start."""
    monkeypatch.setattr(history_files, "_BLOCK", block)
    data = text(HISTORY, "file").encode()
    (tmp_path / "h").write_bytes(data)
    banner_ends = [m.end() for m in re.finditer(rb"^\*\*\*[^\n]*\n", data, re.M)]
    with (tmp_path / "h").open("rb") as raw:
        for start in (0, banner_ends[1]):
            for end in sorted({*range(start, len(data) + 1, 37), *(e + d for e in banner_ends for d in (-1, 0) if e > start)}):
                want = max((e for e in banner_ends if start < e <= end), default=None)
                assert history_files._last_banner_end(raw, start, end) == want, (start, end)
