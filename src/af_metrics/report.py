"""Rendering KPI results and period reports: rich terminal tables, CSV and JSON.

Input is what ``af_metrics.kpis.compute_kpi`` / ``period_report`` return, so the CLI and any
other caller show the same figures. CSV and JSON carry raw values (seconds, ratios 0..1);
terminal tables show them for people (durations as 1h 05m, ratios as percentages).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "csv", "json")
TOP_ROWS = 10  # rows of a long table shown in the terminal report
SHADES = " ░▒▓█"  # heat-map cells, by share of the busiest hour


def write_kpi(result: dict, fmt: str, out: TextIO | None = None) -> None:
    """One KPI: CSV is exactly its columns then its rows."""
    out = out or sys.stdout
    if fmt == "json":
        _write_json(result, out)
    elif fmt == "csv":
        _write_csv(result["columns"], result["rows"], out)
    else:
        console = Console(file=out)
        console.print(Text(f"{result['title']}, {result['from']}..{result['to']} ({result['timezone']})", style="bold"))
        if result["name"] == "hour_of_week":
            console.print(heatmap(result))
        else:
            console.print(_table(None, result["columns"], result["rows"], _column_units(result)))
        _print_notes(console, [result["definition"], *result["notes"]])


def write_catalogue(catalogue: list[dict], fmt: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        _write_json({"kpis": catalogue}, out)
    elif fmt == "csv":
        columns = ["name", "kind", "unit", "periodic", "definition"]
        _write_csv(columns, [[k[c] for c in columns] for k in catalogue], out)
    else:
        table = Table(box=box.SIMPLE, show_header=True)
        for column in ("name", "unit", "definition"):
            table.add_column(column, overflow="fold")
        for k in catalogue:
            table.add_row(k["name"], k["unit"], k["definition"])
        Console(file=out).print(table)


def write_report(report: dict, fmt: str, out: TextIO | None = None) -> None:
    """The period report. CSV is long-form: ``section,row,column,value`` (one cell per line)."""
    out = out or sys.stdout
    if fmt == "json":
        _write_json(report, out)
    elif fmt == "csv":
        _write_csv(["section", "row", "column", "value"], _long_rows(report), out)
    else:
        _print_report(report, Console(file=out))


def _long_rows(report: dict) -> Iterable[list[Any]]:
    for item in report["headline"]:
        yield ["headline", item["name"], "value", item["value"]]
    for table in report["tables"]:
        if table["name"] == "hour_of_week":  # weekday, hour -> one row per weekday-hour
            for weekday, hour, users in table["rows"]:
                yield [table["name"], f"{weekday} {hour:02d}", "users", users]
            continue
        keys = _label_columns(table["rows"])  # e.g. cohort; or period and user
        for row in table["rows"]:
            label = " ".join(str(v) for v in row[:keys])
            for column, value in zip(table["columns"][keys:], row[keys:]):
                yield [table["name"], label, column, value]


def _label_columns(rows: Sequence[Sequence[Any]]) -> int:
    """How many leading columns hold text labels (at least one)."""
    width = 1
    while rows and width < len(rows[0]) - 1 and all(isinstance(r[width], str) for r in rows):
        width += 1
    return width


def _print_report(report: dict, console: Console) -> None:
    console.print(Text(f"Facility usage {report['from']}..{report['to']} ({report['timezone']})", style="bold"))
    headline = Table(box=box.SIMPLE_HEAD, title="Headline (means over the days for daily KPIs)", title_justify="left")
    headline.add_column("KPI")
    headline.add_column("value", justify="right")
    headline.add_column("name", style="dim")
    notes: list[str] = []
    for item in report["headline"]:
        headline.add_row(item["title"], human(item["value"], item["unit"]), item["name"])
        notes.extend(item["notes"])
    console.print(headline)
    for table in report["tables"]:
        if not table["rows"]:
            console.print(Text(f"{table['title']}: no data", style="italic"))
            console.print()
        elif table["name"] == "hour_of_week":
            console.print(Text(table["title"], style="italic"))
            console.print(heatmap(table))
        else:
            rows = table["rows"][:TOP_ROWS] if table["name"] != "retention" else table["rows"]
            more = len(table["rows"]) - len(rows)
            title = table["title"] + (f" (top {len(rows)} of {len(table['rows'])})" if more else "")
            console.print(_table(title, table["columns"], rows, _column_units(table)))
        notes.extend(table["notes"])
    _print_notes(console, [*notes, "Definitions: af-metrics kpi --list"])


def heatmap(result: dict) -> Text:
    """Hour-of-week cells as shaded blocks, two characters per hour (rows: weekdays)."""
    cells: dict[str, list[float | None]] = {}
    for weekday, _hour, users in result["rows"]:
        cells.setdefault(weekday, []).append(users)
    peak = max((v for row in cells.values() for v in row if v), default=0.0)
    text = Text(f"local hours; █ = {human(peak, 'users')} users\n", style="dim")
    text.append("    " + "".join(f"{hour:<6d}" for hour in range(0, 24, 3)) + "\n", style="dim")
    for weekday, values in cells.items():
        text.append(f"{weekday} ")
        for value in values:
            text.append_text(_shade(value, peak))
        text.append("\n")
    return text


def _shade(value: float | None, peak: float) -> Text:
    if not value or not peak:
        return Text("··", style="dim")
    level = min(len(SHADES) - 1, 1 + int(value / peak * (len(SHADES) - 2) + 0.5))
    return Text(SHADES[level] * 2, style="cyan")


def _table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], units: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*(human(v, u) for v, u in zip(row, units)))
    return table


def _column_units(result: dict) -> list[str]:
    """The KPI's unit for its value columns; the first column is a label."""
    columns = result["columns"]
    if result["name"] == "retention":
        return ["", "users"] + ["share"] * (len(columns) - 2)
    return [""] + [c if c in ("users", "sessions") else "ratio" if c.endswith("_rate") else result["unit"] for c in columns[1:]]


def human(value: Any, unit: str) -> str:
    """A value for a person: durations in h/m/s, ratios as percentages, counts with separators."""
    if value is None:
        return "–"
    if isinstance(value, str) or not unit:
        return str(value)
    if unit == "seconds":
        seconds = round(value)
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}h {minutes:02d}m" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{value:.1f}s")
    if unit in ("ratio", "share"):
        return f"{100 * value:.1f}%"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


def _print_notes(console: Console, notes: Iterable[str]) -> None:
    for note in dict.fromkeys(notes):  # unique, in order
        console.print(Text(note, style="dim"))


def _write_json(payload: Any, out: TextIO) -> None:
    out.write(json.dumps(payload, indent=2, default=str) + "\n")


def _write_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else (round(v, 6) if isinstance(v, float) else v) for v in row])
