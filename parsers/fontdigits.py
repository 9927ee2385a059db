"""Read the digits Maoyan draws with a web font made for each request.

Maoyan writes want-to-see counts and box office as private-use code points (`&#xe25c;`)
and ships a small WOFF that draws them as digits. Which code point is which digit changes
with every font, and since August 2019 the outlines are jittered per font too, so the
font's own coordinates cannot be compared with a saved copy. What stays is the SHAPE: each
glyph is rasterised to a small grid and compared with the digits of freely licensed
reference fonts (`fontdigits_reference.json`, rebuilt by `make_fontdigits_reference.py`),
and the ten glyphs are given the ten digits by an exact one-to-one assignment.

A font is decoded only when the reading is clear: exactly ten drawn private-use glyphs,
each close to the digit it is given (`MAX_COST`), and no other complete reading nearly as
good (`MIN_GAP`). Anything else raises `FontNotDecoded`, so a digit is never guessed.
Nothing is cached per font (the caller keys its cache on the font's hash).
"""
from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np
from fontTools.pens.basePen import BasePen
from fontTools.svgLib.path import parse_path
from fontTools.ttLib import TTFont

# Unicode's Private Use Area (BMP), where Maoyan puts its digit code points.
PRIVATE_USE_FIRST, PRIVATE_USE_LAST = 0xE000, 0xF8FF

GRID = 24  # raster side, in cells; the glyph's height fills GRID - 2 cells
_SUPERSAMPLE = 2  # sub-cells per cell and axis: rasters have 5 grey levels, not 2
_CURVE_STEPS = 4  # straight pieces per Bezier segment (one cell is ~1/22 of the height)
_BLUR_PASSES = 2  # [1 2 1] passes, so edges the jitter moved (~half a cell) still overlap

# Limits, against what was measured (costs are 1 - IoU of blurred rasters):
# MAX_COST, the cost of a glyph as the digit it is read as: worst real glyph 0.28 (five
# fonts from maoyan.com, 2019), fixture fonts 0.17, DejaVu digits jittered by +-3% of the
# em 0.39; any ten letters of DejaVu, Liberation or FreeSans have one at 0.62 or more.
# MIN_GAP, the next-best complete reading's cost minus the best's: smallest real 0.275,
# fixture fonts 0.31, other regular sans and serif faces 0.24 and up; bold faces, whose
# 6 and 8 fill in, 0.11-0.15, and are refused.
MAX_COST = 0.45
MIN_GAP = 0.15

_MAX_PRIVATE_GLYPHS = 64  # a digit font has ten; an icon font is refused before drawing
_REFERENCE = Path(__file__).with_name("fontdigits_reference.json")


class FontNotDecoded(ValueError):
    """The font's digits cannot be read for sure; the message says why."""


def decode_digits(font_bytes: bytes) -> dict[str, str]:
    """Map each private-use character of a digit font (e.g. "\\ue25c") to the digit it draws.

    Accepts TrueType/OpenType, WOFF and (with the brotli package) WOFF2 bytes. Raises
    FontNotDecoded unless the ten glyphs read as the ten digits clearly.
    """
    chars, cost = _cost_matrix(font_bytes)
    reading, total = _assign(cost)
    for char, row, digit in zip(chars, cost, reading):
        if row[digit] > MAX_COST:
            raise FontNotDecoded(
                f"glyph {_glyph_name(char)} matches no digit well "
                f"(best {min(row):.2f}, read as {digit} at {row[digit]:.2f}, limit {MAX_COST})")
    runner_up, second = _second_best(cost, reading)
    if second - total < MIN_GAP:
        swapped = ", ".join(f"{_glyph_name(c)} {a}->{b}"
                            for c, a, b in zip(chars, reading, runner_up) if a != b)
        raise FontNotDecoded(
            f"ambiguous digits: reading {swapped} costs only {second - total:.3f} more "
            f"(need {MIN_GAP})")
    return {char: str(digit) for char, digit in zip(chars, reading)}


def decode_text(text: str, digits: dict[str, str]) -> str:
    """Replace the private-use characters of `text` (HTML already unescaped) by their digits.

    Other characters ("." and the like) are kept. A private-use character the mapping
    lacks raises FontNotDecoded: the page and the font do not belong together.
    """
    out = []
    for char in text:
        if PRIVATE_USE_FIRST <= ord(char) <= PRIVATE_USE_LAST:
            if char not in digits:
                raise FontNotDecoded(f"U+{ord(char):04X} is not one of the font's digits")
            out.append(digits[char])
        else:
            out.append(char)
    return "".join(out)


def _glyph_name(char: str) -> str:
    return f"uni{ord(char):04X}"


def _cost_matrix(font_bytes: bytes) -> tuple[list[str], list[list[float]]]:
    """The font's digit characters and their 10x10 costs (1 - IoU) against digits 0..9."""
    chars, outlines = _digit_outlines(font_bytes)
    rasters = _rasterise(outlines)
    references, ref_digits = _references()
    inter = np.minimum(rasters[:, None, :], references[None, :, :]).sum(axis=2)
    union = np.maximum(rasters[:, None, :], references[None, :, :]).sum(axis=2)
    per_reference = 1.0 - inter / union
    # Each digit's cost is its best reference (several fonts draw each digit).
    cost = np.full((len(chars), 10), np.inf)
    for digit in range(10):
        cost[:, digit] = per_reference[:, ref_digits == digit].min(axis=1)
    return chars, cost.tolist()


def _digit_outlines(font_bytes: bytes) -> tuple[list[str], list[list[np.ndarray]]]:
    """The drawn private-use glyphs of the font, as flattened contours, by character."""
    if not font_bytes:
        raise FontNotDecoded("not a font: no bytes")
    try:
        font = TTFont(io.BytesIO(bytes(font_bytes)), lazy=True)
        if "post" in font:
            # Glyph names are not needed, and Maoyan's post table is slightly off
            # (fontTools warns about it on every font).
            del font["post"]
        cmap = font.getBestCmap() or {}
        private = {cp: name for cp, name in cmap.items() if PRIVATE_USE_FIRST <= cp <= PRIVATE_USE_LAST}
        if len(set(private.values())) > _MAX_PRIVATE_GLYPHS:
            raise FontNotDecoded(f"{len(set(private.values()))} private-use glyphs, expected 10")
        glyph_set = font.getGlyphSet()
        drawn: dict[str, list[np.ndarray]] = {}
        for cp in sorted(private):
            pen = _FlattenPen()
            glyph_set[private[cp]].draw(pen)
            if pen.is_drawn():
                drawn[chr(cp)] = pen.contours
    except FontNotDecoded:
        raise
    except ImportError as exc:  # WOFF2 without brotli
        raise FontNotDecoded(f"font needs a missing module: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes fail in many ways inside fontTools
        raise FontNotDecoded(f"not a font: {type(exc).__name__}: {exc}") from None
    if len(drawn) != 10:
        raise FontNotDecoded(f"{len(drawn)} digit glyphs, expected 10")
    glyph_ids = {private[ord(c)] for c in drawn}
    if len(glyph_ids) != 10:
        raise FontNotDecoded(f"10 digit code points share {len(glyph_ids)} glyphs")
    return list(drawn), list(drawn.values())


class _FlattenPen(BasePen):
    """Collects a glyph's contours as polygons: quadratic and cubic curves cut in straight pieces."""

    def __init__(self) -> None:
        super().__init__(glyphSet=None)
        self.contours: list[np.ndarray] = []
        self._points: list[tuple[float, float]] = []

    def _moveTo(self, pt: tuple[float, float]) -> None:
        self._points = [pt]

    def _lineTo(self, pt: tuple[float, float]) -> None:
        self._points.append(pt)

    def _qCurveToOne(self, pt1: tuple[float, float], pt2: tuple[float, float]) -> None:
        (x0, y0), (x1, y1), (x2, y2) = self._getCurrentPoint(), pt1, pt2
        for i in range(1, _CURVE_STEPS + 1):
            t = i / _CURVE_STEPS
            a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t * t
            self._points.append((a * x0 + b * x1 + c * x2, a * y0 + b * y1 + c * y2))

    def _curveToOne(self, pt1: tuple[float, float], pt2: tuple[float, float],
                    pt3: tuple[float, float]) -> None:
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = self._getCurrentPoint(), pt1, pt2, pt3
        for i in range(1, _CURVE_STEPS + 1):
            t = i / _CURVE_STEPS
            u = 1 - t
            a, b, c, d = u ** 3, 3 * u * u * t, 3 * u * t * t, t ** 3
            self._points.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3))

    def _closePath(self) -> None:
        if len(self._points) > 2:
            self.contours.append(np.array(self._points, dtype=float))
        self._points = []

    _endPath = _closePath  # an open contour is filled as if closed

    def is_drawn(self) -> bool:
        """Something with both a width and a height: empty and flat glyphs are not digits."""
        if not self.contours:
            return False
        points = np.vstack(self.contours)
        return bool(np.all(np.ptp(points, axis=0) > 0))


def _rasterise(glyphs: list[list[np.ndarray]]) -> np.ndarray:
    """Each glyph as a blurred GRID x GRID grey raster, flattened: (len(glyphs), GRID*GRID).

    The glyph is scaled so that its height fills the grid (less a one-cell border) and
    centred horizontally, keeping its proportions: a "1" stays narrow, while the font's
    size, baseline and advance width do not matter. Filled by the nonzero winding rule.
    """
    side = GRID * _SUPERSAMPLE
    rows = np.arange(side) + 0.5
    out = np.empty((len(glyphs), GRID, GRID))
    for n, contours in enumerate(glyphs):
        points = np.vstack(contours)
        (x_min, y_min), (x_max, y_max) = points.min(axis=0), points.max(axis=0)
        scale = (GRID - 2) * _SUPERSAMPLE / (y_max - y_min)
        start = np.empty_like(points)
        start[:, 0] = (points[:, 0] - (x_min + x_max) / 2) * scale + side / 2
        start[:, 1] = (points[:, 1] - y_min) * scale + _SUPERSAMPLE
        end = np.vstack([np.roll(start[a:b], -1, axis=0)
                         for a, b in _spans([len(c) for c in contours])])
        x0, y0, x1, y1 = start[:, 0:1], start[:, 1:2], end[:, 0:1], end[:, 1:2]
        up = (y0 <= rows) & (rows < y1)
        down = (y1 <= rows) & (rows < y0)
        crossing = up | down
        edge, row = np.nonzero(crossing)
        x = (x0 + (rows - y0) * (x1 - x0) / np.where(y1 == y0, 1.0, y1 - y0))[edge, row]
        # A crossing at x counts for every sub-cell whose centre lies left of it.
        column = np.clip(np.ceil(x - 0.5), 0, side).astype(int)
        sign = np.where(up[edge, row], 1.0, -1.0)
        diff = np.bincount(row * (side + 1) + column, weights=sign, minlength=side * (side + 1))
        winding = np.cumsum(diff.reshape(side, side + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:]
        filled = (np.abs(winding) > 0.5).astype(float)
        out[n] = filled.reshape(GRID, _SUPERSAMPLE, GRID, _SUPERSAMPLE).mean(axis=(1, 3))
    for _ in range(_BLUR_PASSES):
        padded = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        out = (padded[:, :-2, 1:-1] + 2 * padded[:, 1:-1, 1:-1] + padded[:, 2:, 1:-1]) / 4
        padded = np.pad(out, ((0, 0), (1, 1), (1, 1)))
        out = (padded[:, 1:-1, :-2] + 2 * padded[:, 1:-1, 1:-1] + padded[:, 1:-1, 2:]) / 4
    return out.reshape(len(glyphs), GRID * GRID)


def _spans(lengths: list[int]) -> list[tuple[int, int]]:
    """[3, 2] -> [(0, 3), (3, 5)]: each contour's rows in the stacked point array."""
    ends = np.cumsum(lengths).tolist()
    return list(zip([0] + ends[:-1], ends))


@functools.cache
def _references() -> tuple[np.ndarray, np.ndarray]:
    """The reference digits' rasters (drawn once per process) and the digit of each row."""
    data = json.loads(_REFERENCE.read_text(encoding="utf-8"))
    glyphs, digits = [], []
    for font in data["fonts"]:
        for digit, path in sorted(font["digits"].items()):
            pen = _FlattenPen()
            parse_path(path, pen)
            glyphs.append(pen.contours)
            digits.append(int(digit))
    return _rasterise(glyphs), np.array(digits)


def _assign(cost: list[list[float]]) -> tuple[list[int], float]:
    """The one-to-one reading (row -> column) of least total cost, and that cost.

    The Hungarian method with potentials, O(n^3): for 10x10 a few hundred microseconds
    in plain Python, so the decoder needs no scipy.
    """
    n = len(cost)
    u, v = [0.0] * (n + 1), [0.0] * (n + 1)
    owner, way = [0] * (n + 1), [0] * (n + 1)  # owner[column] = row, 1-based; 0 = none
    for row in range(1, n + 1):
        owner[0], column = row, 0
        slack, used = [float("inf")] * (n + 1), [False] * (n + 1)
        while owner[column]:
            used[column] = True
            current, delta, next_column = owner[column], float("inf"), 0
            for j in range(1, n + 1):
                if not used[j]:
                    reduced = cost[current - 1][j - 1] - u[current] - v[j]
                    if reduced < slack[j]:
                        slack[j], way[j] = reduced, column
                    if slack[j] < delta:
                        delta, next_column = slack[j], j
            for j in range(n + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    slack[j] -= delta
            column = next_column
        while column:
            previous = way[column]
            owner[column] = owner[previous]
            column = previous
    reading = [0] * n
    for j in range(1, n + 1):
        reading[owner[j] - 1] = j - 1
    return reading, sum(cost[i][reading[i]] for i in range(n))


def _second_best(cost: list[list[float]], best: list[int]) -> tuple[list[int], float]:
    """The best complete reading that differs from `best`, and its cost (Murty's split).

    Any other reading leaves out at least one pair of `best`; forbidding each pair in
    turn and taking the cheapest result finds it.
    """
    forbidden = 1e6  # finite, so the potentials stay finite
    results = []
    for row, column in enumerate(best):
        changed = [list(r) for r in cost]
        changed[row][column] = forbidden
        results.append(_assign(changed))
    return min(results, key=lambda result: result[1])
