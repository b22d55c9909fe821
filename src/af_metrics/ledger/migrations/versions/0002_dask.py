"""Per-user Dask clusters: targets with their last sample, hourly usage, daily task counts, cycles.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "dask_targets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("cluster", sa.String(255), nullable=False),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_attempt", sa.Float),
        sa.Column("first_miss", sa.Float),
        sa.Column("run", sa.Float),
        sa.Column("open", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_t", sa.Float),
        sa.Column("last_workers", sa.Integer),
        sa.Column("last_threads", sa.Integer),
        sa.Column("last_memory", sa.Float),
        sa.Column("last_finished", sa.Float),
        sa.Column("last_erred", sa.Float),
        sa.Column("last_suspicious", sa.Float),
        sa.Column("last_started", sa.Float),
        sa.Column("last_ticks", sa.Float),
        *(
            sa.Column(name, sa.Float, nullable=False, server_default="0")
            for name in (
                "worker_seconds", "core_seconds", "memory_byte_seconds",
                "tasks_finished", "tasks_erred", "tasks_suspicious",
            )
        ),
        sa.UniqueConstraint("user_id", "cluster", "url", name="uq_dask_targets_key"),
    )
    op.create_table(
        "dask_usage",
        sa.Column("target_id", sa.Integer, sa.ForeignKey("dask_targets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("hour_start", sa.Float, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("worker_seconds", sa.Float, nullable=False),
        sa.Column("core_seconds", sa.Float, nullable=False),
        sa.Column("memory_byte_seconds", sa.Float, nullable=False),
        sa.Column("max_workers", sa.Integer, nullable=False),
        sa.Column("max_threads", sa.Integer, nullable=False),
    )
    op.create_index("ix_dask_usage_day_user", "dask_usage", ["day", "user_id"])
    op.create_table(
        "dask_tasks",
        sa.Column("target_id", sa.Integer, sa.ForeignKey("dask_targets.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("finished", sa.Float, nullable=False),
        sa.Column("erred", sa.Float, nullable=False),
        sa.Column("suspicious", sa.Float, nullable=False),
    )
    op.create_index("ix_dask_tasks_day_user", "dask_tasks", ["day", "user_id"])
    op.create_table(
        "dask_cycles",
        sa.Column("t", sa.Float, primary_key=True),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("targets", sa.Integer, nullable=False),
        sa.Column("up", sa.Integer, nullable=False),
        sa.Column("users", sa.Integer, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
    )
    op.create_index("ix_dask_cycles_day", "dask_cycles", ["day"])


def downgrade() -> None:
    for table in ("dask_cycles", "dask_tasks", "dask_usage", "dask_targets"):
        op.drop_table(table)
