"""Who a job or a pod belongs to: the configured rules, tried in order (docs/accounting.md).

A rule reads one value (a ClassAd attribute; a pod's label, annotation, name or namespace),
matches its pattern against the whole value and names either a user (group ``user``, through
the rule's template) or, for jobs, a pod (group ``pod``), which is then resolved like a pod:
first by the pods Kubernetes showed with their user, then by the kubernetes rules that read a
pod's name. A name is a hub user if it is one, or if it is a hub user's name escaped the way
KubeSpawner escapes it (z2jh puts escaped names in pod names and labels). Nothing matched:
the job or pod stays unattributed, with the pod it named, and is reported as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from af_metrics.accounting.settings import AttributionRule, rules_for
from af_metrics.discovery.hub import escape
from af_metrics.sources.htcondor import BatchJob


@dataclass(frozen=True, slots=True)
class Attribution:
    user: str | None
    rule: str | None
    pod: str | None = None  # the pod a job's rule named, even when it maps to nobody


CACHE_MAX = 100_000  # distinct attribute values remembered (jobs of one pod share them)


def metric_label(attribute: str) -> str:
    """kube-state-metrics' label for a pod label or annotation: ``label:hub.jupyter.org/username`` -> ``label_hub_jupyter_org_username``."""
    kind, _, key = attribute.partition(":")
    return f"{kind}_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


class Attributor:
    """Applies the rules with what the ledger knows: hub users and pods with their users."""

    def __init__(self, rules: Iterable[AttributionRule], known_users: Iterable[str], pod_users: Mapping[str, str]) -> None:
        rules = tuple(rules)
        self.job_rules = [(r, re.compile(r.pattern)) for r in rules_for(rules, "htcondor")]
        self.pod_rules = [(r, re.compile(r.pattern)) for r in rules_for(rules, "kubernetes")]
        self.known = set(known_users)
        self.by_escaped = {escape(u): u for u in self.known}
        self.pod_users = dict(pod_users)
        self._jobs: dict[tuple, Attribution] = {}

    def _user(self, rule: AttributionRule, captured: str) -> str | None:
        name = rule.user.format(user=captured)
        if name in self.known:
            return name
        if name in self.by_escaped:
            return self.by_escaped[name]
        return None if rule.known_only else name

    def job(self, job: BatchJob) -> Attribution:
        return self.job_values(job.attributes)

    def job_values(self, attributes: Mapping[str, str | None]) -> Attribution:
        """A job known by the attributes the rules read (a new ad, or what the ledger kept of one)."""
        key = tuple(attributes.get(r.attribute) for r, _ in self.job_rules)
        hit = self._jobs.get(key)
        if hit is None:
            if len(self._jobs) >= CACHE_MAX:
                self._jobs.clear()
            hit = self._jobs[key] = self._attribute_job(key)
        return hit

    def _attribute_job(self, values: tuple) -> Attribution:
        named_pod = None
        for (rule, pattern), value in zip(self.job_rules, values):
            m = pattern.fullmatch(value) if value is not None else None
            if m is None:
                continue
            if "pod" in pattern.groupindex:
                pod = m["pod"]
                named_pod = named_pod or pod
                found = self.pod_user(pod)
                if found.user is not None:
                    return Attribution(found.user, rule.name, pod)
                continue
            user = self._user(rule, m["user"])
            if user is not None:
                return Attribution(user, rule.name, named_pod)
        return Attribution(None, None, named_pod)

    def pod_user(self, pod: str) -> Attribution:
        """A pod known only by name: the user Kubernetes showed for it, else the pod-name rules."""
        if pod in self.pod_users:
            return Attribution(self.pod_users[pod], "pod-map", pod)
        return self.pod(pod, "", {})

    def pod(self, name: str, namespace: str, labels: Mapping[str, str]) -> Attribution:
        """A pod with its kube-state-metrics labels (``label_*``, ``annotation_*``)."""
        for rule, pattern in self.pod_rules:
            if rule.attribute == "pod":
                value = name
            elif rule.attribute == "namespace":
                value = namespace or None
            else:
                value = labels.get(metric_label(rule.attribute))
            m = pattern.fullmatch(value) if value else None
            if m is None:
                continue
            user = self._user(rule, m["user"])
            if user is not None:
                return Attribution(user, rule.name, name)
        return Attribution(None, None, name)
