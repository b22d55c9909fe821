"""``serve`` and ``collect``: run the collector (and the HTTP endpoints)."""

from __future__ import annotations

import asyncio
import logging

import click

from af_metrics.cli.common import open_ledger, settings
from af_metrics.collector import Collector
from af_metrics.config import ConfigError
from af_metrics.ledger.store import LedgerError, redact_url
from af_metrics.sources.jupyterhub import HubError


@click.command()
@click.option("--hub-url", help="JupyterHub base URL (default: $JUPYTERHUB_API_URL when run as a hub service).")
@click.option("--port", type=int, help="Port to listen on [9402].")
@click.option("--bind", help="Address to listen on [127.0.0.1].")
@click.option("--poll-interval", type=float, help="Seconds between collection cycles [30].")
@click.pass_context
def serve(ctx: click.Context, hub_url: str | None, port: int | None, bind: str | None, poll_interval: float | None) -> None:
    """Run the collector, /metrics, the JSON API and pages in one process."""
    from af_metrics.serve import serve as run

    cfg = settings(ctx, hub_url=hub_url, port=port, bind=bind, poll_interval=poll_interval)
    ledger = open_ledger(cfg)
    try:
        asyncio.run(run(cfg, ledger))
    except ConfigError as exc:  # a secret file (cookie key, metrics token) that cannot be used
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--hub-url", help="JupyterHub base URL.")
@click.option("--once", is_flag=True, help="Run one cycle and exit (non-zero if the hub cannot be read).")
@click.pass_context
def collect(ctx: click.Context, hub_url: str | None, once: bool) -> None:
    """Run only the collector (no HTTP): every poll interval, or --once."""
    cfg = settings(ctx, hub_url=hub_url)
    ledger = open_ledger(cfg)
    collector = Collector(cfg, ledger)
    if once:
        # the error ends the command as one line; the collector's own warning would repeat it
        logging.getLogger("af_metrics.collector").setLevel(logging.ERROR)
        try:
            asyncio.run(collector.cycle())
        except (HubError, LedgerError) as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"collected at {collector.last_cycle.started:.0f} in {collector.last_cycle.duration:.2f}s")
        return

    async def loop() -> None:
        await collector.run(asyncio.Event())

    asyncio.run(loop())


@click.group()
def db() -> None:
    """Ledger maintenance."""


@db.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Migrate the ledger to this version's schema (every command also does this)."""
    ledger = open_ledger(settings(ctx))
    click.echo(f"ledger at schema {ledger.version()}, days in time zone {ledger.tz}")


@click.command("config")
@click.pass_context
def show_config(ctx: click.Context) -> None:
    """Print the settings in force (token hidden) and where each can be set."""
    cfg = settings(ctx)
    for name, field in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        if not field.repr:  # secrets: hub token, gateway password
            value = "***" if value else ""
        elif name == "ledger":
            value = redact_url(value)
        click.echo(f"{name} = {value!r}    # AF_METRICS_{name.upper()}: {field.description}")


COMMANDS = [serve, collect, db, show_config]
