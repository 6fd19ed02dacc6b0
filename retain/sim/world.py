"""World state and physics of the tabletop, vectorised over a batch of episodes.

The table is the square x, y in [-1, 1] (x right, y away from the camera). Every episode holds up
to `MAX_ENTITIES` entities in fixed slots (objects, receptacles, marks ...) and one gripper with a
height z in [0, 1] and a binary grip. The gripper only interacts with the table when it is low
(z <= `WorldConfig.contact_height`): it grasps when its grip closes there, pushes loose objects it
runs into, presses buttons and wipes marks it strokes over. Physics is deterministic: all
randomness is spent when a scene is built, so equal seeds give equal rollouts.
"""
from __future__ import annotations

import dataclasses
import enum

import numpy as np

MAX_ENTITIES = 12   # entity slots per episode
MAX_PAIRS = 3       # (thing, destination) pairs a task may name
STATE_DIM = 5       # gripper x, y, z, grip closed, holding something
ACTION_DIM = 4      # dx, dy, dz, grip (> 0 closes) in [-1, 1]


class Kind(enum.IntEnum):
    """What an entity slot holds; decides how it is drawn and how it can be used."""

    EMPTY = 0
    BLOCK = 1     # generic object; `shape` picks square / circle / triangle / diamond
    BOWL = 2
    BOX = 3
    TRAY = 4
    MAT = 5
    BUTTON = 6
    DRAWER = 7    # the cabinet; its handle is a separate HANDLE slot on a rail
    HANDLE = 8
    LID = 9
    PLATE = 10
    RACK = 11
    POT = 12
    STOVE = 13
    MUG = 14
    BASKET = 15
    BOARD = 16
    MARK = 17


class Behaviour(enum.IntEnum):
    """The success test (and expert) family a task belongs to."""

    REACH = 0   # hover over A
    PICK = 1    # hold A lifted
    PLACE = 2   # every A released on a destination (B slot or goal point), every destination used
    PUSH = 3    # A pushed to the goal point
    PRESS = 4   # button A pressed
    WIPE = 5    # every mark in A wiped


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Physical constants of the tabletop. Every field can be changed without touching code."""

    image_size: int = 32          # rendered images are image_size x image_size RGB
    view_half_width: float = 1.1  # half the table span the canonical camera sees
    xy_step: float = 0.25         # gripper travel per step at |action| = 1
    z_step: float = 0.5           # gripper height change per step at |action| = 1
    contact_height: float = 0.25  # at or below this height the gripper touches the table's things
    grasp_radius: float = 0.1     # extra reach beyond an object's size for a grasp
    finger_radius: float = 0.05   # the gripper's own radius when it pushes
    wipe_radius: float = 0.12     # a low stroke passing this close to a mark erases it
    min_stroke: float = 0.05      # a wipe needs the gripper to move at least this far in the step
    rail_slip: float = 0.2        # a held handle slips out when the gripper is this far from its rail
    skill_decoys: bool = True     # new-skill scenes include a familiar receptacle as a decoy

    def __post_init__(self) -> None:
        if not 8 <= self.image_size <= 256:
            raise ValueError(f"image_size must be in [8, 256], got {self.image_size}")
        if not 0 < self.contact_height < 1:
            raise ValueError(f"contact_height must be in (0, 1), got {self.contact_height}")


@dataclasses.dataclass
class WorldState:
    """All per-episode arrays; n episodes, K = MAX_ENTITIES slots, P = MAX_PAIRS."""

    kind: np.ndarray      # (n, K) int8 Kind
    shape: np.ndarray     # (n, K) int8 sub-shape (BLOCK: 0 square 1 circle 2 triangle 3 diamond)
    pos: np.ndarray       # (n, K, 2) float32 centre
    size: np.ndarray      # (n, K) float32 half extent
    color: np.ndarray     # (n, K, 3) float32 in [0, 1]
    color2: np.ndarray    # (n, K, 3) float32 secondary colour (rims, rings, stripes)
    movable: np.ndarray   # (n, K) bool: can be grasped (and pushed unless on a rail)
    layer: np.ndarray     # (n, K) int16 stack height of a movable object
    flag: np.ndarray      # (n, K) bool: button pressed / mark wiped
    rail: np.ndarray      # (n, K, 3) float32 (x, y_open, y_closed) of a handle's rail
    on_rail: np.ndarray   # (n, K) bool
    grip_xy: np.ndarray   # (n, 2) float32
    grip_z: np.ndarray    # (n,) float32
    grip: np.ndarray      # (n,) float32 1 closed, 0 open
    held: np.ndarray      # (n,) int64 slot held or -1
    behaviour: np.ndarray  # (n,) int8 Behaviour
    a: np.ndarray         # (n, P) int64 slots to act on, -1 unused
    b: np.ndarray         # (n, P) int64 destination slots, -1 means the goal point
    goal: np.ndarray      # (n, P, 2) float32 goal points
    tol: np.ndarray       # (n, P) float32 success tolerance of each destination

    @classmethod
    def empty(cls, n: int) -> "WorldState":
        k, p = MAX_ENTITIES, MAX_PAIRS
        return cls(
            kind=np.zeros((n, k), np.int8), shape=np.zeros((n, k), np.int8),
            pos=np.zeros((n, k, 2), np.float32), size=np.zeros((n, k), np.float32),
            color=np.zeros((n, k, 3), np.float32), color2=np.zeros((n, k, 3), np.float32),
            movable=np.zeros((n, k), bool), layer=np.zeros((n, k), np.int16),
            flag=np.zeros((n, k), bool), rail=np.zeros((n, k, 3), np.float32),
            on_rail=np.zeros((n, k), bool), grip_xy=np.zeros((n, 2), np.float32),
            grip_z=np.ones(n, np.float32), grip=np.zeros(n, np.float32),
            held=np.full(n, -1, np.int64), behaviour=np.zeros(n, np.int8),
            a=np.full((n, p), -1, np.int64), b=np.full((n, p), -1, np.int64),
            goal=np.zeros((n, p, 2), np.float32), tol=np.zeros((n, p), np.float32),
        )

    @property
    def n(self) -> int:
        return self.kind.shape[0]

    def state_vector(self) -> np.ndarray:
        """Proprioception (n, STATE_DIM): gripper x, y, z, grip closed, holding something."""
        return np.concatenate(
            [self.grip_xy, self.grip_z[:, None], self.grip[:, None], (self.held >= 0)[:, None]], axis=1
        ).astype(np.float32)

    def subset(self, idx: np.ndarray) -> "WorldState":
        """The episodes at `idx` (copies)."""
        return WorldState(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

    def copy(self) -> "WorldState":
        return WorldState(**{f.name: getattr(self, f.name).copy() for f in dataclasses.fields(self)})


def _gather(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """arr (n, K, ...) at slot idx (n, P) -> (n, P, ...); idx -1 gives slot 0 (mask it yourself)."""
    safe = np.maximum(idx, 0)
    return np.take_along_axis(arr, safe.reshape(safe.shape + (1,) * (arr.ndim - 2)), axis=1)


def destinations(w: WorldState) -> np.ndarray:
    """Destination point of every pair (n, P, 2): the B slot's centre, or the goal point."""
    return np.where((w.b >= 0)[..., None], _gather(w.pos, w.b), w.goal)


def instructed_targets(w: WorldState) -> np.ndarray:
    """(n, 4) float32: table x, y of the first named thing and of its destination. Privileged
    simulator state: pretraining may supervise on it, a policy never observes it."""
    return np.concatenate([_gather(w.pos, w.a)[:, 0], destinations(w)[:, 0]], axis=1).astype(np.float32)


def placement(w: WorldState) -> tuple[np.ndarray, np.ndarray]:
    """For PLACE tasks: (a_ok (n, P), b_ok (n, P)): thing i rests on some destination, destination
    j holds some thing. Unused pairs count as satisfied."""
    apos = _gather(w.pos, w.a)                                     # (n, P, 2)
    dest = destinations(w)                                         # (n, P, 2)
    dist = np.linalg.norm(apos[:, :, None, :] - dest[:, None, :, :], axis=-1)  # (n, Pa, Pb)
    loose = (w.a >= 0) & (w.a != w.held[:, None])
    used_b = w.a >= 0   # destination j is in use when pair j names a thing
    hit = (dist < w.tol[:, None, :]) & loose[:, :, None] & used_b[:, None, :]
    a_ok = hit.any(axis=2) | (w.a < 0)
    b_ok = hit.any(axis=1) | ~used_b
    return a_ok, b_ok


def success(w: WorldState) -> np.ndarray:
    """(n,) bool: has each episode's task been achieved in the current state."""
    first_a = w.a[:, 0]
    apos = _gather(w.pos, w.a)[:, 0]
    reach = np.linalg.norm(w.grip_xy - apos, axis=1) < w.tol[:, 0]
    pick = (w.held == first_a) & (w.grip_z >= 0.99)
    a_ok, b_ok = placement(w)
    place = a_ok.all(axis=1) & b_ok.all(axis=1)
    push = (np.linalg.norm(apos - w.goal[:, 0], axis=1) < w.tol[:, 0]) & (w.held != first_a)
    flags = _gather(w.flag, w.a) | (w.a < 0)
    press = flags[:, 0]
    wipe = flags.all(axis=1)
    table = np.stack([reach, pick, place, push, press, wipe], axis=1)   # column = Behaviour value
    return table[np.arange(w.n), w.behaviour.astype(np.int64)]


def step_physics(w: WorldState, actions: np.ndarray, live: np.ndarray, cfg: WorldConfig) -> None:
    """Advance the live episodes by one step in place. actions (n, ACTION_DIM) in [-1, 1]."""
    n, rows = w.n, np.arange(w.n)
    act = np.clip(np.nan_to_num(actions.astype(np.float32)), -1.0, 1.0)
    act[~live] = 0.0
    old_xy = w.grip_xy.copy()
    # Height first, so a step that lifts and moves at once travels above the table's things.
    new_z = np.clip(w.grip_z + act[:, 2] * cfg.z_step, 0.0, 1.0)
    new_z = np.where(live, new_z, w.grip_z)
    new_xy = np.clip(old_xy + act[:, :2] * cfg.xy_step, -1.0, 1.0)
    low = new_z <= cfg.contact_height + 1e-6
    w.grip_z[:] = new_z
    w.grip_xy[:] = new_xy

    holding = w.held >= 0
    # A held thing follows the gripper; a handle follows it along its rail and slips off far from it.
    if holding.any():
        h = np.maximum(w.held, 0)
        rail = w.rail[rows, h]
        railed = holding & w.on_rail[rows, h]
        follow = np.where(railed[:, None],
                          np.stack([rail[:, 0], np.clip(new_xy[:, 1], rail[:, 1], rail[:, 2])], axis=1),
                          new_xy)
        slip = railed & (np.linalg.norm(new_xy - follow, axis=1) > cfg.rail_slip)
        move = holding & ~slip
        w.pos[rows[move], h[move]] = follow[move]
        w.held[slip] = -1
        holding = w.held >= 0

    # Pushing: a low, empty gripper shoves loose objects along its motion. The sweep of the
    # whole step counts, so a fast stroke cannot tunnel through a thing.
    motion = new_xy - old_xy
    length = np.linalg.norm(motion, axis=1)
    pushers = low & ~holding & live & (length > 1e-6)
    if pushers.any():
        free = w.movable & ~w.on_rail & pushers[:, None]
        reach = w.size * 0.8 + cfg.finger_radius                        # (n, K)
        unit = motion / np.maximum(length, 1e-9)[:, None]
        rel = w.pos - old_xy[:, None, :]
        along = (rel * unit[:, None, :]).sum(-1)
        side = rel - along[..., None] * unit[:, None, :]
        perp = np.linalg.norm(side, axis=2)
        swept = free & (perp < reach) & (along > 0) & (along < length[:, None] + reach)
        need = length[:, None] + np.sqrt(np.maximum(reach**2 - perp**2, 0.0))
        ahead = old_xy[:, None, :] + unit[:, None, :] * np.maximum(along, need)[..., None] + side
        # a thing left overlapping behind the gripper is shoved radially out of it
        d = w.pos - new_xy[:, None, :]
        dist = np.linalg.norm(d, axis=2)
        behind = free & ~swept & (dist < reach)
        radial = new_xy[:, None, :] + d / np.maximum(dist, 1e-9)[..., None] * reach[..., None]
        moved = swept | behind
        if moved.any():
            target = np.where(swept[..., None], ahead, radial)
            w.pos[:] = np.where(moved[..., None], np.clip(target, -1.0, 1.0), w.pos)
            w.layer[moved] = 0

    # Buttons and marks react to a low gripper.
    is_button = w.kind == Kind.BUTTON
    near = np.linalg.norm(w.pos - new_xy[:, None, :], axis=2)
    w.flag |= is_button & (low & live)[:, None] & (near < w.size)
    stroke = np.linalg.norm(new_xy - old_xy, axis=1) >= cfg.min_stroke
    seg = _segment_distance(w.pos, old_xy, new_xy)
    w.flag |= (w.kind == Kind.MARK) & (low & live & stroke)[:, None] & (seg < cfg.wipe_radius)

    # Grip: closing low grasps the nearest (topmost) movable thing in reach; opening drops it.
    close = act[:, 3] > 0
    closing = close & (w.grip < 0.5) & live
    opening = ~close & (w.grip > 0.5) & live
    if closing.any():
        reachable = w.movable & (near < w.size + cfg.grasp_radius) & (low & closing)[:, None]
        score = np.where(reachable, near - 0.05 * w.layer, np.inf)
        best = np.argmin(score, axis=1)
        got = closing & np.isfinite(score[rows, best])
        w.held[got] = best[got]
        snap = got & ~w.on_rail[rows, best]
        w.pos[rows[snap], best[snap]] = new_xy[snap]
    if opening.any():
        drop = opening & (w.held >= 0)
        if drop.any():
            _settle(w, np.nonzero(drop)[0])
        w.held[opening] = -1
    w.grip[live] = close[live].astype(np.float32)
    assert w.held.shape == (n,)


def _settle(w: WorldState, eps: np.ndarray) -> None:
    """Give each dropped object its stack height: one above the tallest loose object under it."""
    for e in eps:
        h = w.held[e]
        if w.on_rail[e, h]:
            continue
        others = w.movable[e] & ~w.on_rail[e] & (np.arange(MAX_ENTITIES) != h)
        d = np.linalg.norm(w.pos[e] - w.pos[e, h], axis=1)
        under = others & (d < 0.7 * w.size[e])
        w.layer[e, h] = (w.layer[e][under].max() + 1) if under.any() else 0


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points p (n, K, 2) to the segments a->b (n, 2)."""
    ab = (b - a)[:, None, :]
    ap = p - a[:, None, :]
    denom = np.maximum((ab * ab).sum(-1), 1e-12)
    t = np.clip((ap * ab).sum(-1) / denom, 0.0, 1.0)
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1)
