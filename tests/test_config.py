"""Settings precedence and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from af_metrics.cli import cli
from af_metrics.config import ConfigError, load_settings


def test_precedence_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "af.toml"
    cfg.write_text('poll_interval = 12.0\ntimezone = "Europe/Zurich"\nport = 9000\n')
    monkeypatch.setenv("AF_METRICS_PORT", "9100")
    s = load_settings(cfg, bind="0.0.0.0")
    assert (s.poll_interval, s.timezone, s.port, s.bind) == (12.0, "Europe/Zurich", 9100, "0.0.0.0")


def test_managed_service_environment_gives_hub_url_and_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret")
    assert load_settings().resolved_hub() == ("http://127.0.0.1:8081", "secret")


@pytest.mark.parametrize(
    ("text", "needle"),
    [("poll_interval = -1\n", "poll_interval"), ('timezone = "Mars/Olympus"\n', "time zone"), ("nonsense = 1\n", "nonsense"), ("port = [", "cannot read")],
)
def test_bad_config_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cli_reports_bad_ledger_url_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--ledger", "mysql://x/y", "db", "upgrade"])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == ["Error: unsupported ledger URL 'mysql://x/y': use sqlite:///path.db or postgresql://user@host/db"]


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output
        for sub in getattr(command, "commands", {}):
            assert runner.invoke(cli, [name, sub, "--help"]).exit_code == 0


def test_configuration_doc_lists_every_setting() -> None:
    from af_metrics.config import Settings

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    assert [n for n in Settings.model_fields if f"`{n}`" not in doc] == []


def test_passwords_in_ledger_urls_are_never_printed(tmp_path: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["--ledger", "postgresql://af:s3cret@db.example/af", "config"])
    assert "s3cret" not in shown.output and "postgresql://af:***@db.example/af" in shown.output
    refused = runner.invoke(cli, ["--ledger", "mysql://af:s3cret@db/af", "db", "upgrade"])
    assert refused.exit_code != 0 and "s3cret" not in refused.output
