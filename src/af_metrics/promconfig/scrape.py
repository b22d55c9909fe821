"""The scrape configuration: the hub, the af-metrics exporter, every user's Dask scheduler
(found through af-metrics' HTTP service discovery) and, optionally, kube-state-metrics.

Job names are shared with the rules (``Jobs``), so alerts that name a job match what the
configuration scrapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

USER_POD_LABEL = "hub.jupyter.org/username"
# kube-state-metrics turns an allowed pod label into a metric label this way
KSM_USER_LABEL = "label_" + "".join(c if c.isalnum() else "_" for c in USER_POD_LABEL)
KSM_METRICS = ("kube_pod_labels", "kube_pod_container_resource_requests", "kube_pod_status_phase")


class PromConfigError(ValueError):
    """An option that cannot make a valid configuration; one line."""


@dataclass(frozen=True, slots=True)
class Jobs:
    hub: str = "jupyterhub"
    exporter: str = "af-metrics"
    dask: str = "dask"
    kube_state_metrics: str = "kube-state-metrics"


@dataclass(frozen=True, slots=True)
class ScrapeOptions:
    hub_url: str = "http://127.0.0.1:8081"
    hub_token_file: str = "/etc/prometheus/secrets/jupyterhub-metrics-token"
    af_metrics_url: str = "http://127.0.0.1:9402"
    af_metrics_token_file: str = ""  # af-metrics' metrics_token, for /metrics and /sd/dask
    kube_state_metrics: str | None = None  # host:port
    scrape_interval: str = "30s"
    dask_refresh: str = "30s"
    rule_files: tuple[str, ...] = ("af-metrics-rules.yml",)
    jobs: Jobs = field(default_factory=Jobs)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    scheme: str
    host: str
    path: str  # without trailing slash


def _endpoint(url: str, what: str) -> _Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PromConfigError(f"{what} must be an http(s) URL with a host, got {url!r}")
    if parts.query or parts.fragment:
        raise PromConfigError(f"{what} must not have a query or fragment: {url!r}")
    return _Endpoint(parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path.rstrip("/"))


def _job(name: str, scheme: str, path: str, interval: str) -> dict:
    return {"job_name": name, "scrape_interval": interval, "scheme": scheme, "metrics_path": path}


def _bearer(credentials_file: str) -> dict:
    """An ``authorization`` block; Prometheus re-reads the file on every request."""
    return {"authorization": {"type": "Bearer", "credentials_file": credentials_file}}


def scrape_config(opts: ScrapeOptions) -> dict:
    """A complete ``prometheus.yml`` as a dict."""
    hub = _endpoint(opts.hub_url, "hub URL")
    exporter = _endpoint(opts.af_metrics_url, "af-metrics URL")
    # af-metrics' own endpoints, when it requires its metrics token
    af_auth = _bearer(opts.af_metrics_token_file) if opts.af_metrics_token_file else {}
    jobs = [
        {
            **_job(opts.jobs.hub, hub.scheme, f"{hub.path}/hub/metrics", opts.scrape_interval),
            # /hub/metrics needs a token whose role grants read:metrics
            **_bearer(opts.hub_token_file),
            "static_configs": [{"targets": [hub.host]}],
        },
        {
            **_job(opts.jobs.exporter, exporter.scheme, f"{exporter.path}/metrics", opts.scrape_interval),
            **af_auth,
            "static_configs": [{"targets": [exporter.host]}],
        },
        {
            # one target per running Dask scheduler, labelled with its user by af-metrics
            "job_name": opts.jobs.dask,
            "scrape_interval": opts.scrape_interval,
            "http_sd_configs": [
                {
                    "url": f"{exporter.scheme}://{exporter.host}{exporter.path}/sd/dask",
                    "refresh_interval": opts.dask_refresh,
                    **af_auth,
                }
            ],
        },
    ]
    if opts.kube_state_metrics:
        ksm = _endpoint(f"http://{opts.kube_state_metrics}", "kube-state-metrics address")
        jobs.append(
            {
                **_job(opts.jobs.kube_state_metrics, "http", "/metrics", opts.scrape_interval),
                "static_configs": [{"targets": [ksm.host]}],
                # kube-state-metrics must run with
                #   --metric-labels-allowlist=pods=[hub.jupyter.org/username]
                # keep only what the rules use, and name the user as everywhere else
                "metric_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": "|".join(KSM_METRICS), "action": "keep"},
                    {"source_labels": [KSM_USER_LABEL], "regex": "(.+)", "target_label": "user", "action": "replace"},
                ],
            }
        )
    return {
        "global": {"scrape_interval": opts.scrape_interval, "evaluation_interval": opts.scrape_interval},
        "rule_files": list(opts.rule_files),
        "scrape_configs": jobs,
    }
