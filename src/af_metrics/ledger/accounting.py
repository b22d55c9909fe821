"""Accounting facts in the ledger: batch jobs with per-day slices, pods with per-hour usage.

Idempotent. A job is keyed by its GlobalJobId: while it is in the queue every ingest replaces
its figures and day slices (counted up to the observation); the first record of it having left
the queue settles it, and a settled job is never changed again, so ingesting the same history
twice changes nothing. A pod hour is keyed by (namespace, pod, hour): reading an hour again
replaces it with the newer reading. Attribution is not a figure: a job that named a pod before
Kubernetes showed that pod's user gets the user when the pod is ingested (``resolve_pods``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from af_metrics.accounting.attribution import Attribution, Attributor, metric_label
from af_metrics.accounting.settings import AttributionRule
from af_metrics.accounting.usage import job_days
from af_metrics.ledger.schema import batch_job_days, batch_jobs, pod_hours, pods, users
from af_metrics.ledger.store import Ledger
from af_metrics.sources.htcondor import BatchJob
from af_metrics.sources.kubernetes import PodHour
from af_metrics.timeutil import day_of

JOB_FIGURES = (
    "user_id", "rule", "owner", "accounting_group", "grp", "pod", "status", "exit_code", "settled", "request_cpus",
    "request_memory", "request_gpus", "started", "ended", "end_day", "wall_seconds", "cpu_seconds", "memory_usage", "updated",
    "attributes",
)
NO_LABELS = "{}"
VALUE_KEPT_MAX = 1024  # characters of one attribute or label value kept for re-attribution
POD_FIGURES = (
    "day", "seconds", "cpu_request_seconds", "cpu_used_seconds", "memory_request_byte_seconds",
    "memory_used_byte_seconds", "gpu_request_seconds",
)


@dataclass(slots=True)
class JobIngest:
    """What one ingest did: records read, jobs written (new or still in the queue), settled ones left alone."""

    read: int = 0
    written: int = 0
    unchanged: int = 0
    unattributed: int = 0
    skipped: int = 0  # unreadable records passed over (only when asked to skip them)
    first_skipped: str = ""  # why the first of them was

    def add(self, other: "JobIngest") -> None:
        self.read += other.read
        self.written += other.written
        self.unchanged += other.unchanged
        self.unattributed += other.unattributed
        self.first_skipped = self.first_skipped or other.first_skipped
        self.skipped += other.skipped

    def skip(self, error: Exception) -> None:
        self.skipped += 1
        self.first_skipped = self.first_skipped or str(error)


def attributor(conn: Connection, rules: Iterable[AttributionRule]) -> Attributor:
    """An attributor that knows the ledger's users and the pods Kubernetes showed with their user."""
    known = conn.execute(sa.select(users.c.name)).scalars().all()
    pod_users = dict(
        conn.execute(
            sa.select(pods.c.name, users.c.name).join(users, users.c.id == pods.c.user_id).order_by(pods.c.last_seen)
        ).all()
    )
    return Attributor(rules, known, pod_users)


def record_jobs(ledger: Ledger, conn: Connection, jobs: Sequence[BatchJob], attr: Attributor, now: float) -> JobIngest:
    """Write one batch of jobs in the caller's transaction (settled jobs are left as they are)."""
    latest: dict[str, BatchJob] = {}
    for job in jobs:  # one row per job per statement; a final record beats a queue record
        prev = latest.get(job.global_job_id)
        if prev is None or job.final or not prev.final:
            latest[job.global_job_id] = job
    known = {
        gid: (jid, settled)
        for gid, jid, settled in conn.execute(
            sa.select(batch_jobs.c.global_job_id, batch_jobs.c.id, batch_jobs.c.settled).where(batch_jobs.c.global_job_id.in_(list(latest)))
        )
    }
    todo = {gid: job for gid, job in latest.items() if not known.get(gid, (0, 0))[1]}
    found = {gid: attr.job(job) for gid, job in todo.items()}
    first = min((j.started or now for j in todo.values()), default=now)
    ids = ledger.user_ids(conn, [a.user for a in found.values() if a.user is not None], first)
    stats = JobIngest(read=len(jobs), written=len(todo), unchanged=len(latest) - len(todo),
                      unattributed=sum(a.user is None for a in found.values()))
    if not todo:
        return stats
    stmt = ledger.insert(batch_jobs)
    stmt = stmt.on_conflict_do_update(
        index_elements=["global_job_id"], set_={c: stmt.excluded[c] for c in JOB_FIGURES}, where=batch_jobs.c.settled == 0
    )
    conn.execute(stmt, [_job_row(job, found[gid], ids, ledger.tz, now) for gid, job in todo.items()])
    replaced = [known[gid][0] for gid in todo if gid in known]  # still in the queue last time: new slices
    if replaced:
        conn.execute(batch_job_days.delete().where(batch_job_days.c.job_id.in_(replaced)))
    job_ids = conn.execute(
        sa.select(batch_jobs.c.global_job_id, batch_jobs.c.id).where(batch_jobs.c.global_job_id.in_(list(todo)))
    ).all()
    days = [{"job_id": jid, **row} for gid, jid in job_ids for row in job_days(todo[gid], ledger.tz)]
    if days:
        conn.execute(batch_job_days.insert(), days)
    return stats


def _job_row(job: BatchJob, found: Attribution, ids: dict[str, int], tz: str, now: float) -> dict:
    return {
        "global_job_id": job.global_job_id,
        "user_id": None if found.user is None else ids[found.user],
        "rule": found.rule,
        "owner": job.owner,
        "accounting_group": job.accounting_group,
        "grp": job.group,
        "pod": found.pod,
        "status": job.status,
        "exit_code": job.exit_code,
        "settled": 1 if job.final else 0,
        "request_cpus": job.request_cpus,
        "request_memory": job.request_memory,
        "request_gpus": job.request_gpus,
        "started": job.started,
        "ended": job.ended,
        "end_day": None if job.ended is None else day_of(job.ended, tz),
        "wall_seconds": job.wall,
        "cpu_seconds": job.cpu,
        "memory_usage": job.memory_usage,
        "updated": now,
        "attributes": _kept(job.attributes),
    }


def _kept(values: Mapping[str, str | None]) -> str:
    """What attribution read (a job's attributes, a pod's labels) as JSON, for re-attribution. A value
    longer than VALUE_KEPT_MAX (users set some) is left out: no user name is that long, and a job
    missing an attribute a rule reads is left as it is by re-attribution rather than guessed at."""
    return json.dumps({k: v for k, v in values.items() if v is None or len(v) <= VALUE_KEPT_MAX}, sort_keys=True)


def resolve_pods(conn: Connection) -> int:
    """Give unattributed jobs that named a pod the user Kubernetes has since shown for it."""
    known = sa.select(pods.c.user_id).where(pods.c.name == batch_jobs.c.pod, pods.c.user_id.is_not(None))
    result = conn.execute(
        batch_jobs.update()
        .where(batch_jobs.c.user_id.is_(None), batch_jobs.c.pod.is_not(None), known.exists())
        .values(user_id=known.order_by(pods.c.last_seen.desc()).limit(1).scalar_subquery(), rule="pod-map")
    )
    return result.rowcount


def record_pod_hours(ledger: Ledger, conn: Connection, hours: Sequence[PodHour], attr: Attributor, notebook_label: str, now: float) -> int:
    """Write pods (with their user and role) and their hours in the caller's transaction; returns pods unattributed."""
    if not hours:
        return 0
    key, _, value = notebook_label.partition("=")
    label = metric_label(f"label:{key}")
    per_pod: dict[tuple[str, str], dict] = {}
    for h in hours:
        row = per_pod.setdefault((h.namespace, h.pod), {"labels": {}, "first": h.first_seen, "last": h.last_seen})
        row["labels"].update(h.labels)
        row["first"], row["last"] = min(row["first"], h.first_seen), max(row["last"], h.last_seen)
    found = {k: attr.pod(k[1], k[0], v["labels"]) for k, v in per_pod.items()}
    ids = ledger.user_ids(conn, {a.user for a in found.values() if a.user is not None}, now)
    pod_rows = [
        {
            "namespace": ns, "name": name, "user_id": None if found[(ns, name)].user is None else ids[found[(ns, name)].user],
            "rule": found[(ns, name)].rule, "role": "notebook" if key and v["labels"].get(label) == value else "other",
            "first_seen": v["first"], "last_seen": v["last"], "labels": _kept(v["labels"]),
        }
        for (ns, name), v in per_pod.items()
    ]
    stmt = ledger.insert(pods)
    x = stmt.excluded
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["namespace", "name"],
            set_={
                "user_id": sa.func.coalesce(x.user_id, pods.c.user_id), "rule": sa.func.coalesce(x.rule, pods.c.rule),
                "role": sa.case((x.role == "notebook", x.role), else_=pods.c.role),  # once seen as a notebook, one
                "first_seen": sa.case((x.first_seen < pods.c.first_seen, x.first_seen), else_=pods.c.first_seen),
                "last_seen": sa.case((x.last_seen > pods.c.last_seen, x.last_seen), else_=pods.c.last_seen),
                # an hour read without the pod's labels keeps those read before
                "labels": sa.case((sa.or_(x.labels != NO_LABELS, pods.c.labels.is_(None)), x.labels), else_=pods.c.labels),
            },
        ),
        pod_rows,
    )
    hour_rows = [
        {"namespace": h.namespace, "pod": h.pod, "hour_start": h.hour_start, "day": day_of(h.hour_start, ledger.tz),
         **{f: getattr(h, f) for f in POD_FIGURES if f != "day"}}
        for h in hours
    ]
    stmt = ledger.insert(pod_hours)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["namespace", "pod", "hour_start"], set_={f: stmt.excluded[f] for f in POD_FIGURES}),
        hour_rows,
    )
    resolve_pods(conn)
    return sum(a.user is None for a in found.values())
