"""Rank over time as a PNG, SVG or PDF: the picture of a movie's history.

matplotlib (and numpy with it) is the `plot` extra, imported only here and only to draw, so a
crawl never loads it and an install without it says how to add it.

Titles are Chinese, so the chart's title is drawn with a CJK font when one is installed,
found even when it was installed after matplotlib cached its font list. Without one the
title still names the movie, with text the fallback font can draw, so no glyph is missing.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime
from pathlib import PurePath
from typing import Any

from .errors import CrawlerError

WIDTH_PX, HEIGHT_PX, DPI = 900, 500, 100
PLOT_FORMATS = ("png", "svg", "pdf")
FALLBACK_FONT = "DejaVu Sans"  # bundled with matplotlib: always there
FC_LIST_TIMEOUT = 10.0  # seconds; fontconfig can be slow on its first run, never hang on it

# Family names of fonts that draw Chinese, and the region whose glyph forms each one has.
_CJK = re.compile(r"CJK|WenQuanYi|Source Han|Droid Sans Fallback|AR PL|Sarasa|LXGW|PingFang|Hiragino|"
                  r"YaHei|JhengHei|SimHei|SimSun|Heiti|Songti|Kaiti|FangSong|MingLiU|"
                  r"Noto (Sans|Serif) (SC|TC|HK|JP|KR)\b")
_SIMPLIFIED = re.compile(r"\b(SC|CN|GB|Hans)\b|WenQuanYi|Droid Sans Fallback|LXGW|YaHei|SimHei|SimSun|"
                         r"Heiti|Songti|Kaiti|FangSong")
_OTHER_REGIONS = [  # after Simplified Chinese and fonts of no stated region, in this order
    re.compile(r"\b(TC|HK|TW|Hant)\b|JhengHei|MingLiU"),
    re.compile(r"\bJP\b|Hiragino"),
    re.compile(r"\bKR\b"),
]


class PlotError(CrawlerError):
    """A plot that cannot be drawn as asked; the message says what to do instead."""


def check_plot_path(path: str) -> str:
    """The format the file's extension names; refused before anything is drawn or written."""
    fmt = PurePath(path).suffix[1:].lower()
    if fmt not in PLOT_FORMATS:
        endings = ", ".join(f".{f}" for f in PLOT_FORMATS[:-1]) + f" or .{PLOT_FORMATS[-1]}"
        raise PlotError(f"cannot draw {path}: the plot's file name must end in {endings}")
    return fmt


def require_matplotlib() -> None:
    """Refuse at once, with the command that installs it, when matplotlib is missing: it is an
    extra (`crawler[plot]`), not installed with the crawler."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError("--plot needs matplotlib: pip install 'crawler[plot]' "
                        "(from a checkout: pip install -e '.[plot]')") from None


def choose_cjk_font(names: list[str]) -> str | None:
    """The CJK family to draw the boards' titles with: Simplified Chinese first, then fonts of no
    stated region, Traditional, Japanese, Korean; Sans before Serif and Mono. None when no name
    is a CJK font's."""
    def rank(name: str) -> tuple[int, bool]:
        if _SIMPLIFIED.search(name):
            region = 0
        else:
            region = next((i for i, pattern in enumerate(_OTHER_REGIONS, start=2) if pattern.search(name)), 1)
        return region, bool(re.search(r"\b(Serif|Mono)\b", name))

    candidates = sorted({name for name in names if _CJK.search(name)}, key=lambda name: (rank(name), name))
    return candidates[0] if candidates else None


def _fontconfig_chinese_files() -> list[str] | None:
    """Files fontconfig says draw Chinese; None when fc-list is missing, fails or hangs."""
    if not shutil.which("fc-list"):
        return None
    try:
        listed = subprocess.run(["fc-list", "--format=%{file}\n", ":lang=zh"], capture_output=True,
                                text=True, timeout=FC_LIST_TIMEOUT, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in listed.stdout.splitlines() if line]


def find_cjk_font() -> str | None:
    """The CJK family installed, or None. matplotlib's cached font list predates fonts installed
    since, so when it has none the system's fonts are added to this process (never to the cache)."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    chosen = choose_cjk_font([entry.name for entry in manager.ttflist])
    if chosen:
        return chosen
    known = {entry.fname for entry in manager.ttflist}
    files = _fontconfig_chinese_files()
    for path in dict.fromkeys(font_manager.findSystemFonts() if files is None else files):
        if path not in known:
            try:
                manager.addfont(path)
            except Exception:  # an unreadable font is one font fewer, as matplotlib itself treats it
                continue
    return choose_cjk_font([entry.name for entry in manager.ttflist])


def _drawable(text: str, families: list[str]) -> bool:
    """Whether every character has a glyph in one of the families (matplotlib falls back in order)."""
    from matplotlib import font_manager

    codes: set[int] = set()
    for family in families:
        path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        codes.update(font_manager.get_font(path).get_charmap())
    return all(ord(char) in codes for char in text)


def chart_title(rows: list[dict[str, Any]], families: list[str]) -> str:
    """The movie's title and id when the families can draw the title, else its id alone."""
    title = rows[0]["title"]
    ids = list(dict.fromkeys(str(row["movie_id"]) for row in rows if row["movie_id"]))
    named = f"{'id' if len(ids) == 1 else 'ids'} {', '.join(ids)}"
    if _drawable(title, families):
        return f"{title} ({named}): rank by run" if ids else f"{title}: rank by run"
    return f"movie {named}: rank by run" if ids else f"{ascii(title)}: rank by run"


def plot_history(rows: list[dict[str, Any]], path: str) -> None:
    """One line per board, rank 1 at the top, runs along the time axis, in the format the
    file's extension names. rows: at least one, as query.history returns them."""
    fmt = check_plot_path(path)
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure  # no pyplot: no backend to pick, no global figure state
    from matplotlib.ticker import MaxNLocator

    cjk = find_cjk_font()
    families = [cjk, FALLBACK_FONT] if cjk else [FALLBACK_FONT]
    figure = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    axes = figure.subplots()
    boards: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        boards.setdefault((row["site"], row["board"], row["movie_id"]), []).append(row)
    for (site, board, movie_id), points in boards.items():
        times = [datetime.fromisoformat(p["started"]) for p in points]
        axes.plot(times, [p["rank"] for p in points], marker="o", label=f"{site} {board} (id {movie_id})")
    axes.invert_yaxis()
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes.set_ylabel("rank")
    axes.set_xlabel("run started (UTC)")
    axes.set_title(chart_title(rows, families), fontfamily=families)
    axes.legend(loc="best")
    axes.grid(alpha=0.3)
    figure.savefig(path, format=fmt)
