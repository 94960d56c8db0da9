"""fewer index writes per submitted job: the state-only index goes (the two indexes on state
and a time lead with it), and the parent index keeps only the children (a submitted job has
no parent, so it writes no entry)

Revision: 0009 (after 0008)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

CHILDREN = sa.text("parent_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_state"))
        batch.drop_index(op.f("ix_jobs_parent_id"))
        batch.create_index(
            op.f("ix_jobs_parent_id"), ["parent_id"], postgresql_where=CHILDREN, sqlite_where=CHILDREN
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(op.f("ix_jobs_parent_id"))
        batch.create_index(op.f("ix_jobs_parent_id"), ["parent_id"], unique=False)
        batch.create_index(op.f("ix_jobs_state"), ["state"], unique=False)
