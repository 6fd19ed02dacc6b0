"""Refs move only by compare-and-swap inside the caller's transaction, and every move is logged.

The CAS is an UPDATE ... WHERE version_id = <expected>; zero rows updated means another commit
moved the ref first. The ref row is read with FOR UPDATE (PostgreSQL; SQLite writers already hold
the database write lock via BEGIN IMMEDIATE), so a racing commit waits, then sees the new head
and fails with CONFLICT naming it; no update is lost.
"""
from __future__ import annotations

import getpass
from typing import Optional

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry.errors import conflict
from registry.models import RefLogRow, RefRow, VersionRow, utcnow


def who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (some containers)
        return "unknown"


def version_name(session: Session, version_id: Optional[int]) -> Optional[str]:
    if version_id is None:
        return None
    number = session.execute(select(VersionRow.number).where(VersionRow.id == version_id)).scalar_one()
    return f"v{number}"


def lock_head(session: Session, ref: str) -> Optional[int]:
    """The ref's current version id (None if the ref does not exist), locked for this transaction."""
    return session.execute(select(RefRow.version_id).where(RefRow.name == ref).with_for_update()).scalar()


def check_head(session: Session, ref: str, expected: Optional[int], expected_name: Optional[str]) -> None:
    """Raise CONFLICT unless `ref` points at `expected` (None: the ref must not exist yet)."""
    current = lock_head(session, ref)
    if current != expected:
        raise _moved(ref, version_name(session, current), expected_name)


def move(session: Session, ref: str, expected: Optional[int], new: int, action: str, reason: str = "") -> None:
    """Point `ref` at version id `new` if it still points at `expected`, and log the move."""
    if expected is None:
        try:
            with session.begin_nested():
                session.add(RefRow(name=ref, version_id=new, updated_at=utcnow()))
        except IntegrityError:
            raise _moved(ref, version_name(session, lock_head(session, ref)), None) from None
    else:
        done = session.execute(
            update(RefRow).where(RefRow.name == ref, RefRow.version_id == expected).values(version_id=new, updated_at=utcnow())
        ).rowcount
        if done != 1:
            raise _moved(ref, version_name(session, lock_head(session, ref)), version_name(session, expected))
    session.add(RefLogRow(ref=ref, old_version_id=expected, new_version_id=new, action=action, reason=reason or "", who=who(), at=utcnow()))


def _moved(ref: str, now: Optional[str], expected: Optional[str]):
    return conflict(
        f"CONFLICT: ref {ref!r} is at {now or 'nothing'} but this commit expected {expected or 'no head'}; "
        f"another commit moved it first. Nothing was committed; start again from {now or 'an empty ref'}"
    )
