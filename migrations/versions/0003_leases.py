"""worker leases: heartbeats with the jobs each worker holds, and when a job's message was sent

Revision: 0003 (after 0002)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())
        )
        batch.add_column(sa.Column("stalled_resends", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_jobs_state_sent_at", ["state", "sent_at"], unique=False)
    op.create_table(
        "worker_beats",
        sa.Column("worker", sa.String(255), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holding", sa.JSON(), nullable=False),
        sa.Column("received", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("worker", name=op.f("pk_worker_beats")),
    )
    op.create_index(op.f("ix_worker_beats_beat_at"), "worker_beats", ["beat_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_worker_beats_beat_at"), table_name="worker_beats")
    op.drop_table("worker_beats")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_state_sent_at")
        batch.drop_column("stalled_resends")
        batch.drop_column("sent_at")
