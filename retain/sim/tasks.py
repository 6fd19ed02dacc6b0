"""Task definitions: scene builders, success families, and instruction templates.

Pretraining tasks only ever name blocks, bowls, boxes, trays, mats, buttons, a drawer and a lid
(the pretrain-clutter setting also shows the skills' things as unnamed distractors).
The new skills bring objects and words the pretraining never shows (plate, rack, board, marks,
pot, stove, mug, basket), but reuse its motions: pick-and-place and low strokes. Each skill scene
also holds a familiar receptacle as a decoy (WorldConfig.skill_decoys), so a policy must ground
the new noun to succeed; a base that only knows "put X in a receptacle" picks the decoy.

Instruction templates: index 0 is the canonical phrasing (the only one in ID demos); the rest
are the paraphrases the pretraining uses; `heldout` phrasings appear only under ood:language, and
`paraphrases`, rewordings with verbs no template uses, only under ood:paraphrase.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from registry.errors import invalid
from retain.sim.scene import COLORS, FIXTURE_LOOKS, FIXTURE_NAMES, LOOSE_LOOKS, SceneBuilder
from retain.sim.world import Behaviour, Kind

PLACE_IN = ("put the {a} in the {b}", "place the {a} into the {b}", "move the {a} to the {b}",
            "drop the {a} in the {b}", "pick up the {a} and put it in the {b}")
PLACE_IN_HELDOUT = ("the {a} goes in the {b}", "could you set the {a} inside the {b}",
                    "transfer the {a} into the {b}")
PLACE_ON = ("put the {a} on the {b}", "place the {a} onto the {b}", "set the {a} on the {b}",
            "move the {a} onto the {b}", "pick up the {a} and put it on the {b}")
PLACE_ON_HELDOUT = ("the {a} belongs on the {b}", "rest the {a} on top of the {b}",
                    "transfer the {a} onto the {b}")
PLURAL_IN = ("put the {a} in the {b}", "place all the {a} into the {b}", "move the {a} to the {b}",
             "drop the {a} in the {b}")
PLURAL_ON = ("put the {a} on the {b}", "place the {a} onto the {b}", "set the {a} on the {b}",
             "move the {a} onto the {b}")
PLURAL_HELDOUT = ("the {a} go on the {b}", "transfer every one of the {a} onto the {b}",
                  "could you set the {a} on the {b}")
# ood:paraphrase: rewordings whose verbs and framing no template above (pretraining's or
# ood:language's) uses; only the nouns and function words are shared
PLACE_IN_PARAPHRASE = ("stow the {a} within the {b}", "deposit the {a} in the {b}, please",
                       "grasp the {a} and lower it into the {b}", "the {b} should end up containing the {a}")
PLACE_ON_PARAPHRASE = ("position the {a} atop the {b}", "lay the {a} down on the {b}, please",
                       "grasp the {a} and lower it onto the {b}", "the {b} should end up holding the {a}")
PLURAL_IN_PARAPHRASE = ("stow each of the {a} within the {b}", "deposit the {a} in the {b}, please",
                        "gather the {a} and lower them into the {b}", "the {b} should end up containing the {a}")
PLURAL_ON_PARAPHRASE = ("position each of the {a} atop the {b}", "lay the {a} down on the {b}, please",
                        "gather the {a} and lower them onto the {b}", "the {b} should end up holding the {a}")
WIPE_PARAPHRASE = ("get rid of the marks on the board", "remove the smudges from the board",
                   "scrub the board until no marks remain", "tidy up the board by rubbing out the marks")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: how to build its scene, which success family it uses, how it is phrased."""

    name: str
    behaviour: Behaviour
    templates: tuple[str, ...]      # [0] canonical; the rest are paraphrases
    heldout: tuple[str, ...]        # phrasings used only by the ood:language family
    max_steps: int
    build: Callable[[SceneBuilder], None]
    skill: bool = False
    description: str = ""
    paraphrases: tuple[str, ...] = ()  # rewordings used only by the ood:paraphrase family

    def phrasings(self, phrasing: str) -> tuple[str, ...]:
        if phrasing == "canonical":
            return self.templates[:1]
        if phrasing == "train":
            return self.templates
        if phrasing == "paraphrase":
            if not self.paraphrases:
                raise invalid(f"task {self.name!r} has no paraphrases, so ood:paraphrase cannot phrase it; "
                              "use it with the skills (or give the task `paraphrases`)")
            return self.paraphrases
        return self.templates[1:] + self.heldout


# -- pretraining builders ----------------------------------------------------------------------
def _one_block(tol: float) -> Callable[[SceneBuilder], None]:
    """A scene about one named block among distractors (reach it, pick it up)."""
    def build(sb: SceneBuilder) -> None:
        a, = sb.blocks(1, nominal=[(-0.4, 0.35)])
        sb.distractors()
        sb.layout()
        sb.words["a"] = sb.words["block0"]
        sb.pair(0, a, tol=tol)
    return build


def _reach_fixture(sb: SceneBuilder) -> None:
    kinds = [Kind.BOWL, Kind.BOX, Kind.TRAY]
    pick = sb.rng.integers(0, 3, sb.m)
    slots = [sb.fixture(k, nominal=p) for k, p in zip(kinds, [(-0.4, 0.4), (0.45, -0.35), (0.4, 0.4)])]
    sb.distractors(exclude=tuple(kinds))
    sb.layout()
    sb.words["a"] = np.array([FIXTURE_NAMES[kinds[i]] for i in pick])
    sb.pair(0, slots[0], tol=0.08)
    sb.w.a[:, 0] = np.array(slots)[pick]


def _place_into(kind: Kind, tol_scale: float) -> Callable[[SceneBuilder], None]:
    def build(sb: SceneBuilder) -> None:
        a, = sb.blocks(1, nominal=[(-0.45, 0.35)])
        b = sb.fixture(kind, nominal=(0.4, -0.35))
        sb.distractors(exclude=(kind,))
        sb.layout()
        sb.words["a"], sb.words["b"] = sb.words["block0"], np.full(sb.m, FIXTURE_NAMES[kind])
        sb.pair(0, a, b, tol=FIXTURE_LOOKS[kind][2] * tol_scale)
    return build


def _put_two_in_box(sb: SceneBuilder) -> None:
    a, c = sb.blocks(2, nominal=[(-0.45, 0.35), (-0.3, -0.45)])
    b = sb.fixture(Kind.BOX, nominal=(0.4, 0.1))
    sb.distractors(exclude=(Kind.BOX,))
    sb.layout()
    sb.words.update(a=sb.words["block0"], c=sb.words["block1"], b=np.full(sb.m, "box"))
    tol = FIXTURE_LOOKS[Kind.BOX][2] * 0.7
    sb.pair(0, a, b, tol=tol)
    sb.pair(1, c, b, tol=tol)


def _put_on_mat(sb: SceneBuilder) -> None:
    a, = sb.blocks(1, nominal=[(-0.45, 0.35)])
    mats = sb.colored(Kind.MAT, 3, nominal=[(0.4, -0.35), (0.45, 0.4), (-0.4, -0.4)], word="color")
    sb.distractors(exclude=(Kind.MAT,))
    sb.layout()
    sb.words.update(a=sb.words["block0"], b=np.char.add(sb.words["color"], " mat"))
    sb.pair(0, a, mats[0], tol=FIXTURE_LOOKS[Kind.MAT][2] * 0.9)


def _stack(sb: SceneBuilder) -> None:
    a, b = sb.blocks(2, nominal=[(-0.45, 0.35), (0.4, -0.35)])
    sb.distractors()
    sb.layout()
    sb.words.update(a=sb.words["block0"], b=sb.words["block1"])
    sb.pair(0, a, b, tol=0.08)


_CORNERS = {"top left": (-0.62, 0.62), "top right": (0.62, 0.62), "bottom left": (-0.62, -0.62),
            "bottom right": (0.62, -0.62)}


def _corner(sb: SceneBuilder) -> None:
    a, = sb.blocks(1, nominal=[(0.0, 0.0)], bounds=(-0.45, 0.45, -0.45, 0.45))
    sb.distractors()
    sb.layout()
    names = list(_CORNERS)
    pick = sb.rng.integers(0, 4, sb.m)
    sb.words.update(a=sb.words["block0"], b=np.array(names)[pick])
    goal = np.array([_CORNERS[c] for c in names], np.float32)[pick]
    sb.pair(0, a, goal=goal, tol=0.12)


def _beside(dx: float) -> Callable[[SceneBuilder], None]:
    def build(sb: SceneBuilder) -> None:
        a, b = sb.blocks(2, nominal=[(-0.45, 0.35), (0.1 - dx, -0.3)], bounds=(-0.5, 0.5, -0.75, 0.75))
        sb.distractors()
        sb.layout()
        sb.words.update(a=sb.words["block0"], b=sb.words["block1"])
        goal = sb.w.pos[:, b] + np.array([dx, 0.0], np.float32)
        sb.pair(0, a, goal=goal, tol=0.1)
    return build


def _push(direction: tuple[float, float], distance: float = 0.35) -> Callable[[SceneBuilder], None]:
    d = np.array(direction, np.float32)

    def build(sb: SceneBuilder) -> None:
        a, = sb.blocks(1, nominal=[tuple(-d * distance / 2)], bounds=(-0.65, 0.65, -0.65, 0.65))
        sb.distractors()
        sb.layout()
        goal = np.clip(sb.w.pos[:, a] + d * distance, -0.72, 0.72)
        sb.w.pos[:, a] = goal - d * distance   # keep the full push distance near an edge
        sb.words["a"] = sb.words["block0"]
        sb.pair(0, a, goal=goal, tol=0.1)
    return build


def _push_to_mat(sb: SceneBuilder) -> None:
    a, = sb.blocks(1, nominal=[(-0.3, 0.2)], bounds=(-0.65, 0.65, -0.65, 0.65))
    mats = sb.colored(Kind.MAT, 2, nominal=[(0.3, -0.2), (0.45, 0.5)], word="color")
    sb.distractors(exclude=(Kind.MAT,))
    sb.layout()
    sb.words.update(a=sb.words["block0"], b=np.char.add(sb.words["color"], " mat"))
    sb.pair(0, a, goal=sb.w.pos[:, mats[0]], tol=FIXTURE_LOOKS[Kind.MAT][2] * 0.9)


def _press(sb: SceneBuilder) -> None:
    buttons = sb.colored(Kind.BUTTON, 3, nominal=[(-0.4, 0.35), (0.4, -0.35), (0.4, 0.4)], word="color")
    sb.distractors(exclude=(Kind.BUTTON,))
    sb.layout()
    sb.words["a"] = np.char.add(sb.words["color"], " button")
    sb.pair(0, buttons[0], tol=0.0)


def _drawer(start_open: bool) -> Callable[[SceneBuilder], None]:
    travel = 0.3

    def build(sb: SceneBuilder) -> None:
        size = 0.2
        body = sb.add(Kind.DRAWER, size, (0.45, 0.33, 0.22), (0.25, 0.18, 0.12), nominal=(0.0, 0.35),
                      bounds=(-1.0, 1.0, -0.2, 1.0))
        closed = -0.6 * size - 0.03
        offset = np.tile([0.0, closed - (travel if start_open else 0.0)], (sb.m, 1))
        handle = sb.child(body, Kind.HANDLE, 0.06, (0.2, 0.2, 0.22), (0.6, 0.45, 0.32), offset=offset, movable=True)
        sb.distractors()
        sb.layout()
        w = sb.w
        x, y0 = w.pos[:, body, 0], w.pos[:, body, 1] + closed
        w.rail[:, handle] = np.stack([x, y0 - travel, y0], axis=1)
        w.on_rail[:, handle] = True
        target = y0 if start_open else y0 - travel
        sb.pair(0, handle, goal=np.stack([x, target], axis=1), tol=0.08)
    return build


def _lid(sb: SceneBuilder) -> None:
    box = sb.fixture(Kind.BOX, nominal=(0.4, -0.3))
    lid = sb.add(Kind.LID, FIXTURE_LOOKS[Kind.BOX][2] * 1.05, (0.6, 0.45, 0.3), (0.3, 0.2, 0.12),
                 nominal=(-0.4, 0.35), movable=True)
    sb.distractors(exclude=(Kind.BOX,))
    sb.layout()
    sb.pair(0, lid, box, tol=FIXTURE_LOOKS[Kind.BOX][2] * 0.5)


# -- new skills ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Look:
    """An appearance variant of a skill's object: primary, secondary colour, sub-shape."""

    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    shape: int = 0


def _id_look(kind: Kind) -> Look:
    return Look(*LOOSE_LOOKS[kind][:2])


# variant 0 is the ID look (the one pretrain-clutter's distractors wear); the others are the
# ood:object family's unseen instances
PLATE_LOOKS = [_id_look(Kind.PLATE), Look((0.6, 0.75, 1.0), (0.3, 0.45, 0.85)),
               Look((1.0, 0.9, 0.5), (0.85, 0.7, 0.2)), Look((0.97, 0.97, 0.97), (0.78, 0.78, 0.84), 1),
               Look((1.0, 0.75, 0.85), (0.85, 0.45, 0.6), 1)]
MARK_LOOKS = [Look((0.1, 0.1, 0.15), (0.1, 0.1, 0.15)), Look((0.85, 0.1, 0.1), (0.85, 0.1, 0.1)),
              Look((0.1, 0.2, 0.85), (0.1, 0.2, 0.85)), Look((0.1, 0.6, 0.2), (0.1, 0.6, 0.2))]
POT_LOOKS = [_id_look(Kind.POT), Look((0.75, 0.2, 0.15), (0.4, 0.1, 0.08)),
             Look((0.2, 0.2, 0.22), (0.45, 0.45, 0.45)), Look((0.8, 0.5, 0.3), (0.5, 0.3, 0.15))]
MUG_LOOKS = [_id_look(Kind.MUG), Look((0.85, 0.15, 0.15), (0.5, 0.35, 0.25)),
             Look((0.15, 0.3, 0.9), (0.5, 0.35, 0.25)), Look((0.95, 0.85, 0.1), (0.5, 0.35, 0.25))]
# items: ID is one fixed trio (red ball, yellow triangle, green cube); OOD draws other colours/shapes
ITEMS_ID = [("red", 1), ("yellow", 2), ("green", 0)]
ITEMS_OOD_COLORS = ["purple", "orange", "cyan", "pink", "blue"]


def _look(sb: SceneBuilder, looks: list[Look]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-episode (color, color2, shape) drawn from the setting's allowed variants."""
    v = sb.setting.variants
    choices = [0] if v == "id" else list(range(1, len(looks))) if v == "ood" else list(range(len(looks)))
    pick = np.array(choices)[sb.rng.integers(0, len(choices), sb.m)]
    return (np.array([looks[i].color for i in pick], np.float32), np.array([looks[i].color2 for i in pick], np.float32),
            np.array([looks[i].shape for i in pick]))


def _decoy(sb: SceneBuilder, kind: Kind, nominal: tuple[float, float]) -> None:
    if sb.cfg.skill_decoys:
        sb.fixture(kind, nominal=nominal)


def add_plate(sb: SceneBuilder, nominal: tuple[float, float]) -> int:
    """The plate to be moved, in the looks the setting allows (plates and its probes share it)."""
    c1, c2, shape = _look(sb, PLATE_LOOKS)
    return sb.add(Kind.PLATE, LOOSE_LOOKS[Kind.PLATE][2], c1, c2, nominal=nominal, movable=True, shape=shape)


def _plates(sb: SceneBuilder) -> None:
    plate = add_plate(sb, (-0.45, 0.35))
    rack = sb.fixture(Kind.RACK, nominal=(0.4, -0.35))
    _decoy(sb, Kind.BOWL, (0.45, 0.45))
    sb.distractors()
    sb.layout()
    sb.words.update(a=np.full(sb.m, "plate"), b=np.full(sb.m, "rack"))
    sb.pair(0, plate, rack, tol=0.1)


def _whiteboard(sb: SceneBuilder) -> None:
    size = 0.42
    board = sb.add(Kind.BOARD, size, (0.98, 0.98, 0.98), (0.55, 0.55, 0.6), nominal=(0.0, 0.1))
    c1, c2, _ = _look(sb, MARK_LOOKS)
    if sb.setting.layout == "nominal":
        base = np.array([(-0.24, 0.1), (0.02, -0.12), (0.25, 0.12)], np.float32)
        offsets = base[None] + sb.rng.uniform(-0.05, 0.05, (sb.m, 3, 2))
    else:
        # three marks in three columns of the board, anywhere up and down
        cols = np.array([-0.25, 0.0, 0.25], np.float32)
        offsets = np.stack([cols[None] + sb.rng.uniform(-0.04, 0.04, (sb.m, 3)),
                            sb.rng.uniform(-0.17, 0.17, (sb.m, 3))], axis=2)
    marks = [sb.child(board, Kind.MARK, 0.06, c1, c2, offset=offsets[:, i]) for i in range(3)]
    _decoy(sb, Kind.BUTTON, (0.5, -0.6))
    sb.distractors()
    sb.layout()
    for i, k in enumerate(marks):
        sb.pair(i, k, tol=0.0)


def _pot(sb: SceneBuilder) -> None:
    c1, c2, _ = _look(sb, POT_LOOKS)
    pot = sb.add(Kind.POT, 0.11, c1, c2, nominal=(-0.45, -0.3), movable=True)
    stove = sb.fixture(Kind.STOVE, nominal=(0.4, 0.3))
    _decoy(sb, Kind.BOX, (-0.4, 0.45))
    sb.distractors()
    sb.layout()
    sb.words.update(a=np.full(sb.m, "pot"), b=np.full(sb.m, "stove"))
    sb.pair(0, pot, stove, tol=0.1)


def _mugs(sb: SceneBuilder) -> None:
    c1, c2, _ = _look(sb, MUG_LOOKS)
    mugs = [sb.add(Kind.MUG, 0.07, c1, c2, nominal=p, movable=True) for p in [(-0.5, 0.4), (-0.5, -0.15)]]
    plate = PLATE_LOOKS[0]
    plates = [sb.add(Kind.PLATE, 0.12, plate.color, plate.color2, nominal=p) for p in [(0.4, 0.4), (0.4, -0.15)]]
    _decoy(sb, Kind.TRAY, (-0.05, -0.6))
    sb.distractors()
    sb.layout()
    sb.words.update(a=np.full(sb.m, "mugs"), b=np.full(sb.m, "plates"))
    for i in range(2):
        sb.pair(i, mugs[i], plates[i], tol=0.09)


def _items(sb: SceneBuilder) -> None:
    from retain.sim.scene import COLOR_NAMES
    v = sb.setting.variants
    ood = np.zeros(sb.m, bool) if v == "id" else np.ones(sb.m, bool) if v == "ood" else sb.rng.random(sb.m) < 0.5
    nominal = [(-0.55, 0.45), (-0.5, -0.05), (-0.1, -0.5)]
    items = []
    for i, (name, shape) in enumerate(ITEMS_ID):
        colour = np.where(ood, sb.rng.integers(0, len(ITEMS_OOD_COLORS), sb.m), -1)
        rgb = np.array([COLORS[ITEMS_OOD_COLORS[c]] if c >= 0 else COLORS[name] for c in colour], np.float32)
        shapes = np.where(ood, sb.rng.integers(0, 4, sb.m), shape)
        items.append(sb.add(Kind.BLOCK, 0.075, rgb, movable=True, shape=shapes, nominal=nominal[i]))
    assert set(ITEMS_OOD_COLORS) <= set(COLOR_NAMES)
    basket = sb.fixture(Kind.BASKET, nominal=(0.4, 0.15))
    _decoy(sb, Kind.BOX, (0.5, -0.6))
    sb.distractors()
    sb.layout()
    sb.words.update(a=np.full(sb.m, "items"), b=np.full(sb.m, "basket"))
    for i, k in enumerate(items):
        sb.pair(i, k, basket, tol=0.15)


_TASKS: list[Task] = [
    Task("reach-object", Behaviour.REACH, ("move to the {a}", "go to the {a}", "reach the {a}",
         "move the gripper over the {a}"), ("hover above the {a}",), 25, _one_block(0.08)),
    Task("reach-fixture", Behaviour.REACH, ("move to the {a}", "go to the {a}", "reach the {a}",
         "move the gripper over the {a}"), ("hover above the {a}",), 25, _reach_fixture),
    Task("pick-object", Behaviour.PICK, ("pick up the {a}", "grab the {a}", "lift the {a}", "take the {a}"),
         ("raise the {a} up",), 30, _one_block(0.0)),
    Task("put-in-bowl", Behaviour.PLACE, PLACE_IN, PLACE_IN_HELDOUT, 45, _place_into(Kind.BOWL, 0.6), paraphrases=PLACE_IN_PARAPHRASE),
    Task("put-in-box", Behaviour.PLACE, PLACE_IN, PLACE_IN_HELDOUT, 45, _place_into(Kind.BOX, 0.7), paraphrases=PLACE_IN_PARAPHRASE),
    Task("put-on-tray", Behaviour.PLACE, PLACE_ON, PLACE_ON_HELDOUT, 45, _place_into(Kind.TRAY, 0.8), paraphrases=PLACE_ON_PARAPHRASE),
    Task("put-on-mat", Behaviour.PLACE, PLACE_ON, PLACE_ON_HELDOUT, 45, _put_on_mat, paraphrases=PLACE_ON_PARAPHRASE),
    Task("put-two-in-box", Behaviour.PLACE, ("put the {a} and the {c} in the {b}",
         "place the {a} and the {c} into the {b}", "move the {a} and the {c} to the {b}"),
         ("the {a} and the {c} go in the {b}",), 60, _put_two_in_box),
    Task("stack-objects", Behaviour.PLACE, ("stack the {a} on the {b}", "put the {a} on top of the {b}",
         "place the {a} on the {b}"), ("build a stack with the {a} above the {b}",), 45, _stack),
    Task("move-to-corner", Behaviour.PLACE, ("put the {a} in the {b} corner", "move the {a} to the {b} corner",
         "place the {a} in the {b} corner"), ("the {a} goes in the {b} corner",), 45, _corner),
    Task("put-left-of", Behaviour.PLACE, ("put the {a} to the left of the {b}", "place the {a} left of the {b}",
         "move the {a} to the left side of the {b}"), ("set the {a} just left of the {b}",), 45, _beside(-0.25)),
    Task("put-right-of", Behaviour.PLACE, ("put the {a} to the right of the {b}", "place the {a} right of the {b}",
         "move the {a} to the right side of the {b}"), ("set the {a} just right of the {b}",), 45, _beside(0.25)),
    Task("push-left", Behaviour.PUSH, ("push the {a} to the left", "slide the {a} to the left",
         "shove the {a} left"), ("nudge the {a} leftwards",), 45, _push((-1.0, 0.0))),
    Task("push-right", Behaviour.PUSH, ("push the {a} to the right", "slide the {a} to the right",
         "shove the {a} right"), ("nudge the {a} rightwards",), 45, _push((1.0, 0.0))),
    Task("push-back", Behaviour.PUSH, ("push the {a} to the back", "slide the {a} away from you",
         "shove the {a} back"), ("nudge the {a} backwards",), 45, _push((0.0, 1.0))),
    Task("push-front", Behaviour.PUSH, ("push the {a} to the front", "slide the {a} towards you",
         "shove the {a} forward"), ("nudge the {a} to the front",), 45, _push((0.0, -1.0))),
    Task("push-to-mat", Behaviour.PUSH, ("push the {a} onto the {b}", "slide the {a} onto the {b}",
         "shove the {a} to the {b}"), ("nudge the {a} over to the {b}",), 50, _push_to_mat),
    Task("press-button", Behaviour.PRESS, ("press the {a}", "push down the {a}", "tap the {a}", "hit the {a}"),
         ("give the {a} a press",), 25, _press),
    Task("open-drawer", Behaviour.PLACE, ("open the drawer", "pull the drawer open", "pull out the drawer"),
         ("slide the drawer open",), 35, _drawer(start_open=False)),
    Task("close-drawer", Behaviour.PLACE, ("close the drawer", "push the drawer shut", "shut the drawer"),
         ("slide the drawer closed",), 35, _drawer(start_open=True)),
    Task("put-lid-on", Behaviour.PLACE, ("put the lid on the box", "cover the box with the lid",
         "place the lid onto the box"), ("close the box with its lid",), 45, _lid),
    # new skills: never in pretraining
    Task("plates", Behaviour.PLACE, PLACE_IN, PLACE_IN_HELDOUT, 45, _plates, True, "put the plate into the rack",
         PLACE_IN_PARAPHRASE),
    Task("whiteboard", Behaviour.WIPE, ("wipe the marks off the board", "wipe the board clean",
         "clean the marks off the board", "wipe off the marks on the board"),
         ("erase the marks on the whiteboard", "make the board clean again"), 60, _whiteboard, True,
         "wipe each mark off the board with a low stroke", WIPE_PARAPHRASE),
    Task("pot-on-stove", Behaviour.PLACE, PLACE_ON, PLACE_ON_HELDOUT, 45, _pot, True, "put the pot on the stove", PLACE_ON_PARAPHRASE),
    Task("mugs-on-plates", Behaviour.PLACE, PLURAL_ON, PLURAL_HELDOUT, 60, _mugs, True, "put each mug on a plate", PLURAL_ON_PARAPHRASE),
    Task("items-into-basket", Behaviour.PLACE, PLURAL_IN, PLURAL_HELDOUT, 75, _items, True,
         "put the three items into the basket", PLURAL_IN_PARAPHRASE),
]
TASKS: dict[str, Task] = {t.name: t for t in _TASKS}
PRETRAIN_TASKS: list[str] = [t.name for t in _TASKS if not t.skill]
SKILLS: list[str] = [t.name for t in _TASKS if t.skill]


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise invalid(f"unknown task {name!r}; choose a skill ({', '.join(SKILLS)}) "
                      f"or a pretraining task (see `retain demos tasks`)") from None


def max_steps(task: str) -> int:
    """Episode length limit of a task."""
    return get_task(task).max_steps


def instructions(task: Task, words: dict[str, np.ndarray], phrasing: str, rng: np.random.Generator,
                 m: int) -> list[str]:
    """One instruction per episode: a template drawn from the setting's pool, filled with the words."""
    pool = task.phrasings(phrasing)
    picks = rng.integers(0, len(pool), m)
    return [pool[p].format(**{k: str(v[i]) for k, v in words.items()}) for i, p in enumerate(picks)]
