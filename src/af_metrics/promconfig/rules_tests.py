"""promtool unit tests for every recording and alerting rule (``promtool test rules``).

Each case is a small synthetic history with the answer worked out by hand in its comment;
each alert has a case where it fires and one where it stays quiet. Operators who edit a
threshold can regenerate these, change the expectation and rerun promtool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from af_metrics.promconfig import rules as r
from af_metrics.promconfig.scrape import Jobs

HUB = 'job="jupyterhub",instance="hub:8081"'
SPAWN = "jupyterhub_server_spawn_duration_seconds"
REQUEST = "jupyterhub_request_duration_seconds"
GET_USERS = 'method="GET",handler="jupyterhub.apihandlers.users.UserListAPIHandler"'
PROGRESS = 'method="GET",handler="jupyterhub.apihandlers.users.SpawnProgressAPIHandler",code="200"'


@dataclass(frozen=True, slots=True)
class Fires:
    """``alert`` is firing at the case's time with these labels and this rendered ``$value``."""

    alert: str
    labels: dict[str, str] = field(default_factory=dict)
    value: str = ""


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    series: dict[str, str]  # series selector -> promtool expanding notation
    at: str  # evaluation time
    samples: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # expr -> [(labels, value)]
    fires: list[Fires] = field(default_factory=list)
    quiet: list[str] = field(default_factory=list)  # alerts that must not fire


def _grows(per_second: float) -> str:
    """Two hours of a counter growing at ``per_second``, sampled each minute.

    Whole rates per second keep every rate() exact in floating point, so expected values
    (and the ``$value`` rendered into annotations) do not depend on summation order.
    """
    return f"0+{60 * per_second:g}x120"


def _buckets(name: str, labels: str, per_second: dict[str, float]) -> dict[str, str]:
    """Histogram series (cumulative buckets and _count) growing at ``per_second[le]``."""
    out = {f'{name}_bucket{{{labels},le="{le}"}}': _grows(n) for le, n in per_second.items()}
    out[f"{name}_count{{{labels}}}"] = _grows(per_second["+Inf"])
    return out


def cases(jobs: Jobs = Jobs()) -> list[Case]:
    hub = HUB.replace("jupyterhub", jobs.hub)
    return [
        Case(
            "core-hours: alice holds 4 cores, bob half a core",
            {
                'af_dask_core_seconds_total{job="af-metrics",user="alice"}': _grows(4),  # 4 cores
                'af_dask_core_seconds_total{job="af-metrics",user="bob"}': _grows(0.5),
            },
            "90m",
            samples={r.CORE_HOURS: [('{user="alice"}', 4.0), ('{user="bob"}', 0.5)]},
        ),
        Case(
            "active users: alice and carol run servers, bob does not",
            {
                'af_user_servers_running{user="alice"}': "1x120",
                'af_user_servers_running{user="bob"}': "0x120",
                'af_user_servers_running{user="carol"}': "2x120",
            },
            "30m",
            samples={r.ACTIVE_USERS: [("", 2.0)]},
        ),
        Case(
            "active users: nobody runs a server",
            {'af_user_servers_running{user="alice"}': "0x120"},
            "30m",
            samples={r.ACTIVE_USERS: [("", 0.0)]},
        ),
        Case(
            # per second: 1 failure, 10 successes, 5 clicks while pending (no attempts): 1 in 11 failed
            "spawns: one in eleven fails, p95 is 45 s",
            {
                f'{SPAWN}_count{{{hub},status="error",reason=""}}': _grows(1),
                f'{SPAWN}_count{{{hub},status="failure",reason="already-pending"}}': _grows(4),
                f'{SPAWN}_count{{{hub},status="already-pending"}}': _grows(1),  # JupyterHub < 5
                # 10 successful spawns a second: 5 within 10 s, 9 within 30 s, all within 60 s:
                # the 9.5th of 10 lies half-way between 30 and 60 s
                **_buckets(SPAWN, f'{hub},status="success",reason=""', {"10": 5, "30": 9, "60": 10, "+Inf": 10}),
            },
            "90m",
            samples={r.SPAWN_FAILURE_RATIO: [("", 1 / 11)], r.SPAWN_P95: [("", 45.0)]},
            quiet=["JupyterHubSpawnSlow"],
        ),
        Case(
            "spawns: many fail",
            {
                f'{SPAWN}_count{{{hub},status="error",reason="exited"}}': _grows(1),
                f'{SPAWN}_count{{{hub},status="failure",reason="throttled"}}': _grows(1),
                f'{SPAWN}_count{{{hub},status="success",reason=""}}': _grows(2),
            },
            "90m",  # a full hour of samples: exact rates
            samples={r.SPAWN_FAILURE_RATIO: [("", 0.5)]},
            fires=[Fires("JupyterHubSpawnFailures", value="50%")],
        ),
        Case(
            "spawns: the only two attempts failed, too few to alert",
            {
                f'{SPAWN}_count{{{hub},status="error",reason=""}}': "0 1 2x118",
                f'{SPAWN}_count{{{hub},status="success",reason=""}}': "0x120",
            },
            "30m",
            samples={r.SPAWN_FAILURE_RATIO: [("", 1.0)]},
            quiet=["JupyterHubSpawnFailures"],
        ),
        Case(
            # 10 a second: 5 within 60 s, 8 within 120 s, all within 300 s: 120 + 180 * 1.5/2
            "spawns: slow",
            _buckets(SPAWN, f'{hub},status="success",reason=""', {"60": 5, "120": 8, "300": 10, "+Inf": 10}),
            "90m",  # a full hour of samples: exact rates
            samples={r.SPAWN_P95: [("", 255.0)]},
            fires=[Fires("JupyterHubSpawnSlow", value="4m 15s")],
        ),
        Case(
            # per second 32 requests: 3 answered 404, 1 answered 500, 1 a slow event stream
            "requests: a few errors, fast answers",
            {
                **_buckets(REQUEST, f'{hub},{GET_USERS},code="200"', {"0.1": 27, "+Inf": 27}),
                **_buckets(REQUEST, f'{hub},{GET_USERS},code="404"', {"0.1": 3, "+Inf": 3}),
                **_buckets(REQUEST, f'{hub},{GET_USERS},code="500"', {"0.1": 1, "+Inf": 1}),
                **_buckets(REQUEST, f"{hub},{PROGRESS}", {"0.1": 0, "+Inf": 1}),
            },
            "30m",
            samples={r.REQUEST_ERROR_RATIO: [('{code="404"}', 3 / 32), ('{code="500"}', 1 / 32)]},
            quiet=["JupyterHubRequestLatencyHigh", "JupyterHubServerErrors"],
        ),
        Case(
            # per second 100 requests, 10 of them 500; 60 within 2.5 s, all within 5 s:
            # the 95th lies at 2.5 + 2.5 * 35/40 s
            "requests: slow and failing",
            {
                **_buckets(REQUEST, f'{hub},{GET_USERS},code="200"', {"1": 50, "2.5": 55, "5": 90, "+Inf": 90}),
                **_buckets(REQUEST, f'{hub},{GET_USERS},code="500"', {"1": 0, "2.5": 5, "5": 10, "+Inf": 10}),
            },
            "30m",
            samples={r.REQUEST_ERROR_RATIO: [('{code="500"}', 0.1)]},
            fires=[
                Fires("JupyterHubRequestLatencyHigh", value="4.688s"),
                Fires("JupyterHubServerErrors", value="10%"),
            ],
        ),
        Case(
            # hub-a checks no route for 40 minutes; hub-b checks every minute; hub-c started 5 minutes ago
            "route checks: one hub stopped checking",
            {
                f'jupyterhub_check_routes_duration_seconds_count{{job="{jobs.hub}",instance="hub-a"}}': "1x120",
                f'process_start_time_seconds{{job="{jobs.hub}",instance="hub-a"}}': "0x120",
                f'jupyterhub_check_routes_duration_seconds_count{{job="{jobs.hub}",instance="hub-b"}}': _grows(1 / 60),
                f'process_start_time_seconds{{job="{jobs.hub}",instance="hub-b"}}': "0x120",
                f'jupyterhub_check_routes_duration_seconds_count{{job="{jobs.hub}",instance="hub-c"}}': "1x120",
                f'process_start_time_seconds{{job="{jobs.hub}",instance="hub-c"}}': "2100x120",
            },
            "40m",
            fires=[Fires("JupyterHubProxyRouteCheckFailing", {"job": jobs.hub, "instance": "hub-a"})],
        ),
        Case(
            # in 10 minutes alice: 200 erred and 20 suspicious tasks; bob: 10 and 5
            "dask: alice's tasks err and kill workers",
            {
                'af_dask_tasks_erred_total{job="af-metrics",user="alice"}': _grows(1 / 3),
                'af_dask_tasks_finished_total{job="af-metrics",user="alice"}': _grows(10),
                'af_dask_tasks_erred_total{job="af-metrics",user="bob"}': _grows(1 / 60),
                'af_dask_tasks_suspicious_total{job="af-metrics",user="alice"}': _grows(1 / 30),
                'af_dask_tasks_suspicious_total{job="af-metrics",user="bob"}': _grows(1 / 120),
            },
            "30m",
            fires=[
                Fires("DaskErredTasksSpike", {"user": "alice"}, "200"),
                Fires("DaskSuspiciousTasksSpike", {"user": "alice"}, "20"),
            ],
        ),
        Case(
            "sources: the hub source is down, Dask discovery is up",
            {
                'af_source_up{job="af-metrics",instance="af:9402",source="hub"}': "0x60",
                'af_source_up{job="af-metrics",instance="af:9402",source="dask"}': "1x60",
            },
            "30m",
            fires=[Fires("AfMetricsSourceDown", {"job": "af-metrics", "instance": "af:9402", "source": "hub"})],
        ),
        Case(
            "targets: af-metrics is down; a user's scheduler going away is no alert",
            {
                f'up{{job="{jobs.exporter}",instance="af:9402"}}': "0x60",
                f'up{{job="{jobs.hub}",instance="hub:8081"}}': "1x60",
                f'up{{job="{jobs.dask}",instance="127.0.0.1:8787"}}': "0x60",
            },
            "30m",
            fires=[Fires("AfMetricsTargetDown", {"job": jobs.exporter, "instance": "af:9402"})],
        ),
    ]


def _render(template: str, labels: dict[str, str], value: str) -> str:
    """Fill this module's own alert templates: ``{{ $labels.x }}`` and ``{{ $value | fn }}``."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    return re.sub(r"\{\{ \$value[^}]*\}\}", value, text)


def _alerts_at(case: Case, alerts: dict[str, r.Alert]) -> list[dict]:
    out = []
    names = [f.alert for f in case.fires] + case.quiet
    for name in dict.fromkeys(names):
        firing = [f for f in case.fires if f.alert == name]
        exp = []
        for f in firing:
            spec = alerts[f.alert]
            exp.append(
                {
                    "exp_labels": {**f.labels, "severity": spec.severity},
                    "exp_annotations": {
                        "summary": _render(spec.summary, f.labels, f.value),
                        "description": _render(spec.description, f.labels, f.value),
                        "runbook": spec.runbook,
                    },
                }
            )
        out.append({"eval_time": case.at, "alertname": name, "exp_alerts": exp})
    return out


def rules_tests(rule_file: str = "af-metrics-rules.yml", jobs: Jobs = Jobs()) -> dict:
    """The promtool test file for ``rule_file`` (a path relative to the test file)."""
    alerts = {a.alert: a for a in r.alerting_rules(jobs)}
    tests = []
    for case in cases(jobs):
        test: dict = {
            "name": case.name,
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
        }
        if case.samples:
            test["promql_expr_test"] = [
                {
                    "expr": expr,
                    "eval_time": case.at,
                    "exp_samples": [{"labels": f"{expr}{labels}", "value": value} for labels, value in expected],
                }
                for expr, expected in case.samples.items()
            ]
        if case.fires or case.quiet:
            test["alert_rule_test"] = _alerts_at(case, alerts)
        tests.append(test)
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}
