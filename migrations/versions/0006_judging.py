"""sampled judging: one judgement per job, and what judging spent per UTC day

Revision: 0006 (after 0005; the numbers are re-chained at merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "judgements",
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("estimate_usd", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_judgements_job_id_jobs")),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_judgements")),
    )
    op.create_index(op.f("ix_judgements_day"), "judgements", ["day"], unique=False)
    op.create_table(
        "judge_spend",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_judge_spend")),
    )


def downgrade() -> None:
    op.drop_table("judge_spend")
    op.drop_index(op.f("ix_judgements_day"), table_name="judgements")
    op.drop_table("judgements")
