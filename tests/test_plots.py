"""Plots: `retain scores --plot` and the testbed's success-vs-alpha figure (matplotlib, the [plot] extra)."""
from __future__ import annotations

import struct

import pytest

from registry.errors import Code, RegistryError
from registry.records import NewLearnRun, NewScore

FAMS = ["ood:position", "ood:object"]


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def chain(registry, make_checkpoint):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    registry.record_scores("v0", [NewScore(None, "generalist", 20, 50, "sim-v1", 1)])
    for i, (skill, rates) in enumerate([("plates", {"plates": 43}), ("whiteboard", {"plates": 0, "whiteboard": 40})], start=1):
        run = NewLearnRun(skill=skill, demo_set_id=None, recipe={}, delta_dir=None, alpha=0.5, sweep=[], timings={})
        scores = [NewScore(s, split, k if split == "id" else k // 2, 50, "sim-v1", 1) for s, k in rates.items() for split in ["id", *FAMS]]
        registry.commit_version(make_checkpoint(f"{skill}.safetensors", seed=i), parent=f"v{i - 1}", how="learn",
                                expected_head=f"v{i - 1}", learn_run=run, scores=scores + [NewScore(None, "generalist", 10 - 5 * i + 5, 50, "sim-v1", 1)])
    return registry


def test_scores_plot_draws_the_matrix_and_what_each_skill_kept(chain, cli, tmp_path):
    out = tmp_path / "scores.png"
    r = cli("scores", "--plot", str(out))
    assert r.exit_code == 0, r.output
    assert "backward transfer" in r.output and f"wrote {out}" in r.output
    width, height = _png_size(out)
    assert width > 1000 and height > 400


@pytest.mark.parametrize("args, code, says", [
    (["--plot", "{d}/scores.txt"], Code.INVALID_VALUE, "name a .png, .pdf, .svg file"),
    (["--plot", "{d}/no/such/scores.png"], Code.NOT_FOUND, "does not exist; create it first"),
    (["v1", "--plot", "{d}/s.png"], Code.INVALID_VALUE, "--plot draws a ref's history"),
])
def test_scores_plot_refuses_bad_paths_in_one_line(chain, cli, tmp_path, args, code, says):
    r = cli("scores", *[a.format(d=tmp_path) for a in args])
    assert r.exit_code == code.value and r.output.startswith("Error: ") and says in r.output and r.output.count("\n") == 1


def test_scores_plot_with_nothing_recorded_says_so(registry, make_checkpoint, cli, tmp_path):
    registry.import_base(make_checkpoint("base.safetensors", seed=0))
    r = cli("scores", "--plot", str(tmp_path / "s.png"))
    assert r.exit_code == Code.INVALID_VALUE.value and "nothing to plot" in r.output
    assert not (tmp_path / "s.png").exists()


def test_alpha_sweep_plot_bands_every_series_and_keeps_zero_above_the_axis(tmp_path):
    from registry.plots import POOLED, plot_alpha_sweep

    series = {"id": [(0, 50), (30, 50), (45, 50)], "ood:position": [(0, 50), (0, 50), (0, 50)], POOLED: [(0, 100), (20, 100), (40, 100)],
              "generalist": [(25, 50), (15, 50), (5, 50)]}
    panels = [{"title": "plates", "xs": [0.0, 0.5, 1.0], "series": series}, {"title": "whiteboard", "xs": [0.0, 0.5, 1.0], "series": series}]
    out = plot_alpha_sweep(panels, tmp_path / "sweep.png")
    width, height = _png_size(out)
    assert width > height > 300


def test_no_matplotlib_is_one_line_naming_the_extra(monkeypatch):
    import builtins

    from registry import plots

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(RegistryError) as e:
        plots.pyplot()
    assert e.value.code is Code.UNAVAILABLE and "retain-registry[plot]" in str(e.value)
