"""Apply the attribution rules again to the usage already in the ledger (after a rule changed).

Attribution is not a figure: a job's or pod's user may change, its usage never does. What the
rules read at ingest is kept with each job (the ClassAd attributes the rules asked for) and pod
(its kube-state-metrics labels). Rows ingested before af-metrics kept them (ledger migration
0006) are re-attributed only when the rules read nothing but what the ledger has anyway (a job's
``Owner`` and ``AccountingGroup``; a pod's name and namespace); otherwise they are left as they
are and counted. Pods come first: a job's rule may name a pod, resolved to the pod's new user.
One transaction; a dry run computes the same and writes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from af_metrics.accounting.attribution import Attribution, Attributor
from af_metrics.accounting.settings import AttributionRule, rules_for
from af_metrics.ledger.schema import batch_jobs, pods, users
from af_metrics.ledger.store import Ledger

JOB_COLUMNS = {"Owner": "owner", "AccountingGroup": "accounting_group"}  # attributes the ledger always has
POD_ATTRIBUTES = {"pod", "namespace"}
CHUNK = 5000


@dataclass(slots=True)
class Reattribution:
    """What re-applying the rules changed (or, in a dry run, would change)."""

    jobs: int = 0
    jobs_changed: int = 0
    pods: int = 0
    pods_changed: int = 0
    kept: Counter[str] = field(default_factory=Counter)  # why rows were left as they were -> rows
    moves: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)  # (from, to) user -> jobs and pods


@dataclass(slots=True)
class _Change:
    key: dict  # the row's primary key
    attribution: Attribution


def rows_to_read(ledger: Ledger) -> int:
    """Jobs and pods a re-attribution looks at (for a progress bar)."""
    with ledger.engine.connect() as conn:
        return sum(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in (batch_jobs, pods))


def reattribute(ledger: Ledger, rules: Iterable[AttributionRule], now: float, *, dry_run: bool = False,
                advance: Callable[[int], None] = lambda n: None) -> Reattribution:
    rules = tuple(rules)
    done = Reattribution()
    with ledger.begin() as conn:
        names: dict[int, str] = dict(conn.execute(sa.select(users.c.id, users.c.name)).all())
        known = list(names.values())
        pod_changes, pod_users = _pods(conn, rules, Attributor(rules, known, {}), names, done, advance)
        job_changes = _jobs(conn, rules, Attributor(rules, known, pod_users), names, done, advance)
        if dry_run:
            return done
        new = {c.attribution.user for c in (*pod_changes, *job_changes) if c.attribution.user is not None}
        ids = ledger.user_ids(conn, new, now)
        _update(conn, pods, [pods.c.namespace, pods.c.name], pod_changes, ids, pod=False)
        _update(conn, batch_jobs, [batch_jobs.c.id], job_changes, ids, pod=True)
    return done


def _stream(conn: Connection, query: sa.Select) -> Iterator[sa.Row]:
    yield from conn.execute(query.execution_options(yield_per=CHUNK))  # a year of jobs is not held at once


def _pods(conn: Connection, rules: tuple[AttributionRule, ...], attr: Attributor, names: dict[int, str],
          done: Reattribution, advance: Callable[[int], None]) -> tuple[list[_Change], dict[str, str]]:
    """Pods' new attributions, and the user of each pod name afterwards (latest pod of a name wins)."""
    readable = {r.attribute for r in rules_for(rules, "kubernetes")} <= POD_ATTRIBUTES
    changes: list[_Change] = []
    latest: list[tuple[float, str, str | None]] = []
    query = sa.select(pods.c.namespace, pods.c.name, pods.c.user_id, pods.c.rule, pods.c.labels, pods.c.last_seen)
    for n, (namespace, name, uid, rule, labels, last_seen) in enumerate(_stream(conn, query), 1):
        done.pods += 1
        user = names.get(uid) if uid is not None else None
        if labels is None and not readable:
            done.kept["pods ingested before their labels were kept, with rules reading labels"] += 1
            found = Attribution(user, rule, name)
        else:
            found = attr.pod(name, namespace, json.loads(labels) if labels else {})
            if (found.user, found.rule) != (user, rule):
                changes.append(_Change({"namespace": namespace, "name": name}, found))
                done.pods_changed += 1
                if found.user != user:
                    done.moves[(user, found.user)] += 1
        latest.append((last_seen, name, found.user))
        if n % CHUNK == 0:
            advance(CHUNK)
    advance(done.pods % CHUNK)
    return changes, {name: user for _, name, user in sorted(latest, key=lambda t: t[0]) if user is not None}


def _jobs(conn: Connection, rules: tuple[AttributionRule, ...], attr: Attributor, names: dict[int, str],
          done: Reattribution, advance: Callable[[int], None]) -> list[_Change]:
    wanted = [r.attribute for r in rules_for(rules, "htcondor")]
    changes: list[_Change] = []
    query = sa.select(batch_jobs.c.id, batch_jobs.c.user_id, batch_jobs.c.rule, batch_jobs.c.pod, batch_jobs.c.owner,
                      batch_jobs.c.accounting_group, batch_jobs.c.attributes)
    for n, (jid, uid, rule, pod, owner, group, attributes) in enumerate(_stream(conn, query), 1):
        done.jobs += 1
        values = {"Owner": owner, "AccountingGroup": group, **(json.loads(attributes) if attributes else {})}
        missing = [a for a in wanted if a not in values]
        if missing:
            done.kept[f"jobs ingested without the attribute {missing[0]} (ingest their history again to read it)"] += 1
        else:
            found = attr.job_values(values)
            user = names.get(uid) if uid is not None else None
            if (found.user, found.rule, found.pod) != (user, rule, pod):
                changes.append(_Change({"id": jid}, found))
                done.jobs_changed += 1
                if found.user != user:
                    done.moves[(user, found.user)] += 1
        if n % CHUNK == 0:
            advance(CHUNK)
    advance(done.jobs % CHUNK)
    return changes


def _update(conn: Connection, table: sa.Table, key: list[sa.Column], changes: list[_Change], ids: dict[str, int], *,
            pod: bool) -> None:
    if not changes:
        return
    values = {"user_id": sa.bindparam("new_user_id"), "rule": sa.bindparam("new_rule")}
    if pod:
        values["pod"] = sa.bindparam("new_pod")
    stmt = table.update().where(*(c == sa.bindparam(f"key_{c.name}") for c in key)).values(**values)
    rows = [
        {**{f"key_{k}": v for k, v in c.key.items()},
         "new_user_id": None if c.attribution.user is None else ids[c.attribution.user],
         "new_rule": c.attribution.rule, **({"new_pod": c.attribution.pod} if pod else {})}
        for c in changes
    ]
    for start in range(0, len(rows), CHUNK):
        conn.execute(stmt, rows[start:start + CHUNK])
