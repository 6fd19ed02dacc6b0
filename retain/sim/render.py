"""Batched numpy renderer: one top-down camera, RGB uint8 images (n, H, W, 3).

Each pixel is mapped to table coordinates by the episode's camera (a 2-D affine warp: shift, zoom,
rotation, shear), so a viewpoint change moves everything consistently. Entities are drawn with a
depth buffer (mats < fixtures < objects by stack height < held object < gripper); shapes are
evaluated in each entity's local frame and return 0 (outside), 1 (primary colour) or 2 (secondary).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from retain.sim.world import MAX_ENTITIES, Kind, WorldConfig, WorldState


@dataclasses.dataclass
class View:
    """Per-episode camera and lighting, fixed for an episode."""

    table_xy: np.ndarray    # (n, H, W, 2) table coordinates of every pixel
    background: np.ndarray  # (n, H, W, 3) float32 table surface colour
    gain: np.ndarray        # (n, 1, 1, 3) float32 brightness x tint
    inverse: np.ndarray     # (n, 2, 2) table offset -> camera plane (inverse of the warp)
    shift: np.ndarray       # (n, 2) table point at the image centre
    px_per_unit: np.ndarray  # (n,) most pixels one table unit can span

    def subset(self, idx: np.ndarray) -> "View":
        return View(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

    def to_pixel(self, xy: np.ndarray, size: int, half_width: float) -> np.ndarray:
        """Table points (n, K, 2) -> fractional (row, col) pixel coordinates (n, K, 2)."""
        uv = np.einsum("nij,nkj->nki", self.inverse, xy - self.shift[:, None, :]) / half_width
        col = (uv[..., 0] + 1.0) * size / 2 - 0.5
        row = (1.0 - uv[..., 1]) * size / 2 - 0.5
        return np.stack([row, col], axis=-1)


BACKGROUNDS: list[tuple[tuple[float, float, float], str, float]] = [
    # (base colour, pattern, pattern amplitude); index 0 is the canonical (ID) table.
    ((0.72, 0.60, 0.45), "stripes", 0.04),
    ((0.55, 0.55, 0.58), "checker", 0.06),
    ((0.30, 0.50, 0.36), "noise", 0.05),
    ((0.25, 0.30, 0.50), "stripes", 0.05),
    ((0.85, 0.84, 0.80), "noise", 0.04),
    ((0.60, 0.42, 0.30), "checker", 0.05),
]


def make_view(cfg: WorldConfig, shift: np.ndarray, zoom: np.ndarray, rot: np.ndarray, shear: np.ndarray,
              background: np.ndarray, brightness: np.ndarray, tint: np.ndarray, noise_seed: int) -> View:
    """Build the cameras of n episodes: shift (n, 2), zoom/rot/shear/brightness (n,), background (n,)
    int index into BACKGROUNDS, tint (n, 3)."""
    s = cfg.image_size
    c = (np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1          # pixel centres in [-1, 1]
    px, py = np.meshgrid(c, -c)                                        # row 0 is the far edge
    uv = np.stack([px, py], axis=-1) * cfg.view_half_width             # (H, W, 2)
    cos, sin = np.cos(rot), np.sin(rot)
    m = np.stack([np.stack([cos, -sin + shear], -1), np.stack([sin, cos], -1)], -2)  # (n, 2, 2)
    m = m / zoom[:, None, None]
    table = np.einsum("nij,hwj->nhwi", m, uv) + shift[:, None, None, :]
    table = table.astype(np.float32)
    bg = np.empty(table.shape[:3] + (3,), np.float32)
    rng = np.random.default_rng(noise_seed)
    grain = rng.standard_normal((s, s)).astype(np.float32)
    for i, (base, pattern, amp) in enumerate(BACKGROUNDS):
        sel = background == i
        if not sel.any():
            continue
        t = table[sel]
        if pattern == "stripes":
            tex = np.sin(t[..., 1] * 18.0)
        elif pattern == "checker":
            tex = np.sign(np.sin(t[..., 0] * 7.0) * np.sin(t[..., 1] * 7.0))
        else:
            tex = np.broadcast_to(grain, t.shape[:3])
        bg[sel] = np.asarray(base, np.float32) + amp * tex[..., None]
    # Beyond the table's edge the floor is dark, so the workspace border is visible.
    off = (np.abs(table) > 1.05).any(-1)
    bg[off] = 0.15
    gain = (brightness[:, None] * (1.0 + tint)).astype(np.float32)[:, None, None, :]
    inverse = np.linalg.inv(m).astype(np.float32)
    px = np.linalg.norm(inverse, ord=2, axis=(1, 2)) * s / (2 * cfg.view_half_width)
    return View(table, bg, gain, inverse, shift.astype(np.float32), px.astype(np.float32))


def _shape(kind: int, u: np.ndarray, v: np.ndarray, sub: np.ndarray, ext: np.ndarray) -> np.ndarray:
    """Shape code map for entities of one kind in local coordinates scaled by size (|u|,|v| ~ 1)."""
    au, av = np.abs(u), np.abs(v)
    r2 = u * u + v * v
    one = np.uint8(1)
    out = np.zeros(u.shape, np.uint8)

    def put(mask, code):
        out[mask] = code

    if kind == Kind.BLOCK:
        square, circle = (au < 0.85) & (av < 0.85), r2 < 1.0
        tri = (v > -0.8) & (au < (0.9 - v) * 0.55)
        diamond = au + av < 1.1
        sel = [square, circle, tri, diamond]
        for code in range(4):
            put(sel[code] & (sub == code), one)
    elif kind == Kind.BOWL:
        put(r2 < 1.0, 2)
        put(r2 < 0.55, 1)
    elif kind in (Kind.BOX, Kind.TRAY, Kind.BASKET):
        inside = (au < 1.0) & (av < 1.0)
        put(inside, 2)
        inner = 0.7 if kind == Kind.BOX else 0.85
        core = (au < inner) & (av < inner)
        if kind == Kind.BASKET:
            core &= (np.sin(u * 9.0) * np.sin(v * 9.0)) > -0.2
        put(core, 1)
    elif kind == Kind.MAT:
        put((au < 1.0) & (av < 1.0), 1)
    elif kind == Kind.BUTTON:
        put(r2 < 1.0, 2)
        put(r2 < 0.5, 1)
    elif kind == Kind.DRAWER:
        put((au < 1.0) & (av < 0.6), 1)
        put((au < 0.9) & (np.abs(v + 0.5) < 0.08), 2)
    elif kind == Kind.HANDLE:
        # the drawer front reaches from the handle up to its closed position (ext, in size units)
        put((au < 1.6) & (v > 0) & (v < ext), 2)
        put((au < 1.2) & (av < 0.35), 1)
    elif kind == Kind.LID:
        put((au < 1.0) & (av < 1.0), 1)
        put((au < 0.25) & (av < 0.25), 2)
    elif kind == Kind.PLATE:
        round_ = (sub == 0) & (r2 < 1.0)
        square = (sub == 1) & (au < 0.9) & (av < 0.9)
        put(round_ | square, 2)
        put(((sub == 0) & (r2 < 0.5)) | ((sub == 1) & (au < 0.6) & (av < 0.6)), 1)
    elif kind == Kind.RACK:
        put((au < 1.0) & (av < 0.6), 1)
        put((au < 1.0) & (av < 0.6) & (np.sin(u * 14.0) > 0.3), 2)
    elif kind in (Kind.POT, Kind.MUG):
        # a round body with an inside and a handle on the right: (inside r^2, handle span, handle half-height)
        inner, lo, hi, h = (0.45, 0.9, 1.7, 0.22) if kind == Kind.POT else (0.4, 0.8, 1.5, 0.35)
        put((r2 < 1.0) | ((u > lo) & (u < hi) & (av < h)), 1)
        put(r2 < inner, 2)
    elif kind == Kind.STOVE:
        put((au < 1.0) & (av < 1.0), 1)
        put((r2 < 0.5) & (r2 > 0.25), 2)
    elif kind == Kind.BOARD:
        put((au < 1.0) & (av < 0.7), 2)
        put((au < 0.93) & (av < 0.62), 1)
    elif kind == Kind.MARK:
        put((au < 1.0) & (av < 0.35), 1)
    return out


_DEPTH = {Kind.MAT: 0.0, Kind.BOARD: 0.0, Kind.DRAWER: 0.0, Kind.MARK: 0.5}
# farthest a shape reaches from its centre, in units of its size (HANDLE also adds its drawer front)
_REACH = {Kind.BLOCK: 1.2, Kind.BOWL: 1.0, Kind.BOX: 1.42, Kind.TRAY: 1.42, Kind.BASKET: 1.42, Kind.MAT: 1.42,
          Kind.BUTTON: 1.0, Kind.DRAWER: 1.17, Kind.HANDLE: 1.75, Kind.LID: 1.42, Kind.PLATE: 1.42,
          Kind.RACK: 1.17, Kind.POT: 1.75, Kind.STOVE: 1.42, Kind.MUG: 1.6, Kind.BOARD: 1.22, Kind.MARK: 1.06}
_REACH_TABLE = np.array([_REACH.get(Kind(i), 0.0) for i in range(len(Kind))], np.float32)


def render(w: WorldState, view: View, cfg: WorldConfig) -> np.ndarray:
    """Images (n, H, W, 3) uint8 of the current state.

    Each entity is drawn only inside a square window of pixels around it (the window reaches as
    far as the shape can under the episode's camera), which keeps the cost per entity small.
    """
    size = cfg.image_size
    img = view.background.copy()
    zbuf = np.full(img.shape[:3], -1.0, np.float32)
    rows = np.arange(w.n)
    depth = np.where(w.movable, 2.0 + w.layer, 1.0).astype(np.float32)
    for kind, d in _DEPTH.items():
        depth[w.kind == kind] = d
    held = w.held >= 0
    depth[rows[held], w.held[held]] = 50.0
    visible = (w.kind != Kind.EMPTY) & ~((w.kind == Kind.MARK) & w.flag)
    ext = np.where(w.on_rail, (w.rail[..., 2] - w.pos[..., 1]) / np.maximum(w.size, 1e-6), 0.0)
    reach = w.size * (_REACH_TABLE[w.kind] + ext)                       # (n, K) table units
    centre = view.to_pixel(w.pos, size, cfg.view_half_width)            # (n, K, 2)
    half = reach * view.px_per_unit[:, None] + 1.0                      # (n, K) pixels
    on_image = ((centre + half[..., None] >= 0) & (centre - half[..., None] <= size - 1)).all(-1)
    visible &= on_image
    for k in range(MAX_ENTITIES):
        vis = visible[:, k]
        if not vis.any():
            continue
        for kind in np.unique(w.kind[vis, k]):
            eps = np.nonzero(vis & (w.kind[:, k] == kind))[0]
            rr, cc = _window(centre[eps, k], half[eps, k], size)
            e = eps[:, None, None]
            s = w.size[eps, k][:, None, None]
            local = (view.table_xy[e, rr, cc] - w.pos[eps, k][:, None, None, :]) / s[..., None]
            code = _shape(int(kind), local[..., 0], local[..., 1], w.shape[eps, k][:, None, None],
                          ext[eps, k][:, None, None])
            dk = depth[eps, k][:, None, None]
            win = (code > 0) & (dk >= zbuf[e, rr, cc])
            colour = np.where((code == 1)[..., None], w.color[eps, k][:, None, None, :],
                              w.color2[eps, k][:, None, None, :])
            img[e, rr, cc] = np.where(win[..., None], colour, img[e, rr, cc])
            zbuf[e, rr, cc] = np.where(win, dk, zbuf[e, rr, cc])
    _draw_gripper(img, w, view, cfg)
    out = np.clip(img * view.gain, 0.0, 1.0)
    return (out * 255.0 + 0.5).astype(np.uint8)


def _window(centre: np.ndarray, half: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Row (m, L, 1) and column (m, 1, L) indices of a square window around each centre, clamped
    to the image. A clamped index repeats an edge pixel, whose value is computed from its own table
    point, so the repeats write identical values."""
    p = int(np.ceil(half.max()))
    offs = np.arange(-p, p + 1)
    r = np.clip(np.rint(centre[:, 0]).astype(np.int64)[:, None] + offs, 0, size - 1)
    c = np.clip(np.rint(centre[:, 1]).astype(np.int64)[:, None] + offs, 0, size - 1)
    return r[:, :, None], c[:, None, :]


def _draw_gripper(img: np.ndarray, w: WorldState, view: View, cfg: WorldConfig) -> None:
    """Two fingers whose gap shows the grip and whose size grows with height (nearer the camera);
    the bar between them turns white while something is held."""
    size = cfg.image_size
    scale = (1.0 + 0.6 * w.grip_z)
    centre = view.to_pixel(w.grip_xy[:, None, :], size, cfg.view_half_width)[:, 0]
    half = 0.13 * scale * view.px_per_unit + 1.0
    rr, cc = _window(centre, half, size)
    e = np.arange(w.n)[:, None, None]
    rel = (view.table_xy[e, rr, cc] - w.grip_xy[:, None, None, :]) / scale[:, None, None, None]
    gap = np.where(w.grip > 0.5, 0.035, 0.075)[:, None, None]
    fu, fv = rel[..., 0], rel[..., 1]
    finger = (np.abs(np.abs(fu) - gap) < 0.025) & (np.abs(fv) < 0.05)
    bar = (np.abs(fu) < gap + 0.025) & (np.abs(fv - 0.06) < 0.015)
    colour = np.where((w.held >= 0)[:, None], [0.95, 0.95, 0.95], [0.1, 0.1, 0.1]).astype(np.float32)
    paint = np.where(finger[..., None], np.float32(0.1), colour[:, None, None, :])
    img[e, rr, cc] = np.where((finger | bar)[..., None], paint, img[e, rr, cc])
