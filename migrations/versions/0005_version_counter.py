"""version counter: counters("versions") holds the next version number, taken under a row lock

Numbers were max(number) + 1 under a unique constraint with retry; a burst of commits onto
different refs on PostgreSQL kept colliding until the retries ran out (exit 5). A commit now takes
its number by UPDATE ... RETURNING on this one row, which PostgreSQL locks until the commit ends
(SQLite serialises writers anyway), so two commits never draw the same number. The unique
constraint on versions.number stays as the last line of defence.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counters"),
    )
    op.execute("INSERT INTO counters (name, value) SELECT 'versions', COALESCE(MAX(number), -1) + 1 FROM versions")


def downgrade() -> None:
    op.drop_table("counters")
