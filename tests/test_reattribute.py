"""Changed attribution rules applied again to stored usage: jobs read from real-format ClassAds
(made with the bindings), pods as the Prometheus reader gives them; both ledger backends."""

from __future__ import annotations

import io
import json
import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from af_metrics.accounting.ingest import ingest_history
from af_metrics.accounting.reattribute import reattribute
from af_metrics.accounting.settings import DEFAULT_RULES, AttributionRule
from af_metrics.accounting.totals import usage_totals
from af_metrics.cli import cli
from af_metrics.kpis.periods import parse_period
from af_metrics.ledger.accounting import attributor, record_pod_hours
from af_metrics.ledger.schema import batch_jobs, pods
from af_metrics.ledger.store import Ledger
from af_metrics.sources.kubernetes import PodHour

pytest.importorskip("classad2")
from test_htcondor import finished, text  # noqa: E402 - needs the bindings

OCTOBER = parse_period("2026-10")
H = 3600.0
# at ingest, the rule for AF_User was wrong (it wants a prefix the values do not have)
BROKEN = AttributionRule(name="af-user", source="htcondor", attribute="AF_User", pattern="user-(?P<user>.+)")
FIXED = AttributionRule(name="af-user", source="htcondor", attribute="AF_User")
OWNER_LABEL = AttributionRule(name="owner-label", source="kubernetes", attribute="label:owner-name", known_only=True)
BEFORE, AFTER = (*DEFAULT_RULES, BROKEN), (*DEFAULT_RULES, FIXED, OWNER_LABEL)

JOBS = [
    finished(401, "2026-10-05T08:00", "2026-10-05T10:00", 2, 3 * H, "jupyter-alice"),  # alice's pod: hers all along
    finished(402, "2026-10-06T08:00", "2026-10-06T12:00", 1, 3 * H, None, AF_User="carol"),  # the broken rule missed her
    finished(403, "2026-10-07T08:00", "2026-10-07T09:00", 4, 2 * H, "jupyter-worker-7f3a"),  # a pod only a label names
]
PODS = [  # (pod, labels): alice's notebook pod, and the pod job 403 names, labelled for bob
    ("jupyter-alice", {"label_hub_jupyter_org_username": "alice", "label_component": "singleuser-server"}),
    ("jupyter-worker-7f3a", {"label_owner_name": "bob"}),
]


def _seed(ledger: Ledger) -> None:
    with ledger.begin() as conn:
        ledger.user_ids(conn, ["alice", "bob"], time.time())  # hub users; carol is not one
        hour = 1_791_000_000.0  # 2026-10-03
        hours = [PodHour("jhub", name, hour, labels, H, H, H / 2, 0.0, 0.0, 0.0, hour, hour + H) for name, labels in PODS]
        record_pod_hours(ledger, conn, hours, attributor(conn, BEFORE), "component=singleuser-server", time.time())
    ingest_history(ledger, io.StringIO(text(JOBS, "file")), BEFORE, time.time())


def _by_user(ledger: Ledger) -> dict[str | None, float]:
    with ledger.engine.connect() as conn:
        totals = usage_totals(conn, OCTOBER, "range")
    return {t.user: round(t.core_seconds / H, 6) for t in totals}


def _rows(ledger: Ledger) -> list[tuple]:
    with ledger.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(batch_jobs).order_by(batch_jobs.c.id))] + \
               [tuple(r) for r in conn.execute(sa.select(pods).order_by(pods.c.name))]


def test_fixed_rules_move_jobs_and_pods_and_nothing_else(ledger: Ledger) -> None:
    _seed(ledger)
    before = _by_user(ledger)
    assert before == {"alice": 2 * 2 + 1, None: 4 + 4 + 1}  # her job + pod hour; carol's job, job 403 and the worker pod

    planned = reattribute(ledger, AFTER, time.time(), dry_run=True)
    assert (planned.jobs, planned.pods) == (3, 2)
    assert planned.moves == {(None, "carol"): 1, (None, "bob"): 2}  # job 403 follows its pod to bob
    assert _by_user(ledger) == before  # a dry run writes nothing

    stored = _rows(ledger)
    done = reattribute(ledger, AFTER, time.time())
    assert (done.jobs_changed, done.pods_changed, done.moves) == (planned.jobs_changed, planned.pods_changed, planned.moves)
    after = _by_user(ledger)
    assert after == {"alice": 5, "bob": 4 + 1, "carol": 4}  # bob: job 403 and the worker pod's hour
    assert sum(after.values()) == sum(before.values())  # usage never changes, only whose it is
    assert len(_rows(ledger)) == len(stored)

    again = reattribute(ledger, AFTER, time.time())
    assert (again.jobs_changed, again.pods_changed) == (0, 0)


def test_rows_from_before_the_inputs_were_kept_are_left_alone(ledger: Ledger) -> None:
    _seed(ledger)
    with ledger.begin() as conn:  # as a ledger migrated from 0005 has them
        conn.execute(batch_jobs.update().values(attributes=None))
        conn.execute(pods.update().values(labels=None))
    done = reattribute(ledger, AFTER, time.time())
    assert done.kept == {
        "pods ingested before their labels were kept, with rules reading labels": 2,
        "jobs without the attribute AF_User (not asked for at ingest, or too long to keep)": 3,
    }
    assert (done.jobs_changed, done.pods_changed) == (0, 0)

    # rules that read only what every row has (AccountingGroup; a pod's name) still apply
    by_name = [r for r in DEFAULT_RULES if r.attribute in ("pod", "AccountingGroup")]
    done = reattribute(ledger, by_name, time.time())
    assert done.kept == {} and (done.jobs, done.pods) == (3, 2)
    assert done.moves == {}  # those rules decided the same at ingest


def test_cli_dry_run_then_for_real(ledger: Ledger, tmp_path) -> None:  # noqa: ANN001
    _seed(ledger)
    config = tmp_path / "af.toml"
    rules = [*DEFAULT_RULES, FIXED]  # the rules a facility writes replace the defaults: it keeps them and adds one
    config.write_text("".join(
        "[[accounting.rules]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in rule.model_dump().items()) for rule in rules
    ))
    url = str(ledger.engine.url.render_as_string(hide_password=False))
    args = ["--config", str(config), "--ledger", url, "accounting", "reattribute"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "3 jobs read, 1 would change; 2 pods read, 0 would change" in dry.output
    assert "carol" in dry.output and "(dry run)" in dry.output
    assert _by_user(ledger).get("carol") is None
    real = CliRunner().invoke(cli, args)
    assert real.exit_code == 0 and "3 jobs read, 1 changed" in real.output, real.output
    assert _by_user(ledger)["carol"] == 4


def test_unchanged_rules_change_nothing_even_after_a_pod_named_its_jobs_user(ledger: Ledger) -> None:
    with ledger.begin() as conn:
        ledger.user_ids(conn, ["alice"], time.time())
    job = finished(411, "2026-10-05T08:00", "2026-10-05T10:00", 2, 3 * H, "jupyter-wk-1")
    ingest_history(ledger, io.StringIO(text([job], "file")), AFTER, time.time())  # the pod's user is not known yet
    with ledger.begin() as conn:  # then Kubernetes shows the pod with alice's label: the job follows (pod-map)
        hour = 1_791_000_000.0
        seen = PodHour("jhub", "jupyter-wk-1", hour, {"label_owner_name": "alice"}, H, H, H, 0.0, 0.0, 0.0, hour, hour + H)
        record_pod_hours(ledger, conn, [seen], attributor(conn, AFTER), "component=singleuser-server", time.time())
    assert _by_user(ledger) == {"alice": 2 * 2 + 1}
    done = reattribute(ledger, AFTER, time.time())
    assert (done.jobs, done.pods, done.jobs_changed, done.pods_changed) == (1, 1, 0, 0)


def test_a_value_too_long_to_keep_leaves_its_job_alone(ledger: Ledger) -> None:
    long = finished(421, "2026-10-06T08:00", "2026-10-06T12:00", 1, 3 * H, None, AF_User="x" * 5000)
    ingest_history(ledger, io.StringIO(text([long, *JOBS[1:2]], "file")), BEFORE, time.time())
    done = reattribute(ledger, AFTER, time.time())
    assert done.kept == {"jobs without the attribute AF_User (not asked for at ingest, or too long to keep)": 1}
    assert done.moves == {(None, "carol"): 1}
