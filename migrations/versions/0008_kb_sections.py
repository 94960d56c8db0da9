"""a knowledge article belongs to a section (the subfolder it was read from; "" for none), so a
kind's specialists each search their own part of the knowledge base

Revision: 0008 (after 0007)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kb_articles") as batch:
        batch.add_column(sa.Column("section", sa.String(length=64), server_default="", nullable=False))
        batch.create_index(op.f("ix_kb_articles_section"), ["section"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("kb_articles") as batch:
        batch.drop_index(op.f("ix_kb_articles_section"))
        batch.drop_column("section")
