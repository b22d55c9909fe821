"""``af-metrics accounting``: ingest HTCondor and Kubernetes usage, per-user totals, usage records."""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import click
from rich import box
from rich.console import Console
from rich.table import Table

from af_metrics.accounting.ingest import ingest_history, ingest_history_file, ingest_pod_hours, ingest_schedd, pod_hours_due
from af_metrics.accounting.reattribute import reattribute, rows_to_read
from af_metrics.accounting.records import PseudonymKeyError, read_key, records, write_records
from af_metrics.accounting.totals import usage_totals
from af_metrics.cli.common import open_ledger, progress, settings
from af_metrics.kpis.periods import BY_CHOICES, PeriodError, parse_period, resolve
from af_metrics.report import human
from af_metrics.sources.htcondor import HistoryError, Schedd
from af_metrics.sources.kubernetes import PrometheusError
from af_metrics.timeutil import iso, parse_timestamp

PROGRESS_FROM_BYTES = 1_000_000


@click.group("accounting")
def accounting() -> None:
    """HTCondor and Kubernetes usage per hub user; usage records (docs/accounting.md)."""


@accounting.command("ingest-history")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--schedd", "from_schedd", is_flag=True, help="Read the schedd's history and queue through the bindings instead.")
@click.option("--queue", is_flag=True, help="FILE is condor_q output: jobs counted up to their ServerTime (or now), not settled.")
@click.option("--skip-bad", is_flag=True, help="Pass over unreadable ads (counted) instead of writing nothing.")
@click.pass_context
def ingest_history_command(ctx: click.Context, file: str | None, from_schedd: bool, queue: bool, skip_bad: bool) -> None:
    """Ingest HTCondor jobs from FILE (condor_history -long or -json output, or a schedd history file) or --schedd.

    Idempotent by GlobalJobId: a job that left the queue is settled once and never changes;
    a job still in the queue is counted up to now and replaced by later reads. One
    transaction: a record that cannot be read stops the run and nothing is written
    (with --skip-bad, unreadable ads are passed over and counted instead).
    """
    if (file is None) == (not from_schedd):
        raise click.UsageError("give a history FILE or --schedd (one of them)")
    cfg = settings(ctx)
    ledger = open_ledger(cfg)
    rules = cfg.accounting.rules
    now = time.time()
    try:
        if from_schedd:
            stats = ingest_schedd(ledger, Schedd(cfg.accounting.schedd, cfg.accounting.pool), rules, now)
            source = f"schedd {cfg.accounting.schedd or '(local)'}"
        else:
            stats = _ingest_file(ledger, file, rules, now, queue, skip_bad)
            source = "stdin" if file == "-" else file
    except HistoryError as exc:
        raise click.ClickException(f"{file or 'schedd'}: {exc}") from None
    click.echo(
        f"{source}: {stats.read} records, {stats.written} jobs written, {stats.unchanged} already settled,"
        f" {stats.unattributed} unattributed"
        + (f", {stats.skipped} unreadable ads skipped (the first at {stats.first_skipped})" if stats.skipped else "")
    )


def _ingest_file(ledger, file: str, rules, now: float, queue: bool, skip_bad: bool):  # noqa: ANN001, ANN202 - CLI plumbing
    if file == "-":
        return ingest_history(ledger, sys.stdin, rules, now, queue=queue, skip_bad=skip_bad)
    try:
        size = os.path.getsize(file)
        with progress(f"reading {file}", size, show=size >= PROGRESS_FROM_BYTES) as advance:  # in bytes read
            return ingest_history_file(ledger, file, rules, now, queue=queue, advance=advance, skip_bad=skip_bad)
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror}") from None


@accounting.command("ingest-pods")
@click.option("--prometheus", "url", metavar="URL", help="Prometheus base URL [accounting.prometheus_url].")
@click.option("--from", "from_", metavar="TIME", help="ISO 8601 start (default: where the last run stopped, else 24 h ago).")
@click.option("--to", "to", metavar="TIME", help="ISO 8601 end (default: now); only whole hours are read.")
@click.pass_context
def ingest_pods_command(ctx: click.Context, url: str | None, from_: str | None, to: str | None) -> None:
    """Ingest pods' CPU, memory and GPU requests and use, hour by hour, from Prometheus.

    Needs kube-state-metrics and cAdvisor series (the z2jh + kube-prometheus-stack setup).
    Each hour is committed on its own; an interrupted run continues where it stopped.
    """
    cfg = settings(ctx)
    url = url or cfg.accounting.prometheus_url
    if not url:
        raise click.UsageError("no Prometheus: give --prometheus URL or set accounting.prometheus_url")
    ledger = open_ledger(cfg)
    now = time.time()
    try:
        hours = pod_hours_due(ledger, cfg.timezone, now, parse_timestamp(from_) if from_ else None, parse_timestamp(to) if to else None)
    except ValueError as exc:
        raise click.ClickException(f"bad time: {exc}") from None
    cap = cfg.accounting.backfill_hours_max
    try:
        with progress("reading pod hours", min(len(hours), cap), show=len(hours) > 1, counted=True) as advance:
            stats = ingest_pod_hours(ledger, cfg.accounting, url, hours, now, advance)
    except PrometheusError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"hours read: {stats.hours}, pod-hours: {stats.pod_hours}, unattributed pod-hours: {stats.unattributed}")
    if len(hours) > cap:
        click.echo(f"stopped after {cap} hours (accounting.backfill_hours_max) at {iso(hours[cap], cfg.timezone)}: run again to continue")


@accounting.command("totals")
@click.option("--period", metavar="P", help="2026-10, 2026Q3, 2026-01-01..2026-03-31 ... (instead of --from/--to).")
@click.option("--from", "from_", metavar="YYYY-MM-DD", help="First day (default: 29 days before --to).")
@click.option("--to", "to", metavar="YYYY-MM-DD", help="Last day, included (default: today).")
@click.option("--by", type=click.Choice(BY_CHOICES), default="month", show_default=True, help="Bucket.")
@click.option("--by-group", is_flag=True, help="One row per accounting group (pods: their namespace) too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
def totals_command(ctx: click.Context, period: str | None, from_: str | None, to: str | None, by: str, by_group: bool, fmt: str) -> None:
    """Per-user totals: core-hours (pods + batch, each core once), CPU efficiency, GPU- and memory-hours.

    Dask schedulers' core-hours are shown beside the total, never added to it (their workers
    are batch jobs or pods already). The unattributed remainder is the row without a user.
    """
    cfg = settings(ctx)
    ledger = open_ledger(cfg)
    try:
        span = resolve(from_, to, period, cfg.timezone)
    except PeriodError as exc:
        raise click.ClickException(str(exc)) from None
    with ledger.engine.connect() as conn:
        rows = [t.hours() for t in usage_totals(conn, span, by, by_group)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["period"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        _table(rows, by_group)


TABLE_COLUMNS = (  # (column, header, unit for report.human); --format csv|json has every column
    ("core_hours", "core-h", "h"), ("notebook_core_hours", "notebook", "h"), ("pod_core_hours", "pods", "h"),
    ("batch_core_hours", "batch", "h"), ("batch_cpu_efficiency", "batch eff.", "ratio"), ("batch_jobs", "jobs", "n"),
    ("dask_core_hours", "dask (beside)", "h"), ("gpu_hours", "GPU-h", "h"),
)


def _table(rows: list[dict], by_group: bool) -> None:
    table = Table(box=box.SIMPLE_HEAD)
    keys = ["period", "user", *(["group"] if by_group else [])]
    for key in keys:
        table.add_column(key, no_wrap=True)
    for _, header, _ in TABLE_COLUMNS:
        table.add_column(header, justify="right", overflow="fold")
    for r in rows:
        labels = [str(r[k]) if r[k] is not None else "(unattributed)" for k in keys]
        table.add_row(*labels, *(human(r[c], unit) for c, _, unit in TABLE_COLUMNS))
    console = Console(width=None if sys.stdout.isatty() else 200)  # a file or pipe gets whole lines
    console.print(table)
    console.print("core-h = notebook + pods + batch (allocated cores x hours); Dask core-hours are shown beside, never added.", style="dim")


MOVES_SHOWN = 20


@accounting.command("reattribute")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.pass_context
def reattribute_command(ctx: click.Context, dry_run: bool) -> None:
    """Apply the [accounting] attribution rules again to the jobs and pods already in the ledger.

    After a rule was added or fixed: usage never changes, only whose it is (totals, KPIs and
    records follow). What the rules read at ingest is kept with each job and pod; rows ingested
    before that (ledger migration 0006) are left as they are unless the rules read only what the
    ledger has anyway, and are counted. One transaction.
    """
    cfg = settings(ctx)
    ledger = open_ledger(cfg)
    with progress("re-attributing", rows_to_read(ledger), counted=True) as advance:
        done = reattribute(ledger, cfg.accounting.rules, time.time(), dry_run=dry_run, advance=advance)
    verb = "would change" if dry_run else "changed"
    click.echo(f"{done.jobs} jobs read, {done.jobs_changed} {verb}; {done.pods} pods read, {done.pods_changed} {verb}")
    for reason, n in done.kept.items():
        click.echo(f"left as they were: {n} {reason}")
    if done.moves:
        table = Table(box=box.SIMPLE_HEAD, title="jobs and pods that change user" + (" (dry run)" if dry_run else ""))
        for header in ("from", "to"):
            table.add_column(header, no_wrap=True)
        table.add_column("rows", justify="right")
        for (old, new), n in done.moves.most_common(MOVES_SHOWN):
            table.add_row(old or "(unattributed)", new or "(unattributed)", str(n))
        Console(width=None if sys.stdout.isatty() else 200).print(table)


@accounting.command("export")
@click.option("--period", required=True, metavar="P", help="Period of the records: 2026-10, 2026Q3, 2026 ...")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--pseudonymize", is_flag=True, help="Replace user names by a keyed hash (needs --key-file).")
@click.option("--key-file", type=click.Path(dir_okay=False), help="Secret key for --pseudonymize (at least 16 bytes).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@click.pass_context
def export_command(ctx: click.Context, period: str, fmt: str, pseudonymize: bool, key_file: str | None, output: str | None) -> None:
    """Usage records of a period, per user (or pseudonym) and group, close to APEL/GRACC summaries.

    One record per infrastructure (htcondor, kubernetes), VO, group and user, with wall,
    core and CPU hours and job counts; the unattributed remainder is a record with an empty
    user. Record format: docs/accounting.md.
    """
    if pseudonymize != bool(key_file):
        raise click.UsageError("--pseudonymize and --key-file go together")
    cfg = settings(ctx)
    try:
        span = parse_period(period)
        key = read_key(key_file) if key_file else None
    except (PeriodError, PseudonymKeyError) as exc:
        raise click.ClickException(str(exc)) from None
    ledger = open_ledger(cfg)
    with ledger.engine.connect() as conn:
        totals = usage_totals(conn, span, "range", by_group=True)
    rows = list(records(totals, site=cfg.accounting.site, vo=cfg.accounting.vo, label=period.strip(), period=span, tz=cfg.timezone, key=key))
    if output:
        try:
            with open(output, "w", encoding="utf-8", newline="") as out:
                write_records(rows, out, fmt, time.time())
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
        click.echo(f"{output}: {len(rows)} records", err=True)
    else:
        write_records(rows, sys.stdout, fmt, time.time())


COMMANDS = [accounting]
