"""``af-metrics report --html FILE``: the period's facility charts as one self-contained file.

For an operator to send or archive (funding agencies, reviews): everything is inlined, i.e.
plotly.js from the installed ``plotly`` package, the chart code the live pages use
(``web/static/charts.js``), the stylesheet and the figures' data, so opening the file makes
no request at all. Figures and headline values are the ones the API and ``report`` give.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from af_metrics import __version__
from af_metrics.figures import compute_figures, resolve_range
from af_metrics.kpis import period_report
from af_metrics.kpis.periods import Period, iso_day
from af_metrics.ledger.store import Ledger
from af_metrics.report import human
from af_metrics.web.assets import STATIC, plotly_js, templates


def _inline(text: str) -> str:
    """Text safe inside a <script> element (no early end tag)."""
    return text.replace("</", "<\\/")


def render_html_report(ledger: Ledger, **period: Any) -> tuple[str, Period]:
    """The HTML of the report for ``from``/``to``/``period`` and its range (KPIError on a bad range)."""
    report = period_report(ledger, **period)
    p, by = resolve_range(ledger, period.get("from"), period.get("to"), period.get("period"), None)
    figures = compute_figures(ledger, "facility", p, by)
    label = period.get("period") or f"{iso_day(p.first)} to {iso_day(p.last)}"
    html = templates.get_template("report.html").render(
        title=f"Facility usage, {label}",
        first=iso_day(p.first), last=iso_day(p.last), timezone=ledger.tz, by=by, version=__version__,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        headline=[{**item, "value": human(item["value"], item["unit"])} for item in report["headline"]],
        figures=figures,
        figures_json=_inline(json.dumps(figures, default=str)),
        css=(STATIC / "pages.css").read_text(),
        plotly_js=_inline(plotly_js().decode()),
        charts_js=_inline((STATIC / "charts.js").read_text()),
    )
    return html, p


def write_html_report(ledger: Ledger, path: str | Path, **period: Any) -> dict:
    """Write the report to ``path`` whole or not at all; say what was written."""
    text, p = render_html_report(ledger, **period)
    html = text.encode()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(html)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(path), "from": iso_day(p.first), "to": iso_day(p.last), "bytes": len(html)}
