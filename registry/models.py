"""The registry schema (SQLAlchemy 2.x). Changed only together with a migration in migrations/.

Rows hold metadata and hashes, never tensors. Every constraint is named (see NAMING) so
migrations and SQLite batch mode can address it.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, MetaData, String, Text
from sqlalchemy import false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from registry.records import MODE_MAX

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SHA = 64  # hex digits of a sha256


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Blob(Base):
    """A content-addressed file in the store; the row is what makes the file 'known'."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(SHA), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Folder(Base):
    """A set of files (weights, a delta, a demo set), identified by the hash of its manifest."""

    __tablename__ = "folders"
    sha256: Mapped[str] = mapped_column(String(SHA), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FolderFile(Base):
    __tablename__ = "folder_files"
    folder: Mapped[str] = mapped_column(String(SHA), ForeignKey("folders.sha256"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    blob: Mapped[str] = mapped_column(String(SHA), ForeignKey("blobs.sha256"))
    size: Mapped[int] = mapped_column(BigInteger)


class SkillRow(Base):
    __tablename__ = "skills"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    instructions: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DemoSetRow(Base):
    __tablename__ = "demo_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    skill_id: Mapped[int] = mapped_column(ForeignKey("skills.id"))
    folder: Mapped[str] = mapped_column(String(SHA), ForeignKey("folders.sha256"))
    source: Mapped[str] = mapped_column(Text, default="")
    episodes: Mapped[int] = mapped_column(Integer)
    frames: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class VersionRow(Base):
    __tablename__ = "versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Assigned as max+1 inside the commit transaction; the unique constraint catches a race.
    number: Mapped[int] = mapped_column(Integer, unique=True)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("versions.id"), nullable=True)
    weight_hash: Mapped[str] = mapped_column(String(80))
    # The stored weights: whole, or (packed) a pack against the parent's weights (registry/pack.py),
    # whose whole weights head_copy keeps while a ref points here (migration 0006).
    weights: Mapped[str] = mapped_column(String(SHA), ForeignKey("folders.sha256"))
    packed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    head_copy: Mapped[Optional[str]] = mapped_column(String(SHA), nullable=True)  # a folders.sha256; no FK (see 0006)
    how: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LearnRunRow(Base):
    __tablename__ = "learn_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    skill_id: Mapped[int] = mapped_column(ForeignKey("skills.id"))
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("versions.id"), nullable=True)
    result_id: Mapped[Optional[int]] = mapped_column(ForeignKey("versions.id"), nullable=True)
    demo_set_id: Mapped[Optional[int]] = mapped_column(ForeignKey("demo_sets.id"), nullable=True)
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mode: Mapped[Optional[str]] = mapped_column(String(MODE_MAX), nullable=True)  # recipe["mode"], for lineage (migration 0003)
    delta: Mapped[Optional[str]] = mapped_column(String(SHA), ForeignKey("folders.sha256"), nullable=True)
    alpha: Mapped[Any] = mapped_column(JSON, nullable=False)  # a float or {modality: float}
    sweep: Mapped[list] = mapped_column(JSON, default=list)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ScoreRow(Base):
    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    skill_id: Mapped[Optional[int]] = mapped_column(ForeignKey("skills.id"), nullable=True)  # NULL: generalist suite
    split: Mapped[str] = mapped_column(String(64))
    successes: Mapped[int] = mapped_column(Integer)
    episodes: Mapped[int] = mapped_column(Integer)
    rate: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float] = mapped_column(Float)  # 95% Wilson interval (migration 0002)
    ci_high: Mapped[float] = mapped_column(Float)
    evaluator: Mapped[str] = mapped_column(String(200))
    seed: Mapped[Optional[int]] = mapped_column(BigInteger, nullable=True)  # the evaluation seed; NULL: not recorded (migration 0004)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RefRow(Base):
    __tablename__ = "refs"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RefLogRow(Base):
    __tablename__ = "ref_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ref: Mapped[str] = mapped_column(String(200), index=True)
    old_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("versions.id"), nullable=True)
    new_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("versions.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    who: Mapped[str] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CounterRow(Base):
    """A named counter; "versions" holds the next version number (migration 0005). Taken by
    UPDATE ... RETURNING, whose row lock makes concurrent commits draw distinct numbers."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
