"""Names users give (refs, branches, skills, bases): they become file and ref names, so they are plain."""
from __future__ import annotations

import re

from registry.errors import invalid

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_plain_name(kind: str, name: str) -> str:
    """Refuse path separators and other surprises in a `kind` name (one line naming the fix)."""
    if not _SAFE_NAME.match(name or "") or ".." in name:
        raise invalid(f"{kind} name {name!r} is not allowed; use letters, digits, '.', '_' and '-' (no path separators)")
    return name
