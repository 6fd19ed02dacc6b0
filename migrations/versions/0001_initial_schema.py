"""initial schema: blobs, folders, skills, demo sets, versions, learn runs, scores, refs, ref log

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_blobs"),
    )
    op.create_table(
        "folders",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_folders"),
    )
    op.create_table(
        "folder_files",
        sa.Column("folder", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("blob", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["blob"], ["blobs.sha256"], name="fk_folder_files_blob_blobs"),
        sa.ForeignKeyConstraint(["folder"], ["folders.sha256"], name="fk_folder_files_folder_folders"),
        sa.PrimaryKeyConstraint("folder", "path", name="pk_folder_files"),
    )
    op.create_table(
        "skills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("instructions", sa.JSON(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_skills"),
        sa.UniqueConstraint("name", name="uq_skills_name"),
    )
    op.create_table(
        "demo_sets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("episodes", sa.Integer(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["folder"], ["folders.sha256"], name="fk_demo_sets_folder_folders"),
        sa.ForeignKeyConstraint(["skill_id"], ["skills.id"], name="fk_demo_sets_skill_id_skills"),
        sa.PrimaryKeyConstraint("id", name="pk_demo_sets"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("weight_hash", sa.String(80), nullable=False),
        sa.Column("weights", sa.String(64), nullable=False),
        sa.Column("how", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["versions.id"], name="fk_versions_parent_id_versions"),
        sa.ForeignKeyConstraint(["weights"], ["folders.sha256"], name="fk_versions_weights_folders"),
        sa.PrimaryKeyConstraint("id", name="pk_versions"),
        sa.UniqueConstraint("number", name="uq_versions_number"),
    )
    op.create_table(
        "learn_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("result_id", sa.Integer(), nullable=True),
        sa.Column("demo_set_id", sa.Integer(), nullable=True),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("delta", sa.String(64), nullable=True),
        sa.Column("alpha", sa.JSON(), nullable=False),
        sa.Column("sweep", sa.JSON(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["delta"], ["folders.sha256"], name="fk_learn_runs_delta_folders"),
        sa.ForeignKeyConstraint(["demo_set_id"], ["demo_sets.id"], name="fk_learn_runs_demo_set_id_demo_sets"),
        sa.ForeignKeyConstraint(["parent_id"], ["versions.id"], name="fk_learn_runs_parent_id_versions"),
        sa.ForeignKeyConstraint(["result_id"], ["versions.id"], name="fk_learn_runs_result_id_versions"),
        sa.ForeignKeyConstraint(["skill_id"], ["skills.id"], name="fk_learn_runs_skill_id_skills"),
        sa.PrimaryKeyConstraint("id", name="pk_learn_runs"),
    )
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=True),
        sa.Column("split", sa.String(64), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("episodes", sa.Integer(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("evaluator", sa.String(200), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["skill_id"], ["skills.id"], name="fk_scores_skill_id_skills"),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"], name="fk_scores_version_id_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_scores"),
    )
    op.create_table(
        "refs",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["version_id"], ["versions.id"], name="fk_refs_version_id_versions"),
        sa.PrimaryKeyConstraint("name", name="pk_refs"),
    )
    op.create_table(
        "ref_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ref", sa.String(200), nullable=False),
        sa.Column("old_version_id", sa.Integer(), nullable=True),
        sa.Column("new_version_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["new_version_id"], ["versions.id"], name="fk_ref_log_new_version_id_versions"),
        sa.ForeignKeyConstraint(["old_version_id"], ["versions.id"], name="fk_ref_log_old_version_id_versions"),
        sa.PrimaryKeyConstraint("id", name="pk_ref_log"),
    )


def downgrade() -> None:
    for table in ("ref_log", "refs", "scores", "learn_runs", "versions", "demo_sets", "skills", "folder_files", "folders", "blobs"):
        op.drop_table(table)
