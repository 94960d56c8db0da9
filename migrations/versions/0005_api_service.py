"""the HTTP API: keys per tenant, OpenAI files and batches, and each batch line's job

Revision: 0005 (after 0002; the numbers are re-chained at merge)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("hint", sa.String(length=16), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("revoked_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_tenant"), "api_keys", ["tenant"], unique=False)
    op.create_table(
        "api_files",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("filename", sa.String(length=512), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_files")),
    )
    op.create_index(op.f("ix_api_files_tenant"), "api_files", ["tenant"], unique=False)
    op.create_table(
        "api_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=True),
        sa.Column("input_file_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("completion_window", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_batch_id", sa.String(length=64), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("output_file_id", sa.String(length=40), nullable=True),
        sa.Column("error_file_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        *(
            sa.Column(name, WHEN, nullable=True)
            for name in (
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "cancelling_at",
                "cancelled_at",
            )
        ),
        sa.ForeignKeyConstraint(
            ["input_file_id"], ["api_files.id"], name=op.f("fk_api_batches_input_file_id_api_files")
        ),
        sa.ForeignKeyConstraint(
            ["job_batch_id"], ["batches.id"], name=op.f("fk_api_batches_job_batch_id_batches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_batches")),
    )
    op.create_index(op.f("ix_api_batches_tenant"), "api_batches", ["tenant"], unique=False)
    op.create_table(
        "api_batch_requests",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("line", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("custom_id", sa.String(length=512), nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["api_batches.id"], name=op.f("fk_api_batch_requests_batch_id_api_batches")
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_api_batch_requests_job_id_jobs")),
        sa.PrimaryKeyConstraint("batch_id", "line", name=op.f("pk_api_batch_requests")),
    )
    op.create_index(op.f("ix_api_batch_requests_job_id"), "api_batch_requests", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_api_batch_requests_job_id"), table_name="api_batch_requests")
    op.drop_table("api_batch_requests")
    op.drop_index(op.f("ix_api_batches_tenant"), table_name="api_batches")
    op.drop_table("api_batches")
    op.drop_index(op.f("ix_api_files_tenant"), table_name="api_files")
    op.drop_table("api_files")
    op.drop_index(op.f("ix_api_keys_tenant"), table_name="api_keys")
    op.drop_table("api_keys")
