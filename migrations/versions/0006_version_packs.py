"""version packs: versions.packed and versions.head_copy (learned versions stored against their parent)

A learned version's `weights` folder may now be a pack against its parent's weights
(registry/pack.py: ulp steps or XOR of the bits, zstd-compressed; `packed` says so), with its whole
weights kept in `head_copy` only while a ref points at it, so checking out a head is one read and
a chain costs little more than its base. Rows written before this revision are stored whole
(packed false, no head copy) and read as before.

Columns are only added (and dropped on downgrade) in place: SQLite's batch mode would copy the
versions table, which the other tables' references to it forbid while foreign keys are enforced.
For the same reason head_copy carries no foreign key (SQLite cannot drop a column that has one);
registry.api keeps it pointing at a stored folder, and gc counts it as a reference.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("versions", sa.Column("packed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("versions", sa.Column("head_copy", sa.String(64), nullable=True))


def downgrade() -> None:
    # A packed version's weights need this code to read: refuse rather than leave them unreadable.
    conn = op.get_bind()
    packed = conn.execute(sa.text("SELECT COUNT(*) FROM versions WHERE packed")).scalar()
    if packed:
        raise RuntimeError(f"{packed} version(s) are stored as packs, which revisions below 0006 cannot read; "
                           "keep this revision")
    for column in ("head_copy", "packed"):
        op.execute(f"ALTER TABLE versions DROP COLUMN {column}")
