"""``af-metrics report --html FILE``: one self-contained file whose charts draw in a real
browser that is allowed no request at all (the file must carry everything it needs)."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from af_metrics.figures import FIGURES
from af_metrics.ledger.store import Ledger
from tests.web_support import PageWatch, chart_states, chromium, seed_usage


class ExternalRefs(HTMLParser):
    """Every src/href of the document that is not inline (data:) or a fragment."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("data:", "#")):
                self.found.append(f"<{tag} {name}={value}>")


def cli(*args: str, ledger_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "af_metrics", "--ledger", ledger_url, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    base = tmp_path_factory.mktemp("report-html")
    url = f"sqlite:///{base / 'ledger.db'}"
    led = Ledger.open(url)
    seed_usage(led)
    led.engine.dispose()
    return url, base


def test_html_report_is_self_contained_and_draws_offline(seeded: tuple[str, Path], artifacts: Path) -> None:
    url, base = seeded
    out = base / "report.html"
    done = cli("report", "--html", str(out), ledger_url=url)  # the last 30 days: the seeded usage
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out}: ")
    text = out.read_text()
    refs = ExternalRefs()
    refs.feed(text)
    assert refs.found == []
    facility = [name for name, f in FIGURES.items() if f.scope == "facility"]

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        watch = PageWatch(page)
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort())
        page.goto(out.as_uri())
        page.wait_for_function("document.querySelectorAll('.plot .main-svg').length >= 9", timeout=60_000)
        states = chart_states(page)
        csv = page.eval_on_selector('a.csv[data-figure="active_users"]', "a => decodeURIComponent(a.href.split(',').slice(1).join(','))")
        page.screenshot(path=str(artifacts / "report-html.png"), full_page=True)

    assert watch.requests == [out.as_uri()]  # nothing fetched: no CDN, no fonts, no data
    assert watch.errors == []
    assert sorted(states) == sorted(facility)
    for name in facility:
        assert states[name]["svg"] and states[name]["points"] > 0, (name, states[name])
    assert states["retention"]["types"] == ["heatmap"] and states["hour_of_week"]["types"] == ["heatmap"]
    assert states["active_users"]["types"] == ["scatter"] * 3 and states["active_users"]["points"] == 30
    assert csv.splitlines()[0] == "period,dau,wau,mau" and len(csv.splitlines()) == 31


def test_report_formats_agree_on_the_period(seeded: tuple[str, Path]) -> None:
    url, base = seeded
    as_json = json.loads(cli("report", "--period", "2026", "--format", "json", ledger_url=url).stdout)
    out = base / "2026.html"
    done = cli("report", "--period", "2026", "--html", str(out), ledger_url=url)
    assert done.returncode == 0 and "2026-01-01..2026-12-31" in done.stdout
    figures = json.loads(out.read_text().split('<script type="application/json" id="figures">')[1].split("</script>")[0])
    assert {f["from"] for f in figures} == {as_json["from"]} and {f["by"] for f in figures if f["name"] == "active_users"} == {"week"}
    assert cli("report", "--period", "2026", "--format", "csv", ledger_url=url).stdout.startswith("section,row,column,value")


def test_a_bad_period_writes_nothing(seeded: tuple[str, Path]) -> None:
    url, base = seeded
    out = base / "bad.html"
    done = cli("report", "--period", "2026Q5", "--html", str(out), ledger_url=url)
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.strip().splitlines()[-1].startswith("Error: bad period '2026Q5'")
    unwritable = cli("report", "--html", str(base / "no" / "such" / "dir.html"), ledger_url=url)
    assert unwritable.returncode == 1 and "cannot write" in unwritable.stderr and "Traceback" not in unwritable.stderr
