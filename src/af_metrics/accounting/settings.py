"""The ``[accounting]`` settings: site and VO of usage records, attribution rules, Prometheus.

Kept apart from ``config.py`` so that the accounting options are documented in one place
(docs/accounting.md) and validated as one nested table::

    [accounting]
    site = "coffea-casa-unl"
    vo = "cms"
    prometheus_url = "http://127.0.0.1:9090"

    [[accounting.rules]]
    name = "worker-attribute"
    source = "htcondor"
    attribute = "CoffeaCasaUser"

Rules are tried in order; the first that names a user wins (see docs/accounting.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KUBERNETES_ATTRIBUTES = ("pod", "namespace")
KUBERNETES_PREFIXES = ("label:", "annotation:")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1123, what Kubernetes allows as a namespace


class AttributionRule(BaseModel):
    """One way of naming the hub user of an HTCondor job or a Kubernetes pod."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, description="Recorded with every job or pod it attributes")
    source: Literal["htcondor", "kubernetes"]
    attribute: str = Field(
        min_length=1,
        description="htcondor: a job ClassAd attribute; kubernetes: 'label:<key>', 'annotation:<key>', 'pod' or 'namespace'",
    )
    pattern: str = Field(
        "(?P<user>.+)",
        description="Regular expression matched against the whole value; group 'user' names the user, "
        "group 'pod' (htcondor only) names a pod resolved to its user",
    )
    user: str = Field("{user}", description="Template for the user name from the captured 'user', e.g. '{user}@fnal.gov'")
    known_only: bool = Field(False, description="Attribute only to users the ledger already knows (from the hub)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            groups = re.compile(value).groupindex
        except re.error as exc:
            raise ValueError(f"bad regular expression {value!r}: {exc}") from None
        if ("user" in groups) == ("pod" in groups):
            raise ValueError(f"pattern {value!r} needs exactly one of the groups (?P<user>...) or (?P<pod>...)")
        return value

    @model_validator(mode="after")
    def _fits_source(self) -> "AttributionRule":
        if self.source == "kubernetes":
            if self.attribute not in KUBERNETES_ATTRIBUTES and not self.attribute.startswith(KUBERNETES_PREFIXES):
                raise ValueError(f"rule {self.name!r}: kubernetes attribute must be label:<key>, annotation:<key>, pod or namespace")
            if "pod" in re.compile(self.pattern).groupindex:
                raise ValueError(f"rule {self.name!r}: only htcondor rules may name a pod")
        if "{user}" not in self.user:
            raise ValueError(f"rule {self.name!r}: the user template must contain {{user}}")
        return self


def rules_for(rules: Iterable[AttributionRule], source: str) -> tuple[AttributionRule, ...]:
    """The rules that read one source, in their order."""
    return tuple(r for r in rules if r.source == source)


DEFAULT_RULES = (
    AttributionRule(name="pod-label", source="kubernetes", attribute="label:hub.jupyter.org/username"),
    AttributionRule(
        name="pod-name", source="kubernetes", attribute="pod", pattern="jupyter-(?P<user>[a-z0-9-]+?)(--.*)?", known_only=True
    ),
    AttributionRule(
        name="group-names-pod", source="htcondor", attribute="AccountingGroup", pattern=r"(?:.*\.)?(?P<pod>jupyter-[^.@]+)(?:@.*)?"
    ),
)


class AccountingSettings(BaseModel):
    """Accounting: who used which cores, and the usage records for funding agencies."""

    model_config = ConfigDict(extra="forbid")

    site: str = Field("AF", min_length=1, description="Site name in usage records")
    vo: str = Field("", description="VO of records whose accounting group names none (the group's first component otherwise)")
    rules: tuple[AttributionRule, ...] = Field(DEFAULT_RULES, description="Attribution rules, tried in order")
    notebook_label: str = Field(
        "component=singleuser-server", description="Pod label 'key=value' that marks a notebook server pod"
    )
    gpu_resources: tuple[str, ...] = Field(
        ("nvidia_com_gpu", "amd_com_gpu"), description="kube-state-metrics resource names counted as GPUs"
    )
    namespaces: tuple[str, ...] = Field((), description="Kubernetes namespaces read (DNS labels; empty: all)")
    prometheus_url: str = Field("", description="Prometheus holding kube-state-metrics and cAdvisor series")
    prometheus_timeout: float = Field(30.0, gt=0, description="Seconds one Prometheus query may take")
    prometheus_body_max: int = Field(64 * 1024 * 1024, ge=1024, description="Bytes one Prometheus answer may have")
    prometheus_series_max: int = Field(50000, ge=1, description="Series one Prometheus answer may have")
    scrape_interval: float = Field(30.0, gt=0, description="Seconds between scrapes of the pod series (for lone samples)")
    backfill_hours_max: int = Field(24 * 31, ge=1, description="Hours one 'accounting ingest-pods' run may read")
    schedd: str = Field("", description="Schedd name for 'ingest-history --schedd' (empty: the local schedd)")
    pool: str = Field("", description="HTCondor collector host:port (empty: the configured pool)")
    schedd_interval: float = Field(0.0, ge=0, description="Seconds between reads of the schedd inside 'serve' (0: off)")
    history_files: tuple[str, ...] = Field(
        (), description="HTCondor history files (or glob patterns) 'serve' reads what is new in; empty: none"
    )
    history_interval: float = Field(300.0, gt=0, description="Seconds between checks of history_files inside 'serve'")
    pods_interval: float = Field(0.0, ge=0, description="Seconds between pod-hour reads from prometheus_url inside 'serve' (0: off)")

    @field_validator("notebook_label")
    @classmethod
    def _key_value(cls, value: str) -> str:
        if value and "=" not in value:
            raise ValueError("notebook_label must be 'key=value'")
        return value

    @model_validator(mode="after")
    def _pods_need_prometheus(self) -> "AccountingSettings":
        if self.pods_interval and not self.prometheus_url:
            raise ValueError("pods_interval needs prometheus_url")
        return self

    @field_validator("namespaces")
    @classmethod
    def _dns_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not DNS_LABEL.fullmatch(name):
                raise ValueError(f"namespace {name[:80]!r} is not a DNS label (a-z, 0-9 and '-', at most 63 characters)")
        return value
