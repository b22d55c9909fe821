"""The generated Prometheus configuration and rules pass Debian's promtool, and the generated
unit tests exercise every recording and alerting rule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from af_metrics.cli import cli
from af_metrics.promconfig.rules import alerting_rules, recording_rules

pytestmark = pytest.mark.prometheus


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def generate(out: Path, *config_args: str, jobs: tuple[str, ...] = ()) -> None:
    runner = CliRunner()
    for argv in (["config", *config_args], ["rules"], ["rules-tests"]):
        result = runner.invoke(cli, ["prometheus", *argv, *jobs, "--out", str(out)])
        assert result.exit_code == 0, result.output


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ksm, af_token", [(False, False), (True, True)])
def test_promtool_checks_config_and_rules(promtool: str, tmp_path: Path, ksm: bool, af_token: bool) -> None:
    token, af_token_file = tmp_path / "hub-token", tmp_path / "af-metrics-token"
    token.write_text("secret\n")
    af_token_file.write_text("another-secret-token\n")
    args = ["--hub-url", "http://127.0.0.1:8081/prefix/", "--hub-token-file", str(token)]
    generate(tmp_path, *args, *(["--kube-state-metrics", "127.0.0.1:8080"] if ksm else []),
             *(["--af-metrics-token-file", str(af_token_file)] if af_token else []))
    checked = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    rules = run(promtool, "check", "rules", "af-metrics-rules.yml", cwd=tmp_path)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["jupyterhub"]["metrics_path"] == "/prefix/hub/metrics"
    assert jobs["jupyterhub"]["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert jobs["dask"]["http_sd_configs"][0]["url"] == "http://127.0.0.1:9402/sd/dask"
    assert ("kube-state-metrics" in jobs) is ksm
    af_auth = {"type": "Bearer", "credentials_file": str(af_token_file)} if af_token else None
    assert jobs["af-metrics"].get("authorization") == af_auth
    assert jobs["dask"]["http_sd_configs"][0].get("authorization") == af_auth
    assert "authorization" not in jobs["dask"]  # the schedulers themselves are scraped without it


def test_generated_unit_tests_pass(promtool: str, tmp_path: Path) -> None:
    generate(tmp_path)
    result = run(promtool, "test", "rules", "af-metrics-rules-tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_cover_every_rule(tmp_path: Path) -> None:
    generate(tmp_path)
    tests = yaml.safe_load((tmp_path / "af-metrics-rules-tests.yml").read_text())["tests"]
    exprs = {t["expr"] for test in tests for t in test.get("promql_expr_test", [])}
    assert {rec.record for rec in recording_rules()} <= exprs
    firing, quiet = set(), set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {a.alert for a in alerting_rules()}
    assert names <= firing, names - firing
    # an alert whose quiet case is another alert's input: all but the simple up/down ones
    assert names - quiet <= {"JupyterHubProxyRouteCheckFailing", "AfMetricsSourceDown", "AfMetricsTargetDown",
                             "DaskErredTasksSpike", "DaskSuspiciousTasksSpike"}


def test_unit_tests_catch_a_changed_threshold(promtool: str, tmp_path: Path) -> None:
    """The unit tests have teeth: a rule changed by hand makes them fail, naming the rule."""
    generate(tmp_path)
    rules = tmp_path / "af-metrics-rules.yml"
    text = rules.read_text()
    assert "p95_rate1h > 120" in text
    rules.write_text(text.replace("p95_rate1h > 120", "p95_rate1h > 300"))
    result = run(promtool, "test", "rules", "af-metrics-rules-tests.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "JupyterHubSpawnSlow" in result.stdout + result.stderr


def test_job_names_flow_into_config_rules_and_tests(promtool: str, tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("x")
    generate(tmp_path, "--hub-token-file", str(token), jobs=("--hub-job", "hub", "--af-metrics-job", "af"))
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    assert [j["job_name"] for j in config["scrape_configs"]][:2] == ["hub", "af"]
    assert 'job="hub"' in (tmp_path / "af-metrics-rules.yml").read_text()
    result = run(promtool, "test", "rules", "af-metrics-rules-tests.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["prometheus", "config", "--hub-url", "hub:8081"],
        ["prometheus", "config", "--af-metrics-url", "http://af:9402/?x=1"],
        ["prometheus", "config", "--kube-state-metrics", "ksm:8080/metrics?x"],
        ["prometheus", "config", "--scrape-interval", "30 seconds"],
        ["prometheus", "rules", "--interval", "m"],
    ],
)
def test_bad_options_fail_with_one_line(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code in (1, 2) and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error:"), result.output
    assert not (tmp_path / "out").exists()


def test_stdout_is_the_yaml_alone() -> None:
    result = CliRunner().invoke(cli, ["prometheus", "rules"])
    assert result.exit_code == 0
    groups = yaml.safe_load(result.output)["groups"]
    assert [g["name"] for g in groups] == ["af-metrics.recording", "af-metrics.alerts"]
    for alert in groups[1]["rules"]:
        assert alert["annotations"]["runbook"].count("\n") >= 2, alert["alert"]
