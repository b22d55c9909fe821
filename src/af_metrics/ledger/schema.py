"""The ledger's tables (current version). Changes go through a new Alembic migration.

Times are epoch seconds (UTC, double precision) so that durations are plain subtraction on
SQLite and PostgreSQL alike; days are facility-local date ordinals joined to ``calendar``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created", Float),  # the hub's creation time, when known
    Column("first_seen", Float, nullable=False),  # first time any source saw the user
    Column("last_seen", Float, nullable=False),
    Column("last_activity", Float),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("server", String(255), nullable=False, default=""),
    Column("profile", String(255)),
    Column("started", Float, nullable=False),
    Column("ended", Float),  # NULL while running
    Column("last_activity", Float),
    Column("last_seen", Float, nullable=False),  # last time a source saw it running
    Column("end_reason", String(32)),  # stopped | vanished | replaced, or the source (import, simulate) for history
    Column("source", String(32), nullable=False),
    Column("hours_until", Float),  # session_hours is materialised up to this time
    UniqueConstraint("user_id", "server", "started", name="uq_sessions_key"),
)
Index("ix_sessions_open", sessions.c.ended)
Index("ix_sessions_started", sessions.c.started)
# covers the session KPIs (counts, durations, profiles by start time) without table lookups
Index("ix_sessions_started_cover", sessions.c.started, sessions.c.user_id, sessions.c.ended, sessions.c.profile)

spawns = Table(
    "spawns",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("server", String(255), nullable=False, default=""),
    Column("profile", String(255)),
    Column("started", Float, nullable=False),
    Column("outcome", String(16), nullable=False),  # pending | success | failure
    Column("finished", Float),
    Column("duration", Float),  # seconds, when the source knows it
    Column("source", String(32), nullable=False),
    UniqueConstraint("user_id", "server", "started", name="uq_spawns_key"),
)
Index("ix_spawns_started", spawns.c.started)
Index("ix_spawns_started_cover", spawns.c.started, spawns.c.outcome, spawns.c.duration)  # spawn KPIs

session_hours = Table(
    "session_hours",
    metadata,
    Column("session_id", Integer, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("hour_start", Float, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("day", Integer, nullable=False),
    Column("how", Integer, nullable=False),  # hour of week, Monday 00:00 = 0
    Column("seconds", Float, nullable=False),
)
Index("ix_session_hours_day_user", session_hours.c.day, session_hours.c.user_id)
Index("ix_session_hours_user_day", session_hours.c.user_id, session_hours.c.day)
Index("ix_session_hours_day_how", session_hours.c.day, session_hours.c.how, session_hours.c.seconds)  # hour of week

spawn_buckets = Table(
    "spawn_buckets",
    metadata,
    Column("observed_at", Float, primary_key=True),
    Column("status", String(32), primary_key=True),
    Column("le", Float, primary_key=True),  # upper bound in seconds; +Inf stored as 1e300
    Column("day", Integer, nullable=False),
    Column("count", Float, nullable=False),  # increase since the previous observation
)
Index("ix_spawn_buckets_day", spawn_buckets.c.day)

calendar = Table(
    "calendar",
    metadata,
    Column("day", Integer, primary_key=True),  # date ordinal
    Column("date", String(10), nullable=False),  # YYYY-MM-DD
    Column("week", String(8), nullable=False),  # ISO week, YYYY-Www
    Column("month", String(7), nullable=False),  # YYYY-MM
    Column("quarter", String(7), nullable=False),  # YYYY-Qn
    Column("year", String(4), nullable=False),
)

source_state = Table(
    "source_state",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("state", Text, nullable=False),  # JSON
    Column("updated", Float, nullable=False),
)

# Properties of the ledger itself (migration 0005): "timezone", recorded on first open, because
# day and hour columns are cut in that zone when facts are written and cannot be re-cut later.
ledger_properties = Table(
    "ledger_properties",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

INF_LE = 1e300

# -- per-user Dask clusters (migration 0002) --------------------------------------------------
# A target is one scheduler dashboard of one user. Its row keeps the last sample (the state the
# next sample is integrated against, so replaying a sample changes nothing) and running totals.
# Worker/core/memory integrals go to dask_usage per local hour; task counter increases to
# dask_tasks per local day; facility totals per collection cycle to dask_cycles.

dask_targets = Table(
    "dask_targets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("cluster", String(255), nullable=False),
    Column("url", String(1024), nullable=False),
    Column("first_seen", Float, nullable=False),  # first listed by discovery
    Column("last_attempt", Float),  # last read, successful or not
    Column("first_miss", Float),  # first failed read since last_t, while a run is open
    Column("run", Float),  # estimated start of the scheduler run last seen
    Column("open", Integer, nullable=False, default=0),  # 1 while that run is not closed
    Column("last_t", Float),  # last successful read and its figures
    Column("last_workers", Integer),
    Column("last_threads", Integer),
    Column("last_memory", Float),
    Column("last_finished", Float),
    Column("last_erred", Float),
    Column("last_suspicious", Float),
    Column("last_started", Float),
    Column("last_ticks", Float),
    Column("worker_seconds", Float, nullable=False, default=0.0),  # running totals
    Column("core_seconds", Float, nullable=False, default=0.0),
    Column("memory_byte_seconds", Float, nullable=False, default=0.0),
    Column("tasks_finished", Float, nullable=False, default=0.0),
    Column("tasks_erred", Float, nullable=False, default=0.0),
    Column("tasks_suspicious", Float, nullable=False, default=0.0),
    UniqueConstraint("user_id", "cluster", "url", name="uq_dask_targets_key"),
)

dask_usage = Table(
    "dask_usage",
    metadata,
    Column("target_id", Integer, ForeignKey("dask_targets.id", ondelete="CASCADE"), primary_key=True),
    Column("hour_start", Float, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("day", Integer, nullable=False),
    Column("seconds", Float, nullable=False),  # time the scheduler was seen
    Column("worker_seconds", Float, nullable=False),
    Column("core_seconds", Float, nullable=False),
    Column("memory_byte_seconds", Float, nullable=False),
    Column("max_workers", Integer, nullable=False),
    Column("max_threads", Integer, nullable=False),
)
Index("ix_dask_usage_day_user", dask_usage.c.day, dask_usage.c.user_id)

dask_tasks = Table(
    "dask_tasks",
    metadata,
    Column("target_id", Integer, ForeignKey("dask_targets.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("finished", Float, nullable=False),  # tasks that reached memory or erred
    Column("erred", Float, nullable=False),
    Column("suspicious", Float, nullable=False),
)
Index("ix_dask_tasks_day_user", dask_tasks.c.day, dask_tasks.c.user_id)

dask_cycles = Table(
    "dask_cycles",
    metadata,
    Column("t", Float, primary_key=True),
    Column("day", Integer, nullable=False),
    Column("targets", Integer, nullable=False),
    Column("up", Integer, nullable=False),
    Column("users", Integer, nullable=False),  # users with at least one worker
    Column("workers", Integer, nullable=False),
    Column("threads", Integer, nullable=False),
)
Index("ix_dask_cycles_day", dask_cycles.c.day)

# -- analysis runs (coffea), pushed by users' kernels; see af_metrics.coffea ------------------

analysis_runs = Table(
    "analysis_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(32), nullable=False, unique=True),  # the client's id: a resend is a no-op
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),  # from the pushing token
    Column("processor", String(255), nullable=False),
    Column("executor", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # success | failure
    Column("error", String(500)),
    Column("started", Float, nullable=False),
    Column("ended", Float, nullable=False),
    Column("day", Integer, nullable=False),  # facility-local day of the start
    Column("wall_seconds", Float, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("bytes_read", BigInteger, nullable=False),
    Column("columns_read", Integer, nullable=False),
    Column("process_seconds", Float, nullable=False),
    Column("chunk_seconds", Float, nullable=False),
    Column("threads", Integer, nullable=False),
    Column("events_per_thread_second", Float),  # NULL when the wall time is zero
    Column("cpu_efficiency", Float),
    Column("coffea_version", String(64), nullable=False),
    Column("received", Float, nullable=False),
)
Index("ix_analysis_runs_day_user", analysis_runs.c.day, analysis_runs.c.user_id)
Index("ix_analysis_runs_user_started", analysis_runs.c.user_id, analysis_runs.c.started)

analysis_run_datasets = Table(
    "analysis_run_datasets",
    metadata,
    Column("run_id", Integer, ForeignKey("analysis_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("dataset", String(255), primary_key=True),
    Column("events", BigInteger, nullable=False),
    Column("bytes_read", BigInteger, nullable=False),
    Column("process_seconds", Float, nullable=False),
    Column("chunks", Integer, nullable=False),
)

analysis_chunk_buckets = Table(
    "analysis_chunk_buckets",
    metadata,
    Column("run_id", Integer, ForeignKey("analysis_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(16), primary_key=True),  # duration (seconds) | events (per chunk)
    Column("le", Float, primary_key=True),  # upper bound, +Inf stored as INF_LE
    Column("count", Integer, nullable=False),  # chunks in this bucket (not cumulative)
)

# -- accounting: HTCondor jobs and Kubernetes pods attributed to hub users (migration 0004) ----
# A batch job is one row per GlobalJobId; while it is in the queue (settled = 0) each ingest
# replaces its figures and its per-day slices, once it left the queue (settled = 1) it never
# changes again. user_id NULL: no attribution rule named a user (the unattributed remainder).
# Pods: one row per (namespace, name) with its user; pod_hours their integrated requests and
# usage per local hour. Memory: MiB for jobs (HTCondor's unit), bytes for pods.

batch_jobs = Table(
    "batch_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("global_job_id", String(255), nullable=False, unique=True),
    Column("user_id", Integer, ForeignKey("users.id")),  # NULL: unattributed
    Column("rule", String(64)),  # the attribution rule that named the user
    Column("owner", String(255)),
    Column("accounting_group", String(255)),
    Column("grp", String(255), nullable=False),  # accounting group without its user part
    Column("pod", String(255)),  # the pod an attribution rule found in the job, if any
    Column("status", Integer, nullable=False),  # JobStatus
    Column("exit_code", Integer),
    Column("settled", Integer, nullable=False),  # 1 once the job has left the queue
    Column("request_cpus", Float, nullable=False),
    Column("request_memory", Float),  # MiB
    Column("request_gpus", Float, nullable=False),
    Column("started", Float),
    Column("ended", Float),
    Column("end_day", Integer),  # local day of ``ended`` (jobs are counted on the day they end)
    Column("wall_seconds", Float, nullable=False),
    Column("cpu_seconds", Float, nullable=False),  # user + system
    Column("memory_usage", Float),  # MiB, peak
    Column("updated", Float, nullable=False),
    Column("attributes", Text),  # JSON: the ClassAd attributes the rules asked for (null: absent); NULL before 0006
)
Index("ix_batch_jobs_end_day", batch_jobs.c.end_day)
Index("ix_batch_jobs_pod", batch_jobs.c.pod)

batch_job_days = Table(
    "batch_job_days",
    metadata,
    Column("job_id", Integer, ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Integer, primary_key=True),
    Column("wall_seconds", Float, nullable=False),
    Column("core_seconds", Float, nullable=False),  # RequestCpus x wall
    Column("cpu_seconds", Float, nullable=False),
    Column("gpu_seconds", Float, nullable=False),
    Column("memory_mib_seconds", Float, nullable=False),  # requested
    Column("memory_used_mib_seconds", Float, nullable=False),
)
Index("ix_batch_job_days_day", batch_job_days.c.day)

pods = Table(
    "pods",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id")),  # NULL: unattributed
    Column("rule", String(64)),
    Column("role", String(16), nullable=False),  # notebook | other
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("labels", Text),  # JSON: kube-state-metrics labels last seen (label_*, annotation_*); NULL before 0006
)
Index("ix_pods_name", pods.c.name)

pod_hours = Table(
    "pod_hours",
    metadata,
    Column("namespace", String(255), primary_key=True),
    Column("pod", String(255), primary_key=True),
    Column("hour_start", Float, primary_key=True),
    Column("day", Integer, nullable=False),
    Column("seconds", Float, nullable=False),  # time the pod's series were present
    Column("cpu_request_seconds", Float, nullable=False),  # core-seconds requested
    Column("cpu_used_seconds", Float, nullable=False),
    Column("memory_request_byte_seconds", Float, nullable=False),
    Column("memory_used_byte_seconds", Float, nullable=False),
    Column("gpu_request_seconds", Float, nullable=False),
)
Index("ix_pod_hours_day", pod_hours.c.day)
