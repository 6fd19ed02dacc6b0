"""learn run mode: learn_runs.mode (task-ft | co-ft | external), backfilled from each recipe's "mode"

`lineage` shows every edge's finetune mode without decoding the recipe JSON of every run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MODE_LEN = 32


def _mode(recipe) -> str | None:
    """recipe["mode"] if it is a string that fits the column, else NULL (as NewLearnRun.mode; repeated
    here so this migration keeps meaning what it meant when written)."""
    if isinstance(recipe, str):  # SQLite hands JSON text back undecoded; PostgreSQL's driver decodes it
        try:
            recipe = json.loads(recipe)
        except ValueError:
            return None
    mode = recipe.get("mode") if isinstance(recipe, dict) else None
    return mode if isinstance(mode, str) and len(mode) <= MODE_LEN else None


def upgrade() -> None:
    # Nullable for good: a run whose recipe names no mode has none to show.
    with op.batch_alter_table("learn_runs") as batch:
        batch.add_column(sa.Column("mode", sa.String(MODE_LEN), nullable=True))
    conn = op.get_bind()
    modes = [{"m": _mode(recipe), "id": row_id} for row_id, recipe in conn.execute(sa.text("SELECT id, recipe FROM learn_runs"))]
    modes = [p for p in modes if p["m"] is not None]
    if modes:
        conn.execute(sa.text("UPDATE learn_runs SET mode = :m WHERE id = :id"), modes)


def downgrade() -> None:
    with op.batch_alter_table("learn_runs") as batch:
        batch.drop_column("mode")
