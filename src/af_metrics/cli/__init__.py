"""The ``af-metrics`` command line. Each command group lives in its own module."""

from __future__ import annotations

import logging
import sys

import click

from af_metrics import __version__
from af_metrics.cli import accounting, demo, history, kpi, monitoring, serve
from af_metrics.cli.common import main_options


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="af-metrics")
@main_options
def cli() -> None:
    """How an analysis facility is used, by whom, and how well.

    Every command finds the ledger by --ledger URL, else $AF_METRICS_LEDGER, else a SQLite
    file in your data directory. Settings come from --config FILE (TOML), $AF_METRICS_*,
    and documented defaults (see 'af-metrics config').
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for chatty in ("httpx", "httpcore", "alembic", "tornado.access"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


for module in (serve, kpi, history, demo, monitoring, accounting):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="af-metrics")
