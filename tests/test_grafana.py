"""The generated Grafana dashboards validate against Grafana's own JSON schemas (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from af_metrics.cli import cli
from af_metrics.grafana.dashboards import DASHBOARDS, build_all, expressions

SCHEMAS = Path(__file__).parent / "data" / "grafana-schema"
CURRENT_SCHEMA_VERSION = 42  # Grafana 12's dashboard schema (v1 JSON model)


def _validator(kind: str, definition: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / f"{kind}.jsonschema.json").read_text())
    schema["$ref"] = f"#/definitions/{definition}"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Draft7Validator, instance: object) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.fixture(scope="module")
def models() -> dict[str, dict]:
    return build_all()


def _panels(model: dict) -> list[dict]:
    out = []
    for p in model["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_four_dashboards_at_the_current_schema_version(models: dict[str, dict]) -> None:
    assert set(models) == {"af-overview", "af-user", "af-analysis", "af-accounting"}
    for uid, model in models.items():
        assert model["uid"] == uid and model["schemaVersion"] == CURRENT_SCHEMA_VERSION
        assert model["templating"]["list"][0]["name"] == "datasource"


@pytest.mark.parametrize("uid", list(DASHBOARDS))
def test_dashboard_validates_against_grafana_schema(models: dict[str, dict], uid: str) -> None:
    model = models[uid]
    assert _errors(_validator("dashboard", "Dashboard"), model) == []
    queries = _validator("prometheus", "Dataquery")
    kinds = {"timeseries", "stat", "table"}
    options = {k: _validator(k, "Options") for k in kinds}
    custom = {k: _validator(k, "FieldConfig") for k in ("timeseries", "table")}
    panels = [p for p in _panels(model) if p["type"] != "row"]
    assert panels and {p["type"] for p in panels} <= kinds
    for panel in panels:
        where = f"{uid} panel {panel['title']!r}"
        assert _errors(options[panel["type"]], panel["options"]) == [], where
        if "custom" in panel["fieldConfig"]["defaults"]:
            assert _errors(custom[panel["type"]], panel["fieldConfig"]["defaults"]["custom"]) == [], where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert _errors(queries, target) == [], where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where


def test_schema_rejects_a_broken_dashboard(models: dict[str, dict]) -> None:
    """The validation has teeth: the mistakes a hand edit makes are caught."""
    broken = json.loads(json.dumps(models["af-overview"]))
    del broken["schemaVersion"]
    broken["panels"][1]["gridPos"]["w"] = "wide"
    stat = next(p for p in broken["panels"] if p["type"] == "stat")
    stat["options"]["graphMode"] = "sparkles"
    assert len(_errors(_validator("dashboard", "Dashboard"), broken)) >= 2
    assert _errors(_validator("stat", "Options"), stat["options"])


def test_layout_and_ids(models: dict[str, dict]) -> None:
    for uid, model in models.items():
        panels = _panels(model)
        assert len({p["id"] for p in panels}) == len(panels), uid
        for p in panels:
            pos = p["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, (uid, p["title"])
            assert len({t["refId"] for t in p.get("targets", [])}) == len(p.get("targets", []))


def test_per_user_dashboard_is_driven_by_the_user_variable(models: dict[str, dict]) -> None:
    model = models["af-user"]
    variable = model["templating"]["list"][1]
    assert variable["name"] == "user" and variable["query"].startswith("label_values(")
    panel_exprs = [e for e in expressions(model) if not e.startswith("label_values(")]
    assert panel_exprs and all('user="$user"' in e for e in panel_exprs)


def test_cli_writes_provisioning_ready_tree(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["grafana", "--out", str(tmp_path), "--dashboards-path", "/dash", "--prometheus-url", "http://127.0.0.1:9090"]
    )
    assert result.exit_code == 0, result.output
    written = {p.name for p in (tmp_path / "dashboards").iterdir()}
    assert written == {f"{uid}.json" for uid in DASHBOARDS}
    provider = yaml.safe_load((tmp_path / "provisioning" / "dashboards" / "af-metrics.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/dash" and provider["providers"][0]["type"] == "file"
    source = yaml.safe_load((tmp_path / "provisioning" / "datasources" / "af-metrics.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
    assert source["datasources"][0]["url"] == "http://127.0.0.1:9090"
    one = json.loads((tmp_path / "dashboards" / "af-accounting.json").read_text())
    assert one["uid"] == "af-accounting"


def test_cli_prints_one_dashboard_and_refuses_unknown_names() -> None:
    runner = CliRunner()
    printed = runner.invoke(cli, ["grafana", "af-user"])
    assert printed.exit_code == 0 and json.loads(printed.output)["uid"] == "af-user"
    for args in (["grafana"], ["grafana", "nope"], ["grafana", "af-user", "af-overview"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
