"""Options and helpers shared by every command."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

from af_metrics.config import ConfigError, Settings, load_settings
from af_metrics.ledger.store import Ledger, LedgerError


def main_options(fn: Callable) -> Callable:
    @click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML config file.")
    @click.option("--ledger", "ledger_url", metavar="URL", help="Ledger URL (sqlite:///file.db or postgresql://...).")
    @click.pass_context
    @functools.wraps(fn)
    def wrapper(ctx: click.Context, config_file: str | None, ledger_url: str | None, **kwargs: Any) -> Any:
        ctx.obj = {"config_file": config_file, "ledger": ledger_url}
        return ctx.invoke(fn, **kwargs)

    return wrapper


def settings(ctx: click.Context, **overrides: Any) -> Settings:
    """Settings for this invocation; a bad setting exits with one line."""
    obj = ctx.find_root().obj or {}
    try:
        return load_settings(obj.get("config_file"), ledger=obj.get("ledger"), **overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def open_ledger(cfg: Settings) -> Ledger:
    try:
        return Ledger.open(cfg.ledger, tz=cfg.timezone)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def progress(what: str, total: int, show: bool = True, counted: bool = False) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (only on a terminal); yields the function that advances it."""
    console = Console(stderr=True)
    columns = [TextColumn(what), BarColumn(), MofNCompleteColumn() if counted else TaskProgressColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True, disable=not (show and console.is_terminal)) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
