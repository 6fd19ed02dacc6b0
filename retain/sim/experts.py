"""Scripted experts: the next action of every episode, computed from the current state alone.

Being memoryless, an expert recovers from any state (a policy's mistakes included), which also
makes it usable for DAgger-style relabelling. Each behaviour family has one rule set:
- reach: fly to the thing at full height;
- pick/place: fly to the thing, descend, close, lift while flying to the destination, open;
- push: fly to a point behind the thing, descend, stroke through it towards the goal;
- press: fly over the button, descend;
- wipe: for each mark, fly to a point left of it, descend, stroke right across it.
Motions are proportional (a step covers the remaining distance when it is short) and keep the
direction of travel, so pushes stay on their line.
"""
from __future__ import annotations

import numpy as np

from retain.sim.world import ACTION_DIM, Behaviour, WorldConfig, WorldState, destinations, placement

_AT = 0.04          # "arrived" close enough to descend, grasp or release (every reach/tolerance is larger)
_AT_LINE = 0.02     # "arrived" at the start of a push or wipe, which must be on the stroke's line
_STAY = 0.09        # once on the way down, keep going down while this close (tolerates jitter)
_STAY_LINE = 0.05   # the same for the start of a stroke
_PUSH_GAP = 0.06    # how far behind a thing a push starts
_STROKE = 0.15      # a wipe starts this far left of a mark and ends this far right of it


def expert_actions(w: WorldState, cfg: WorldConfig) -> np.ndarray:
    """(n, ACTION_DIM) float32 actions in [-1, 1]."""
    table = {
        Behaviour.REACH: _reach, Behaviour.PICK: _pick_place, Behaviour.PLACE: _pick_place,
        Behaviour.PUSH: _push, Behaviour.PRESS: _press, Behaviour.WIPE: _wipe,
    }
    out = np.zeros((w.n, ACTION_DIM), np.float32)
    for behaviour, rule in table.items():
        sel = w.behaviour == behaviour
        if sel.any():
            out[sel] = rule(w, cfg)[sel]
    return out


def _toward(w: WorldState, target: np.ndarray, cfg: WorldConfig) -> np.ndarray:
    v = (target - w.grip_xy) / cfg.xy_step
    return v / np.maximum(1.0, np.abs(v).max(axis=1, keepdims=True))


def _act(dxy: np.ndarray, dz, grip) -> np.ndarray:
    n = dxy.shape[0]
    return np.concatenate([dxy, np.broadcast_to(np.asarray(dz, np.float32), (n,))[:, None],
                           np.broadcast_to(np.asarray(grip, np.float32), (n,))[:, None]], axis=1).astype(np.float32)


def _slot_pos(w: WorldState, slot: np.ndarray) -> np.ndarray:
    return w.pos[np.arange(w.n), np.maximum(slot, 0)]


def _reach(w: WorldState, cfg: WorldConfig) -> np.ndarray:
    return _act(_toward(w, _slot_pos(w, w.a[:, 0]), cfg), 1.0, -1.0)


def _press(w: WorldState, cfg: WorldConfig) -> np.ndarray:
    target = _slot_pos(w, w.a[:, 0])
    dist = np.linalg.norm(target - w.grip_xy, axis=1)
    there = (dist < _AT) | ((w.grip_z < 1.0) & (dist < _STAY))
    return _act(_toward(w, target, cfg), np.where(there, -1.0, 1.0), -1.0)


def _pick_place(w: WorldState, cfg: WorldConfig) -> np.ndarray:
    rows = np.arange(w.n)
    holding = w.held >= 0
    a_ok, b_ok = placement(w)
    carrying = holding[:, None] & (w.a == w.held[:, None])
    todo = ~a_ok
    i = np.where(carrying.any(1), carrying.argmax(1), todo.argmax(1))
    thing = w.a[rows, i]
    need = ~b_ok
    j = np.where(need.any(1), need.argmax(1), i)
    dest = destinations(w)[rows, j]
    pick_only = w.behaviour == Behaviour.PICK
    has_it = holding & (w.held == thing)

    # carrying: lift while flying to the destination, open on arrival (a pick just lifts)
    at_dest = np.linalg.norm(dest - w.grip_xy, axis=1) < _AT
    carry_xy = np.where(pick_only[:, None], 0.0, _toward(w, dest, cfg))
    carry_grip = np.where(at_dest & ~pick_only, -1.0, 1.0)

    # fetching: open if closed on nothing useful, fly over the thing, descend, close when touching
    tpos = _slot_pos(w, thing)
    gap = np.linalg.norm(tpos - w.grip_xy, axis=1)
    at_thing = (gap < _AT) | ((w.grip_z < 1.0) & (gap < _STAY))
    touching = w.grip_z - cfg.z_step <= cfg.contact_height + 1e-6
    fetch_dz = np.where(at_thing, -1.0, 1.0)
    fetch_grip = np.where(at_thing & touching & (w.grip < 0.5), 1.0, -1.0)

    dxy = np.where(has_it[:, None], carry_xy, _toward(w, tpos, cfg))
    dz = np.where(has_it, 1.0, fetch_dz)
    grip = np.where(has_it, carry_grip, fetch_grip)
    return _act(dxy, dz, grip)


def _push(w: WorldState, cfg: WorldConfig) -> np.ndarray:
    rows = np.arange(w.n)
    thing = np.maximum(w.a[:, 0], 0)
    p, goal = w.pos[rows, thing], w.goal[:, 0]
    d = goal - p
    u = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    reach = w.size[rows, thing] * 0.8 + cfg.finger_radius
    approach = p - u * (reach + _PUSH_GAP)[:, None]
    rel = w.grip_xy - p
    along = (rel * u).sum(1)
    perp = np.linalg.norm(rel - along[:, None] * u, axis=1)
    low = w.grip_z <= cfg.contact_height + 1e-6
    stroking = low & (along < -0.5 * reach) & (perp < 0.06)
    end = goal - u * reach[:, None]
    off = np.linalg.norm(approach - w.grip_xy, axis=1)
    at_approach = (off < _AT_LINE) | ((w.grip_z < 1.0) & (off < _STAY_LINE))
    dxy = np.where(stroking[:, None], _toward(w, end, cfg), _toward(w, approach, cfg))
    dz = np.where(stroking | at_approach, -1.0, 1.0)
    return _act(dxy, dz, -1.0)


def _wipe(w: WorldState, cfg: WorldConfig) -> np.ndarray:
    rows = np.arange(w.n)
    flags = w.flag[rows[:, None], np.maximum(w.a, 0)] | (w.a < 0)
    i = (~flags).argmax(1)
    mark = w.pos[rows, np.maximum(w.a[rows, i], 0)]
    start = mark - np.array([_STROKE, 0.0], np.float32)
    end = mark + np.array([_STROKE, 0.0], np.float32)
    rel = w.grip_xy - mark
    low = w.grip_z <= cfg.contact_height + 1e-6
    stroking = low & (np.abs(rel[:, 1]) < 0.05) & (rel[:, 0] > -_STROKE - 0.05) & (rel[:, 0] < _STROKE - 0.01)
    off = np.linalg.norm(start - w.grip_xy, axis=1)
    at_start = (off < _AT_LINE) | ((w.grip_z < 1.0) & (off < _STAY_LINE))
    dxy = np.where(stroking[:, None], _toward(w, end, cfg), _toward(w, start, cfg))
    dz = np.where(stroking | at_start, -1.0, 1.0)
    return _act(dxy, dz, -1.0)
