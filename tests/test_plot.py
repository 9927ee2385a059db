"""history --plot: the file format its name asks for, and a title that names the movie with or
without a CJK font installed, drawn without a missing glyph."""
from __future__ import annotations

import warnings

import matplotlib
import pytest

from crawler import plot
from crawler.plot import PlotError, check_plot_path, choose_cjk_font, find_cjk_font, plot_history
from tests.helpers import run_cli

ROWS = [
    {"run_id": 1, "started": "2026-11-28T08:10:08", "site": "maoyan", "board": "top100", "rank": 5,
     "score": 9.4, "title": "霸王别姬", "movie_id": "1203"},
    {"run_id": 2, "started": "2026-11-29T08:10:12", "site": "maoyan", "board": "top100", "rank": 4,
     "score": 9.4, "title": "霸王别姬", "movie_id": "1203"},
]
MAGIC = {"png": lambda data: data.startswith(b"\x89PNG\r\n\x1a\n"),
         "svg": lambda data: b"<svg" in data[:2000],
         "pdf": lambda data: data.startswith(b"%PDF")}


def svg_text(rows, path) -> str:
    """The chart as SVG with its text kept as text, so the title can be read back."""
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        plot_history(rows, str(path))
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["rank.png", "rank.svg", "rank.pdf", "RANK.PNG", "Rank.Svg"])
def test_the_file_is_in_the_format_its_name_asks_for(tmp_path, name):
    path = tmp_path / name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_history(ROWS, str(path))
    assert MAGIC[name.rsplit(".", 1)[1].lower()](path.read_bytes())
    assert not [w for w in caught if "missing from font" in str(w.message)]


@pytest.mark.parametrize("name", ["rank.gif", "rank.jpg", "rank", "rank.png.txt", "rank."])
def test_other_names_are_refused_and_nothing_is_written(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(PlotError, match=r"^cannot draw .*: the plot's file name must end in \.png, \.svg or \.pdf$"):
        check_plot_path(str(path))
    with pytest.raises(PlotError):
        plot_history(ROWS, str(path))
    assert list(tmp_path.iterdir()) == []


def test_check_plot_path_names_the_format():
    assert [check_plot_path(name) for name in ("a.png", "b.SVG", "dir.v2/c.Pdf")] == ["png", "svg", "pdf"]


def test_the_simplified_chinese_font_is_chosen_among_several():
    assert choose_cjk_font(["Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK KR"]) == "Noto Sans CJK SC"
    assert choose_cjk_font(["Noto Sans CJK TC", "DejaVu Sans", "WenQuanYi Micro Hei"]) == "WenQuanYi Micro Hei"
    assert choose_cjk_font(["Noto Serif CJK SC", "Noto Sans Mono CJK SC", "Noto Sans CJK SC"]) == "Noto Sans CJK SC"
    assert choose_cjk_font(["DejaVu Sans", "Noto Sans CJK JP"]) == "Noto Sans CJK JP"  # one .ttc face only


def test_no_cjk_font_among_latin_ones():
    assert choose_cjk_font(["DejaVu Sans"]) is None
    assert choose_cjk_font(["DejaVu Sans", "STIXGeneral", "cmr10", "Last Resort High-Efficiency"]) is None
    assert choose_cjk_font([]) is None


def test_the_title_names_the_movie_in_a_cjk_font(tmp_path):
    font = find_cjk_font()
    if font is None:
        pytest.skip("no CJK font installed (e.g. apt-get install fonts-noto-cjk)")
    svg = svg_text(ROWS, tmp_path / "rank.svg")
    assert "霸王别姬 (id 1203): rank by run" in svg
    assert font in svg  # the title's font-family


def test_without_a_cjk_font_the_title_names_the_movie_by_id(tmp_path, monkeypatch):
    monkeypatch.setattr(plot, "find_cjk_font", lambda: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svg = svg_text(ROWS, tmp_path / "rank.svg")
    assert "movie id 1203: rank by run" in svg
    assert "maoyan top100 (id 1203)" in svg  # the legend
    assert "霸王别姬" not in svg
    assert not [w for w in caught if "missing from font" in str(w.message)]


def test_without_a_cjk_font_a_title_the_fallback_font_draws_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(plot, "find_cjk_font", lambda: None)
    rows = [{**row, "title": "Amélie", "movie_id": "42"} for row in ROWS]
    assert "Amélie (id 42): rank by run" in svg_text(rows, tmp_path / "rank.svg")


def test_a_movie_on_two_sites_is_named_by_both_ids():
    rows = [*ROWS, {**ROWS[0], "site": "douban", "board": "top250", "movie_id": "1291546"}]
    assert plot.chart_title(rows, [plot.FALLBACK_FONT]) == "movie ids 1203, 1291546: rank by run"


def test_a_cjk_font_installed_after_matplotlib_cached_its_font_list_is_found(monkeypatch):
    """The cache lists the fonts of the day it was built; a font installed since must still be used."""
    from matplotlib import font_manager

    if find_cjk_font() is None:
        pytest.skip("no CJK font installed (e.g. apt-get install fonts-noto-cjk)")
    manager = font_manager.fontManager
    stale = [entry for entry in manager.ttflist if choose_cjk_font([entry.name]) is None]
    monkeypatch.setattr(manager, "ttflist", stale)
    assert choose_cjk_font([entry.name for entry in manager.ttflist]) is None
    assert find_cjk_font() is not None


def test_history_plot_through_the_cli_writes_svg_without_warnings(tmp_path):
    db = tmp_path / "movies.db"
    crawled = run_cli("crawl.toml", "--offline", "--db", str(db), "-q")
    assert crawled.returncode == 0, crawled.stderr
    out = tmp_path / "out.svg"
    result = run_cli("history", "霸王别姬", "--db", str(db), "--plot", str(out))
    assert result.returncode == 0, result.stderr
    assert b"<svg" in out.read_bytes()[:2000]
    assert "Warning" not in result.stderr and "missing from font" not in result.stderr
    assert f"plot written to {out}" in result.stderr
