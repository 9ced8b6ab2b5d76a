"""Links, pastes, daily click counts and click receipts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("id", sa.BigInteger, nullable=False),
        sa.Column("url", sa.String(65_536), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_links_expires_at", "links", ["expires_at"])
    op.create_table(
        "pastes",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("id", sa.BigInteger, nullable=False),
        sa.Column("language", sa.String(32), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=True),
        sa.Column("blob_key", sa.String(512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(content IS NULL) <> (blob_key IS NULL)", name="pastes_content_or_blob"
        ),
    )
    op.create_index("ix_pastes_expires_at", "pastes", ["expires_at"])
    op.create_table(
        "daily_clicks",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("clicks", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "click_receipts",
        sa.Column("message_id", sa.String(200), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_click_receipts_received_at", "click_receipts", ["received_at"])


def downgrade() -> None:
    op.drop_table("click_receipts")
    op.drop_table("daily_clicks")
    op.drop_table("pastes")
    op.drop_table("links")
