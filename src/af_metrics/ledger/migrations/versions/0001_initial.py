"""Initial ledger: users, sessions, spawns, session hours, hub spawn histogram, calendar.

Revision ID: 0001
Revises:
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

CALENDAR_YEARS = range(2000, 2101)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created", sa.Float),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("last_activity", sa.Float),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(255)),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("ended", sa.Float),
        sa.Column("last_activity", sa.Float),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("end_reason", sa.String(32)),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("hours_until", sa.Float),
        sa.UniqueConstraint("user_id", "server", "started", name="uq_sessions_key"),
    )
    op.create_index("ix_sessions_open", "sessions", ["ended"])
    op.create_index("ix_sessions_started", "sessions", ["started"])
    op.create_index("ix_sessions_started_cover", "sessions", ["started", "user_id", "ended", "profile"])
    op.create_table(
        "spawns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(255)),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("finished", sa.Float),
        sa.Column("duration", sa.Float),
        sa.Column("source", sa.String(32), nullable=False),
        sa.UniqueConstraint("user_id", "server", "started", name="uq_spawns_key"),
    )
    op.create_index("ix_spawns_started", "spawns", ["started"])
    op.create_index("ix_spawns_started_cover", "spawns", ["started", "outcome", "duration"])
    op.create_table(
        "session_hours",
        sa.Column("session_id", sa.Integer, sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("hour_start", sa.Float, primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("how", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
    )
    op.create_index("ix_session_hours_day_user", "session_hours", ["day", "user_id"])
    op.create_index("ix_session_hours_user_day", "session_hours", ["user_id", "day"])
    op.create_index("ix_session_hours_day_how", "session_hours", ["day", "how", "seconds"])
    op.create_table(
        "spawn_buckets",
        sa.Column("observed_at", sa.Float, primary_key=True),
        sa.Column("status", sa.String(32), primary_key=True),
        sa.Column("le", sa.Float, primary_key=True),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("count", sa.Float, nullable=False),
    )
    op.create_index("ix_spawn_buckets_day", "spawn_buckets", ["day"])
    calendar = op.create_table(
        "calendar",
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("date", sa.String(10), nullable=False),
        sa.Column("week", sa.String(8), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("quarter", sa.String(7), nullable=False),
        sa.Column("year", sa.String(4), nullable=False),
    )
    op.create_table(
        "source_state",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.bulk_insert(calendar, list(_calendar_rows()))


def _calendar_rows():
    day = dt.date(CALENDAR_YEARS.start, 1, 1)
    end = dt.date(CALENDAR_YEARS.stop, 1, 1)
    while day < end:
        iso_year, iso_week, _ = day.isocalendar()
        yield {
            "day": day.toordinal(),
            "date": day.isoformat(),
            "week": f"{iso_year}-W{iso_week:02d}",
            "month": f"{day.year}-{day.month:02d}",
            "quarter": f"{day.year}-Q{(day.month - 1) // 3 + 1}",
            "year": f"{day.year}",
        }
        day += dt.timedelta(days=1)
