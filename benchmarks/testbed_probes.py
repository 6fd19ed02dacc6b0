"""benchmarks/testbed.py with probe skills and families that test why the testbed shows no inverted U.

Each probe changes one thing about the shipped skills, so its numbers say which ingredient matters.
They are experiments, not product skills: `retain learn` does not know them.

Skills (ID demos shuffle which slot holds what, so succeeding in ID needs the words grounded):
- plates-swap: plates, with the plate trading places with a familiar block and the rack with the
  decoy bowl at random.
- reach-crate: "move to the crate": a new word for a known object (the box), the box, bowl and
  tray shuffled among three slots.
- place-crate: "put the red cube in the crate": the same new word, with pretraining's placing motion.
- place-crate-5: place-crate with two coloured mats as further decoys (five places to guess from).
- place-toy-crate: "put the toy in the crate", the toy being the one ball among three blocks: two
  new words for known things, so guessing both right is one chance in nine.
- place-box-5: place-crate-5 named with the word pretraining uses ("box"), the control: what the
  base's own placing reaches in that scene, so a finetune's ID on place-crate-5 can be read
  against it (grounding the new word vs the base's motor skill).
- plates-decoys, plates-5: "put the plate into the rack" built the crate way, for a base pretrained
  in pretrain-clutter (which shows plates and racks, never naming them): the plate beside a decoy
  block and the rack beside the box, bowl and tray (plates-decoys), or the plate alone and the
  rack among those three and a mat (plates-5), each group shuffled among its slots in ID.
- box-back (no shuffling): put-in-box with the block due in the box's back compartment, 0.1 behind
  the centre where pretraining drops it (tolerance 0.06): a known motion with a new end point.

Families: the OOD families with ranges inside the base's pretraining ones (the paper's OOD
scenes are scenes its base was pretrained on): ood:background-in, ood:distractor-in,
ood:viewpoint-in, ood:language-in (pretraining paraphrases; ood:position already lies inside).
Registering them adds them to the default OOD families of this process, so pass --families.

    nice python -m benchmarks.testbed_probes --skills place-crate --seeds 0 1 --episodes 100 --gen-episodes 100 \\
        --families ood:position ood:background ood:distractor ood:viewpoint ood:language --alphas 0 0.5 0.75 0.875 1
"""
from __future__ import annotations

import dataclasses
import sys

import numpy as np

from retain.sim import tasks as _tasks
from retain.sim.scene import FIXTURE_LOOKS, SceneBuilder
from retain.sim.settings import get_setting, register_setting
from retain.sim.world import Kind

RECEPTACLES = (Kind.BOX, Kind.BOWL, Kind.TRAY)
RECEPTACLE_SLOTS = [(-0.4, 0.4), (0.45, -0.35), (0.4, 0.4)]


def shuffle_slots(sb: SceneBuilder, groups: list[list[int]]) -> None:
    """In the narrow layout, permute the positions within each group of slots, per episode."""
    if sb.setting.layout != "nominal":
        return  # elsewhere positions are drawn anywhere already
    w, rows = sb.w, np.arange(sb.m)
    for group in groups:
        perm = np.argsort(sb.rng.random((sb.m, len(group))), axis=1)
        pos = w.pos[:, group].copy()
        for i, k in enumerate(group):
            w.pos[:, k] = pos[rows, perm[:, i]]


def _plates_swap(sb: SceneBuilder) -> None:
    plate = _tasks.add_plate(sb, (-0.45, 0.35))
    rack = sb.fixture(Kind.RACK, nominal=(0.4, -0.35))
    block, = sb.blocks(1, nominal=[(-0.45, -0.35)])
    bowl = sb.fixture(Kind.BOWL, nominal=(0.45, 0.4))
    sb.distractors()
    sb.layout()
    shuffle_slots(sb, [[plate, block], [rack, bowl]])
    sb.words.update(a=np.full(sb.m, "plate"), b=np.full(sb.m, "rack"))
    sb.pair(0, plate, rack, tol=0.1)


MAT_SLOTS = [(0.0, 0.0), (0.05, -0.55)]


def _receptacles(sb: SceneBuilder, mats: int = 0) -> list[int]:
    """The box (called "crate"), bowl and tray, and `mats` coloured mats as further decoys,
    shuffled among their slots in the narrow layout."""
    slots = [sb.fixture(k, nominal=p) for k, p in zip(RECEPTACLES, RECEPTACLE_SLOTS)]
    if mats:
        slots += sb.colored(Kind.MAT, mats, nominal=MAT_SLOTS[:mats], word="color")
    sb.distractors(exclude=RECEPTACLES + ((Kind.MAT,) if mats else ()))
    sb.layout()
    shuffle_slots(sb, [slots])
    return slots


def _reach_crate(sb: SceneBuilder) -> None:
    box = _receptacles(sb)[0]
    sb.words["a"] = np.full(sb.m, "crate")
    sb.pair(0, box, tol=0.08)


def _place_crate(mats: int, word: str = "crate"):
    def build(sb: SceneBuilder) -> None:
        a, = sb.blocks(1, nominal=[(-0.45, -0.35)])
        box = _receptacles(sb, mats)[0]
        sb.words.update(a=sb.words["block0"], b=np.full(sb.m, word))
        sb.pair(0, a, box, tol=FIXTURE_LOOKS[Kind.BOX][2] * 0.7)
    return build


TOY_SLOTS = [(-0.45, -0.35), (-0.05, -0.5), (-0.65, 0.0)]


def _place_toy_crate(sb: SceneBuilder) -> None:
    """"put the toy in the crate": two new words for known things, the toy being the one ball
    among three blocks (a shape pretraining names "ball"), the crate the box beside the bowl and
    tray; blocks and receptacles shuffled among their slots in ID."""
    blocks = sb.blocks(len(TOY_SLOTS), nominal=TOY_SLOTS)
    box = _receptacles(sb)[0]
    w = sb.w
    for k in range(sb.count):  # decoy blocks and distractor blocks alike: any other ball becomes a diamond
        other_ball = (w.kind[:, k] == Kind.BLOCK) & (w.shape[:, k] == 1)
        w.shape[:, k] = np.where(other_ball, 3, w.shape[:, k])
    w.shape[:, blocks[0]] = 1  # the toy
    shuffle_slots(sb, [blocks])
    sb.words.update(a=np.full(sb.m, "toy"), b=np.full(sb.m, "crate"))
    sb.pair(0, blocks[0], box, tol=FIXTURE_LOOKS[Kind.BOX][2] * 0.7)


PLATE_SLOTS = [(-0.45, -0.35), (-0.65, 0.0)]
RACK_SLOTS = RECEPTACLE_SLOTS + [(0.0, -0.55), (0.0, 0.05)]


def _plates_among(blocks: int, mats: int):
    """"put the plate into the rack" for a base that has seen plates and racks unnamed: the plate
    beside `blocks` decoy blocks, the rack beside the box, bowl, tray and `mats` coloured mats,
    each group shuffled among its slots in ID, so the demos must ground both new words."""
    def build(sb: SceneBuilder) -> None:
        plate = _tasks.add_plate(sb, PLATE_SLOTS[0])
        things = [plate] + sb.blocks(blocks, nominal=PLATE_SLOTS[1:1 + blocks])
        places = [sb.fixture(Kind.RACK, nominal=RACK_SLOTS[3])]
        places += [sb.fixture(k, nominal=p) for k, p in zip(RECEPTACLES, RECEPTACLE_SLOTS)]
        if mats:
            places += sb.colored(Kind.MAT, mats, nominal=RACK_SLOTS[4:4 + mats], word="color")
        sb.distractors(exclude=RECEPTACLES + (Kind.RACK, Kind.PLATE) + ((Kind.MAT,) if mats else ()))
        sb.layout()
        shuffle_slots(sb, [things, places])
        sb.words.update(a=np.full(sb.m, "plate"), b=np.full(sb.m, "rack"))
        sb.pair(0, plate, places[0], tol=0.1)
    return build


BACK = (0.0, 0.1)  # the box's back compartment, from its centre


def _box_back(sb: SceneBuilder) -> None:
    """put-in-box's scene and words, but the block belongs in the box's back compartment: a known
    motion with a new detail, the block released 0.1 behind where pretraining puts it."""
    a, = sb.blocks(1, nominal=[(-0.45, 0.35)])
    box = sb.fixture(Kind.BOX, nominal=(0.4, -0.35))
    sb.distractors(exclude=(Kind.BOX,))
    sb.layout()
    sb.words.update(a=sb.words["block0"], b=np.full(sb.m, "box"))
    sb.pair(0, a, goal=sb.w.pos[:, box] + np.array(BACK, np.float32), tol=0.06)


PROBES = {"box-back": ("put-in-box", _box_back),
          "plates-decoys": ("plates", _plates_among(1, 0)), "plates-5": ("plates", _plates_among(0, 1)),
          "plates-swap": ("plates", _plates_swap), "reach-crate": ("reach-fixture", _reach_crate),
          "place-crate": ("put-in-box", _place_crate(0)), "place-crate-5": ("put-in-box", _place_crate(2)),
          "place-box-5": ("put-in-box", _place_crate(2, "box")), "place-toy-crate": ("put-in-box", _place_toy_crate)}


def register() -> None:
    """Add the probe skills and the in-support families to the simulator (this process only)."""
    for name, (like, build) in PROBES.items():
        if name not in _tasks.TASKS:
            _tasks.TASKS[name] = dataclasses.replace(_tasks.TASKS[like], name=name, build=build, skill=True)
            _tasks.SKILLS.append(name)
    ID = get_setting("id")
    pre = get_setting("pretrain")
    for s in [
        dataclasses.replace(ID, name="ood:background-in", backgrounds=(1, 2), brightness=pre.brightness, tint=pre.tint),
        dataclasses.replace(ID, name="ood:distractor-in", distractors=(1, pre.distractors[1]), fixture_distractors=(1, pre.fixture_distractors[1])),
        dataclasses.replace(ID, name="ood:viewpoint-in", camera_shift=pre.camera_shift, camera_zoom=pre.camera_zoom,
                            camera_rot=pre.camera_rot, camera_shear=pre.camera_shear),
        dataclasses.replace(ID, name="ood:language-in", phrasing="train"),
    ]:
        register_setting(s, replace=True)


if __name__ == "__main__":
    register()
    from benchmarks import testbed
    from benchmarks.base_args import run_cleanly

    sys.exit(run_cleanly(testbed.main))
