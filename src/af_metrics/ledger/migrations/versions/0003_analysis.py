"""Analysis runs pushed by users' kernels: one row per run, per-dataset figures, chunk histograms.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "analysis_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("processor", sa.String(255), nullable=False),
        sa.Column("executor", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(500)),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("ended", sa.Float, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("wall_seconds", sa.Float, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("bytes_read", sa.BigInteger, nullable=False),
        sa.Column("columns_read", sa.Integer, nullable=False),
        sa.Column("process_seconds", sa.Float, nullable=False),
        sa.Column("chunk_seconds", sa.Float, nullable=False),
        sa.Column("threads", sa.Integer, nullable=False),
        sa.Column("events_per_thread_second", sa.Float),
        sa.Column("cpu_efficiency", sa.Float),
        sa.Column("coffea_version", sa.String(64), nullable=False),
        sa.Column("received", sa.Float, nullable=False),
    )
    op.create_index("ix_analysis_runs_day_user", "analysis_runs", ["day", "user_id"])
    op.create_index("ix_analysis_runs_user_started", "analysis_runs", ["user_id", "started"])
    op.create_table(
        "analysis_run_datasets",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("analysis_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("dataset", sa.String(255), primary_key=True),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("bytes_read", sa.BigInteger, nullable=False),
        sa.Column("process_seconds", sa.Float, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
    )
    op.create_table(
        "analysis_chunk_buckets",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("analysis_runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("le", sa.Float, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("analysis_chunk_buckets")
    op.drop_table("analysis_run_datasets")
    op.drop_table("analysis_runs")
