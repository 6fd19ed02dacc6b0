"""Text renderings of registry records for the CLI: the lineage graph (tree, json, dot, mermaid),
the ref log, one version, scores. Pure functions of records; no database, no torch."""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Any, Callable, Optional

from registry.records import Lineage, LineageEdge, RefLogEntry, Score, Version, VersionDetail


def format_alpha(alpha: Any) -> str:
    if alpha is None:
        return ""
    if isinstance(alpha, dict):
        return ",".join(f"{k}={_num(v)}" for k, v in alpha.items())
    return _num(alpha)


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _compact(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _when(v) -> str:
    return v.strftime("%Y-%m-%d %H:%M:%S")


def _edge_label(e: LineageEdge) -> str:
    """What the edge learned, how, and the alpha it merged at, e.g. "whiteboard task-ft alpha 0.5"."""
    parts = [p for p in (e.skill, e.mode) if p]
    if e.alpha is not None:
        parts.append(f"alpha {format_alpha(e.alpha)}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------ lineage


ROOT, NODE, BRANCH, LANE = "○ ", "● ", "├─● ", "│ "


def lineage_tree(lin: Lineage) -> str:
    """One line per version, drawn as lanes (as `git log --graph` does), so a chain of 1,000
    versions stays in one column however deep it goes:

        ○ v0  pretrain            a root (○) starts a tree
        ● v1  learn  plates       ● below a node, in its lane: its child
        ├─● v2  learn  whiteboard ├─● : a branch from the lane's last node (v1), in a lane of its own
        │ ● v4  learn  pot        ... which continues there
        ● v3  replay  whiteboard  the newest child stays in its parent's lane
        ○ v5  base-import         another root

    Children come oldest first; every one but the newest opens a branch.
    """
    if not lin.versions:
        return "(no versions yet; add one with `retain pretrain --shipped` or `retain base import PATH`)"
    edge = {e.child: e for e in lin.edges}
    kids: dict[str, list[Version]] = defaultdict(list)
    for v in lin.versions:
        if v.parent:
            kids[v.parent].append(v)
    lines: list[str] = []
    roots = [v for v in lin.versions if v.parent is None]
    # (version, the lanes left of its own, how it joins them); a stack, not recursion: chains are long
    stack: list[tuple[Version, str, str]] = [(r, "", ROOT) for r in reversed(roots)]
    while stack:
        v, lanes, glyph = stack.pop()
        e = edge.get(v.name)
        bits = [v.name, v.how]
        label = _edge_label(e) if e else ""
        if label:
            bits.append(label)
        if v.refs:
            bits.append("[" + ", ".join(v.refs) + "]")
        bits.append(_when(v.created_at))
        lines.append(lanes + glyph + "  ".join(bits))
        own = lanes + LANE if glyph == BRANCH else lanes  # the lanes left of this version's own
        children = kids.get(v.name, [])
        if children:
            stack.append((children[-1], own, NODE))
            for c in reversed(children[:-1]):
                stack.append((c, own, BRANCH))
    return "\n".join(lines)


def shallow_dict(record: Any) -> dict:
    """A dataclass as a dict without dataclasses.asdict's deep copy (10x faster on 1,000 versions)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}


def lineage_dict(lin: Lineage) -> dict:
    return {
        "versions": [shallow_dict(v) for v in lin.versions],
        "edges": [shallow_dict(e) for e in lin.edges],
        "refs": lin.refs,
    }


def lineage_dot(lin: Lineage) -> str:
    out = ["digraph lineage {", "  rankdir=LR;", "  node [shape=ellipse];"]
    for v in lin.versions:
        out.append(f'  "{v.name}" [label="{v.name}\\n{v.how}"];')
    for e in lin.edges:
        label = _edge_label(e)
        attr = f' [label="{label}"]' if label else ""
        out.append(f'  "{e.parent}" -> "{e.child}"{attr};')
    for ref, target in sorted(lin.refs.items()):
        out.append(f'  "ref:{ref}" [label="{ref}", shape=box];')
        out.append(f'  "ref:{ref}" -> "{target}" [style=dashed];')
    out.append("}")
    return "\n".join(out)


def lineage_mermaid(lin: Lineage) -> str:
    out = ["graph LR"]
    for v in lin.versions:
        out.append(f'  {v.name}["{v.name} {v.how}"]')
    for e in lin.edges:
        label = _edge_label(e)
        out.append(f'  {e.parent} -->|"{label}"| {e.child}' if label else f"  {e.parent} --> {e.child}")
    for ref, target in sorted(lin.refs.items()):
        out.append(f'  ref_{_mermaid_id(ref)}(["{ref}"]) -.-> {target}')
    return "\n".join(out)


def _mermaid_id(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


LINEAGE_RENDERERS: dict[str, Callable[[Lineage], str]] = {
    "tree": lineage_tree,
    "dot": lineage_dot,
    "mermaid": lineage_mermaid,
}


# ------------------------------------------------------------------------------------ log, show, scores


def log_text(entries: list[RefLogEntry]) -> str:
    if not entries:
        return "(the ref log is empty)"
    lines = []
    for e in entries:
        move = f"{e.old or '(none)'} -> {e.new or '(none)'}"
        reason = f"  {e.reason}" if e.reason else ""
        lines.append(f"{_when(e.at)}  {e.ref}  {move}  {e.action}  by {e.who}{reason}")
    return "\n".join(lines)


def scores_text(version: str, scores: list[Score], every: bool = False) -> str:
    """One line per figure and the evaluation it comes from; with `every`, every evaluation, the shown ones starred."""
    from registry.evaluations import RULE, chosen

    if not scores:
        return f"no scores for {version} yet; they appear once a version is evaluated (`retain eval`, `retain learn`)"
    shown = {id(s) for s in chosen(scores).values()}
    head = f"{'skill':<20} {'split':<18} {'rate':>6}  {'95% CI':<13} {'n':>7}  {'evaluator':<10} {'seed':>6}  recorded"
    lines = [f"scores of {version}" + (f" (every evaluation; * the one each figure shows: {RULE})" if every else ""), head]
    for s in scores:
        mark = "*" if every and id(s) in shown else " " if every else ""
        seed = "-" if s.seed is None else str(s.seed)
        lines.append(f"{mark}{s.skill or '(generalist)':<20} {s.split:<18} {s.rate:>6.3f}  [{s.ci_low:.2f}, {s.ci_high:.2f}]  "
                     f"{s.successes:>3}/{s.episodes:<3}  {s.evaluator:<10} {seed:>6}  {_when(s.created_at)}")
    if not every:
        lines.append(f"each figure: {RULE}; every evaluation: `retain scores {version} --all`")
    return "\n".join(lines)


def show_text(d: VersionDetail) -> str:
    v = d.version
    lines = [
        f"version     {v.name}" + (f"  [{', '.join(v.refs)}]" if v.refs else ""),
        f"parent      {v.parent or '(none)'}",
        f"children    {', '.join(d.children) or '(none)'}",
        f"how         {v.how}",
        f"created     {_when(v.created_at)}",
        f"weights     {v.weight_hash}",
        f"message     {v.message or ''}",
        f"config      {_compact(v.config)}",
        f"recipe      {_compact(v.recipe)}",
        "files",
    ]
    lines += [f"  {f.path}  {f.size} bytes  sha256:{f.blob}" for f in d.files]
    r = d.learn_run
    if r:
        lines += [
            f"learn run   #{r.id}  skill {r.skill}  from {r.parent}  status {r.status}",
            f"  mode      {r.mode or '(not recorded)'}",
            f"  alpha     {format_alpha(r.alpha)}",
            f"  demo set  {r.demo_set_id if r.demo_set_id is not None else '(none)'}",
            f"  delta     {r.delta or '(not stored)'}",
            f"  recipe    {_compact(r.recipe)}",
            f"  sweep     {len(r.sweep)} point(s)",
            f"  timings   {_compact(r.timings)}",
        ]
    lines.append(scores_text(v.name, d.scores))
    return "\n".join(lines)
