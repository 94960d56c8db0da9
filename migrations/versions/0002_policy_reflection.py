"""policy versions record what reflect saw and why it changed

Revision: 0002 (after 0001)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy_versions") as batch:
        batch.add_column(sa.Column("statistics", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("reflection", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy_versions") as batch:
        batch.drop_column("reflection")
        batch.drop_column("statistics")
