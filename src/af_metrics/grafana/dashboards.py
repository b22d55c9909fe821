"""The four dashboards: facility overview, per user, analysis performance, accounting.

Panels read three kinds of series: JupyterHub's own ``/hub/metrics``, af-metrics' ``/metrics``
(ledger figures, per-user Dask and analysis totals) and the recording rules of
``af_metrics.promconfig.rules``; the per-user dashboard also reads the user's Dask schedulers
as Prometheus scrapes them through ``/sd/dask``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from af_metrics.grafana.panels import (
    dashboard,
    label_variable,
    new_dashboard,
    query,
    row,
    stat_panel,
    table_panel,
    timeseries_panel,
)
from af_metrics.promconfig import rules as r

RATE = "$__rate_interval"
SPAWN_OK = 'jupyterhub_server_spawn_duration_seconds_bucket{status="success"}'
REQUESTS = f"jupyterhub_request_duration_seconds_bucket{{{r.STREAMING_HANDLERS}}}"
U = 'user="$user"'
REF_IDS = "ABCDEFGHIJ"


def _quantiles(bucket: str, window: str, qs: tuple[float, ...] = (0.5, 0.95)) -> list:
    return [
        query(f"histogram_quantile({q}, sum by (le) (rate({bucket}[{window}])))", f"p{round(q * 100)}") for q in qs
    ]


def overview() -> dashboard.Dashboard:
    d = new_dashboard(
        "af-metrics / Facility overview",
        "af-overview",
        "Who uses the facility and how well the hub serves them: users, servers, spawns, hub requests, proxy.",
    )
    return (
        d.with_row(row("Users"))
        .with_panel(stat_panel("Users known", "Users af-metrics has ever seen (its ledger).", "short", "max(af_users)"))
        .with_panel(stat_panel("Hub users", "Users in the hub's database.", "short", "max(jupyterhub_total_users)"))
        .with_panel(
            stat_panel("Running servers", "Notebook servers running now, as the hub counts them.", "short",
                       "sum(jupyterhub_running_servers)")
        )
        .with_panel(
            stat_panel("Users with a server", "Users with at least one server running now.", "short", r.ACTIVE_USERS)
        )
        .with_panel(
            stat_panel("Active, last 24 h", "Distinct users with a server running in the last 24 hours (a trailing window; "
                       "'af-metrics kpi dau' counts local calendar days).", "short",
                       'max(af_active_users{window="1d"})')
        )
        .with_panel(
            stat_panel("Active, last 30 d", "Distinct users with a server running in the last 30 days (trailing window).", "short",
                       'max(af_active_users{window="30d"})')
        )
        .with_panel(
            timeseries_panel(
                "Active users, trailing 24 h / 7 d / 30 d",
                "Distinct users with a server running in the trailing 24 hours, 7 days and 30 days, from "
                "af-metrics' ledger. Trailing windows from each instant: 'af-metrics kpi dau|wau|mau' count "
                "local calendar days instead, so the two differ within a day.",
                "short",
                query('max(af_active_users{window="1d"})', "24 h"),
                query('max(af_active_users{window="7d"})', "7 d"),
                query('max(af_active_users{window="30d"})', "30 d"),
            )
        )
        .with_panel(
            timeseries_panel(
                "Running servers by profile",
                "Servers running now, by the profile or image they were started with.",
                "short",
                query("sum by (profile) (af_servers_running)", "{{profile}}"),
                stacked=True,
            )
        )
        .with_row(row("Spawns"))
        .with_panel(
            timeseries_panel(
                "Spawn latency",
                "Time from a spawn request to a running server, successful spawns only.",
                "s",
                *_quantiles(SPAWN_OK, RATE),
                query(r.SPAWN_P95, f"p95 over {r.SPAWN_WINDOW}"),
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Spawns by outcome",
                "Spawn attempts per second, by the hub's status and reason (error: the spawner failed; "
                "failure: refused, e.g. throttled; already-pending: a repeated click, no new attempt).",
                "ops",
                query(
                    f"sum by (status, reason) (rate(jupyterhub_server_spawn_duration_seconds_count[{RATE}]))",
                    "{{status}} {{reason}}",
                ),
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Spawn failure ratio",
                f"Share of spawn attempts over the last {r.SPAWN_WINDOW} that failed or were refused.",
                "percentunit",
                query(r.SPAWN_FAILURE_RATIO, "failed"),
                width=8,
            )
        )
        .with_row(row("Hub"))
        .with_panel(
            timeseries_panel(
                "Hub request latency",
                "Latency of the hub's HTTP answers (spawn progress event streams left out: they stay open).",
                "s",
                *_quantiles(REQUESTS, RATE, (0.5, 0.95, 0.99)),
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Hub requests by code",
                "Requests per second, by HTTP status code.",
                "reqps",
                query(f"sum by (code) (rate(jupyterhub_request_duration_seconds_count[{RATE}]))", "{{code}}"),
                width=8,
                stacked=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Hub error ratio by code",
                "Share of hub requests answered with each 4xx/5xx code.",
                "percentunit",
                query(r.REQUEST_ERROR_RATIO, "{{code}}"),
                width=8,
            )
        )
        .with_panel(
            stat_panel(
                "Hub startup time",
                "How long the hub took to start, last start of each hub process.",
                "s",
                "max(jupyterhub_hub_startup_duration_seconds_sum / jupyterhub_hub_startup_duration_seconds_count)",
                width=6,
            )
        )
        .with_panel(
            stat_panel(
                "Route checks (15 min)",
                "Proxy route checks the hub completed in the last 15 minutes (one per last_activity_interval).",
                "short",
                "sum(increase(jupyterhub_check_routes_duration_seconds_count[15m]))",
                width=6,
            )
        )
        .with_panel(
            timeseries_panel(
                "Proxy route checks and polls",
                "Mean duration of the hub's proxy route checks and of its reads of the proxy's routing table.",
                "s",
                query(
                    f"sum(rate(jupyterhub_check_routes_duration_seconds_sum[{RATE}])) / "
                    f"sum(rate(jupyterhub_check_routes_duration_seconds_count[{RATE}]))",
                    "route check",
                ),
                query(
                    f"sum(rate(jupyterhub_proxy_poll_duration_seconds_sum[{RATE}])) / "
                    f"sum(rate(jupyterhub_proxy_poll_duration_seconds_count[{RATE}]))",
                    "proxy poll",
                ),
            )
        )
        .with_row(row("af-metrics"))
        .with_panel(
            timeseries_panel(
                "Sources",
                "1 while af-metrics reads the source (hub, Dask discovery) successfully.",
                "short",
                query("max by (source) (af_source_up)", "{{source}}"),
                query("max by (provider) (af_dask_discovery_up)", "discovery {{provider}}"),
            )
        )
        .with_panel(
            timeseries_panel(
                "Collection cycle",
                "Wall time of af-metrics' hub collection cycle (p95) and of its last Dask sampling cycle.",
                "s",
                query(f"histogram_quantile(0.95, sum by (le) (rate(af_collector_cycle_duration_seconds_bucket[{RATE}])))",
                      "hub p95"),
                query("max(af_dask_cycle_duration_seconds)", "dask"),
            )
        )
    )


def per_user() -> dashboard.Dashboard:
    d = new_dashboard(
        "af-metrics / Per user",
        "af-user",
        "One user's sessions, Dask clusters and analyses.",
    ).with_variable(label_variable("user", "User", "af_user_sessions_total"))
    return (
        d.with_row(row("Sessions"))
        .with_panel(stat_panel("Servers running", "The user's notebook servers running now.", "short",
                               f"sum(af_user_servers_running{{{U}}})"))
        .with_panel(stat_panel("Sessions", "Server sessions the ledger holds for the user.", "short",
                               f"sum(af_user_sessions_total{{{U}}})"))
        .with_panel(stat_panel("Server hours", "Hours the user's servers have run, all sessions.", "h",
                               f"sum(af_user_session_seconds_total{{{U}}}) / 3600"))
        .with_panel(stat_panel("Last activity", "Last activity the hub reported for the user.", "dateTimeFromNow",
                               f"max(af_user_last_activity_timestamp_seconds{{{U}}}) * 1000"))
        .with_panel(stat_panel("Dask threads", "Worker threads of the user's Dask clusters now.", "short",
                               f"sum(af_dask_threads{{{U}}})"))
        .with_panel(stat_panel("Core-hours (1 h)", "Core-hours the user's Dask workers held over the last hour.",
                               "short", f"sum({r.CORE_HOURS}{{{U}}})"))
        .with_row(row("Dask"))
        .with_panel(
            timeseries_panel("Dask workers by state", "Workers of the user's Dask clusters, by scheduler state.",
                             "short", query(f"sum by (state) (af_dask_workers{{{U}}})", "{{state}}"), width=8, stacked=True)
        )
        .with_panel(
            timeseries_panel("Dask tasks by state", "Tasks the user's schedulers hold, by state.", "short",
                             query(f"sum by (state) (af_dask_tasks{{{U}}})", "{{state}}"), width=8, stacked=True)
        )
        .with_panel(
            timeseries_panel("Dask memory", "Dask-managed data held by the user's workers, by cluster.", "bytes",
                             query(f"sum by (cluster) (af_dask_memory_bytes{{{U}}})", "{{cluster}}"), width=8)
        )
        .with_panel(
            timeseries_panel(
                "Erred and suspicious tasks",
                "Tasks that erred, and tasks marked suspicious (their workers died), per second.",
                "ops",
                query(f"sum(rate(af_dask_tasks_erred_total{{{U}}}[{RATE}]))", "erred"),
                query(f"sum(rate(af_dask_tasks_suspicious_total{{{U}}}[{RATE}]))", "suspicious"),
                query(f"sum(rate(af_dask_tasks_finished_total{{{U}}}[{RATE}]))", "finished"),
            )
        )
        .with_panel(
            timeseries_panel(
                "Erred tasks by prefix",
                "Which kinds of task err, read from the user's schedulers by Prometheus (through /sd/dask).",
                "short",
                query(
                    "sum by (task_prefix_name) (increase(dask_scheduler_prefix_state_totals_total"
                    f'{{{U},state="erred"}}[{RATE}]))',
                    "{{task_prefix_name}}",
                ),
            )
        )
        .with_row(row("Analyses"))
        .with_panel(
            timeseries_panel("Events per second", "Events the user's analyses processed, by dataset.", "short",
                             query(f"sum by (dataset) (rate(af_analysis_events_total{{{U}}}[{RATE}]))", "{{dataset}}"),
                             width=8, stacked=True)
        )
        .with_panel(
            timeseries_panel("Read throughput", "Bytes the user's analyses read from input files.", "Bps",
                             query(f"sum by (dataset) (rate(af_analysis_bytes_read_total{{{U}}}[{RATE}]))",
                                   "{{dataset}}"), width=8, stacked=True)
        )
        .with_panel(
            timeseries_panel("Chunk duration", "Wall time of one chunk on a worker (open, build, process).", "s",
                             *_quantiles(f"af_analysis_chunk_duration_seconds_bucket{{{U}}}", RATE), width=8)
        )
    )


def analysis() -> dashboard.Dashboard:
    d = new_dashboard(
        "af-metrics / Analysis performance",
        "af-analysis",
        "How fast analyses run across the facility: events and bytes per second, per-chunk times, outcomes.",
        time_from="now-7d",
    )
    return (
        d.with_row(row("Throughput"))
        .with_panel(
            timeseries_panel("Events per second", "Events processed by all analyses, top datasets.", "short",
                             query(f"topk(10, sum by (dataset) (rate(af_analysis_events_total[{RATE}])))",
                                   "{{dataset}}"), stacked=True)
        )
        .with_panel(
            timeseries_panel("Read throughput", "Bytes read from input files by all analyses, top datasets.", "Bps",
                             query(f"topk(10, sum by (dataset) (rate(af_analysis_bytes_read_total[{RATE}])))",
                                   "{{dataset}}"), stacked=True)
        )
        .with_panel(
            timeseries_panel(
                "Events per core-second",
                "Events per second of process() time, by dataset: how heavy each dataset is to analyse.",
                "short",
                query(
                    f"sum by (dataset) (rate(af_analysis_events_total[{RATE}]))\n/\n"
                    f"sum by (dataset) (rate(af_analysis_process_seconds_total[{RATE}]))",
                    "{{dataset}}",
                ),
            )
        )
        .with_panel(
            timeseries_panel("Chunk duration", "Wall time of one chunk on a worker, all users.", "s",
                             *_quantiles("af_analysis_chunk_duration_seconds_bucket", RATE, (0.5, 0.95, 0.99)))
        )
        .with_row(row("Runs"))
        .with_panel(
            timeseries_panel("Runs by outcome", "Analysis runs finishing per second, by outcome.", "ops",
                             query(f"sum by (status) (rate(af_analysis_runs_total[{RATE}]))", "{{status}}"),
                             stacked=True)
        )
        .with_panel(
            table_panel("Top users by events", "Events each user's analyses processed in the dashboard's range.",
                        "short", "topk(20, sum by (user) (increase(af_analysis_events_total[$__range])))", "{{user}}")
        )
    )


def accounting() -> dashboard.Dashboard:
    d = new_dashboard(
        "af-metrics / Accounting",
        "af-accounting",
        "What each user consumed: core-hours of Dask workers, server hours, memory, in the dashboard's range.",
        time_from="now-30d",
    )
    return (
        d.with_row(row("Dask core-hours (seen by the schedulers; not added to the allocated total below)"))
        .with_panel(
            table_panel(
                "Dask core-hours per user",
                "Core-hours (worker threads x hours) of each user's Dask clusters in the dashboard's range.",
                "short",
                "sort_desc(sum by (user) (increase(af_dask_core_seconds_total[$__range])) / 3600)",
                "{{user}}",
            )
        )
        .with_panel(
            timeseries_panel(
                "Dask core-hours per hour, top users",
                "Core-hours each user's Dask workers held in each hour (recording rule).",
                "short",
                query(f"topk(10, {r.CORE_HOURS})", "{{user}}", interval="1h"),
                stacked=True,
            )
        )
        .with_row(row("Pods and batch jobs (each core once: docs/accounting.md)"))
        .with_panel(
            table_panel(
                "Allocated core-hours per user",
                "Pods' requested cores plus batch jobs' RequestCpus x wall, per user, in the dashboard's range.",
                "short",
                "sort_desc(sum by (user) (increase(af_user_core_seconds_total[$__range])) / 3600)",
                "{{user}}",
            )
        )
        .with_panel(
            table_panel(
                "Batch CPU efficiency per user",
                "CPU time / (RequestCpus x wall) of each user's HTCondor jobs in the dashboard's range.",
                "percentunit",
                'sort_desc(sum by (user) (increase(af_user_cpu_seconds_total{infrastructure="htcondor"}[$__range]))'
                ' / sum by (user) (increase(af_user_core_seconds_total{infrastructure="htcondor"}[$__range])))',
                "{{user}}",
            )
        )
        .with_panel(
            table_panel(
                "Core-hours per accounting group",
                "Allocated core-hours per HTCondor accounting group and pod namespace, in the dashboard's range.",
                "short",
                "sort_desc(sum by (infrastructure, group) (increase(af_accounting_core_seconds_total[$__range])) / 3600)",
                "{{infrastructure}} {{group}}",
            )
        )
        .with_panel(
            timeseries_panel(
                "Share of batch work through the hub",
                "HTCondor core-hours attributed to hub users / all HTCondor core-hours the schedd reported.",
                "percentunit",
                query(
                    '1 - sum(rate(af_accounting_unattributed_core_seconds_total{infrastructure="htcondor"}[$__rate_interval]))'
                    ' / sum(rate(af_accounting_core_seconds_total{infrastructure="htcondor"}[$__rate_interval]))',
                    "hub share",
                ),
            )
        )
        .with_row(row("Other resources"))
        .with_panel(
            table_panel(
                "Server hours per user",
                "Hours each user's notebook servers ran in the dashboard's range.",
                "h",
                "sort_desc(sum by (user) (increase(af_user_session_seconds_total[$__range])) / 3600)",
                "{{user}}",
                width=8,
            )
        )
        .with_panel(
            table_panel(
                "Dask worker-hours per user",
                "Hours of Dask workers (whatever their size) of each user in the dashboard's range.",
                "h",
                "sort_desc(sum by (user) (increase(af_dask_worker_seconds_total[$__range])) / 3600)",
                "{{user}}",
                width=8,
            )
        )
        .with_panel(
            table_panel(
                "Dask memory GB-hours per user",
                "Dask-managed memory held x hours, per user, in the dashboard's range.",
                "short",
                "sort_desc(sum by (user) (increase(af_dask_memory_byte_seconds_total[$__range])) / 3600 / 1e9)",
                "{{user}}",
                width=8,
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "af-overview": overview,
    "af-user": per_user,
    "af-analysis": analysis,
    "af-accounting": accounting,
}


def build_all() -> dict[str, dict]:
    """Every dashboard as Grafana JSON (a dict), by uid; panels and queries numbered in order."""
    out = {}
    encoder = JSONEncoder(sort_keys=False)
    for uid, make in DASHBOARDS.items():
        model = json.loads(encoder.encode(make().build()))
        for n, panel in enumerate(_all_panels(model["panels"]), start=1):
            panel["id"] = n
            for ref, target in zip(REF_IDS, panel.get("targets", [])):
                target["refId"] = ref
        out[uid] = model
    return out


def _all_panels(panels: list[dict]) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from _all_panels(p.get("panels", []))


def expressions(model: dict) -> list[str]:
    """Every PromQL text in a dashboard: panel queries and variable queries."""
    exprs = [t["expr"] for p in _all_panels(model["panels"]) for t in p.get("targets", []) if t.get("expr")]
    for var in model.get("templating", {}).get("list", []):
        q = var.get("query")
        if var.get("type") == "query" and isinstance(q, str):
            exprs.append(q)
    return exprs
