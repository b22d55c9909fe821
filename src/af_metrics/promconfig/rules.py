"""Recording and alerting rules, as data.

Recording rules precompute what dashboards and alerts read often (per-user core-hours,
active users, spawn failure ratio and latency, hub error ratio by code). Every alert carries
a runbook in its annotations: what it means, what to look at, what usually fixes it.
Rule names follow Prometheus' ``level:metric:operations`` convention; ``facility`` is the
level of figures summed over the whole facility.
"""

from __future__ import annotations

from dataclasses import dataclass

from af_metrics.promconfig.scrape import Jobs

SPAWN_WINDOW = "1h"  # spawns are rare: a short window is mostly empty
REQUEST_WINDOW = "5m"
TASK_WINDOW = "10m"
# Task counters are af-metrics' per-user totals: they outlive clusters that run for minutes,
# whose own counters would vanish before increase() saw them grow.
# A second click while a spawn is pending is no attempt. JupyterHub >= 5 labels it
# status="failure", reason="already-pending" (errors are status="error", rejections "failure");
# older hubs label it status="already-pending". Both are left out.
ATTEMPTED_SPAWN = 'status!="already-pending",reason!="already-pending"'
REFUSED_SPAWN = f'status!="success",{ATTEMPTED_SPAWN}'  # failed, or refused (throttled, too many users)
STREAMING_HANDLERS = 'handler!~".*ProgressAPIHandler"'  # event streams stay open while a spawn runs

CORE_HOURS = "user:af_core_hours:increase1h"
ACTIVE_USERS = "facility:af_users_active:count"
SPAWN_FAILURE_RATIO = f"facility:jupyterhub_server_spawn_failures:ratio_rate{SPAWN_WINDOW}"
SPAWN_P95 = f"facility:jupyterhub_server_spawn_duration_seconds:p95_rate{SPAWN_WINDOW}"
REQUEST_ERROR_RATIO = f"code:jupyterhub_request_errors:ratio_rate{REQUEST_WINDOW}"


@dataclass(frozen=True, slots=True)
class Recording:
    record: str
    expr: str
    help: str  # what the series means: written into the rule file header

    def as_rule(self) -> dict:
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True, slots=True)
class Alert:
    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: str

    def as_rule(self) -> dict:
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description, "runbook": self.runbook},
        }


def recording_rules() -> list[Recording]:
    return [
        Recording(
            CORE_HOURS,
            "sum by (user) (increase(af_dask_core_seconds_total[1h])) / 3600",
            "Core-hours each user's Dask workers held over the last hour (threads x time).",
        ),
        Recording(
            ACTIVE_USERS,
            "count(sum by (user) (af_user_servers_running) > 0) or vector(0)",
            "Users with at least one notebook server running now (DAU/WAU/MAU: af_active_users).",
        ),
        Recording(
            SPAWN_FAILURE_RATIO,
            f"sum(rate(jupyterhub_server_spawn_duration_seconds_count{{{REFUSED_SPAWN}}}[{SPAWN_WINDOW}]))\n"
            f"/\nsum(rate(jupyterhub_server_spawn_duration_seconds_count{{{ATTEMPTED_SPAWN}}}[{SPAWN_WINDOW}]))",
            "Share of spawn attempts that failed or were refused (throttled, too many users).",
        ),
        Recording(
            SPAWN_P95,
            "histogram_quantile(0.95, sum by (le) ("
            f'rate(jupyterhub_server_spawn_duration_seconds_bucket{{status="success"}}[{SPAWN_WINDOW}])))',
            "95th percentile of successful spawn durations, in seconds.",
        ),
        Recording(
            REQUEST_ERROR_RATIO,
            f'sum by (code) (rate(jupyterhub_request_duration_seconds_count{{code=~"[45].."}}[{REQUEST_WINDOW}]))\n'
            f"/ ignoring (code) group_left\nsum(rate(jupyterhub_request_duration_seconds_count[{REQUEST_WINDOW}]))",
            "Share of hub requests answered with each 4xx/5xx code.",
        ),
    ]


def alerting_rules(jobs: Jobs = Jobs()) -> list[Alert]:
    return [
        Alert(
            "JupyterHubSpawnFailures",
            f"{SPAWN_FAILURE_RATIO} > 0.1\nand on ()\n"
            f"sum(increase(jupyterhub_server_spawn_duration_seconds_count{{{REFUSED_SPAWN}}}[{SPAWN_WINDOW}])) >= 3",
            "10m",
            "warning",
            "More than 10% of server spawns failed in the last hour",
            "{{ $value | humanizePercentage }} of spawn attempts in the last hour failed or were refused.",
            "Users cannot start their notebook servers.\n"
            "1. In the hub log, find 'Failed to spawn' / 'Spawn timeout' lines and the users they name.\n"
            "2. Kubernetes: kubectl get events -n <hub namespace> --sort-by=.lastTimestamp for image pull "
            "errors, unschedulable pods (cluster full, quota) or failing volume mounts.\n"
            "3. reason 'throttled' / 'too-many-users': raise c.JupyterHub.concurrent_spawn_limit / active_server_limit "
            "or add capacity.\n"
            "4. 'af-metrics kpi spawn_success_rate' shows since when; failures of one profile only point to "
            "that image or node pool.",
        ),
        Alert(
            "JupyterHubSpawnSlow",
            f"{SPAWN_P95} > 120",
            "15m",
            "warning",
            "Server spawns are slow (p95 over 2 minutes)",
            "95% of successful spawns in the last hour took up to {{ $value | humanizeDuration }}.",
            "Users wait minutes for their server.\n"
            "1. Image pulls: pre-pull images on every node (z2jh prePuller) or use smaller images.\n"
            "2. Node scale-up: the autoscaler adding nodes shows as spawns of several minutes; keep "
            "user placeholders (z2jh scheduling.userPlaceholder) for headroom.\n"
            "3. Slow volume attach or startup hooks: see the pod events of a slow spawn.",
        ),
        Alert(
            "JupyterHubRequestLatencyHigh",
            "histogram_quantile(0.95, sum by (le) ("
            f"rate(jupyterhub_request_duration_seconds_bucket{{{STREAMING_HANDLERS}}}[{REQUEST_WINDOW}])))\n> 2",
            "10m",
            "warning",
            "The hub answers slowly (p95 over 2 s)",
            "95% of hub requests took up to {{ $value | humanizeDuration }} over the last 5 minutes.",
            "Everything users do goes through the hub, so it feels slow to all.\n"
            "1. Hub CPU: a saturated single-threaded hub shows in process_cpu_seconds_total of job "
            f"'{jobs.hub}' close to 1 core.\n"
            "2. Database: a slow or remote hub database; check its latency and the number of users.\n"
            "3. Many API clients polling (idle culler, dashboards, af-metrics): lengthen their intervals.",
        ),
        Alert(
            "JupyterHubServerErrors",
            f'sum({REQUEST_ERROR_RATIO}{{code=~"5.."}}) > 0.05',
            "10m",
            "critical",
            "More than 5% of hub requests fail with a server error",
            "{{ $value | humanizePercentage }} of hub requests were answered with a 5xx code.",
            "The hub is failing requests.\n"
            "1. Hub log: tracebacks next to 500 responses.\n"
            "2. 503/502 from the hub's own API usually mean the proxy or a spawner backend is unreachable.\n"
            f"3. Breakdown by code: {REQUEST_ERROR_RATIO}.",
        ),
        Alert(
            "JupyterHubProxyRouteCheckFailing",
            "increase(jupyterhub_check_routes_duration_seconds_count[15m]) < 1\n"
            f'and on (job, instance) (time() - process_start_time_seconds{{job="{jobs.hub}"}}) > 900',
            "5m",
            "critical",
            "The hub has not completed a proxy route check for 15 minutes",
            "Hub {{ $labels.instance }} finished no check of the proxy's routes in 15 minutes.",
            "The hub checks the proxy's routing table every last_activity_interval (5 minutes by "
            "default); a check that fails raises and is not counted. Without it, users whose route "
            "was lost get 404/503 from the proxy.\n"
            "1. Hub log: errors from 'check_routes' or the proxy API (connection refused, 403).\n"
            "2. Proxy: is configurable-http-proxy (or traefik) running, and does CONFIGPROXY_AUTH_TOKEN match?\n"
            "3. If you raised c.JupyterHub.last_activity_interval above 15 minutes, raise this window too.",
        ),
        Alert(
            "DaskErredTasksSpike",
            f"sum by (user) (increase(af_dask_tasks_erred_total[{TASK_WINDOW}])) > 100",
            "5m",
            "info",
            "Many Dask tasks erred for user {{ $labels.user }}",
            "{{ $value | humanize }} tasks erred in the last 10 minutes on {{ $labels.user }}'s Dask clusters.",
            "An analysis is failing repeatedly; it burns worker time without results.\n"
            "1. Per-user dashboard (af-metrics 'Per user'): which task prefixes err (scraped from the "
            "user's scheduler).\n"
            "2. Usual causes: a file that cannot be read (XRootD/storage outage affects all users at "
            "once), worker out-of-memory, a code bug. Several users at once points to storage.\n"
            "3. Contact the user if only one is affected.",
        ),
        Alert(
            "DaskSuspiciousTasksSpike",
            f"sum by (user) (increase(af_dask_tasks_suspicious_total[{TASK_WINDOW}])) > 10",
            "5m",
            "warning",
            "Dask tasks of user {{ $labels.user }} keep killing workers",
            "{{ $value | humanize }} tasks were marked suspicious in the last 10 minutes on "
            "{{ $labels.user }}'s Dask clusters.",
            "A task is suspicious when the workers running it died; it usually runs them out of memory.\n"
            "1. Per-user dashboard: worker count dropping and memory near the limit.\n"
            "2. Check node OOM kills (kubectl get events, dmesg) for the user's worker pods.\n"
            "3. Suggest smaller chunks or larger worker memory to the user.",
        ),
        Alert(
            "AfMetricsSourceDown",
            "af_source_up == 0",
            "10m",
            "warning",
            "af-metrics cannot read source {{ $labels.source }}",
            "af-metrics' last reads of {{ $labels.source }} failed for 10 minutes; its figures are going stale.",
            "While a source is down af-metrics decides nothing from it (no session is closed), so "
            "the ledger catches up when it returns, but live figures are stale.\n"
            "1. curl http://<af-metrics>/healthz shows the last error of each source.\n"
            "2. Hub: a token that lost a scope is reported as such; restore the role's scopes.\n"
            "3. Network: the hub or the scheduler discovery endpoint unreachable from af-metrics.",
        ),
        Alert(
            "AfMetricsTargetDown",
            f'up{{job=~"{jobs.hub}|{jobs.exporter}"}} == 0',
            "5m",
            "critical",
            "Prometheus cannot scrape {{ $labels.job }}",
            "{{ $labels.instance }} ({{ $labels.job }}) has not answered scrapes for 5 minutes.",
            "1. Is the process running? (kubectl get pods / systemctl status).\n"
            "2. The hub answers 403 to scrapes when the token file lacks read:metrics; see the target's "
            "last error on Prometheus' Targets page.\n"
            "3. Network policy between Prometheus and the target.",
        ),
    ]


def rule_groups(jobs: Jobs = Jobs(), interval: str = "1m") -> dict:
    """The rule file: one group of recording rules, one of alerts."""
    return {
        "groups": [
            {"name": "af-metrics.recording", "interval": interval, "rules": [r.as_rule() for r in recording_rules()]},
            {"name": "af-metrics.alerts", "interval": interval, "rules": [a.as_rule() for a in alerting_rules(jobs)]},
        ]
    }
