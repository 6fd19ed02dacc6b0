"""The simulator's contract, experts, settings and determinism, through the public API."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from registry.errors import RegistryError
from retain import sim
from retain.sim.world import Kind, WorldConfig

EPISODES = 50


def rollout(batch: sim.TabletopBatch, policy=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    obs = batch.reset()
    images, states = [obs["image"]], [obs["state"]]
    while not batch.done.all():
        obs, _, _ = batch.step(batch.expert_actions() if policy is None else policy(batch))
        images.append(obs["image"])
        states.append(obs["state"])
    return images, states


# the skills as shipped, written out: the simulator's own list is what the tests below check
SHIPPED_SKILLS = ["plates", "whiteboard", "pot-on-stove", "mugs-on-plates", "items-into-basket"]


def test_contract_names_and_shapes():
    assert len(sim.PRETRAIN_TASKS) >= 20
    assert sim.SKILLS == SHIPPED_SKILLS
    assert not set(sim.SKILLS) & set(sim.PRETRAIN_TASKS)
    for s in ["id", "pretrain", "generalist", "ood:position", "ood:object", "ood:background", "ood:distractor",
              "ood:viewpoint", "ood:language"]:
        assert s in sim.SETTINGS
    batch = sim.TabletopBatch(["plates", "put-in-bowl"], "id", n=5, seed=0)
    obs = batch.reset()
    assert obs["image"].shape == (5, sim.IMAGE_SIZE, sim.IMAGE_SIZE, 3) and obs["image"].dtype == np.uint8
    assert obs["state"].shape == (5, sim.STATE_DIM) and obs["state"].dtype == np.float32
    assert batch.task_names == ["plates", "put-in-bowl", "plates", "put-in-bowl", "plates"]
    assert len(batch.instructions) == 5 and all(isinstance(s, str) and s for s in batch.instructions)
    act = batch.expert_actions()
    assert act.shape == (5, sim.ACTION_DIM) and act.dtype == np.float32
    assert np.all(np.abs(act) <= 1.0)
    obs, success, done = batch.step(act)
    assert success.shape == done.shape == (5,) and success.dtype == bool
    assert all(sim.max_steps(t) <= 75 for t in sim.PRETRAIN_TASKS + sim.SKILLS)


@pytest.mark.parametrize("task", sim.PRETRAIN_TASKS)
def test_pretraining_experts_succeed_under_broad_variation(task):
    batch = sim.TabletopBatch([task], "generalist", n=EPISODES, seed=11)
    rollout(batch)
    assert batch.success.mean() >= 0.95, f"{task}: expert success {batch.success.mean():.2f}"


@pytest.mark.parametrize("setting", ["id", "ood:position", "ood:object", "ood:background", "ood:distractor",
                                     "ood:viewpoint", "ood:language", "generalist"])
@pytest.mark.parametrize("skill", sim.SKILLS)
def test_skill_experts_succeed_in_every_setting(skill, setting):
    batch = sim.TabletopBatch([skill], setting, n=EPISODES, seed=5)
    rollout(batch)
    assert batch.success.mean() >= 0.95, f"{skill}/{setting}: expert success {batch.success.mean():.2f}"


def test_doing_nothing_or_acting_randomly_rarely_succeeds():
    names = sim.SKILLS + ["put-in-bowl", "push-left", "open-drawer", "stack-objects"]
    idle = sim.TabletopBatch(names, "id", n=45, seed=2)
    rollout(idle, lambda b: np.zeros((b.n, sim.ACTION_DIM), np.float32))
    assert idle.success.sum() == 0
    rng = np.random.default_rng(0)
    rand = sim.TabletopBatch(sim.SKILLS, "id", n=100, seed=3)
    rollout(rand, lambda b: rng.uniform(-1, 1, (b.n, sim.ACTION_DIM)).astype(np.float32))
    assert rand.success.mean() < 0.05


def test_new_skill_needs_its_new_target_not_the_familiar_decoy():
    """Carrying the plate to the familiar bowl (what a base that ignores the new word would do) fails."""
    batch = sim.TabletopBatch(["plates"], "id", n=20, seed=4)
    batch.reset()
    w = batch.world
    bowl = np.nonzero(w.kind[0] == Kind.BOWL)[0][0]
    assert (w.kind[:, bowl] == Kind.BOWL).all()
    from retain.sim.experts import expert_actions

    while not batch.done.all():
        steered = w.copy()
        steered.b[:, 0] = bowl    # the expert's rules, aimed at the decoy instead of the rack
        batch.step(expert_actions(steered, batch.config))
    plate = w.a[:, 0]
    at_bowl = np.linalg.norm(w.pos[np.arange(20), plate] - w.pos[:, bowl], axis=1) < 0.05
    assert at_bowl.all() and not batch.success.any()


def test_same_seed_same_images_and_states_and_other_seed_differs():
    names = sim.SKILLS + sim.PRETRAIN_TASKS[:6]
    a_img, a_st = rollout(sim.TabletopBatch(names, "generalist", n=22, seed=123))
    b_img, b_st = rollout(sim.TabletopBatch(names, "generalist", n=22, seed=123))
    assert len(a_img) == len(b_img)
    assert all(np.array_equal(x, y) for x, y in zip(a_img, b_img))
    assert all(np.array_equal(x, y) for x, y in zip(a_st, b_st))
    c_img, _ = rollout(sim.TabletopBatch(names, "generalist", n=22, seed=124))
    assert not np.array_equal(a_img[0], c_img[0])
    i1 = sim.TabletopBatch(names, "generalist", n=22, seed=123)
    i1.reset()
    i2 = sim.TabletopBatch(names, "generalist", n=22, seed=123)
    i2.reset()
    assert i1.instructions == i2.instructions


def test_id_setting_is_narrow_and_each_ood_family_changes_its_own_thing():
    def scene(setting, seed=7, n=200):
        b = sim.TabletopBatch(["plates"], setting, n=n, seed=seed)
        obs = b.reset()
        return b, obs

    idb, ido = scene("id")
    w = idb.world
    assert set(idb.instructions) == {"put the plate in the rack"}
    assert (w.kind == Kind.BLOCK).sum() == 0                     # no distractors
    plate = w.a[:, 0]
    ppos = w.pos[np.arange(idb.n), plate]
    assert np.ptp(ppos, axis=0).max() <= 0.25                    # +-0.12 around the nominal spot
    assert len({tuple(c) for c in w.color[np.arange(idb.n), plate]}) == 1

    pos_b, _ = scene("ood:position")
    p2 = pos_b.world.pos[np.arange(pos_b.n), pos_b.world.a[:, 0]]
    assert np.ptp(p2, axis=0).min() > 0.8

    obj_b, _ = scene("ood:object")
    c_id = w.color[0, plate[0]]
    c_ood = obj_b.world.color[np.arange(obj_b.n), obj_b.world.a[:, 0]]
    assert not np.any(np.all(c_ood == c_id, axis=1) & (obj_b.world.shape[np.arange(obj_b.n), obj_b.world.a[:, 0]] == 0))

    dis_b, _ = scene("ood:distractor")
    assert ((dis_b.world.kind == Kind.BLOCK).sum(1) >= 2).all()

    lang_b, _ = scene("ood:language")
    assert "put the plate in the rack" not in set(lang_b.instructions)
    assert len(set(lang_b.instructions)) >= 5
    assert all("plate" in s and "rack" in s for s in lang_b.instructions)
    _, bg_obs = scene("ood:background")
    _, vp_obs = scene("ood:viewpoint")
    assert not np.array_equal(bg_obs["image"], ido["image"])
    assert not np.array_equal(vp_obs["image"], ido["image"])
    # the canonical ID background is the same in every ID episode's corner pixel
    assert len({tuple(px) for px in ido["image"][:, 0, 0]}) == 1


def test_language_family_reuses_pretraining_phrasings_but_never_the_id_one():
    task = sim.get_task("plates")
    held = set(task.phrasings("heldout"))
    assert task.templates[0] not in held
    pre = set(sim.get_task("put-in-bowl").phrasings("train"))
    assert held & pre, "some OOD phrasings should be ones the pretraining taught"
    assert held - pre, "and some should be new to everyone"


def test_pretraining_never_shows_the_new_skills_objects():
    skill_kinds = {Kind.PLATE, Kind.RACK, Kind.POT, Kind.STOVE, Kind.MUG, Kind.BASKET, Kind.BOARD, Kind.MARK}
    b = sim.TabletopBatch(sim.PRETRAIN_TASKS, "pretrain", n=21 * 20, seed=9)
    b.reset()
    assert not set(np.unique(b.world.kind).tolist()) & {int(k) for k in skill_kinds}
    words = " ".join(b.instructions)
    for noun in ("plate", "rack", "pot", "stove", "mug", "basket", "board", "wipe", "marks"):
        assert f" {noun}" not in f" {words}"


def test_clutter_pretraining_shows_the_skills_things_but_never_names_them():
    """pretrain-clutter: the skills' things appear as distractors, never named or acted on, and
    every placing scene holds at least one fixture besides the named receptacle."""
    things = {int(k) for k in (Kind.PLATE, Kind.RACK, Kind.POT, Kind.STOVE, Kind.MUG, Kind.BASKET)}
    b = sim.TabletopBatch(sim.PRETRAIN_TASKS, "pretrain-clutter", n=len(sim.PRETRAIN_TASKS) * 20, seed=9)
    b.reset()
    w = b.world
    assert things <= set(np.unique(w.kind).tolist()) and Kind.BOARD not in w.kind
    rows = np.arange(w.n)[:, None]
    roles = np.concatenate([w.a, w.b], axis=1)
    assert not np.isin(w.kind[rows, np.maximum(roles, 0)][roles >= 0], list(things)).any()
    words = f" {' '.join(b.instructions)} "
    assert not [noun for noun in ("plate", "rack", "pot", "stove", "mug", "basket") if f" {noun}" in words]
    places = [i for i, t in enumerate(b.task_names) if t == "put-in-bowl"]
    fixtures = (w.kind[places] >= Kind.BOWL) & (w.kind[places] != Kind.PLATE) & (w.kind[places] != Kind.POT) & (w.kind[places] != Kind.MUG)
    assert fixtures.sum(axis=1).min() >= 2


def _scene_digest(tasks, setting: str) -> str:
    b = sim.TabletopBatch(tasks, setting, n=len(tasks) * 4, seed=2)
    b.reset()
    w, h = b.world, hashlib.sha256()
    for arr in (w.kind, w.pos, w.size, w.color, w.color2, w.shape, w.a, w.b, w.goal, w.tol):
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update("\n".join(b.instructions).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("tasks, setting, digest", [
    (sim.PRETRAIN_TASKS, "pretrain", "14053952bb214dfa"),
    (sim.PRETRAIN_TASKS, "pretrain-clutter", "42f1019b4a9677dc"),  # where the shipped base's DAgger stage rolls out
    (SHIPPED_SKILLS, "id", "87793d8f71860141"),
    (SHIPPED_SKILLS, "ood:distractor", "e1b0dcea5300ae0c"),
])
def test_scenes_are_drawn_as_when_the_shipped_base_was_made(tasks, setting, digest):
    """The scenes the shipped base's recipe and every recorded demo were drawn from. The pretrain,
    id and ood:distractor digests were recorded before pretrain-clutter's skill things existed
    (settings without them take no extra random draws); a change to any digest changes what those
    recipes replay to."""
    assert _scene_digest(tasks, setting) == digest


def test_physics_grasp_needs_a_low_gripper_and_wipe_needs_a_stroke():
    b = sim.TabletopBatch(["pick-object"], "id", n=1, seed=0)
    b.reset()
    w = b.world
    thing = w.a[0, 0]
    w.grip_xy[0] = w.pos[0, thing]
    b.step(np.array([[0, 0, 0, 1]], np.float32))          # close high: nothing grasped
    assert w.held[0] == -1
    b.step(np.array([[0, 0, -1, -1]], np.float32))
    b.step(np.array([[0, 0, -1, -1]], np.float32))
    b.step(np.array([[0, 0, 0, 1]], np.float32))          # close low: grasped
    assert w.held[0] == thing

    wb = sim.TabletopBatch(["whiteboard"], "id", n=1, seed=0)
    wb.reset()
    w = wb.world
    mark = w.a[0, 0]
    w.grip_xy[0] = w.pos[0, mark]
    for _ in range(3):
        wb.step(np.array([[0, 0, -1, -1]], np.float32))   # pressing down on it does not wipe
    assert not w.flag[0, mark]
    wb.step(np.array([[0.6, 0, -1, -1]], np.float32))      # a low stroke does
    assert w.flag[0, mark]


def test_push_moves_the_object_along_the_stroke():
    b = sim.TabletopBatch(["push-left"], "id", n=1, seed=0)
    b.reset()
    w = b.world
    thing = w.a[0, 0]
    start = w.pos[0, thing].copy()
    w.grip_xy[0] = start + [0.25, 0.0]
    w.grip_z[0] = 0.0
    b.step(np.array([[-1, 0, -1, -1]], np.float32))
    assert w.pos[0, thing, 0] < start[0] - 0.05
    assert abs(w.pos[0, thing, 1] - start[1]) < 1e-6


def test_drawer_handle_moves_only_along_its_rail():
    b = sim.TabletopBatch(["open-drawer"], "id", n=1, seed=0)
    b.reset()
    w = b.world
    h = w.a[0, 0]
    x0 = w.pos[0, h, 0]
    w.grip_xy[0] = w.pos[0, h]
    w.grip_z[0] = 0.0
    b.step(np.array([[0, 0, 0, 1]], np.float32))
    assert w.held[0] == h
    b.step(np.array([[0.3, -0.5, 0, 1]], np.float32))
    assert w.pos[0, h, 0] == pytest.approx(x0)
    assert w.pos[0, h, 1] < w.rail[0, h, 2]


def test_bad_arguments_raise_registry_errors():
    with pytest.raises(RegistryError, match="unknown task 'nope'"):
        sim.TabletopBatch(["nope"], "id", 2, 0)
    with pytest.raises(RegistryError, match="unknown setting 'odd'"):
        sim.TabletopBatch(["plates"], "odd", 2, 0)
    with pytest.raises(RegistryError, match="n must be at least 1"):
        sim.TabletopBatch(["plates"], "id", 0, 0)
    b = sim.TabletopBatch(["plates"], "id", 2, 0)
    with pytest.raises(RegistryError, match="reset"):
        b.step(np.zeros((2, 4), np.float32))
    b.reset()
    with pytest.raises(RegistryError, match="actions must have shape"):
        b.step(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="image_size"):
        WorldConfig(image_size=4)


def test_rerendering_only_live_episodes_matches_a_full_render():
    b = sim.TabletopBatch(sim.SKILLS + sim.PRETRAIN_TASKS, "generalist", n=52, seed=8)
    b.reset()
    for _ in range(12):
        obs, _, done = b.step(b.expert_actions())
    assert 0 < done.sum() < b.n
    assert np.array_equal(obs["image"], b.observe()["image"])


def test_image_size_is_configurable_and_finished_episodes_freeze():
    b = sim.TabletopBatch(["reach-object"], "id", n=3, seed=0, image_size=48)
    obs = b.reset()
    assert obs["image"].shape == (3, 48, 48, 3)
    while not b.done.all():
        obs, _, _ = b.step(b.expert_actions())
    frozen = obs["state"].copy()
    obs, _, _ = b.step(np.ones((3, 4), np.float32))
    assert np.array_equal(obs["state"], frozen)


def test_sim_and_data_never_import_torch():
    code = ("import sys, retain.sim, retain.data, retain.sim.env, retain.commands.sim_cmds; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_custom_settings_and_world_constants_need_no_code_changes():
    import dataclasses

    wide = dataclasses.replace(sim.get_setting("id"), name="ood:test-wide", pos_jitter=0.3)
    sim.register_setting(wide)
    try:
        assert "ood:test-wide" in sim.SETTINGS and "ood:test-wide" in sim.OOD_FAMILIES
        with pytest.raises(RegistryError, match="already exists"):
            sim.register_setting(wide)
        b = sim.TabletopBatch(["plates"], "ood:test-wide", n=100, seed=0, config=WorldConfig(skill_decoys=False))
        b.reset()
        plate = b.world.pos[np.arange(100), b.world.a[:, 0]]
        assert np.ptp(plate, axis=0).min() > 0.45
        assert not (b.world.kind == Kind.BOWL).any()
    finally:
        from retain.sim import settings as st
        st._SETTINGS.pop("ood:test-wide")
        sim.SETTINGS.remove("ood:test-wide")
        sim.OOD_FAMILIES.remove("ood:test-wide")


def _mid_episode(task: str) -> "sim.TabletopBatch":
    """5 episodes of `task` some way into the expert's motion."""
    batch = sim.TabletopBatch(task, "pretrain" if task in sim.PRETRAIN_TASKS else "id", 5, seed=4)
    batch.reset()
    for _ in range(7):
        batch.step(batch.expert_actions())
    return batch


@pytest.mark.parametrize("task", ["put-in-bowl", "open-drawer", "whiteboard"])
def test_expert_chunk_is_what_the_expert_then_does_and_leaves_the_batch_where_it_was(task):
    batch = _mid_episode(task)
    before = batch.observe()
    labels, pad = batch.expert_chunk(12)
    after = batch.observe()
    assert np.array_equal(before["image"], after["image"]) and np.array_equal(before["state"], after["state"])
    done_at = np.full(5, 12)
    for i in range(12):
        live = ~batch.done
        expert = batch.expert_actions()
        assert np.array_equal(labels[live, i], expert[live]) and not pad[live, i].any()
        batch.step(expert)
        done_at[batch.success & (done_at == 12)] = i + 1
    for e in range(5):
        assert pad[e, done_at[e]:].all()
    some = np.array([3, 1])
    sub_labels, sub_pad = _mid_episode(task).expert_chunk(12, some)
    assert np.array_equal(sub_labels, labels[some]) and np.array_equal(sub_pad, pad[some])
