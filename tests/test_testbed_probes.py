"""The testbed probes (benchmarks/testbed_probes.py): shuffled ID slots really move things between
slots, only in the narrow layout, and every probe skill has an expert that succeeds."""

import numpy as np
import pytest

from benchmarks import testbed_probes  # noqa: E402

from retain.sim.scene import SceneBuilder  # noqa: E402
from retain.sim.settings import get_setting  # noqa: E402
from retain.sim.world import WorldConfig  # noqa: E402


@pytest.fixture(autouse=True)
def _leave_the_simulator_as_found():
    """register() adds the probes to the process-wide task and setting tables; undo it after each
    test, so tests that check the shipped skill list pass in any order."""
    from retain.sim import settings, tasks

    # restored in place: other modules hold these very objects (sim.SKILLS is tasks.SKILLS)
    tables = [tasks.TASKS, tasks.SKILLS, settings._SETTINGS, settings.SETTINGS, settings.OOD_FAMILIES]
    saved = [table.copy() for table in tables]
    yield
    for table, copy in zip(tables, saved):
        table.clear()
        if isinstance(table, dict):
            table.update(copy)
        else:
            table.extend(copy)


def _three_fixtures(setting: str, m: int = 64) -> tuple[SceneBuilder, list[int], np.ndarray]:
    sb = SceneBuilder(np.random.default_rng(0), get_setting(setting), WorldConfig(), m)
    slots = [sb.fixture(k, nominal=p) for k, p in zip(testbed_probes.RECEPTACLES, testbed_probes.RECEPTACLE_SLOTS)]
    sb.layout()
    return sb, slots, sb.w.pos[:, slots].copy()


def test_narrow_layout_permutes_positions_within_the_group():
    sb, slots, before = _three_fixtures("id")
    testbed_probes.shuffle_slots(sb, [slots])
    after = sb.w.pos[:, slots]
    assert np.allclose(np.sort(after, axis=1), np.sort(before, axis=1))  # the same three places per episode
    moved = (np.abs(after - before).sum(axis=(1, 2)) > 0).mean()
    assert 0.6 < moved < 0.95  # 5 of 6 permutations move something


def test_broad_layouts_are_left_alone():
    sb, slots, before = _three_fixtures("ood:position")
    testbed_probes.shuffle_slots(sb, [slots])
    assert np.array_equal(sb.w.pos[:, slots], before)


@pytest.mark.parametrize("skill", sorted(testbed_probes.PROBES))
def test_every_probe_skill_has_a_working_expert(skill):
    from retain.pretrain import collect_frames

    testbed_probes.register()
    frames = collect_frames([skill], "id", 6, seed=1)
    assert frames.episodes == 6 and len(frames) >= 6 * 2  # six successes, each a few steps at least


def test_in_support_families_stay_inside_the_pretraining_ranges():
    testbed_probes.register()
    pre = get_setting("pretrain")
    view = get_setting("ood:viewpoint-in")
    assert (view.camera_rot, view.camera_shift) == (pre.camera_rot, pre.camera_shift)
    assert set(get_setting("ood:background-in").backgrounds) <= set(pre.backgrounds)
    assert get_setting("ood:distractor-in").distractors[1] <= pre.distractors[1]


def test_the_receptacles_pretraining_setting_adds_receptacles_and_changes_nothing_else():
    import dataclasses

    from retain.pretrain import collect_frames

    testbed_probes.register()
    pre, more = get_setting("pretrain"), get_setting("pretrain-receptacles")
    assert more.fixture_distractors == (1, 3) and pre.fixture_distractors[1] < 3
    same = {f.name for f in dataclasses.fields(pre)} - {"name", "description", "fixture_distractors"}
    assert all(getattr(pre, f) == getattr(more, f) for f in same)
    # pretrain-clutter is the same plus the skills' things
    assert dataclasses.replace(get_setting("pretrain-clutter"), name=more.name, description=more.description,
                               skill_things=False) == more
    frames = collect_frames(["put-in-box"], "pretrain-receptacles", 4, seed=1)  # the experts still succeed in it
    assert frames.episodes == 4


@pytest.mark.parametrize("skill, things, places", [("plates-decoys", 2, 4), ("plates-5", 1, 5)])
def test_plates_probes_shuffle_the_plate_and_the_rack_among_their_decoys(skill, things, places):
    from retain import sim
    from retain.sim.world import Kind

    testbed_probes.register()
    b = sim.TabletopBatch([skill], "id", n=64, seed=3)
    b.reset()
    w, rows = b.world, np.arange(64)
    assert set(b.instructions) == {"put the plate in the rack"}
    assert (w.kind[rows, w.a[:, 0]] == Kind.PLATE).all() and (w.kind[rows, w.b[:, 0]] == Kind.RACK).all()
    assert ((w.kind == Kind.BLOCK).sum(1) == things - 1).all()
    assert (np.isin(w.kind, [Kind.RACK, Kind.BOX, Kind.BOWL, Kind.TRAY, Kind.MAT]).sum(1) == places).all()
    rack_x = w.pos[rows, w.b[:, 0], 0]
    assert rack_x.min() < -0.2 and rack_x.max() > 0.2  # the rack does not keep one slot
