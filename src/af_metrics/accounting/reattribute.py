"""Apply the attribution rules again to the usage already in the ledger (after a rule changed).

Attribution is not a figure: a job's or pod's user may change, its usage never does. What the
rules read at ingest is kept with each job (the ClassAd attributes the rules asked for) and pod
(its kube-state-metrics labels and annotations). Rows ingested before af-metrics kept them (ledger
migration 0006) are re-attributed only when the rules read nothing but what the ledger has anyway
(a job's ``Owner`` and ``AccountingGroup``; a pod's name and namespace); a job that lacks an
attribute a rule reads (not asked for at ingest, or too long to keep) is left too; both are
counted. Pods come first: a job's rule may name a pod, resolved to the pod's new user. One
transaction, holding off other writers of jobs and pods; a dry run computes the same, writes nothing.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from af_metrics.accounting.attribution import Attributor
from af_metrics.accounting.settings import AttributionRule, rules_for
from af_metrics.ledger.schema import batch_jobs, pods, users
from af_metrics.ledger.store import Ledger, chunks

POD_ATTRIBUTES = {"pod", "namespace"}  # what a pod row has without its labels
POD_MAP = "pod-map"  # the rule recorded when a job got its pod's user later (ledger.accounting.resolve_pods)
CHUNK = 5000

Decision = tuple[str | None, str | None, str | None]  # user, rule, pod


@dataclass(slots=True)
class Reattribution:
    """What re-applying the rules changed (or, in a dry run, would change)."""

    jobs: int = 0
    jobs_changed: int = 0
    pods: int = 0
    pods_changed: int = 0
    kept: Counter[str] = field(default_factory=Counter)  # why rows were left as they were -> rows
    moves: Counter[tuple[str | None, str | None]] = field(default_factory=Counter)  # (from, to) user -> jobs and pods


def rows_to_read(ledger: Ledger) -> int:
    """Jobs and pods a re-attribution looks at (for a progress bar)."""
    with ledger.engine.connect() as conn:
        return sum(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in (batch_jobs, pods))


def reattribute(ledger: Ledger, rules: Iterable[AttributionRule], now: float, *, dry_run: bool = False,
                advance: Callable[[int], None] = lambda n: None) -> Reattribution:
    rules = tuple(rules)
    done = Reattribution()
    with ledger.begin() as conn:
        if not dry_run:
            _hold_writers(ledger, conn)
        names: dict[int, str] = dict(conn.execute(sa.select(users.c.id, users.c.name)).all())
        known = list(names.values())
        pod_changes, pod_users = _pods(conn, rules, Attributor(rules, known, {}), names, done, advance)
        job_changes = _jobs(conn, rules, Attributor(rules, known, pod_users), names, done, advance)
        if dry_run:
            return done
        new = {user for user, _, _ in (*pod_changes, *job_changes) if user is not None}
        ids = ledger.user_ids(conn, new, now)
        for (user, rule, _), keys in pod_changes.items():
            for chunk in chunks(keys, CHUNK):
                conn.execute(pods.update().where(sa.tuple_(pods.c.namespace, pods.c.name).in_(chunk))
                             .values(user_id=ids.get(user), rule=rule))
        for (user, rule, pod), jids in job_changes.items():
            for chunk in chunks(jids, CHUNK):
                conn.execute(batch_jobs.update().where(batch_jobs.c.id.in_(chunk)).values(user_id=ids.get(user), rule=rule, pod=pod))
    return done


def _hold_writers(ledger: Ledger, conn: Connection) -> None:
    """No ingest may change a job or pod between this transaction's reads and its updates."""
    if ledger.dialect == "postgresql":
        conn.execute(sa.text("LOCK TABLE batch_jobs, pods IN SHARE ROW EXCLUSIVE MODE"))
    else:  # a write that changes nothing takes SQLite's one write lock now, not at the first update
        conn.execute(pods.update().where(sa.false()).values(rule=pods.c.rule))


def _stream(conn: Connection, query: sa.Select) -> Iterator[sa.Row]:
    yield from conn.execute(query.execution_options(yield_per=CHUNK))  # a year of jobs is not held at once


def _count_move(done: Reattribution, old: str | None, new: str | None) -> None:
    if new != old:
        done.moves[(old, new)] += 1


def _pods(conn: Connection, rules: tuple[AttributionRule, ...], attr: Attributor, names: dict[int, str],
          done: Reattribution, advance: Callable[[int], None]) -> tuple[dict[Decision, list], dict[str, str]]:
    """Pods to rewrite by their new attribution, and the user of each pod name afterwards (latest pod of a name wins)."""
    readable = {r.attribute for r in rules_for(rules, "kubernetes")} <= POD_ATTRIBUTES
    changes: dict[Decision, list] = defaultdict(list)
    users_now: dict[str, tuple[float, str | None]] = {}
    query = sa.select(pods.c.namespace, pods.c.name, pods.c.user_id, pods.c.rule, pods.c.labels, pods.c.last_seen)
    for namespace, name, uid, rule, labels, last_seen in _stream(conn, query):
        done.pods += 1
        user = names.get(uid) if uid is not None else None
        if labels is None and not readable:
            done.kept["pods ingested before their labels were kept, with rules reading labels"] += 1
        else:
            found = attr.pod(name, namespace, json.loads(labels) if labels else {})
            if (found.user, found.rule) != (user, rule):
                changes[(found.user, found.rule, None)].append((namespace, name))
                done.pods_changed += 1
                _count_move(done, user, found.user)
            user = found.user
        if name not in users_now or last_seen >= users_now[name][0]:
            users_now[name] = (last_seen, user)
        _tick(done.pods, advance)
    advance(done.pods % CHUNK)
    return changes, {name: user for name, (_, user) in users_now.items() if user is not None}


def _jobs(conn: Connection, rules: tuple[AttributionRule, ...], attr: Attributor, names: dict[int, str],
          done: Reattribution, advance: Callable[[int], None]) -> dict[Decision, list]:
    wanted = [r.attribute for r in rules_for(rules, "htcondor")]
    changes: dict[Decision, list] = defaultdict(list)
    query = sa.select(batch_jobs.c.id, batch_jobs.c.user_id, batch_jobs.c.rule, batch_jobs.c.pod, batch_jobs.c.owner,
                      batch_jobs.c.accounting_group, batch_jobs.c.attributes)
    for jid, uid, rule, pod, owner, group, attributes in _stream(conn, query):
        done.jobs += 1
        values = {"Owner": owner, "AccountingGroup": group, **(json.loads(attributes) if attributes else {})}
        missing = [a for a in wanted if a not in values]
        if missing:
            done.kept[f"jobs without the attribute {missing[0]} (not asked for at ingest, or too long to keep)"] += 1
        else:
            found = attr.job_values(values)
            user = names.get(uid) if uid is not None else None
            # a job that got its pod's user later (pod-map) is decided the same when the rule now names that user
            same = (found.user, found.pod) == (user, pod) and (found.rule == rule or rule == POD_MAP)
            if not same:
                changes[(found.user, found.rule, found.pod)].append(jid)
                done.jobs_changed += 1
                _count_move(done, user, found.user)
        _tick(done.jobs, advance)
    advance(done.jobs % CHUNK)
    return changes


def _tick(n: int, advance: Callable[[int], None]) -> None:
    if n % CHUNK == 0:
        advance(CHUNK)
