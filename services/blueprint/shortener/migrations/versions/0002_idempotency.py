"""Idempotency keys: the records of Shorten's and CreatePaste's keys, and the key that
wrote each link and paste. Expand only: release 0001 ignores both.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("links", sa.Column("idempotency_key", sa.String(128), nullable=True))
    op.add_column("pastes", sa.Column("idempotency_key", sa.String(128), nullable=True))
    op.create_table(
        "idempotency_records",
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("plan", sa.LargeBinary, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_records_expires_at", "idempotency_records", ["expires_at"])


def downgrade() -> None:
    op.drop_table("idempotency_records")
    with op.batch_alter_table("pastes") as pastes:  # SQLite drops columns by copying
        pastes.drop_column("idempotency_key")
    with op.batch_alter_table("links") as links:
        links.drop_column("idempotency_key")
