"""score intervals and query indexes: scores.ci_low/ci_high (backfilled), indexes for scores and the ref log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from registry.stats import wilson_interval

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable first, backfill from successes/episodes, then tighten: existing rows keep working.
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("ci_low", sa.Float(), nullable=True))
        batch.add_column(sa.Column("ci_high", sa.Float(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, successes, episodes FROM scores")).all()
    for row_id, successes, episodes in rows:
        low, high = wilson_interval(successes, episodes)
        conn.execute(sa.text("UPDATE scores SET ci_low = :lo, ci_high = :hi WHERE id = :id"), {"lo": low, "hi": high, "id": row_id})
    with op.batch_alter_table("scores") as batch:
        batch.alter_column("ci_low", existing_type=sa.Float(), nullable=False)
        batch.alter_column("ci_high", existing_type=sa.Float(), nullable=False)
        batch.create_index("ix_scores_version_id", ["version_id"])
    op.create_index("ix_ref_log_ref", "ref_log", ["ref"])


def downgrade() -> None:
    op.drop_index("ix_ref_log_ref", table_name="ref_log")
    with op.batch_alter_table("scores") as batch:
        batch.drop_index("ix_scores_version_id")
        batch.drop_column("ci_high")
        batch.drop_column("ci_low")
