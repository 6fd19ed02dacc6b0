"""Scene building: fill entity slots for m episodes of one task under one setting.

A task's builder adds entities (with a nominal position for the narrow layout), the setting's
distractors, lays everything out without overlaps, then names the task's roles (what to act on,
where it goes). All draws come from the batch's generator in a fixed order, so a seed fixes a scene.
"""
from __future__ import annotations

import numpy as np

from retain.sim.settings import Setting
from retain.sim.world import MAX_ENTITIES, Kind, WorldConfig, WorldState

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.15), "green": (0.15, 0.65, 0.2), "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1), "purple": (0.55, 0.2, 0.75), "orange": (1.0, 0.55, 0.1),
    "cyan": (0.1, 0.8, 0.85), "pink": (1.0, 0.5, 0.7),
}
COLOR_NAMES = list(COLORS)
SHAPES = ["cube", "ball", "triangle", "diamond"]   # BLOCK shape codes 0..3
FIXTURE_NAMES = {Kind.BOWL: "bowl", Kind.BOX: "box", Kind.TRAY: "tray"}

# (primary, secondary, size) of fixtures that look the same in every scene
FIXTURE_LOOKS: dict[Kind, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    Kind.BOWL: ((0.55, 0.75, 0.9), (0.2, 0.4, 0.7), 0.14),
    Kind.BOX: ((0.4, 0.27, 0.18), (0.75, 0.55, 0.3), 0.14),
    Kind.TRAY: ((0.82, 0.82, 0.82), (0.4, 0.4, 0.42), 0.15),
    Kind.MAT: ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.13),
    Kind.BUTTON: ((0.5, 0.5, 0.5), (0.25, 0.25, 0.27), 0.075),
    Kind.RACK: ((0.33, 0.33, 0.36), (0.85, 0.85, 0.85), 0.17),
    Kind.STOVE: ((0.15, 0.15, 0.17), (0.9, 0.3, 0.1), 0.17),
    Kind.BASKET: ((0.55, 0.35, 0.15), (0.78, 0.58, 0.32), 0.2),
}
# the skills' loose things in their ID looks, as (primary, secondary, size)
LOOSE_LOOKS: dict[Kind, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    Kind.PLATE: ((0.97, 0.97, 0.97), (0.78, 0.78, 0.84), 0.12),
    Kind.POT: ((0.6, 0.6, 0.65), (0.3, 0.3, 0.33), 0.11),
    Kind.MUG: ((0.95, 0.95, 0.95), (0.5, 0.35, 0.25), 0.07),
}
FIXTURE_POOL = (Kind.BOWL, Kind.BOX, Kind.TRAY, Kind.MAT, Kind.BUTTON)
SKILL_FIXTURES = (Kind.RACK, Kind.STOVE, Kind.BASKET)
# how much wider than `size` an entity's footprint is, for non-overlapping layouts
_FOOTPRINT = {Kind.BOX: 1.42, Kind.TRAY: 1.42, Kind.MAT: 1.42, Kind.BASKET: 1.42, Kind.STOVE: 1.42,
              Kind.LID: 1.42, Kind.RACK: 1.2, Kind.BOARD: 1.25, Kind.POT: 1.7, Kind.MUG: 1.5,
              Kind.DRAWER: 1.1}
_EDGE = 0.88   # entity centres stay inside [-_EDGE, _EDGE] minus their footprint


class SceneBuilder:
    """Accumulates m episodes' entities; slot numbers are shared by all m episodes."""

    def __init__(self, rng: np.random.Generator, setting: Setting, cfg: WorldConfig, m: int):
        self.rng, self.setting, self.cfg, self.m = rng, setting, cfg, m
        self.w = WorldState.empty(m)
        self.count = 0
        self.words: dict[str, np.ndarray] = {}
        self._nominal: dict[int, tuple[float, float]] = {}
        self._bounds: dict[int, tuple[float, float, float, float]] = {}
        self._children: dict[int, tuple[int, np.ndarray]] = {}
        self._used = np.zeros((m, 32), bool)   # block colour x shape combos taken per episode

    # -- adding entities -------------------------------------------------------------------
    def add(self, kind: Kind, size, color, color2=None, *, nominal=None, movable: bool = False,
            shape=0, bounds=None, active=None) -> int:
        """Add one entity slot for every episode (inactive where `active` is False)."""
        k = self.count
        if k >= MAX_ENTITIES:
            raise AssertionError(f"scene needs more than {MAX_ENTITIES} slots")
        self.count += 1
        w, m = self.w, self.m
        w.kind[:, k] = np.where(np.ones(m, bool) if active is None else active, int(kind), 0)
        w.size[:, k] = size
        w.color[:, k] = color
        w.color2[:, k] = color if color2 is None else color2
        w.movable[:, k] = movable
        w.shape[:, k] = shape
        if nominal is not None:
            self._nominal[k] = nominal
        if bounds is not None:
            self._bounds[k] = bounds
        return k

    def child(self, parent: int, kind: Kind, size, color, color2=None, *, offset: np.ndarray,
              movable: bool = False, active=None) -> int:
        """An entity placed at its parent's position + offset (m, 2) (marks on a board, a handle)."""
        k = self.add(kind, size, color, color2, movable=movable, active=active)
        self._children[k] = (parent, np.asarray(offset, np.float32))
        return k

    def fixture(self, kind: Kind, *, nominal=None, color=None, active=None) -> int:
        c1, c2, size = FIXTURE_LOOKS[kind]
        return self.add(kind, size, c1 if color is None else color, c2, nominal=nominal, active=active)

    def blocks(self, count: int, *, nominal=None, bounds=None) -> list[int]:
        """`count` blocks with a colour/shape combination unique in their episode; their names
        ("red cube") land in self.words["block0"], ["block1"], ..."""
        slots = []
        for i in range(count):
            combo = self._fresh_combos()
            size = 0.085 if self.setting.variants == "id" else self.rng.uniform(0.07, 0.1, self.m)
            k = self.add(Kind.BLOCK, size, _rgb(combo // 4), movable=True, shape=combo % 4,
                         nominal=None if nominal is None else nominal[i], bounds=bounds)
            self.words[f"block{i}"] = _block_names(combo)
            slots.append(k)
        return slots

    def colored(self, kind: Kind, count: int, *, nominal=None, word: str) -> list[int]:
        """`count` mats/buttons with distinct colours; the first one's colour word is words[word]."""
        picks = self.rng.random((self.m, len(COLOR_NAMES))).argsort(axis=1)[:, :count]
        slots = []
        for i in range(count):
            k = self.fixture(kind, nominal=None if nominal is None else nominal[i], color=_rgb(picks[:, i]))
            slots.append(k)
        self.words[word] = np.array(COLOR_NAMES)[picks[:, 0]]
        return slots

    def distractors(self, exclude: tuple[Kind, ...] = ()) -> None:
        """The setting's extra loose things and receptacles (never of a kind the task names).

        With `setting.skill_things`, a third of the loose ones are the skills' plates, pots and
        mugs and the receptacles may be their racks, stoves and baskets: seen, never named."""
        lo, hi = self.setting.distractors
        count = self.rng.integers(lo, hi + 1, self.m)
        loose = [k for k in LOOSE_LOOKS if k not in exclude]
        for i in range(hi):
            combo = self._fresh_combos()
            size = 0.085 if self.setting.variants == "id" else self.rng.uniform(0.07, 0.1, self.m)
            k = self.add(Kind.BLOCK, size, _rgb(combo // 4), movable=True, shape=combo % 4, active=count > i)
            if self.setting.skill_things and loose:
                thing = np.where(self.rng.random(self.m) < 1 / 3, np.array(loose)[self.rng.integers(0, len(loose), self.m)], 0)
                self._turn_into(k, thing, (count > i) & (thing > 0), LOOSE_LOOKS)
        pool = [k for k in FIXTURE_POOL + (SKILL_FIXTURES if self.setting.skill_things else ()) if k not in exclude]
        lo, hi = self.setting.fixture_distractors
        count = self.rng.integers(lo, hi + 1, self.m)
        for i in range(hi):
            kinds = np.array(pool)[self.rng.integers(0, len(pool), self.m)]
            colour = _rgb(self.rng.integers(0, len(COLOR_NAMES), self.m))
            k = self.fixture(Kind.BOWL, active=count > i)
            self._turn_into(k, kinds, count > i, FIXTURE_LOOKS)
            for kind in (Kind.MAT, Kind.BUTTON):  # these come in any colour
                sel = (kinds == kind) & (count > i)
                self.w.color[sel, k] = colour[sel]

    def _turn_into(self, k: int, kinds: np.ndarray, active: np.ndarray, looks: dict) -> None:
        """Turn slot k into kinds[e] (drawn with its look from `looks`) where active[e]."""
        for kind in np.unique(kinds[active]):
            sel = (kinds == kind) & active
            c1, c2, size = looks[Kind(int(kind))]
            self.w.kind[sel, k] = int(kind)
            self.w.size[sel, k] = size
            self.w.color[sel, k] = c1
            self.w.color2[sel, k] = c2
            self.w.shape[sel, k] = 0

    # -- layout ----------------------------------------------------------------------------
    def layout(self) -> None:
        """Positions for every slot: nominal + jitter in the narrow layout, else uniform without overlap."""
        w, m, s = self.w, self.m, self.setting
        radius = w.size * np.vectorize(lambda k: _FOOTPRINT.get(Kind(k), 1.0))(w.kind).astype(np.float32)
        placed = np.zeros((m, MAX_ENTITIES), bool)
        for k in range(self.count):
            if k in self._children:
                continue
            active = w.kind[:, k] != Kind.EMPTY
            if s.layout == "nominal" and k in self._nominal:
                jitter = self.rng.uniform(-s.pos_jitter, s.pos_jitter, (m, 2))
                w.pos[:, k] = np.asarray(self._nominal[k], np.float32) + jitter
            else:
                w.pos[:, k] = self._free_spot(k, radius, placed)
            placed[:, k] = active
        for k, (parent, offset) in self._children.items():
            w.pos[:, k] = w.pos[:, parent] + offset

    def _free_spot(self, k: int, radius: np.ndarray, placed: np.ndarray) -> np.ndarray:
        m, w = self.m, self.w
        lim = np.maximum(_EDGE - radius[:, k], 0.05)
        xlo, xhi, ylo, yhi = self._bounds.get(k, (-1.0, 1.0, -1.0, 1.0))
        pos = np.zeros((m, 2), np.float32)
        todo = np.ones(m, bool)
        for _ in range(80):
            idx = np.nonzero(todo)[0]
            if idx.size == 0:
                break
            u = self.rng.random((idx.size, 2))
            lo = np.stack([np.maximum(-lim[idx], xlo), np.maximum(-lim[idx], ylo)], 1)
            hi = np.stack([np.minimum(lim[idx], xhi), np.minimum(lim[idx], yhi)], 1)
            cand = (lo + u * (hi - lo)).astype(np.float32)
            d = np.linalg.norm(w.pos[idx] - cand[:, None, :], axis=2)
            clash = (placed[idx] & (d < radius[idx] + radius[idx, k][:, None] + 0.03)).any(axis=1)
            pos[idx] = cand
            todo[idx[~clash]] = False
        return pos   # after 80 tries a crowded episode keeps its last draw (rare, and still valid)

    def _fresh_combos(self) -> np.ndarray:
        scores = np.where(self._used, np.inf, self.rng.random((self.m, 32)))
        combo = scores.argmin(axis=1)
        self._used[np.arange(self.m), combo] = True
        return combo

    # -- roles -----------------------------------------------------------------------------
    def pair(self, i: int, a: int, b: int = -1, *, goal=None, tol) -> None:
        """Pair i: act on slot a, bring it to slot b (or to the goal point); success within tol."""
        self.w.a[:, i] = a
        self.w.b[:, i] = b
        if goal is not None:
            self.w.goal[:, i] = goal
        self.w.tol[:, i] = tol


def _rgb(index: np.ndarray) -> np.ndarray:
    table = np.array([COLORS[c] for c in COLOR_NAMES], np.float32)
    return table[np.asarray(index)]


def _block_names(combo: np.ndarray) -> np.ndarray:
    names = np.array([f"{c} {s}" for c in COLOR_NAMES for s in SHAPES])
    return names[combo]
