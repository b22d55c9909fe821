"""The pages in a real browser (Debian's headless Chromium via Playwright), logged in through a
real JupyterHub that runs af-metrics itself as a *managed* service (the hub starts
``af-metrics serve`` and hands it its URL, prefix, token and OAuth client).

alice logs in and sees her own page with charts drawn from data, and gets 403 for bob's page
and bob's data; olga (admin group) sees the facility page, changes the range, downloads a
chart's CSV and opens bob's page. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from af_metrics.demo.facility import LocalFacility, free_port
from af_metrics.figures import FIGURES
from af_metrics.ledger.store import Ledger
from tests.conftest import _proxy, wait_until
from tests.web_support import PREFIX, PageWatch, chart_states, chromium, routed, seed_usage, web_hub, web_settings

pytestmark = pytest.mark.hub
ALL_READY = "Array.from(document.querySelectorAll('section.chart')).every(s => s.dataset.state === 'ready')"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[LocalFacility]:
    base = tmp_path_factory.mktemp("browser")
    ledger_url = f"sqlite:///{base / 'ledger.db'}"
    led = Ledger.open(ledger_url)
    seed_usage(led)
    led.engine.dispose()
    managed = web_settings(ledger_url, base / "none.toml")
    managed["PATH"] = os.environ.get("PATH", "")
    facility = web_hub(base / "hub", _proxy(), free_port(), managed_env=managed)
    try:
        with facility:
            wait_until(lambda: routed(facility), 60, what="the hub-managed af-metrics service")
            yield facility
    finally:
        if facility.log_path.exists():
            artifacts.joinpath("browser-jupyterhub.log").write_bytes(facility.log_path.read_bytes())


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as b:
        yield b


def log_in(browser, hub: LocalFacility, user: str, path: str = ""):  # noqa: ANN001, ANN201
    """A fresh browser session that opens af-metrics and logs in on the hub's own login page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    watch = PageWatch(page)
    page.goto(f"{hub.public_url}{PREFIX}{path}")
    page.wait_for_url("**/hub/login**")
    page.fill("#username_input", user)
    page.fill("#password_input", "any")
    page.click("#login_submit")
    return page, watch


def test_a_user_sees_their_own_page_and_not_another(hub: LocalFacility, browser, artifacts: Path) -> None:  # noqa: ANN001
    page, watch = log_in(browser, hub, "alice")
    page.wait_for_url(f"**{PREFIX}users/alice*")
    page.wait_for_function(ALL_READY, timeout=60_000)
    assert page.inner_text("h1") == "My usage"
    assert page.inner_text("nav .who") == "alice"
    assert page.locator("nav a", has_text="Facility").count() == 0
    states = chart_states(page)
    page.screenshot(path=str(artifacts / "browser-alice-my-usage.png"), full_page=True)
    assert watch.errors == []
    assert states["my_sessions"]["types"] == ["bar", "scatter"] and states["my_sessions"]["points"] > 0
    assert states["my_dask"]["types"] == ["bar"] and states["my_dask"]["points"] > 0
    # notebook pods, other pods, batch jobs, stacked: her batch job is drawn
    assert states["my_core_hours"]["types"] == ["bar", "bar", "bar"] and states["my_core_hours"]["points"] > 0
    assert states["my_throughput"]["types"] == ["scatter", "scatter"] and states["my_throughput"]["points"] > 0
    assert states["my_runs"]["tableRows"] == 3

    # bob's data, asked from alice's logged-in page the way the page itself asks for hers
    status = page.evaluate("""async () => {
        const xsrf = document.querySelector('meta[name="xsrf"]').content;
        const ask = (p) => fetch(document.body.dataset.prefix + p, {headers: {'X-XSRFToken': xsrf}}).then(r => r.status);
        return [await ask('api/v1/users/alice/figures/my_dask'), await ask('api/v1/users/bob/figures/my_dask'),
                await ask('api/v1/figures/active_users')];
    }""")
    assert status == [200, 403, 403]
    forbidden = page.goto(f"{hub.public_url}{PREFIX}users/bob")
    assert forbidden is not None and forbidden.status == 403
    assert "only see your own" in page.inner_text("body")
    page.screenshot(path=str(artifacts / "browser-alice-bob-forbidden.png"))
    assert page.goto(f"{hub.public_url}{PREFIX}facility").status == 403
    page.context.close()


def test_an_admin_sees_the_facility_pages(hub: LocalFacility, browser, artifacts: Path) -> None:  # noqa: ANN001
    page, watch = log_in(browser, hub, "olga", "facility")
    page.wait_for_url(f"**{PREFIX}facility*")
    page.wait_for_function(ALL_READY, timeout=60_000)
    assert page.inner_text("h1") == "Facility usage" and page.inner_text("nav .who") == "olga (admin)"
    states = chart_states(page)
    page.screenshot(path=str(artifacts / "browser-olga-facility.png"), full_page=True)
    assert watch.errors == []
    facility = [name for name, f in FIGURES.items() if f.scope == "facility"]
    assert sorted(states) == sorted(facility)
    for name in facility:
        assert states[name]["svg"] and states[name]["points"] > 0, (name, states[name])
    assert states["retention"]["types"] == ["heatmap"] and states["hour_of_week"]["types"] == ["heatmap"]
    assert states["active_users"]["points"] == 30  # the default range: the last 30 days, by day

    # the range picker: weekly buckets, reloaded in place and kept in the address
    page.select_option("#range select[name=by]", "week")
    page.click("#range button[type=submit]")
    page.wait_for_function("document.querySelector('[data-figure=active_users]').dataset.rows < 10 && " + ALL_READY, timeout=60_000)
    assert "by=week" in page.url
    labels = page.evaluate("document.querySelector('[data-figure=active_users] .plot').data[0].x")
    assert labels and all("-W" in label for label in labels)

    with page.expect_download() as download:
        page.click("[data-figure=active_users] a.csv")
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0] == "period,dau,wau,mau" and len(lines) == 1 + len(labels)

    page.fill("#goto-user input[name=user]", "bob")
    page.click("#goto-user button")
    page.wait_for_url(f"**{PREFIX}users/bob*")
    page.wait_for_function(ALL_READY, timeout=60_000)
    assert page.inner_text("h1") == "Usage of bob"
    assert chart_states(page)["my_runs"]["tableRows"] == 1
    page.screenshot(path=str(artifacts / "browser-olga-bob.png"), full_page=True)
    assert watch.errors == []
    page.context.close()
