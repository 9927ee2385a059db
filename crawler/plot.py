"""Rank over time as a PNG: the picture of a movie's history."""
from __future__ import annotations

from datetime import datetime
from typing import Any

WIDTH_PX, HEIGHT_PX, DPI = 900, 500, 100


def plot_history(rows: list[dict[str, Any]], path: str) -> None:
    """One line per board, rank 1 at the top, runs along the time axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib import font_manager
    from matplotlib.ticker import MaxNLocator

    # Titles are Chinese: name the movie in the title only when a CJK font can draw it.
    cjk = [f.name for f in font_manager.fontManager.ttflist
           if any(k in f.name for k in ("CJK", "WenQuanYi", "Hei", "Song", "Ming"))]
    if cjk:
        plt.rcParams["font.sans-serif"] = [cjk[0], "DejaVu Sans"]
    figure, axes = plt.subplots(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    try:
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
        axes.set_title(f"{rows[0]['title']}: rank by run" if cjk else "rank by run")
        axes.legend(loc="best")
        axes.grid(alpha=0.3)
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
