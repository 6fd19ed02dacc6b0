"""`learn` end to end on a tiny real policy and the real simulator: commit, records, lineage scores."""
from __future__ import annotations

import json
import re

import pytest

from learn_support import fast_options, registry_state, tiny_registry
from registry.checkpoint import open_checkpoint, weight_hash
from registry.errors import Code, RegistryError
from retain.api import continual_scores
from retain.learn import learn


def _hash(path) -> str:
    with open_checkpoint(path) as c:
        return weight_hash(c)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """plates then whiteboard learned on a tiny base; shared by the read-only tests below."""
    root = tmp_path_factory.mktemp("learn")
    reg = tiny_registry(root)
    plates = learn(reg, "plates", fast_options(strategy="grid"))  # whiteboard takes the default, language
    white = learn(reg, "whiteboard", fast_options(compare_finetuned=True))
    yield reg, plates, white, root
    reg.close()


def test_learn_commits_one_version_with_everything_replay_needs(chain):
    reg, plates, _, _ = chain
    v = plates.version
    assert (v.name, v.parent, v.how) == ("v1", "v0", "learn")
    run = reg.learn_run_for("v1")
    assert run.skill == "plates" and run.parent == "v0" and run.result == "v1"
    assert run.alpha in (0.25, 0.5, 0.75)
    cands = [p for p in run.sweep if p["role"] == "candidate"]
    assert [p["alpha"] for p in cands] == [0.25, 0.5, 0.75]
    assert all(set(p["scores"]) == {"ood:position"} for p in cands)
    r = run.recipe
    for key in ("mode", "mix", "steps", "lr", "seed", "code_version", "validation_family", "demos", "alpha_grid", "strategy"):
        assert key in r, key
    assert (r["mode"], r["steps"], r["validation_family"]) == ("task-ft", 8, "ood:position")
    assert {"finetune", "select", "evaluate", "total"} <= set(run.timings)
    ds = reg.demo_set(run.demo_set_id)
    assert (ds.skill, ds.episodes) == ("plates", 4)
    skill = next(s for s in reg.skills() if s.name == "plates")
    assert skill.instructions and all(isinstance(i, str) and i for i in skill.instructions)


def test_scores_cover_id_every_ood_family_and_the_generalist_suite(chain):
    reg, plates, white, _ = chain
    from retain.sim import OOD_FAMILIES

    splits = {(s.skill, s.split) for s in reg.scores("v1")}
    own = {("plates", "id"), (None, "generalist")} | {("plates", f) for f in OOD_FAMILIES}
    # whiteboard was learned with the comparison on: its parent v1 got scored on whiteboard too (alpha 0)
    assert splits == own | {("whiteboard", "id")} | {("whiteboard", f) for f in OOD_FAMILIES}
    assert white.parent_scores and {(r.skill, r.split) for r in white.parent_scores} <= splits
    # the table's parent column shows what v1 recorded for the earlier skill, not "-"
    from retain.commands.learn_cmds import learn_text

    assert {("plates", "id"), ("plates", "ood:position")} <= {(r.skill, r.split) for r in white.parent_scores}
    plates_id = next(s for s in reg.scores("v1") if (s.skill, s.split) == ("plates", "id"))
    row = next(ln for ln in learn_text(white).splitlines() if ln.strip().startswith("plates id"))
    parent_cell = re.split(r"\s{2,}", row.strip())[1]
    assert parent_cell.endswith(f"{plates_id.successes}/{plates_id.episodes}"), row
    # the second learn evaluates every skill of its lineage: plates again, and whiteboard
    splits2 = {(s.skill, s.split) for s in reg.scores("v2")}
    assert {("plates", "id"), ("whiteboard", "id"), ("whiteboard", "ood:language"), (None, "generalist")} <= splits2
    assert plates.held_out == [f for f in OOD_FAMILIES if f != "ood:position"]
    # the base got its generalist score (retention is measured against it)
    assert [s.split for s in reg.scores("v0")] == ["generalist"]


def test_stored_delta_rebuilds_the_finetune_and_the_merge_rebuilds_the_version(chain, tmp_path):
    reg, plates, _, _ = chain
    from retain.finetune_store import recorded_finetuned
    from retain.merge import merge_checkpoints

    run = reg.learn_run_for("v1")
    parent = reg.checkout("v0", tmp_path / "v0")
    ft, ft_hash = recorded_finetuned(reg, run, parent, tmp_path / "rec")
    assert _hash(ft) == ft_hash
    merge_checkpoints(parent, [ft], [run.alpha], "builtin", tmp_path / "merged", progress=False)
    assert _hash(tmp_path / "merged") == plates.version.weight_hash
    assert reg.verify().ok


def test_the_default_language_strategy_and_finetuned_comparison_are_recorded(chain):
    reg, _, white, _ = chain
    assert white.version.parent == "v1"
    assert white.alpha["vision"] == 1.0 and white.alpha["action"] == 1.0
    ft = [p for p in white.sweep if p["role"] == "finetuned"]
    assert len(ft) == 1 and ft[0]["alpha"] == 1.0
    base = [p for p in white.sweep if p["role"] == "parent"]
    assert len(base) == 1 and base[0]["alpha"] == 0.0 and {"id", "generalist"} <= set(base[0]["scores"])
    assert {"id", "ood:position", "generalist"} <= set(ft[0]["scores"])
    edges = {e.child: e for e in reg.lineage().edges}
    assert (edges["v2"].skill, edges["v2"].mode, edges["v2"].alpha) == ("whiteboard", "task-ft", white.alpha)


def test_continual_summary_along_main(chain):
    reg, *_ = chain
    matrix, summary = continual_scores(reg, "main")
    assert matrix.versions == ["v0", "v1", "v2"]
    assert [p.skill for p in summary.skills] == ["plates", "whiteboard"]
    assert summary.generalist_base is not None and summary.generalist_now is not None
    assert summary.skills[0].id_after.episodes == 2


def test_a_ref_that_moved_meanwhile_is_a_conflict_and_commits_nothing(tmp_path):
    reg = tiny_registry(tmp_path)
    other = tmp_path / "other-base"
    from learn_support import save_tiny_model

    save_tiny_model(other, seed=5)

    def race(msg: str) -> None:
        if msg.startswith("committing"):
            reg.import_base(other, name="racer")  # another writer moves main first

    with pytest.raises(RegistryError) as e:
        learn(reg, "plates", fast_options(alpha="0.5"), say=race)
    assert e.value.code is Code.CONFLICT
    assert [v.name for v in reg.versions()] == ["v0", "v1"]
    assert reg.head().name == "v1" and reg.learn_runs() == []
    assert reg.verify().ok


def test_demos_from_a_folder_and_a_fixed_alpha(tmp_path):
    from retain.learn_demos import collect_builtin_demos

    reg = tiny_registry(tmp_path)
    collect_builtin_demos("whiteboard", 3, 7, tmp_path / "my-demos")
    res = learn(reg, "wipe-board", fast_options(alpha="vision=1,language=0.5,action=1"), demos=str(tmp_path / "my-demos"))
    assert res.alpha == {"vision": 1.0, "language": 0.5, "action": 1.0}
    assert res.sweep == []
    # not a simulator skill: only the generalist suite can be scored in the simulator
    assert {(s.skill, s.split) for s in res.scores} == {(None, "generalist")}
    run = reg.learn_run_for(res.version.name)
    assert run.recipe["demos"]["source"] == str(tmp_path / "my-demos")
    back = reg.fetch_demo_set(run.demo_set_id, tmp_path / "back")
    assert json.loads((back / "meta" / "info.json").read_text())["total_episodes"] == 3


def test_demos_from_an_fsspec_url(tmp_path):
    import fsspec

    from retain.learn_demos import collect_builtin_demos

    reg = tiny_registry(tmp_path)
    local = collect_builtin_demos("plates", 2, 3, tmp_path / "d")
    fs = fsspec.filesystem("memory")
    for f in local.rglob("*"):
        if f.is_file():
            fs.pipe(f"/demo-bucket/plates/{f.relative_to(local)}", f.read_bytes())
    res = learn(reg, "plates", fast_options(alpha="0.5"), demos="memory://demo-bucket/plates")
    run = reg.learn_run_for(res.version.name)
    assert run.recipe["demos"] == {"source": "memory://demo-bucket/plates", "episodes": 2, "frames": run.recipe["demos"]["frames"]}
    back = reg.fetch_demo_set(run.demo_set_id, tmp_path / "back")
    assert sorted(p.relative_to(back) for p in back.rglob("*") if p.is_file()) == sorted(
        p.relative_to(local) for p in local.rglob("*") if p.is_file())
    with pytest.raises(RegistryError, match="do not exist"):
        learn(reg, "plates", fast_options(alpha="0.5"), demos="memory://demo-bucket/nothing-here")
    reg.close()


def test_learn_and_replay_on_postgresql(postgres_url, tmp_path):
    """The same loop against PostgreSQL (a throw-away database), as a team would run it."""
    from retain.replay import replay

    reg = tiny_registry(tmp_path, db_url=postgres_url)
    try:
        res = learn(reg, "plates", fast_options(alpha="0.5"))
        assert res.version.name == "v1" and reg.head().name == "v1"
        assert replay(reg, ["plates"]).reproduced
        assert reg.verify().ok
    finally:
        reg.close()


def test_a_base_that_sees_another_image_size_gets_demos_and_rollouts_rendered_at_it(tmp_path):
    from learn_support import TINY

    from registry.api import Registry
    from retain.policies import get_policy

    adapter = get_policy("builtin-vla")
    small = {**TINY, "image_size": 16}
    base = adapter.save(adapter.build(small, seed=0), tmp_path / "base16")
    reg = Registry.open(home=str(tmp_path / "home"), create=True)
    reg.import_base(base, name="sees-16px", config={"policy": "builtin-vla", "policy_config": small})
    res = learn(reg, "plates", fast_options(alpha="0.5"))
    assert {(s.skill, s.split) for s in res.scores} >= {("plates", "id"), (None, "generalist")}
    run = reg.learn_run_for(res.version.name)
    back = reg.fetch_demo_set(run.demo_set_id, tmp_path / "back")
    info = json.loads((back / "meta" / "info.json").read_text())
    assert [16, 16, 3] in [f.get("shape") for f in info["features"].values()]
