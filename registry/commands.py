"""Registry commands: init, base import, lineage, log, show, scores, rollback, export, verify, gc, db.

Only click is imported at module level; the database layer loads inside each command, and
nothing here imports torch. The query commands (lineage, log, show, scores) open the registry
through registry.reader, which does not import SQLAlchemy either, so they start fast.
"""
from __future__ import annotations

import click

from registry.cli_support import emit, json_option, reader_from_ctx, registry_from_ctx, to_json


@click.command("init")
@click.pass_context
def init_cmd(ctx: click.Context) -> None:
    """Create the registry (home folder, database schema, blob store). Safe to run again.

    Example: retain --home ./.retain init
    """
    with registry_from_ctx(ctx, create=True) as reg:
        from registry.config import redact

        loc = reg.locations
        click.echo(f"registry ready at {loc.home} (database {redact(loc.db_url)}, store {loc.store_url})")


@click.group("base")
def base_group() -> None:
    """Base checkpoints: the roots of the lineage."""


@base_group.command("import")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--name", default=None, help="A label for this base (letters, digits, . _ -).")
@click.option("--ref", default="main", show_default=True, help="The ref that moves to the new version.")
@click.option("--message", "-m", default=None, help="Why this base is imported.")
@click.option("--config", "config_path", default=None, type=click.Path(path_type=str),
              help='JSON file naming the policy, e.g. {"policy": "builtin-vla", "policy_config": {...}}; '
                   "needed to eval, finetune or learn on this base here.")
@click.option("--force", is_flag=True, help="Move a ref that heads a learned chain, or add a root whose weights another root holds.")
@json_option
@click.pass_context
def base_import_cmd(ctx: click.Context, path: str, name: str | None, ref: str, message: str | None,
                    config_path: str | None, force: bool, as_json: bool) -> None:
    """Import a safetensors file or sharded folder as a new base version at the head of a ref.

    A ref that heads a learned chain is not moved onto the new root unless --force: import onto
    a new ref (--ref NAME) instead.

    Example: retain base import ./pi0_base --name pi0 --config pi0.json
    """
    from registry.cli_support import base_move_text

    config, config_from = _import_config(path, config_path)
    with registry_from_ctx(ctx) as reg:
        before = reg.head(ref)
        v = reg.import_base(path, name=name, ref=ref, message=message, config=config, force=force)
    note = f"; policy {config['policy']} from {config_from}" if config and (before is None or before.name != v.name) else ""
    done = "imported from" if before is None or before.name != v.name else "already holds the weights of"
    emit(v, as_json, lambda v: f"{v.name} {done} {path} ({v.weight_hash}); {base_move_text(ref, before, v)}{note}")


def _import_config(path: str, config_path: str | None) -> tuple[dict | None, str | None]:
    """The policy config of an import: --config, else the config.json of a folder that names a policy
    (what `export` and `merge` write), else none."""
    from pathlib import Path

    if config_path:
        return _policy_config_file(config_path), config_path
    beside = Path(path) / "config.json"
    if beside.is_file():
        import json

        try:
            config = json.loads(beside.read_text())
        except (OSError, ValueError):
            return None, None  # a foreign config.json (say, a transformers one) is not ours to judge
        if isinstance(config, dict) and isinstance(config.get("policy"), str):
            config.pop("retain", None)  # export's record of the version it came from
            return config, str(beside)
    return None, None


def _policy_config_file(path: str) -> dict:
    """The JSON object in `path`; a missing, unreadable or non-object file is one INVALID line."""
    import json

    from registry.errors import Code, RegistryError, invalid
    from registry.files import read_regular

    try:
        config = json.loads(read_regular(path, "--config"))
    except RegistryError as e:
        if e.code is Code.NOT_FOUND:
            raise invalid(f"cannot read --config {path}: it does not exist; pass a JSON file") from None
        raise
    except ValueError as e:
        raise invalid(f"--config {path} is not valid JSON ({e}); fix the file") from None
    if not isinstance(config, dict) or not isinstance(config.get("policy"), str):
        raise invalid(f'--config {path} must be a JSON object with a "policy" name, e.g. {{"policy": "builtin-vla", "policy_config": {{}}}}')
    return config


@click.command("lineage")
@click.option("--format", "fmt", type=click.Choice(["tree", "json", "dot", "mermaid"]), default="tree", show_default=True)
@json_option
@click.pass_context
def lineage_cmd(ctx: click.Context, fmt: str, as_json: bool) -> None:
    """The version graph; each edge shows the skill learned, its finetune mode and the alpha chosen.

    Example: retain lineage --format mermaid
    """
    from click.core import ParameterSource

    from registry.errors import invalid
    from registry.render import LINEAGE_RENDERERS, lineage_dict

    if as_json and fmt != "json" and ctx.get_parameter_source("fmt") is not ParameterSource.DEFAULT:
        raise invalid(f"--json prints JSON and --format {fmt} prints {fmt}; pass one of them")
    with reader_from_ctx(ctx) as reg:
        lin = reg.lineage()
    if as_json or fmt == "json":
        click.echo(to_json(lineage_dict(lin)))
    else:
        click.echo(LINEAGE_RENDERERS[fmt](lin))


@click.command("log")
@click.option("--ref", default="main", show_default=True, help="Which ref's moves to list.")
@click.option("--all", "all_refs", is_flag=True, help="List the moves of every ref.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=None, help="Only the newest N entries.")
@json_option
@click.pass_context
def log_cmd(ctx: click.Context, ref: str, all_refs: bool, limit: int | None, as_json: bool) -> None:
    """The ref log: every move of a ref, who made it, when and why (newest first).

    Example: retain log --ref main -n 20
    """
    from registry.render import log_text

    with reader_from_ctx(ctx) as reg:
        entries = reg.log(None if all_refs else ref, limit=limit)
    emit(entries, as_json, log_text)


@click.command("show")
@click.argument("version")
@json_option
@click.pass_context
def show_cmd(ctx: click.Context, version: str, as_json: bool) -> None:
    """One version in full: parent, weights, recipe, learn run, scores.

    Example: retain show v3   (or: retain show main)
    """
    from registry.render import show_text

    with reader_from_ctx(ctx) as reg:
        detail = reg.show(version)
    emit(detail, as_json, show_text)


@click.command("scores")
@click.argument("version", required=False)
@click.option("--ref", default=None, help="Skills x versions along this ref's history, with forgetting, backward transfer "
                                          "and generalist retention (the continual-learning summary).")
@click.option("--all", "every", is_flag=True, help="Every evaluation recorded, not only the one each figure shows "
                                                  "(the most episodes, ties the earliest).")
@click.option("--plot", "plot", default=None, type=click.Path(path_type=str),
              help="Also draw the skills x versions matrix and what each skill kept to this .png/.pdf/.svg "
                   "(along --ref, default main; needs the [plot] extra, matplotlib).")
@json_option
@click.pass_context
def scores_cmd(ctx: click.Context, version: str | None, ref: str | None, every: bool, plot: str | None, as_json: bool) -> None:
    """Per-skill scores (rate and 95% interval per split) of a version; default the head of main.
    With --ref: the matrix of skills x versions along the ref and the continual-learning summary.

    Examples: retain scores v3 --json; retain scores --ref main; retain scores --plot scores.png
    """
    if plot is not None and ref is None:
        from registry.errors import invalid

        if version is not None:
            raise invalid("--plot draws a ref's history, not one version; pass --ref REF (default main) instead of a VERSION")
        ref = "main"
    if ref is not None:
        from registry.continual import continual_scores, report_dict, report_text
        from registry.errors import invalid

        if version is not None:
            raise invalid("give a VERSION or --ref, not both")
        if every:
            raise invalid("--all lists the evaluations of one version; give a VERSION instead of --ref")
        if plot is not None:
            from registry.plots import check_plot_path, pyplot

            check_plot_path(plot)
            pyplot()  # installed? say so before reading anything
        with reader_from_ctx(ctx) as reg:
            matrix, summary = continual_scores(reg, ref)
        click.echo(to_json(report_dict(matrix, summary)) if as_json else report_text(matrix, summary))
        if plot is not None:
            from registry.plots import plot_continual

            plot_continual(matrix, summary, plot)
            click.echo(f"wrote {plot}", err=as_json)
        return
    from registry.render import scores_text

    with reader_from_ctx(ctx) as reg:
        target = reg.resolve(version) if version else reg.head("main")
        scores = reg.scores(target.name, every=every) if target else []
    name = target.name if target else "main (no versions yet)"
    emit(scores, as_json, lambda s: scores_text(name, s, every))


@click.command("rollback")
@click.argument("version")
@click.option("--ref", default="main", show_default=True)
@click.option("--reason", "-m", default=None, help="Why (recorded in the ref log).")
@click.option("--force", is_flag=True, help="Move the ref even to a version that is not an ancestor of its head "
                                            "(nor one it pointed at before).")
@json_option
@click.pass_context
def rollback_cmd(ctx: click.Context, version: str, ref: str, reason: str | None, force: bool, as_json: bool) -> None:
    """Move a ref back to an earlier version: an ancestor of its head, or one it pointed at before
    (--force for any other). Deletes nothing; the next commit builds on it.

    Example: retain rollback v2 -m "whiteboard merge hurt plates"
    """
    with registry_from_ctx(ctx) as reg:
        entry = reg.rollback(version, ref=ref, reason=reason, force=force)
        target = reg.resolve(version).name
    emit(entry, as_json, lambda e: f"{ref} is already at {target}; nothing to do" if e is None else f"{ref}: {e.old} -> {e.new} (rollback)")


@click.command("export")
@click.argument("version")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=str), help="New folder to write.")
@click.pass_context
def export_cmd(ctx: click.Context, version: str, output: str) -> None:
    """Write a version as a Hugging Face style folder (safetensors + config.json), hash-checked.

    Example: retain export main -o ./exported
    """
    with registry_from_ctx(ctx) as reg:
        v = reg.resolve(version)
        dest = reg.export(v.name, output)
    click.echo(f"{v.name} exported to {dest}")
    click.echo(_hashes_text(v.weight_hash, dest))


def _hashes_text(weight_hash: str, path) -> str:
    """The two hashes a user may check: ours (over tensors, whatever the sharding) and each file's sha256."""
    from registry.checkpoint import file_sha256, resolve_files

    lines = [f"  weights hash {weight_hash}", "    (retain's hash over tensor names, dtypes, shapes and bytes, the same however the "
             f"file is sharded; `retain verify --file {path}` recomputes it)"]
    lines += [f"  file sha256  {file_sha256(f)}  {f.name}  (what sha256sum prints)" for f in resolve_files(path)]
    return "\n".join(lines)


@click.command("verify")
@click.option("--file", "file", default=None, type=click.Path(path_type=str),
              help="Instead: the weights hash of a safetensors file or folder (and the versions that hold it).")
@json_option
@click.pass_context
def verify_cmd(ctx: click.Context, file: str | None, as_json: bool) -> None:
    """Check every blob against its hash, rebuild every version's weight hash, and re-hash the files of
    demo sets recorded by reference.

    With --file, compute the weights hash of a checkpoint outside the registry (say, one
    `retain export` wrote) and name the versions that hold it.

    \b
    Example:
      retain verify
      retain verify --file ./exported
    """
    from registry.errors import corrupt

    if file is not None:
        _verify_file(ctx, file, as_json)
        return
    with registry_from_ctx(ctx) as reg:
        report = reg.verify()
    if as_json:
        click.echo(to_json({**report.__dict__, "ok": report.ok}))
    else:
        for p in report.problems:
            click.echo(f"problem: {p}")
        if report.ok:
            refs = f", {report.demo_sets_checked} demo sets by reference" if report.demo_sets_checked else ""
            click.echo(f"ok: {report.blobs_checked} blobs{refs} and {report.versions_checked} versions verified")
    if not report.ok:
        raise corrupt(f"verify found {len(report.problems)} problem(s); restore the named blobs or dataset files from a backup")


def _verify_file(ctx: click.Context, path: str, as_json: bool) -> None:
    from registry.checkpoint import file_sha256, open_checkpoint, resolve_files, weight_hash
    from registry.errors import RegistryError

    with open_checkpoint(path) as ckpt:
        digest = weight_hash(ckpt)
    try:
        with reader_from_ctx(ctx) as reg:
            held = [v.name for v in reg.versions() if v.weight_hash == digest]
    except RegistryError:
        held = None  # no registry here: the hash alone still answers the question
    out = {"path": path, "weight_hash": digest, "files": {f.name: file_sha256(f) for f in resolve_files(path)}, "versions": held}

    def text(o):
        where = ("held by " + ", ".join(o["versions"])) if o["versions"] else \
            ("no version of this registry holds it" if o["versions"] is not None else "no registry here to compare with")
        return f"{o['path']}: weights hash {o['weight_hash']} ({where})\n" + _hashes_text(o["weight_hash"], path).split("\n", 2)[2]

    emit(out, as_json, text)


@click.command("gc")
@click.option("--grace", "grace", type=float, default=3600.0, show_default=True,
              help="Only delete what is older than this many seconds (protects commits in flight).")
@click.option("--dry-run", is_flag=True, help="List what would go; delete nothing.")
@json_option
@click.pass_context
def gc_cmd(ctx: click.Context, grace: float, dry_run: bool, as_json: bool) -> None:
    """Delete unreferenced blobs (such as those an interrupted commit left) after a grace period,
    and the work folders (HOME/work) of runs that were killed.

    Example: retain gc --grace 0 --dry-run
    """
    with registry_from_ctx(ctx) as reg:
        report = reg.gc(grace_seconds=grace, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    emit(report, as_json, lambda r: (
        f"gc {verb} {len(r.orphan_files)} orphan file(s), {len(r.unreferenced_blobs)} unreferenced blob(s), "
        f"{len(r.unreferenced_folders)} unreferenced folder(s), {len(r.work_folders)} work folder(s) of stopped runs; "
        f"{r.bytes_freed} bytes"))


@click.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations) for operators. Opening a registry upgrades it anyway."""


def _engine(ctx: click.Context):
    from registry import db
    from registry.config import require_registry_file, resolve_locations

    root = ctx.find_root().obj or {}
    loc = resolve_locations(root.get("home"), root.get("db_url"), root.get("store_url"))
    require_registry_file(loc)
    return db.make_engine(loc.db_url)


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_context
def db_upgrade_cmd(ctx: click.Context, revision: str) -> None:
    """Apply migrations up to a revision. Example: retain db upgrade"""
    from registry import db

    engine = _engine(ctx)
    try:
        db.upgrade(engine, revision)
        click.echo(f"database at {db.current_revision(engine)}")
    finally:
        engine.dispose()


@db_group.command("current")
@json_option
@click.pass_context
def db_current_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show the schema revision the database is at. Example: retain db current"""
    from registry import db

    engine = _engine(ctx)
    try:
        rev = db.current_revision(engine)
    finally:
        engine.dispose()
    info = {"current": rev, "head": db.SCHEMA_HEAD}
    emit(info, as_json, lambda i: f"{i['current'] or '(empty)'}" + (" (head)" if i["current"] == i["head"] else f" (head is {i['head']}; run `retain db upgrade`)"))
