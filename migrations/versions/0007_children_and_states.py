"""a job may have a parent (a decomposed job's children), and states up to 32 characters
(needs_clarification)

Revision: 0007 (after 0006)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

NARROW, WIDE = sa.String(16), sa.String(32)

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("state", type_=WIDE, existing_type=NARROW, existing_nullable=False)
        batch.add_column(sa.Column("parent_id", sa.String(length=128), nullable=True))
        batch.create_foreign_key(op.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"])
        batch.create_index(op.f("ix_jobs_parent_id"), ["parent_id"], unique=False)
    with op.batch_alter_table("attempts") as batch:
        batch.alter_column("state", type_=WIDE, existing_type=NARROW, existing_nullable=False)
        batch.alter_column("verdict", type_=WIDE, existing_type=NARROW, existing_nullable=True)
    with op.batch_alter_table("results") as batch:
        batch.alter_column("verdict", type_=WIDE, existing_type=NARROW, existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.alter_column("verdict", type_=NARROW, existing_type=WIDE, existing_nullable=False)
    with op.batch_alter_table("attempts") as batch:
        batch.alter_column("verdict", type_=NARROW, existing_type=WIDE, existing_nullable=True)
        batch.alter_column("state", type_=NARROW, existing_type=WIDE, existing_nullable=False)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_parent_id"))
        batch.drop_constraint(op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch.drop_column("parent_id")
        batch.alter_column("state", type_=NARROW, existing_type=WIDE, existing_nullable=False)
