"""Line plots written as PNG with numpy + zlib only (no matplotlib): axes, ticks, lines, a legend.

Text uses a built-in 3x5 pixel font (upper-case letters, digits, a few signs), drawn at an
integer scale. Enough for "success vs alpha" panels; not a general plotting library.

Example:
    >>> panel = Panel("plates", xs=[0, .5, 1], series={"id": [0, .5, .9]}, ylim=(0, 1))
    >>> write_png("out.png", render([panel]))
"""
from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np

_FONT = {  # 3x5 glyphs: five rows of three pixels, '#' = ink
    "A": ".#. #.# ### #.# #.#", "B": "##. #.# ##. #.# ##.", "C": ".## #.. #.. #.. .##", "D": "##. #.# #.# #.# ##.",
    "E": "### #.. ##. #.. ###", "F": "### #.. ##. #.. #..", "G": ".## #.. #.# #.# .##", "H": "#.# #.# ### #.# #.#",
    "I": "### .#. .#. .#. ###", "J": "..# ..# ..# #.# .#.", "K": "#.# #.# ##. #.# #.#", "L": "#.. #.. #.. #.. ###",
    "M": "#.# ### ### #.# #.#", "N": "##. #.# #.# #.# #.#", "O": ".#. #.# #.# #.# .#.", "P": "##. #.# ##. #.. #..",
    "Q": ".#. #.# #.# ##. .##", "R": "##. #.# ##. #.# #.#", "S": ".## #.. .#. ..# ##.", "T": "### .#. .#. .#. .#.",
    "U": "#.# #.# #.# #.# ###", "V": "#.# #.# #.# #.# .#.", "W": "#.# #.# ### ### #.#", "X": "#.# #.# .#. #.# #.#",
    "Y": "#.# #.# .#. .#. .#.", "Z": "### ..# .#. #.. ###", "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###",
    "2": "##. ..# .#. #.. ###", "3": "##. ..# .#. ..# ##.", "4": "#.# #.# ### ..# ..#", "5": "### #.. ##. ..# ##.",
    "6": ".## #.. ### #.# ###", "7": "### ..# .#. .#. .#.", "8": "### #.# ### #.# ###", "9": "### #.# ### ..# ##.",
    ".": "... ... ... ... .#.", ":": "... .#. ... .#. ...", "-": "... ... ### ... ...", "=": "... ### ... ### ...",
    "(": ".#. #.. #.. #.. .#.", ")": ".#. ..# ..# ..# .#.", "/": "..# ..# .#. #.. #..", " ": "... ... ... ... ...",
    ",": "... ... ... .#. #..", "_": "... ... ... ... ###", "%": "#.# ..# .#. #.. #.#",
}

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


@dataclasses.dataclass
class Panel:
    title: str
    xs: list[float]
    series: dict[str, list[float]]  # label -> y per x
    ylim: tuple[float, float] = (0.0, 1.0)
    xlabel: str = "ALPHA"
    ylabel: str = "SUCCESS"


def text(img: np.ndarray, x: int, y: int, s: str, colour=(0, 0, 0), scale: int = 2) -> None:
    for ch in s.upper():
        glyph = _FONT.get(ch, _FONT[" "]).replace(" ", "")
        for i, c in enumerate(glyph):
            if c == "#":
                r, q = divmod(i, 3)
                img[y + r * scale : y + (r + 1) * scale, x + q * scale : x + (q + 1) * scale] = colour
        x += 4 * scale


def line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour, width: int = 2) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    for t in np.linspace(0, 1, n):
        x, y = int(round(x0 + t * (x1 - x0))), int(round(y0 + t * (y1 - y0)))
        img[max(y - width // 2, 0) : y + (width + 1) // 2, max(x - width // 2, 0) : x + (width + 1) // 2] = colour


def _panel(p: Panel, w: int = 420, h: int = 320) -> np.ndarray:
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 50, 150, 28, 40
    pw, ph = w - left - right, h - top - bottom
    x0, x1 = min(p.xs), max(p.xs)
    y0, y1 = p.ylim

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / max(x1 - x0, 1e-9) * pw, top + (1 - (y - y0) / max(y1 - y0, 1e-9)) * ph

    text(img, left, 6, p.title)
    for k in range(6):  # y grid and ticks
        yv = y0 + k * (y1 - y0) / 5
        _, yy = px(x0, yv)
        line(img, left, yy, left + pw, yy, (225, 225, 225), 1)
        text(img, 8, int(yy) - 5, f"{yv:.1f}")
    for xv in p.xs:
        xx, _ = px(xv, y0)
        line(img, xx, top, xx, top + ph, (235, 235, 235), 1)
        text(img, int(xx) - 10, top + ph + 6, f"{xv:g}")
    line(img, left, top + ph, left + pw, top + ph, (0, 0, 0), 1)
    line(img, left, top, left, top + ph, (0, 0, 0), 1)
    text(img, left + pw // 2 - 20, h - 14, p.xlabel)
    for i, (label, ys) in enumerate(p.series.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = [px(x, y) for x, y in zip(p.xs, ys)]
        for a, b in zip(pts, pts[1:]):
            line(img, *a, *b, colour, 2)
        for x, y in pts:
            img[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4] = colour
        ly = top + 4 + i * 16
        img[ly : ly + 8, left + pw + 10 : left + pw + 22] = colour
        text(img, left + pw + 26, ly - 1, label[:14])
    return img


def render(panels: list[Panel], columns: int = 2) -> np.ndarray:
    """Panels tiled in a grid, as an RGB uint8 image."""
    tiles = [_panel(p) for p in panels]
    rows = (len(tiles) + columns - 1) // columns
    h, w = tiles[0].shape[:2]
    out = np.full((rows * h, columns * w, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = t
    return out


def write_png(path: str | Path, img: np.ndarray) -> Path:
    """Write an RGB uint8 image as an 8-bit PNG."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)
    return Path(path)
