"""``af-metrics kpi`` (one KPI over a range) and ``af-metrics report`` (all of them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from af_metrics.cli.common import open_ledger, progress, settings
from af_metrics.kpis import KPIError, compute_kpi, kpi_catalogue, period_report
from af_metrics.kpis.periods import BY_CHOICES
from af_metrics.report import FORMATS, write_catalogue, write_kpi, write_report
from af_metrics.report_html import write_html_report


def range_options(fn: Callable) -> Callable:
    """--period, or --from/--to; without any, the last 30 days."""
    fn = click.option("--to", "to", metavar="YYYY-MM-DD", help="Last day, included (default: today).")(fn)
    fn = click.option("--from", "from_", metavar="YYYY-MM-DD", help="First day (default: 29 days before --to).")(fn)
    fn = click.option(
        "--period", metavar="P",
        help="2026-01-31, 2026-W05, 2026-10, 2026Q3, 2026 or 2026-01-01..2026-03-31 (instead of --from/--to).",
    )(fn)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True, help="Output format.")(fn)


@click.command("kpi")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the KPIs with their one-line definitions.")
@click.option("--by", type=click.Choice(BY_CHOICES), help="Bucket of a periodic KPI (default: day; 'range' = one value).")
@range_options
@click.pass_context
def kpi(ctx: click.Context, name: str | None, list_: bool, by: str | None, fmt: str, **period: Any) -> None:
    """One KPI over a range of days, e.g. 'af-metrics kpi dau --period 2026Q1 --by week --format csv'.

    Days are facility-local (the 'timezone' setting). Definitions: 'af-metrics kpi --list'
    and docs/kpis.md.
    """
    if list_:
        write_catalogue(kpi_catalogue(), fmt)
        return
    if not name:
        raise click.ClickException("give a KPI name, or --list to see them")
    ledger = open_ledger(settings(ctx))
    try:
        result = _run(compute_kpi, ledger, name, by=by, **period)
    finally:
        ledger.engine.dispose()
    write_kpi(result, fmt)


@click.command("report")
@range_options
@click.option("--html", type=click.Path(dir_okay=False), metavar="FILE",
              help="Instead, write one self-contained HTML file with the charts (to send or archive).")
@click.pass_context
def report(ctx: click.Context, fmt: str, html: str | None, **period: Any) -> None:
    """Every KPI for a period: headline figures, top profiles, retention, hour-of-week heat map."""
    ledger = open_ledger(settings(ctx))
    try:
        if html:
            try:
                written = _run(write_html_report, ledger, html, **period)
            except OSError as exc:
                raise click.ClickException(f"cannot write {html}: {exc.strerror or exc}") from None
            click.echo(f"wrote {written['path']}: {written['from']}..{written['to']}, {written['bytes'] / 1e6:.1f} MB")
            return
        with progress("computing KPIs", len(kpi_catalogue()), counted=True) as advance:
            result = _run(period_report, ledger, progress=lambda _name: advance(1), **period)
    finally:
        ledger.engine.dispose()
    write_report(result, fmt)


def _run(fn: Callable[..., dict], *args: Any, from_: str | None, to: str | None, period: str | None, **kwargs: Any) -> dict:
    try:
        return fn(*args, **{"from": from_, "to": to, "period": period}, **kwargs)
    except KPIError as exc:
        raise click.ClickException(str(exc)) from None


COMMANDS = [kpi, report]
