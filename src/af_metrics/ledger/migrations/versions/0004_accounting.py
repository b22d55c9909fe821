"""Accounting: HTCondor jobs with per-day slices, Kubernetes pods with per-hour usage.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("global_job_id", sa.String(255), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("rule", sa.String(64)),
        sa.Column("owner", sa.String(255)),
        sa.Column("accounting_group", sa.String(255)),
        sa.Column("grp", sa.String(255), nullable=False),
        sa.Column("pod", sa.String(255)),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("exit_code", sa.Integer),
        sa.Column("settled", sa.Integer, nullable=False),
        sa.Column("request_cpus", sa.Float, nullable=False),
        sa.Column("request_memory", sa.Float),
        sa.Column("request_gpus", sa.Float, nullable=False),
        sa.Column("started", sa.Float),
        sa.Column("ended", sa.Float),
        sa.Column("end_day", sa.Integer),
        sa.Column("wall_seconds", sa.Float, nullable=False),
        sa.Column("cpu_seconds", sa.Float, nullable=False),
        sa.Column("memory_usage", sa.Float),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_index("ix_batch_jobs_end_day", "batch_jobs", ["end_day"])
    op.create_index("ix_batch_jobs_pod", "batch_jobs", ["pod"])
    op.create_table(
        "batch_job_days",
        sa.Column("job_id", sa.Integer, sa.ForeignKey("batch_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("wall_seconds", sa.Float, nullable=False),
        sa.Column("core_seconds", sa.Float, nullable=False),
        sa.Column("cpu_seconds", sa.Float, nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("memory_mib_seconds", sa.Float, nullable=False),
        sa.Column("memory_used_mib_seconds", sa.Float, nullable=False),
    )
    op.create_index("ix_batch_job_days_day", "batch_job_days", ["day"])
    op.create_table(
        "pods",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("rule", sa.String(64)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )
    op.create_index("ix_pods_name", "pods", ["name"])
    op.create_table(
        "pod_hours",
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("pod", sa.String(255), primary_key=True),
        sa.Column("hour_start", sa.Float, primary_key=True),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("cpu_request_seconds", sa.Float, nullable=False),
        sa.Column("cpu_used_seconds", sa.Float, nullable=False),
        sa.Column("memory_request_byte_seconds", sa.Float, nullable=False),
        sa.Column("memory_used_byte_seconds", sa.Float, nullable=False),
        sa.Column("gpu_request_seconds", sa.Float, nullable=False),
    )
    op.create_index("ix_pod_hours_day", "pod_hours", ["day"])


def downgrade() -> None:
    for table in ("pod_hours", "pods", "batch_job_days", "batch_jobs"):
        op.drop_table(table)
