"""The registry's Python API: open a registry, commit and read versions, scores, demo sets.

Every operation is one session; ORM rows never leave it (callers get registry.records
dataclasses). A commit stores its blobs first and then makes everything visible in ONE
transaction (rows, ref compare-and-swap, ref log), so a crash in between leaves only orphan blob
files that `gc` reclaims.

Example:
    >>> from registry.api import Registry
    >>> with Registry.open(home="/tmp/reg", create=True) as reg:
    ...     v0 = reg.import_base("base.safetensors", name="tiny")
    ...     reg.checkout("main", "/tmp/work/v0")
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from registry import db, demo_refs, reader, refs
from registry.config import Locations, redact, require_registry_file, resolve_locations
from registry.errors import RegistryError, already_exists, corrupt, first_line, invalid, invalid_state, not_found, unavailable
from registry.models import (
    Blob, CounterRow, DemoSetRow, Folder, FolderFile, LearnRunRow, RefLogRow, ScoreRow, SkillRow, VersionRow, utcnow,
)
from registry.reader import as_utc as _aware
from registry.records import (
    DemoSet, GcReport, NewLearnRun, NewScore, RefLogEntry, Skill, Version, VerifyReport,
)
from registry.stats import wilson_interval
from registry.store import BlobStore, FolderManifest, folder_listing

HOWS = ("base-import", "pretrain", "learn", "replay")
FAULT_PAUSE_ENV = "RETAIN_FAULT_PAUSE_AFTER_BLOBS"  # test hook: seconds to sleep between blobs and commit
COMMIT_RETRIES = 5
POLICY_ENTRY_POINTS = "retain.policies"  # where policies register (retain.policies.ENTRY_POINT_GROUP)
DEFAULT_GC_GRACE = 3600.0

T = TypeVar("T")


class Registry(reader.Queries):
    """A registry: a database (SQLAlchemy URL) plus a blob store (fsspec URL).

    Queries (head, resolve, lineage, log, show, scores, learn_runs) are registry.reader's SQL on
    a raw connection of the engine, the same code the lean `retain lineage` path runs.
    """

    def __init__(self, locations: Locations, engine, store: Optional[BlobStore] = None):
        self.locations = locations
        self.engine = engine
        self._store = store

    @property
    def store(self) -> BlobStore:
        # Made on first use: queries never touch the store, and fsspec costs import time.
        if self._store is None:
            self._store = BlobStore(self.locations.store_url)
        return self._store

    # ------------------------------------------------------------------------------ open / close

    @classmethod
    def open(cls, home: Optional[str] = None, db_url: Optional[str] = None, store_url: Optional[str] = None,
             create: bool = False) -> "Registry":
        """Open (or with create=True, initialise) the registry and bring its schema to head.

        Raises NOT_FOUND when there is no registry and create is False, UNAVAILABLE when the
        database cannot be reached or the store cannot be written.
        """
        loc = resolve_locations(home, db_url, store_url)
        sqlite_file = loc.sqlite_path
        if not create:
            require_registry_file(loc)
        store = BlobStore(loc.store_url) if create else None
        if create:
            try:
                loc.home.mkdir(parents=True, exist_ok=True)
                if sqlite_file is not None:
                    sqlite_file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise unavailable(f"cannot create registry home {loc.home} ({e}); pass a writable --home") from None
            store.ensure_exists()
        engine = db.make_engine(loc.db_url)
        try:
            rev = db.current_revision(engine)
            if rev is None and not create:
                raise not_found(f"database {redact(loc.db_url)} holds no registry; run `retain init`")
            if rev != db.SCHEMA_HEAD:
                db.upgrade(engine)
        except RegistryError:
            engine.dispose()
            raise
        except Exception as e:  # an unknown revision (newer code wrote it), a broken file, ...
            engine.dispose()
            if isinstance(e, OperationalError):
                raise unavailable(db._unreachable(engine, e)) from None
            raise invalid_state(f"cannot bring database {redact(loc.db_url)} to schema {db.SCHEMA_HEAD}: {_one_line(e)}") from None
        return cls(loc, engine, store)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------ reading

    def _read(self, query: Callable[..., T], *args: Any) -> T:
        """Run one of registry.reader's queries in a consistent snapshot on a pooled connection."""
        try:
            raw = self.engine.raw_connection()
        except OperationalError as e:
            raise unavailable(db._unreachable(self.engine, e)) from None
        try:
            d = reader.Db(raw.driver_connection, self.engine.dialect.name, str(self.engine.url), self.engine.dialect.loaded_dbapi)
            with d.snapshot():
                return query(d, *args)
        finally:
            raw.close()

    # ------------------------------------------------------------------------------ committing

    def import_base(self, path: str | os.PathLike, *, name: Optional[str] = None, ref: str = "main",
                    how: str = "base-import", config: Optional[dict] = None, recipe: Optional[dict] = None,
                    message: Optional[str] = None, force: bool = False) -> Version:
        """Make a safetensors file or sharded folder the new head of `ref`, as a version with no parent.

        What a user would not expect is refused unless `force`: moving a ref that heads a learned
        chain onto an unrelated root (`check_base_import`), and a second root with the same
        weights as an existing one. If `ref` already heads a root with these weights, nothing is
        committed and that version is returned.
        """
        from registry.names import check_plain_name

        if name is not None:
            check_plain_name("base", name)
        check_plain_name("ref", ref)
        _check_policy(config)
        current = self.check_base_import(ref, force)
        validated = _validated_weights(path)
        same = [v for v in self.versions() if v.parent is None and v.weight_hash == validated[0]]
        if same and not force:
            if current is not None and current.name in {v.name for v in same}:
                return current
            where = f" (at {', '.join(same[0].refs)})" if same[0].refs else ""
            raise already_exists(f"{same[0].name}{where} already holds these weights ({validated[0][:19]}...) as a root, so nothing "
                                 "was imported; pass --force to add a second root with them")
        full_recipe = {"source": str(Path(path).absolute()), **({"name": name} if name else {}), **(recipe or {})}
        return self.commit_version(path, parent=None, how=how, ref=ref, expected_head=current.name if current else None,
                                   config=config, recipe=full_recipe, message=message or f"import {Path(path).name}",
                                   _validated=validated)

    def check_base_import(self, ref: str, force: bool = False) -> Optional[Version]:
        """The head of `ref`, after refusing (unless `force`) to move a ref that heads a learned
        chain onto a new root: the chain would drop out of `retain log` for that ref's users.
        Commands that train a base call this before any work."""
        current = self.head(ref)
        if current is not None and current.parent is not None and not force:
            raise invalid_state(f"{ref} is at {current.name} ({current.how} on {current.parent}); a new base there would move {ref} "
                                f"off that chain. Import onto a new ref with --ref NAME, or pass --force to move {ref} anyway")
        return current

    def commit_version(self, weights_dir: str | os.PathLike, *, parent: Optional[str], how: str, ref: str = "main",
                       expected_head: Optional[str], config: Optional[dict] = None, recipe: Optional[dict] = None,
                       learn_run: Optional[NewLearnRun] = None, scores: Sequence[NewScore] = (),
                       message: str = "", _validated: Optional[tuple[str, dict[str, Path]]] = None,
                       parent_weights: Optional[str | os.PathLike] = None) -> Version:
        """Commit the weights at `weights_dir` as a new version and move `ref` to it.

        Blobs are stored first; then one transaction adds the version, learn run and scores and
        moves `ref` by compare-and-swap. If `ref` is not at `expected_head` (None: the ref must
        not exist yet) this raises CONFLICT naming the actual head, and nothing visible changes.

        `parent_weights` (the parent's checked-out weights) stores the version as a pack against
        them (registry/pack.py) with its whole weights as a head copy, dropped once no ref points
        at it (`gc` reclaims the bytes): the refs' heads check out in one read, the rest rebuild.
        """
        from registry.names import check_plain_name

        if how not in HOWS:
            raise invalid(f"how={how!r} is not one of {', '.join(HOWS)}")
        check_plain_name("ref", ref)
        for sc in scores:
            _check_score(sc)
        _check_json("config", config or {})
        _check_json("recipe", recipe or {})
        if learn_run is not None:
            check_plain_name("skill", learn_run.skill)
            _check_alpha(learn_run.alpha)
            for field in ("recipe", "alpha", "sweep", "timings", "status"):
                _check_json(f"learn run {field}", getattr(learn_run, field))
        pause = _fault_pause_seconds()
        weight_hash, files = _validated or _validated_weights(weights_dir)  # import_base hashed it already
        if parent is not None:
            self.resolve(parent)  # fail before storing anything
        packed = self._pack_against(parent, parent_weights, weights_dir, weight_hash) if parent_weights is not None else None
        whole = self.store.put_folder(files)
        delta = None
        if learn_run is not None and learn_run.delta_dir is not None:
            delta = self.store.put_folder(folder_listing(learn_run.delta_dir))
        _fault_pause(pause)

        def tx(s: Session) -> Version:
            expected_id = _resolve_row(s, expected_head).id if expected_head is not None else None
            refs.check_head(s, ref, expected_id, expected_head)
            # The number first: every commit then takes its ref's lock, then the counter's, then
            # inserts, so no commit holding rows another one inserts can wait on the counter (no deadlock).
            number = _next_version_number(s)
            parent_row = _resolve_row(s, parent) if parent is not None else None
            _add_folder(s, whole)
            if packed is not None:
                _add_folder(s, packed)
            row = VersionRow(number=number, parent_id=parent_row.id if parent_row else None, weight_hash=weight_hash,
                             weights=(packed or whole).sha256, packed=packed is not None,
                             head_copy=whole.sha256 if packed else None, how=how,
                             config=config or {}, recipe=recipe or {}, message=message or "", created_at=utcnow())
            s.add(row)
            s.flush()  # the unique constraint on number fires here if another commit took it
            if learn_run is not None:
                if delta is not None:
                    _add_folder(s, delta)
                s.add(_learn_run_row(s, learn_run, parent_row, row, delta))
            _add_scores(s, row, scores)
            refs.move(s, ref, expected_id, row.id, action=how, reason=message)
            _drop_whole_copies(s, [expected_id])
            s.flush()
            return reader.version_by_id(_db(s), row.id)

        return self._write(tx)

    def _pack_against(self, parent: Optional[str], parent_weights, weights_dir, weight_hash: str) -> Optional[FolderManifest]:
        """The new weights packed against the parent's (stored as blobs), checked both ways."""
        from registry.pack import write_pack

        if parent is None:
            raise invalid("parent_weights was given for a version without a parent; drop it")
        expected = self.resolve(parent).weight_hash
        with tempfile.TemporaryDirectory(prefix=".retain-pack-", dir=_local_dir(weights_dir)) as tmp:
            report = write_pack(parent_weights, weights_dir, Path(tmp) / "pack")
            if report.reference_hash != expected:
                raise invalid(f"parent_weights {parent_weights} hash to {report.reference_hash}, not {parent}'s {expected}; "
                              f"pass {parent}'s checked-out weights")
            if report.target_hash != weight_hash:
                raise invalid(f"{weights_dir} changed while it was being committed; commit it again")
            return self.store.put_folder(folder_listing(report.dest))

    def record_scores(self, version: str, scores: Sequence[NewScore]) -> None:
        for sc in scores:
            _check_score(sc)

        def tx(s: Session) -> None:
            _add_scores(s, _resolve_row(s, version), scores)

        self._write(tx)

    def rollback(self, version: str, ref: str = "main", reason: Optional[str] = None, force: bool = False) -> Optional[RefLogEntry]:
        """Move `ref` back to `version` and record why; deletes nothing. None if already there.

        `version` must be an ancestor of the ref's head or a version the ref pointed at before (an
        undo of a move, such as a second base import); anything else, a version of another lineage,
        is refused naming the choices unless `force`.
        A version kept only as a pack gets its whole weights back first (refs' heads are cached
        whole), and the version the ref leaves drops its whole copy if it has a pack.
        """
        whole = self._whole_copy(version)

        def tx(s: Session) -> Optional[RefLogEntry]:
            current = refs.lock_head(s, ref)
            if current is None:
                raise not_found(f"ref {ref!r} does not exist{reader.known_refs(_db(s))}; see `retain lineage`")
            target = _resolve_row(s, version)
            if target.id == current:
                return None
            if not force:
                _check_rollback_target(s, ref, current, target)
            if target.packed and target.head_copy is None:
                _add_folder(s, whole)
                target.head_copy = whole.sha256
            refs.move(s, ref, current, target.id, action="rollback", reason=reason or "")
            _drop_whole_copies(s, [current])
            s.flush()
            return reader.log(_db(s), ref, limit=1)[0]

        return self._write(tx)

    def _whole_copy(self, version: str) -> Optional[FolderManifest]:
        """Store a packed version's whole weights as blobs (None if it has them already)."""
        with db.read_session(self.engine) as s:
            row = _resolve_row(s, version)
            if not row.packed or row.head_copy is not None:
                return None
        with tempfile.TemporaryDirectory(prefix="retain-head-") as tmp:
            dest = self.checkout(version, Path(tmp) / "weights")
            _, files = _validated_weights(dest)
            return self.store.put_folder(files)

    def ensure_skill(self, name: str, instructions: Sequence[str] = ()) -> Skill:
        from registry.names import check_plain_name

        check_plain_name("skill", name)

        def tx(s: Session) -> Skill:
            row = _skill_row(s, name)
            new = [i for i in instructions if i not in row.instructions]
            if new:
                row.instructions = [*row.instructions, *new]
            s.flush()
            return _skill(row)

        return self._write(tx)

    def put_demo_set(self, skill: str, folder: str | os.PathLike, *, source: str, episodes: int, frames: int,
                     fmt: str = "lerobot-v3", reference: Optional[str] = None) -> DemoSet:
        """Store a demo-set folder (as blobs) for `skill`, creating the skill if needed.

        With `reference` (the dataset's lasting path or URL) the files stay where they are: only a
        manifest of their hashes (taken from `folder`, a copy of the same files, or the location
        itself) is stored, and every later use checks the files against it (registry.demo_refs).
        """
        from registry.names import check_plain_name

        check_plain_name("skill", skill)
        if episodes < 0 or frames < 0:
            raise invalid(f"episodes and frames must be >= 0, got {episodes} and {frames}")
        if reference is not None:
            manifest, fmt = self._put_reference(reference, folder), demo_refs.FORMAT
        else:
            manifest = self.store.put_folder(folder_listing(folder))

        def tx(s: Session) -> DemoSet:
            sk = _skill_row(s, skill)
            _add_folder(s, manifest)
            row = DemoSetRow(skill_id=sk.id, folder=manifest.sha256, source=source, episodes=episodes, frames=frames,
                             format=fmt, created_at=utcnow())
            s.add(row)
            s.flush()
            return _demo_set(row, sk.name)

        return self._write(tx)

    def fetch_demo_set(self, demo_set_id: int, dest_dir: str | os.PathLike) -> "Path | str":
        """The demo set as a dataset location: a copy at `dest_dir`, or for one recorded by reference its
        own path or URL, after checking its files against the recorded hashes (refused if they changed)."""
        with db.read_session(self.engine) as s:
            row = s.get(DemoSetRow, demo_set_id)
            if row is None:
                raise not_found(f"demo set {demo_set_id} does not exist")
            manifest, fmt, skill = _manifest(s, row.folder), row.format, s.get(SkillRow, row.skill_id).name
        if fmt != demo_refs.FORMAT:
            return self.store.get_folder(manifest, _fresh_dest(dest_dir))
        location, files = self._reference(manifest, f"demo set {demo_set_id}")
        demo_refs.refuse_changed(f"demo set {demo_set_id} ({skill})", location, demo_refs.differences(location, files))
        return location if "://" in location else Path(location)

    def _put_reference(self, location: str, folder: str | os.PathLike) -> FolderManifest:
        files = demo_refs.hash_tree(str(folder))
        with tempfile.TemporaryDirectory(prefix="retain-demo-ref-") as tmp:
            (Path(tmp) / demo_refs.MANIFEST_NAME).write_text(demo_refs.manifest_json(location, files))
            return self.store.put_folder(folder_listing(tmp))

    def _reference(self, manifest: FolderManifest, what: str) -> tuple[str, dict[str, list]]:
        """(location, files) of a by-reference demo set's stored manifest."""
        entry = manifest.files.get(demo_refs.MANIFEST_NAME)
        if entry is None:
            raise corrupt(f"{what} is marked as recorded by reference but stores no {demo_refs.MANIFEST_NAME}")
        try:
            with self.store.fs.open(self.store.path(entry[0]), "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        except OSError as e:
            raise corrupt(f"{what}: its reference manifest (blob {entry[0]}) cannot be read ({e}); restore the blob from a backup") from None
        return demo_refs.parse_manifest(text, what)

    def demo_set(self, demo_set_id: int) -> DemoSet:
        with db.read_session(self.engine) as s:
            row = s.get(DemoSetRow, demo_set_id)
            if row is None:
                raise not_found(f"demo set {demo_set_id} does not exist")
            return _demo_set(row, s.get(SkillRow, row.skill_id).name)

    def fetch_delta(self, learn_run_id: int, dest_dir: str | os.PathLike) -> Path:
        with db.read_session(self.engine) as s:
            row = s.get(LearnRunRow, learn_run_id)
            if row is None or row.delta is None:
                raise not_found(f"learn run {learn_run_id} has no stored delta")
            manifest = _manifest(s, row.delta)
        return self.store.get_folder(manifest, _fresh_dest(dest_dir))

    # ------------------------------------------------------------------------------ weights out

    def checkout(self, version: str, dest_dir: str | os.PathLike, *, use_head_copy: bool = True) -> Path:
        """Write the version's safetensors to `dest_dir` (new or empty), checked against its weight hash.

        A ref's head (and any version stored whole) is one read of its blobs; a packed version no
        ref points at is rebuilt from the nearest ancestor stored whole, one pack at a time
        (`use_head_copy=False` rebuilds heads that way too, as `verify` does).
        """
        from registry.checkpoint import open_checkpoint, weight_hash
        from registry.pack import unpack

        with db.read_session(self.engine) as s:
            row = _resolve_row(s, version)
            name, expected = f"v{row.number}", row.weight_hash
            packs: list[FolderManifest] = []  # newest first
            while row.packed and not (use_head_copy and row.head_copy):
                if row.parent_id is None:
                    raise corrupt(f"v{row.number} is stored as a pack but has no parent; run `retain verify`")
                packs.append(_manifest(s, row.weights))
                row = s.get(VersionRow, row.parent_id)
                use_head_copy = True  # an ancestor's head copy is as good as its packs
            manifest = _manifest(s, row.head_copy if row.packed else row.weights)
        dest = _fresh_dest(dest_dir)
        if not packs:
            dest = self.store.get_folder(manifest, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.rebuild-", dir=_local_dir(dest)))
            try:
                current = work / "base"
                self._materialise(manifest, current)
                for i, pack in enumerate(reversed(packs)):
                    pack_dir = work / f"pack{i}"
                    self._materialise(pack, pack_dir)
                    last = i == len(packs) - 1
                    nxt = dest if last else work / f"step{i}"
                    unpack(current, pack_dir, nxt)
                    current = nxt
            finally:
                shutil.rmtree(work, ignore_errors=True)
        with open_checkpoint(dest) as ck:
            got = weight_hash(ck)
        if got != expected:
            shutil.rmtree(dest, ignore_errors=True)
            raise corrupt(f"{name}'s rebuilt weights hash to {got}, not the recorded {expected}; run `retain verify`")
        return dest

    def tensor_names(self, version: str) -> list[str]:
        """The tensor names of a version's weights, read from the stored headers alone (no checkout),
        so a command can check options against the model before any work."""
        import json
        import struct

        with db.read_session(self.engine) as s:
            manifest = _manifest(s, _resolve_row(s, version).weights)
        names: list[str] = []
        for rel, (sha, _size) in sorted(manifest.files.items()):
            if not rel.endswith(".safetensors"):
                continue
            with self.store.fs.open(self.store.path(sha), "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            names.extend(k for k in header if k != "__metadata__")
        return sorted(names)

    def export(self, version: str, dest_dir: str | os.PathLike) -> Path:
        """A Hugging Face style folder: the safetensors (sharded as imported) plus config.json."""
        import json

        dest = Path(dest_dir)
        if dest.exists() and not dest.is_dir():
            raise already_exists(f"output {dest} is an existing file, and export writes a folder; choose a new folder path")
        if dest.exists() and any(dest.iterdir()):
            raise already_exists(f"output {dest} already exists and is not empty; choose a new folder")
        v = self.resolve(version)
        part = dest.with_name(f".{dest.name}.export-{uuid.uuid4().hex[:8]}")
        try:
            self.checkout(v.name, part)
            meta = {**v.config, "retain": {"version": v.name, "weight_hash": v.weight_hash, "how": v.how, "parent": v.parent}}
            (part / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            if dest.exists():
                dest.rmdir()
            os.rename(part, dest)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
        return dest

    # ------------------------------------------------------------------------------ queries
    # head, resolve, versions, lineage, log, show, scores, learn_runs: inherited from reader.Queries.

    def skills(self) -> list[Skill]:
        with db.read_session(self.engine) as s:
            return [_skill(r) for r in s.execute(select(SkillRow).order_by(SkillRow.name)).scalars()]

    # ------------------------------------------------------------------------------ upkeep

    def verify(self) -> VerifyReport:
        """Check every blob row against the store and every version's weight hash."""
        from registry.checkpoint import open_checkpoint, weight_hash

        report = VerifyReport()
        with db.read_session(self.engine) as s:
            shas = list(s.execute(select(Blob.sha256).order_by(Blob.sha256)).scalars())
            versions = [(r.number, r.weight_hash, _manifest(s, r.head_copy) if r.packed and r.head_copy else None,
                         None if r.packed else _manifest(s, r.weights))
                        for r in s.execute(select(VersionRow).order_by(VersionRow.number)).scalars()]
            references = [(r.id, _manifest(s, r.folder))
                          for r in s.execute(select(DemoSetRow).where(DemoSetRow.format == demo_refs.FORMAT).order_by(DemoSetRow.id)).scalars()]
        known, bad = set(shas), set()
        for sha in shas:
            report.blobs_checked += 1
            problem = self.store.check(sha)
            if problem:
                bad.add(sha)
                report.problems.append(problem)
        with tempfile.TemporaryDirectory(prefix="retain-verify-") as tmp:
            for number, expected, head_copy, manifest in versions:
                report.versions_checked += 1
                if manifest is None:  # a pack: rebuilding it checks the pack and its ancestors, then its head copy
                    try:
                        shutil.rmtree(self.checkout(f"v{number}", Path(tmp) / f"v{number}", use_head_copy=False))
                    except RegistryError as e:
                        report.problems.append(f"v{number}: {e}")
                    if head_copy is None:
                        continue
                    manifest = head_copy
                broken = [sha for sha, _ in manifest.files.values() if sha in bad or sha not in known]
                if broken:
                    report.problems.append(f"v{number}: weights need damaged or unknown blob(s) {', '.join(sorted(broken))}")
                    continue
                folder = Path(tmp) / f"v{number}"
                self._materialise(manifest, folder)
                try:
                    with open_checkpoint(folder) as ck:
                        got = weight_hash(ck)
                except RegistryError as e:
                    report.problems.append(f"v{number}: stored weights do not open: {e}")
                    continue
                if got != expected:
                    report.problems.append(f"v{number}: weights hash to {got}, recorded {expected}")
        for demo_set_id, manifest in references:
            report.demo_sets_checked += 1
            what = f"demo set {demo_set_id}"
            try:
                location, files = self._reference(manifest, what)
            except RegistryError as e:
                report.problems.append(f"{what}: {e}")
                continue
            report.problems.extend(f"{what} (by reference to {location}): {p}" for p in demo_refs.differences(location, files))
        return report

    def _materialise(self, manifest: FolderManifest, folder: Path) -> None:
        """The folder's files under `folder`: links to the blobs on a local store, copies elsewhere."""
        if self.store._local:
            for rel, (sha, _) in manifest.files.items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(self.store.path(sha), folder / rel)
        else:
            self.store.get_folder(manifest, folder)

    def gc(self, grace_seconds: float = DEFAULT_GC_GRACE, dry_run: bool = False) -> GcReport:
        """Delete what nothing references and is older than `grace_seconds`: folder rows, blob rows
        and their files, and store files with no row (left by interrupted commits).

        The grace period protects a commit in flight, whose blob files exist before its rows do.
        """
        if not (isinstance(grace_seconds, (int, float)) and math.isfinite(grace_seconds) and grace_seconds >= 0):
            raise invalid(f"gc grace period {grace_seconds!r} must be a finite number of seconds >= 0, e.g. 3600")
        report = GcReport(grace_seconds=grace_seconds, dry_run=dry_run)
        cutoff_ts = time.time() - grace_seconds

        def tx(s: Session) -> list[str]:
            cutoff = _from_ts(cutoff_ts)
            used = set(s.execute(select(VersionRow.weights)).scalars())
            used |= set(s.execute(select(VersionRow.head_copy).where(VersionRow.head_copy.is_not(None))).scalars())
            used |= set(s.execute(select(LearnRunRow.delta).where(LearnRunRow.delta.is_not(None))).scalars())
            used |= set(s.execute(select(DemoSetRow.folder)).scalars())
            for f in s.execute(select(Folder)).scalars():
                if f.sha256 not in used and _aware(f.created_at) < cutoff:
                    report.unreferenced_folders.append(f.sha256)
            if report.unreferenced_folders and not dry_run:
                s.execute(delete(FolderFile).where(FolderFile.folder.in_(report.unreferenced_folders)))
                s.execute(delete(Folder).where(Folder.sha256.in_(report.unreferenced_folders)))
            live = select(FolderFile.blob)
            if dry_run:  # rows about to go in a real run still reference their blobs now
                live = live.where(FolderFile.folder.not_in(report.unreferenced_folders or [""]))
            kept = set(s.execute(live).scalars())
            doomed = []
            for b in s.execute(select(Blob)).scalars():
                if b.sha256 not in kept and _aware(b.created_at) < cutoff:
                    doomed.append(b.sha256)
                    report.bytes_freed += b.size
            report.unreferenced_blobs.extend(doomed)
            if doomed and not dry_run:
                s.execute(delete(Blob).where(Blob.sha256.in_(doomed)))
            return list(s.execute(select(Blob.sha256)).scalars())

        known = set(self._write(tx))
        self._gc_work_folders(report)
        doomed_files = set(report.unreferenced_blobs)
        # Rows are gone (committed) before files: a crash here leaves orphan files for the next gc.
        for name, path, mtime in self.store.iter_files():
            if name in known:
                continue
            if name in doomed_files:
                if not dry_run:
                    self.store.remove(path)
                continue
            if mtime is not None and mtime < cutoff_ts or grace_seconds <= 0:
                report.orphan_files.append(name)
                if not dry_run:
                    report.bytes_freed += self.store.fs.size(path)
                    self.store.remove(path)
        return report

    # ------------------------------------------------------------------------------ plumbing

    def work_folder(self, kind: str):
        """A context manager: a work folder under HOME/work that this process owns and removes on
        exit; one left by a killed process goes at the next `gc` (registry.workdirs)."""
        from registry.workdirs import work_folder

        return work_folder(self.locations.home, kind)

    def _gc_work_folders(self, report: GcReport) -> None:
        # No grace period: a folder is removed only when the process that made it no longer runs.
        from registry.workdirs import abandoned, folder_bytes

        for path in abandoned(self.locations.home):
            report.work_folders.append(path.name)
            report.bytes_freed += folder_bytes(path)
            if not report.dry_run:
                shutil.rmtree(path, ignore_errors=True)

    def _write(self, tx):
        """Run `tx(session)` in one write transaction, retrying a bounded number of times when a
        concurrent commit took the same version number (IntegrityError on the unique constraint)."""
        for attempt in range(COMMIT_RETRIES):
            try:
                with db.write_session(self.engine) as s:
                    return tx(s)
            except IntegrityError as e:
                if not _is_number_race(e):
                    raise invalid_state(f"the database refused the change ({_one_line(e)}); nothing was committed") from None
                if attempt == COMMIT_RETRIES - 1:
                    raise invalid_state(f"commit kept colliding with concurrent commits ({_one_line(e)}); retry") from None
            except OperationalError as e:
                if "locked" in str(e.orig):
                    raise unavailable(f"database {redact(str(self.engine.url))} stayed locked by another writer for "
                                      f"{db.SQLITE_BUSY_MS // 1000} s; nothing was committed, retry") from None
                raise unavailable(db._unreachable(self.engine, e)) from None
        raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------- helpers


def _next_version_number(s: Session) -> int:
    """The next version number, drawn from the counter row (locked until this transaction ends, so
    concurrent commits onto any refs get distinct numbers without retrying)."""
    drawn = s.execute(update(CounterRow).where(CounterRow.name == "versions").values(value=CounterRow.value + 1)
                      .returning(CounterRow.value)).scalar()
    if drawn is None:  # a counter row lost by hand: rebuild it from the versions (this transaction holds the write)
        drawn = s.execute(select(func.coalesce(func.max(VersionRow.number), -1))).scalar() + 2
        s.add(CounterRow(name="versions", value=drawn))
        s.flush()
    return drawn - 1


def _is_number_race(e: IntegrityError) -> bool:
    """Did a concurrent commit take the same version number (the one collision worth retrying)?"""
    text = str(e.orig)
    return "uq_versions_number" in text or "versions.number" in text


def _check_rollback_target(s: Session, ref: str, head_id: int, target: VersionRow) -> None:
    ancestors, vid = [], s.get(VersionRow, head_id).parent_id
    while vid is not None:
        row = s.get(VersionRow, vid)
        ancestors.append(row.number)
        vid = row.parent_id
    moved = select(RefLogRow.old_version_id).where(RefLogRow.ref == ref, RefLogRow.old_version_id.is_not(None))
    earlier = sorted({n for n in s.execute(select(VersionRow.number).where(VersionRow.id.in_(moved))).scalars()} - set(ancestors),
                     reverse=True)
    if target.number in ancestors or target.number in earlier:
        return
    head = s.get(VersionRow, head_id).number

    def names(numbers: list[int]) -> str:
        shown = ", ".join(f"v{n}" for n in numbers[:12])
        return shown + (f" and {len(numbers) - 12} more" if len(numbers) > 12 else "")

    choices = [f"its ancestors {names(ancestors)}" if ancestors else f"v{head} has no ancestors"]
    if earlier:
        choices.append(f"earlier heads of {ref} {names(earlier)}")
    raise invalid(f"v{target.number} is not an ancestor of {ref}'s head v{head} (it is another lineage); roll back to "
                  f"{' or '.join(choices)}, or pass --force to move {ref} to v{target.number} anyway")


def _check_json(what: str, obj: Any) -> None:
    import json

    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise invalid(f"{what} must be plain JSON (dicts, lists, str, int, finite float): {e}") from None


def _check_policy(config: Optional[dict]) -> None:
    """A config naming a policy must name one this installation has, or learn and eval would fail later.

    Policies register in the entry-point group retain.policies (retain/policies/__init__.py); the
    registry reads only the names, so it imports neither retain nor torch. Without any entry
    point (run from a source tree, not installed) there is no list to check against.
    """
    from importlib import metadata

    name = (config or {}).get("policy")
    if name is None:
        return
    known = sorted({ep.name for ep in metadata.entry_points(group=POLICY_ENTRY_POINTS)})
    if not isinstance(name, str) or (known and name not in known):
        raise invalid(f"config names policy {name!r}, which is not installed here; known policies: {', '.join(known) or 'none'} "
                      "(fix the config's \"policy\", or install the package that provides it)")


def _fault_pause_seconds() -> Optional[float]:
    """The test hook's pause, read before anything is stored so a bad value changes nothing."""
    text = os.environ.get(FAULT_PAUSE_ENV)
    if not text:
        return None
    try:
        pause = float(text)
    except ValueError:
        pause = math.nan
    if not (math.isfinite(pause) and pause >= 0):
        raise invalid(f"{FAULT_PAUSE_ENV}={text!r} is not a number of seconds >= 0; unset it (it is a test hook) or give e.g. 5")
    return pause


def _fault_pause(pause: Optional[float]) -> None:
    if pause is not None:
        print(f"retain: {FAULT_PAUSE_ENV}: blobs written, pausing {pause:g}s before the commit transaction", file=sys.stderr, flush=True)
        time.sleep(pause)


def _one_line(e: Exception) -> str:
    return first_line(getattr(e, "orig", None) or e)  # the driver's own error, not SQLAlchemy's wrapper


def _validated_weights(weights_dir: str | os.PathLike) -> tuple[str, dict[str, Path]]:
    """(weight hash, files to store) for a checkpoint, refusing non-finite weights."""
    from registry.checkpoint import INDEX_NAME, INDEX_SUFFIX, SINGLE_NAME, nonfinite_tensors, open_checkpoint, weight_hash

    with open_checkpoint(weights_dir) as ck:
        if not ck.specs:
            raise invalid(f"checkpoint {weights_dir} holds no tensors; a version needs weights (pass the trained checkpoint)")
        bad = nonfinite_tensors(ck)
        if bad:
            raise invalid(f"checkpoint {weights_dir} has NaN or inf in {', '.join(bad)}; it was not committed (fix the training run)")
        h = weight_hash(ck)
        files = ck.files
    if len(files) == 1:
        return h, {SINGLE_NAME: files[0]}
    out = {f.name: f for f in files}
    index = sorted(Path(weights_dir).glob("*" + INDEX_SUFFIX))
    idx = Path(weights_dir) / INDEX_NAME if (Path(weights_dir) / INDEX_NAME).exists() else index[0]
    out[INDEX_NAME] = idx
    return h, out


def _drop_whole_copies(s: Session, version_ids: Sequence[Optional[int]]) -> None:
    """Versions no ref points at any more keep only their pack (their whole copy is for `gc`)."""
    from registry.models import RefRow

    for vid in version_ids:
        if vid is None:
            continue
        row = s.get(VersionRow, vid)
        if row.head_copy is not None and s.execute(select(RefRow.name).where(RefRow.version_id == vid)).first() is None:
            row.head_copy = None


def _local_dir(path: str | os.PathLike) -> Path:
    """The folder beside `path`, for scratch files on the same disk."""
    return Path(path).absolute().parent


def _fresh_dest(dest_dir: str | os.PathLike) -> Path:
    dest = Path(dest_dir)
    if dest.is_dir() and not any(dest.iterdir()):
        dest.rmdir()
    return dest


def _check_score(sc: NewScore) -> None:
    if not (0 <= sc.successes <= sc.episodes):
        raise invalid(f"score for {sc.skill or 'generalist'}/{sc.split}: need 0 <= successes <= episodes, got {sc.successes}/{sc.episodes}")
    if not (sc.split in ("id", "generalist") or (sc.split.startswith("ood:") and len(sc.split) > 4)):
        raise invalid(f"score split {sc.split!r} must be 'id', 'generalist' or 'ood:<family>'")
    if sc.seed is not None and (isinstance(sc.seed, bool) or not isinstance(sc.seed, int) or not 0 <= sc.seed < 2**63):
        raise invalid(f"score seed {sc.seed!r} for {sc.skill or 'generalist'}/{sc.split} must be a non-negative integer or None")


def _check_alpha(alpha: Any) -> None:
    values = alpha.values() if isinstance(alpha, dict) else [alpha]
    for v in values:
        if not isinstance(v, (int, float)) or v != v:
            raise invalid(f"alpha {alpha!r} must be a number or a {{modality: number}} mapping")


def _insert_ignore(s: Session, model, rows: list[dict]) -> None:
    """INSERT rows, skipping those whose primary key exists (content-addressed rows are shared)."""
    if not rows:
        return
    name = s.bind.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        for r in rows:
            pk = tuple(r[c.name] for c in model.__table__.primary_key.columns)
            if s.get(model, pk if len(pk) > 1 else pk[0]) is None:
                s.add(model(**r))
        s.flush()
        return
    s.execute(insert(model).values(rows).on_conflict_do_nothing())


def _add_folder(s: Session, m: FolderManifest) -> None:
    now = utcnow()
    _insert_ignore(s, Blob, [{"sha256": sha, "size": size, "created_at": now} for sha, size in sorted(set(m.files.values()))])
    _insert_ignore(s, Folder, [{"sha256": m.sha256, "created_at": now}])
    _insert_ignore(s, FolderFile, [{"folder": m.sha256, "path": p, "blob": sha, "size": size} for p, (sha, size) in sorted(m.files.items())])


def _manifest(s: Session, folder: str) -> FolderManifest:
    rows = s.execute(select(FolderFile).where(FolderFile.folder == folder)).scalars()
    return FolderManifest({r.path: (r.blob, r.size) for r in rows})


def _skill_row(s: Session, name: str) -> SkillRow:
    row = s.execute(select(SkillRow).where(SkillRow.name == name)).scalar()
    if row is None:
        try:
            with s.begin_nested():
                row = SkillRow(name=name, instructions=[], created_at=utcnow())
                s.add(row)
        except IntegrityError:  # created concurrently
            row = s.execute(select(SkillRow).where(SkillRow.name == name)).scalar_one()
    return row


def _add_scores(s: Session, version: VersionRow, scores: Sequence[NewScore]) -> None:
    for sc in scores:
        skill_id = _skill_row(s, sc.skill).id if sc.skill is not None else None
        low, high = wilson_interval(sc.successes, sc.episodes)
        s.add(ScoreRow(version_id=version.id, skill_id=skill_id, split=sc.split, successes=sc.successes, episodes=sc.episodes,
                       rate=sc.successes / sc.episodes if sc.episodes else 0.0, ci_low=low, ci_high=high,
                       evaluator=sc.evaluator, seed=sc.seed, created_at=utcnow()))


def _learn_run_row(s: Session, run: NewLearnRun, parent: Optional[VersionRow], result: VersionRow,
                   delta: Optional[FolderManifest]) -> LearnRunRow:
    if run.demo_set_id is not None and s.get(DemoSetRow, run.demo_set_id) is None:
        raise not_found(f"demo set {run.demo_set_id} does not exist; store it with put_demo_set first")
    return LearnRunRow(skill_id=_skill_row(s, run.skill).id, parent_id=parent.id if parent else None, result_id=result.id,
                       demo_set_id=run.demo_set_id, recipe=run.recipe, mode=run.mode, delta=delta.sha256 if delta else None,
                       alpha=run.alpha, sweep=list(run.sweep), timings=dict(run.timings), status=run.status,
                       created_at=utcnow())


def _db(s: Session) -> reader.Db:
    """The session's own DB-API connection (inside its transaction), for registry.reader's queries."""
    conn = s.connection()
    return reader.Db(conn.connection.driver_connection, conn.dialect.name, str(conn.engine.url), conn.dialect.loaded_dbapi)


def _resolve_row(s: Session, spec: str) -> VersionRow:
    """The row of a version named "v3" or pointed at by a ref (registry.reader's rules and messages)."""
    s.flush()
    return s.get(VersionRow, reader.resolve_id(_db(s), spec)[0])


def _skill(r: SkillRow) -> Skill:
    return Skill(id=r.id, name=r.name, instructions=tuple(r.instructions or ()), created_at=_aware(r.created_at))


def _demo_set(r: DemoSetRow, skill: str) -> DemoSet:
    return DemoSet(id=r.id, skill=skill, folder=f"sha256:{r.folder}", source=r.source, episodes=r.episodes, frames=r.frames,
                   fmt=r.format, created_at=_aware(r.created_at))


def _from_ts(ts: float):
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)
