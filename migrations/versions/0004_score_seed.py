"""score seed: scores.seed, the evaluation seed of each recorded evaluation (NULL where not recorded)

Every evaluation is kept; which one a figure shows is chosen at query time (registry/evaluations.py)
from evaluator, seed, episodes and date, so an evaluation must say which seed it ran. Rows recorded
before this revision did not say: they stay NULL ("seed not recorded") rather than guess one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.add_column(sa.Column("seed", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("seed")
