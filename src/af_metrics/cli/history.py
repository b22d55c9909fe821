"""``import sessions`` and ``simulate``: history that the collector did not see."""

from __future__ import annotations

import datetime as dt
import os

import click

from af_metrics.cli.common import open_ledger, progress, settings
from af_metrics.config import Settings
from af_metrics.importer import ImportFileError, import_sessions
from af_metrics.ledger.store import Ledger
from af_metrics.simulate import Plan, SimulateError, simulate
from af_metrics.timeutil import zone

PROGRESS_FROM_BYTES = 1_000_000  # smaller files import in a blink: no progress bar

ledger_option = click.option("--ledger", "ledger_url", metavar="URL", help="Ledger URL (same as the global --ledger).")


def _ledger(ctx: click.Context, ledger_url: str | None) -> tuple[Settings, Ledger]:
    cfg = settings(ctx)
    if ledger_url:
        cfg = cfg.model_copy(update={"ledger": ledger_url})
    return cfg, open_ledger(cfg)


@click.group("import")
def import_group() -> None:
    """Backfill the ledger from files."""


@import_group.command("sessions")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@ledger_option
@click.pass_context
def import_sessions_command(ctx: click.Context, file: str, ledger_url: str | None) -> None:
    """Backfill sessions from a CSV FILE with the header user,server,profile,start,end.

    Times are ISO 8601 with a UTC offset (2026-01-05T09:30:00+01:00). An empty server is
    the default server, an empty profile is unknown, an empty end is a session still running.
    The whole file is checked first: one bad row and nothing is written. Sessions already
    in the ledger (same user, server and start) are left as they are.
    """
    _, ledger = _ledger(ctx, ledger_url)
    size = os.path.getsize(file)
    try:
        with progress(f"importing {file}", 2 * size, show=size >= PROGRESS_FROM_BYTES) as advance:
            result = import_sessions(ledger, file, advance=advance)
    except ImportFileError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {file}: {exc.strerror}") from None
    click.echo(f"{file}: {result.rows} sessions, {result.new} new, {result.present} already present")


@click.command("simulate")
@click.option("--users", type=click.IntRange(1, 1_000_000), required=True, help="Users who join during the period.")
@click.option("--days", type=click.IntRange(1, 3660), required=True, help="Length of the period in days.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed and arguments, same history.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last simulated day, YYYY-MM-DD [yesterday].")
@ledger_option
@click.pass_context
def simulate_command(ctx: click.Context, users: int, days: int, seed: int, end: dt.datetime | None, ledger_url: str | None) -> None:
    """Write a realistic synthetic history (source 'simulate') into a ledger.

    For demos and benchmarks: users joining over time, churn and comebacks, weekly and
    daily rhythm in the facility time zone, varied session lengths and profiles, some
    named servers and a few per cent failed spawns. Refuses a ledger with real sessions.
    """
    cfg, ledger = _ledger(ctx, ledger_url)
    last = end.date() if end else dt.datetime.now(zone(cfg.timezone)).date() - dt.timedelta(days=1)
    plan = Plan(users=users, days=days, end=last, seed=seed)
    try:
        with progress("simulating users", users, counted=True) as advance:
            outcome = simulate(ledger, plan, advance=advance)
    except SimulateError as exc:
        raise click.ClickException(str(exc)) from None
    first = last - dt.timedelta(days=days - 1)
    click.echo(
        f"simulated {outcome.users} users from {first} to {last}: {outcome.sessions} sessions "
        f"({outcome.new_sessions} new), {outcome.spawns} spawn attempts ({outcome.failures} failed)"
    )


COMMANDS = [import_group, simulate_command]
