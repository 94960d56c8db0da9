"""a job's kind is any declared kind's name (up to 32 characters), not one of three

Revision: 0004 (after 0002)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("kind", type_=sa.String(64), existing_type=sa.String(16), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("kind", type_=sa.String(16), existing_type=sa.String(64), existing_nullable=False)
