"""``demo``: a real local JupyterHub with activity on it, collected into a ledger, then the KPIs."""

from __future__ import annotations

import logging
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console

from af_metrics.cli.common import open_ledger, settings
from af_metrics.demo.facility import FacilityError, LocalFacility


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _check_port_free(bind: str, port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind((bind, port))
        except OSError:
            raise click.ClickException(f"port {port} is in use: set AF_METRICS_PORT for --keep-running") from None


@click.command()
@click.option("--users", "n_users", type=click.IntRange(1, 50), default=5, show_default=True, help="Users to create.")
@click.option("--seconds", type=click.FloatRange(10, 900), default=60, show_default=True, help="Time budget for the activity.")
@click.option("--keep-running", is_flag=True, help="Afterwards keep the hub and 'af-metrics serve' running until Ctrl-C.")
@click.pass_context
def demo(ctx: click.Context, n_users: int, seconds: float, keep_running: bool) -> None:
    """Start a real JupyterHub on loopback ports, drive realistic activity, collect it, print the KPIs.

    Needs configurable-http-proxy (npm install configurable-http-proxy). The ledger is a new
    SQLite file in a temporary directory unless --ledger is given.
    """
    from af_metrics.demo.run import BackgroundCollection, drive_activity, print_kpis, today_report

    for noisy in ("httpx", "alembic"):  # one line per request would bury the progress display
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console = Console(stderr=True)
    for sig in (signal.SIGINT, signal.SIGTERM):  # clean up on kill as on Ctrl-C (even if SIGINT was ignored)
        signal.signal(sig, _interrupt)
    try:
        with _facility(console) as facility:
            ledger_url = (ctx.find_root().obj or {}).get("ledger") or (
                f"sqlite:///{Path(tempfile.mkdtemp(prefix='af-metrics-demo-')) / 'ledger.db'}"
            )
            cfg = settings(
                ctx, hub_url=facility.hub_url, hub_api_token=facility.af_token, poll_interval=1.0, user_sweep_interval=10.0
            ).model_copy(update={"ledger": ledger_url})
            if keep_running:
                _check_port_free(cfg.bind, cfg.port)
            ledger = open_ledger(cfg)
            console.print(f"JupyterHub at {facility.public_url} (log in with any name); ledger {ledger_url}")
            collection = BackgroundCollection(cfg, ledger, serve_http=keep_running)
            collection.start()
            try:
                drive_activity(facility, collection, n_users, seconds, console)
                print_kpis(today_report(ledger, cfg.timezone), Console())
                if keep_running:
                    console.print(
                        f"af-metrics serving on http://{cfg.bind}:{cfg.port}/metrics; "
                        f"hub at {facility.public_url}. Ctrl-C to stop."
                    )
                    while collection.running:
                        time.sleep(0.5)
            finally:
                collection.stop()
            if collection.error is not None:
                raise click.ClickException(f"the collector failed: {collection.error}")
    except FacilityError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        console.print("interrupted")
        raise click.Abort() from None


@contextmanager
def _facility(console: Console) -> Iterator[LocalFacility]:
    """The running facility; stopped whatever happens (a second Ctrl-C does not cut the clean-up short)."""
    facility = LocalFacility()
    try:
        with console.status("starting JupyterHub and configurable-http-proxy"):
            facility.start()
        yield facility
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with console.status("stopping the facility"):
            facility.stop()


COMMANDS = [demo]
