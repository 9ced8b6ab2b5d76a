"""Expand: items.title is to become items.name; add `name` beside it and copy.

Release N writes both columns and reads `name`, falling back to `title`; a later
contract migration (release N+1) fills the gaps, makes `name` NOT NULL and drops `title`.

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
    op.add_column("items", sa.Column("name", sa.Text, nullable=True))
    op.execute("UPDATE items SET name = title")


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("name")
