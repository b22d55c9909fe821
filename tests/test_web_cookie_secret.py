"""The login cookie outlives a restart: alice logs in through the real hub's OAuth flow (its
login form, with httpx instead of a browser) on one ``af-metrics serve``; a new process with
the same ``cookie_secret_file`` accepts her cookie, one with another key sends her back to the
hub. Then the file itself: made private on first use, and refused when others may read it or
it holds no key.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from af_metrics.config import ConfigError
from af_metrics.demo.facility import LocalFacility, free_port
from af_metrics.ledger.store import Ledger
from af_metrics.web.secret_files import cookie_secret
from tests.conftest import _proxy, wait_until
from tests.facility import AfProcess, af_metrics
from tests.web_support import PREFIX, routed, seed_usage, web_hub, web_settings


def serve_env(base: Path, hub_url: str, hub_token: str, key: Path) -> dict[str, str]:
    """A serve environment with this hub and this cookie_secret_file, and nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AF_METRICS_", "JUPYTERHUB_"))}
    env.update(web_settings(f"sqlite:///{base / 'ledger.db'}", base / "none.toml", AF_METRICS_HUB_URL=hub_url,
                            AF_METRICS_HUB_API_TOKEN=hub_token, AF_METRICS_COOKIE_SECRET_FILE=str(key)))
    return env


@dataclass
class Site:
    facility: LocalFacility
    port: int
    base: Path

    def serve(self, key: Path) -> AfProcess:
        """``af-metrics serve`` on the port the hub routes to, answering through the hub's proxy."""
        env = serve_env(self.base, self.facility.hub_url, self.facility.af_token, key)
        proc = AfProcess(["serve", "--port", str(self.port)], env, self.base / "serve.log")
        wait_until(lambda: proc.running() and routed(self.facility), 60, 0.2, what="af-metrics through the hub's proxy")
        return proc


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("cookie-secret")
    led = Ledger.open(f"sqlite:///{base / 'ledger.db'}")
    seed_usage(led)
    led.engine.dispose()
    port = free_port()
    with web_hub(base / "hub", _proxy(), port) as facility:
        yield Site(facility, port, base)


def hub_login(client: httpx.Client, path: str, user: str) -> httpx.Response:
    """Open ``path`` of af-metrics and log in on the hub's own form, following every redirect."""
    form = client.get(path, follow_redirects=True)
    assert form.url.path == "/hub/login", form.url
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', form.text)
    assert xsrf, "no _xsrf field on the hub's login form"
    return client.post(form.url, data={"username": user, "password": "any", "_xsrf": xsrf.group(1)}, follow_redirects=True)


@pytest.mark.hub
def test_a_login_survives_a_restart_with_the_same_cookie_secret_file(site: Site) -> None:
    key, other = site.base / "keys" / "cookie_secret", site.base / "other_cookie_secret"
    page = f"{PREFIX}users/alice"
    with httpx.Client(base_url=site.facility.public_url, timeout=30) as browser:
        with site.serve(key) as first:
            logged_in = hub_login(browser, page, "alice")
            assert logged_in.status_code == 200 and logged_in.url.path == page
            first.terminate()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and re.fullmatch(r"[0-9a-f]{64}\n", key.read_text())

        with site.serve(key) as restarted:  # same key: the cookie still says alice
            again = browser.get(page)
            assert again.status_code == 200 and "alice" in again.text
            restarted.terminate()
        with site.serve(other) as rekeyed:  # another key: back to the hub's login
            refused = browser.get(page)
            assert refused.status_code == 302 and refused.headers["location"].startswith("/hub/api/oauth2/authorize?")
            rekeyed.terminate()


def test_a_new_key_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "cookie_secret"
    first = cookie_secret(str(path))
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cookie_secret(str(path)) == first  # read back, not made again
    assert os.listdir(path.parent) == ["cookie_secret"]  # no temporary file left


def test_a_group_readable_key_is_taken_as_jupyterhub_takes_its_own(tmp_path: Path) -> None:
    path = tmp_path / "cookie_secret"
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o440)  # a Kubernetes Secret with defaultMode 0400 under an fsGroup
    assert cookie_secret(str(path)) == bytes.fromhex("ab" * 32)


def test_a_default_key_place_that_cannot_be_written_falls_back_to_a_key_of_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from af_metrics.config import Settings
    from af_metrics.web.auth import WebAuth

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocked))  # the default data directory cannot be made
    hub = {"hub_url": "http://127.0.0.1:9", "hub_api_token": "x" * 32}
    auth = WebAuth(Settings(**hub))
    assert len(auth.cookie_secret) == 32 and auth.hub_auth is not None
    assert "set cookie_secret_file" in caplog.text
    with pytest.raises(ConfigError, match="cannot create cookie_secret_file"):  # a place chosen on purpose must work
        WebAuth(Settings(**hub, cookie_secret_file=str(blocked / "cookie_secret")))


@pytest.mark.parametrize("content, mode, message", [
    ("ab" * 32 + "\n", 0o604, "can be read or written by others"),
    ("not hex at all\n", 0o600, "must hold at least 32 bytes in hex"),
    ("ab" * 16 + "\n", 0o600, "must hold at least 32 bytes in hex"),
])
def test_an_unusable_key_file_is_one_line_and_left_alone(tmp_path: Path, content: str, mode: int, message: str) -> None:
    path = tmp_path / "cookie_secret"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=message):
        cookie_secret(str(path))
    assert path.read_text() == content and stat.S_IMODE(path.stat().st_mode) == mode
    # and from the command line: one line, before anything listens (the hub is only named, never asked)
    done = af_metrics("serve", "--port", "0", env=serve_env(tmp_path, "http://127.0.0.1:9", "x" * 32, path))
    assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
