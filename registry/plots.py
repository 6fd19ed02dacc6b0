"""Pictures of recorded scores: the skills-by-versions matrix and what each skill kept.

matplotlib is an optional extra (`pip install 'retain-registry[plot]'`) and is imported only when
a plot is asked for, so `retain scores` without `--plot` stays as fast as the other queries.
Pure functions of the continual-learning records (registry.continual); no database, no torch.

Example:
    >>> matrix, summary = continual_scores(registry, "main")
    >>> plot_continual(matrix, summary, "scores.png")
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from registry.continual import GENERALIST, Cell, ContinualSummary, ScoreMatrix
from registry.errors import invalid, not_found, unavailable

FORMATS = (".png", ".pdf", ".svg")
INSTALL = "pip install 'retain-registry[plot]' (or: pip install matplotlib)"


def check_plot_path(path: str | Path) -> Path:
    """Refuse, before any work, a file matplotlib cannot write or a folder that does not exist."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise invalid(f"--plot {p}: name a {', '.join(FORMATS)} file, e.g. scores.png")
    if not p.parent.is_dir():
        raise not_found(f"--plot {p}: folder {p.parent} does not exist; create it first")
    if p.is_dir():
        raise invalid(f"--plot {p} is a folder; name a file such as {p / 'scores.png'}")
    return p


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or UNAVAILABLE saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise unavailable(f"plots need matplotlib, which is not installed; {INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_continual(matrix: ScoreMatrix, summary: ContinualSummary, path: str | Path) -> Path:
    """Left: success per (skill, split) and version, as a coloured table with the rates written in.
    Right: each skill right after it was learned against now (ID and pooled OOD, 95% intervals),
    and the generalist suite at the base against now."""
    path = check_plot_path(path)
    if not matrix.rows:
        raise invalid("no scores recorded along this history yet, so there is nothing to plot; run `retain learn TASK` first")
    plt = pyplot()
    rows, versions = matrix.rows, matrix.versions
    height = max(4.0, 0.32 * len(rows) + 2.0)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(11.0, 5.5 + 0.9 * len(versions) + 4.5), height),
                                      gridspec_kw={"width_ratios": [max(2.0, 0.9 * len(versions)), 4.5]})
    _matrix_panel(fig, left, matrix)
    _kept_panel(right, summary)
    fig.suptitle(f"retain scores along {summary.ref}: {summary.base} to {summary.head}", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _matrix_panel(fig, ax, matrix: ScoreMatrix) -> None:
    import numpy as np

    rows, versions = matrix.rows, matrix.versions
    rates = np.full((len(rows), len(versions)), np.nan)
    for i, r in enumerate(rows):
        for j, v in enumerate(versions):
            c = r.cells.get(v)
            if c is not None:
                rates[i, j] = 100 * c.rate
    cmap = _cmap()
    im = ax.imshow(np.ma.masked_invalid(rates), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(versions)):
            if not math.isnan(rates[i, j]):
                ax.text(j, i, f"{rates[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] < 55 else "black")
    ax.set_xticks(range(len(versions)), [v + (f"\n+{matrix.learned[v]}" if v in matrix.learned else "") for v in versions], fontsize=8)
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
    ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
    for i in range(1, len(rows)):  # a rule between skills
        if rows[i].skill != rows[i - 1].skill:
            ax.axhline(i - 0.5, color="black", linewidth=1.2)
    ax.set_title("success per version (grey: not measured)", fontsize=10, pad=28)
    bar = fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label("success rate (%)")


def _cmap():
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")


def _kept_panel(ax, summary: ContinualSummary) -> None:
    groups: list[tuple[str, Optional[Cell], Optional[Cell]]] = []
    for p in summary.skills:
        groups.append((f"{p.skill}\nID", p.id_after, p.id_now))
        if p.ood_after is not None or p.ood_now is not None:
            groups.append((f"{p.skill}\nOOD", p.ood_after, p.ood_now))
    if summary.generalist_base is not None or summary.generalist_now is not None:
        groups.append((GENERALIST, summary.generalist_base, summary.generalist_now))
    width = 0.38
    colours = ("#4c72b0", "#dd8452")
    labels = ("right after learning (generalist: the base)", f"now ({summary.head})")
    for k, (colour, label) in enumerate(zip(colours, labels)):
        xs, ys, lo, hi = [], [], [], []
        for i, group in enumerate(groups):
            cell = group[1 + k]
            if cell is None:
                continue
            xs.append(i + (k - 0.5) * width)
            ys.append(100 * cell.rate)
            lo.append(100 * (cell.rate - cell.low))
            hi.append(100 * (cell.high - cell.rate))
        # a zero-height bar still shows: its interval and a floor at 1%
        ax.bar(xs, [max(y, 1.0) for y in ys], width, color=colour, label=label, yerr=[lo, hi], capsize=3,
               error_kw={"elinewidth": 1, "ecolor": "#333333"})
        for x, y, up in zip(xs, ys, hi):
            ax.text(x, y + up + 1.5, f"{y:.0f}%", ha="center", va="bottom", fontsize=7)  # above the interval
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("success rate (%), 95% interval")
    notes = []
    if summary.backward_transfer_id is not None:
        notes.append(f"backward transfer ID {100 * summary.backward_transfer_id:+.1f} pts")
    if summary.backward_transfer_ood is not None:
        notes.append(f"OOD {100 * summary.backward_transfer_ood:+.1f} pts")
    if summary.generalist_retention is not None:
        notes.append(f"generalist kept {100 * summary.generalist_retention:.0f}%")
    ax.set_title("what each skill kept" + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)


# ------------------------------------------------------------------------------- success vs alpha

POOLED = "ood"
"""The series of OOD pooled over the families: drawn last, thick and black, as it is the one read."""


def plot_alpha_sweep(panels: list[dict], path: str | Path, columns: int = 2) -> Path:
    """Success against alpha, one panel per skill.

    Each panel is {"title": str, "xs": [float], "xticklabels": [str] or None, "xlabel": str,
    "series": {name: [(successes, episodes) per x]}}. Every series gets its 95% Wilson band;
    the pooled OOD series (`POOLED`) is emphasised; a series at 0 stays visible above the axis.
    """
    from registry.stats import wilson_interval

    path = check_plot_path(path)
    plt = pyplot()
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.6 * rows), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    styles = ["-", "--", "-.", ":"]
    markers = "osD^v<>ph*"
    for ax, panel in zip(axes.flat, panels):
        names = [n for n in panel["series"] if n != POOLED] + ([POOLED] if POOLED in panel["series"] else [])
        for k, name in enumerate(names):
            counts = panel["series"][name]
            xs = [x for x, c in zip(panel["xs"], counts) if c[1]]
            rates = [100 * s / n for s, n in counts if n]
            bands = [wilson_interval(s, n) for s, n in counts if n]
            pooled = name == POOLED
            colour = "black" if pooled else colours[k % len(colours)]
            ax.fill_between(xs, [100 * lo for lo, _ in bands], [100 * hi for _, hi in bands], color=colour,
                            alpha=0.10 if not pooled else 0.16, linewidth=0)
            ax.plot(xs, rates, color=colour, linewidth=4.0 if pooled else 2.2, linestyle="-" if pooled else styles[k % len(styles)],
                    marker="o" if pooled else markers[k % len(markers)], markersize=7 if pooled else 5,
                    label="OOD pooled over families" if pooled else name, zorder=10 if pooled else 3, clip_on=False)
        ax.set_ylim(-4, 104)  # a series at 0 sits above the axis line, not on it
        ax.set_xlim(min(panel["xs"]) - 0.03, max(panel["xs"]) + 0.03)
        if panel.get("xticklabels"):
            ax.set_xticks(panel["xs"], panel["xticklabels"], fontsize=7, rotation=20)
        ax.set_xlabel(panel.get("xlabel", "alpha (0: base, 1: plain finetune)"))
        ax.set_ylabel("success rate (%), 95% band")
        ax.set_title(panel["title"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", ncol=2)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
