"""What attribution read, kept so that changed rules can be applied again to stored usage:
a job's ClassAd attributes the rules asked for, a pod's kube-state-metrics labels (JSON).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.add_column("batch_jobs", sa.Column("attributes", sa.Text))
    op.add_column("pods", sa.Column("labels", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("pods") as table:
        table.drop_column("labels")
    with op.batch_alter_table("batch_jobs") as table:
        table.drop_column("attributes")
