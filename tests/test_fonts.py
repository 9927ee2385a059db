"""Maoyan's font-drawn numbers, end to end: fetched with the page, decoded by shape, stored, re-read."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from crawler.fetch import font_url
from tests.helpers import FIXTURES, OFFLINE, REPO, crawl_quietly, rows, run_cli

EXPECTED = json.loads((FIXTURES / "maoyan" / "fonts" / "expected.json").read_text(encoding="utf-8"))["pages"]
NUMBERS = ("month_wish", "total_wish", "realtime_box_office", "total_box_office")


def stored_numbers(db: Path, run_id: int = 1) -> list[str]:
    """Every font-drawn number of the run, page by page in the fixtures' order, as the page printed it."""
    found = []
    for board, page in (("cn-box-office", "board1.html"), ("most-wanted", "board6_offset0.html"),
                        ("most-wanted", "board6_offset10.html"), ("most-wanted", "board6_offset20.html")):
        url_end = {"board1.html": "/board/1", "board6_offset0.html": "offset=0",
                   "board6_offset10.html": "offset=10", "board6_offset20.html": "offset=20"}[page]
        found.append((page, rows(db, f"select {', '.join(NUMBERS)}, obfuscated from records where run_id = ? "
                                     "and board = ? and page_url like ? order by rank", run_id, board, f"%{url_end}")))
    return found


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Path:
    return crawl_quietly(tmp_path_factory.mktemp("fonts") / "movies.db")


def printed(value: float | int | None) -> str | None:
    return None if value is None else (str(value) if isinstance(value, int) else f"{value:.2f}")


def test_the_offline_crawl_stores_every_font_drawn_number(offline):
    assert rows(offline, "select count(*) n from records where obfuscated is not null") == [{"n": 0}]
    for page, records in stored_numbers(offline):
        shown = [printed(r[name]) for r in records for name in NUMBERS if r[name] is not None]
        expected = EXPECTED[page]["numbers"]
        # Each number the font draws is stored as that number (others on the page are plain digits).
        assert all(number in shown for number in expected), (page, expected, shown)
    assert rows(offline, "select count(*) n from fonts") == [{"n": OFFLINE.fonts}]  # board2 draws nothing with its font
    assert rows(offline, "select count(*) n from page_html where font_hash is not null") == [{"n": OFFLINE.font_pages}]
    assert rows(offline, "select count(*) n from pages where error is not null") == [{"n": 0}]


def test_a_font_that_cannot_be_read_stores_null_never_a_guess(tmp_path):
    folder = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, folder)
    (folder / "maoyan" / "fonts" / "9d35690d.woff").write_bytes(b"wOFF" + bytes(200))
    db = tmp_path / "m.db"
    assert run_cli("crawl.toml", "--fixtures", str(folder), "--db", str(db), "-q").returncode == 0
    box = rows(db, "select realtime_box_office, total_box_office, obfuscated from records "
                   "where board = 'cn-box-office' order by rank")
    assert box[0] == {"realtime_box_office": None, "total_box_office": None,
                      "obfuscated": "realtime_box_office,total_box_office"}
    assert box[1]["realtime_box_office"] == 3987.12  # plain digits on the page are still read
    [page] = rows(db, "select outcome, error from pages where url like '%/board/1'")
    assert page["outcome"] == "ok" and page["error"].startswith(
        "font-drawn numbers not read: the font https://vfile.meituan.net/colorstone/9d35690d.woff was not decoded (")
    wanted = rows(db, "select count(*) n from records where board = 'most-wanted' and obfuscated is null")
    assert wanted == [{"n": OFFLINE.records_of("maoyan", "most-wanted")}]  # the other fonts were read


def test_fonts_only_from_the_sites_hosts(tmp_path):
    config = tmp_path / "crawl.toml"
    config.write_text('[sites.maoyan]\nboards = ["cn-box-office"]\nfont_hosts = ["fonts.example.com"]\n',
                      encoding="utf-8")
    db = tmp_path / "m.db"
    assert run_cli(str(config), "--offline", "--db", str(db), "-q").returncode == 0
    assert rows(db, "select count(*) n from fonts") == [{"n": 0}]
    [page] = rows(db, "select error from pages")
    assert page["error"] == ("font-drawn numbers not read: the font https://vfile.meituan.net/colorstone/9d35690d.woff "
                             "its host vfile.meituan.net is not among the site's font_hosts")
    hidden = rows(db, "select obfuscated from records where obfuscated is not null")
    assert hidden and {r["obfuscated"] for r in hidden} <= {
        "realtime_box_office", "total_box_office", "realtime_box_office,total_box_office"}


def test_reparse_reads_the_digits_again_from_the_stored_font(offline, tmp_path):
    db = tmp_path / "movies.db"
    shutil.copyfile(offline, db)
    conn = sqlite3.connect(db)
    before = conn.execute("select month_wish, total_wish from records where board = 'most-wanted' order by rank").fetchall()
    conn.execute("update records set month_wish = null, total_wish = null, obfuscated = 'month_wish,total_wish' "
                 "where board = 'most-wanted'")  # as an older decoder might have left them
    conn.commit()
    conn.close()
    result = run_cli("reparse", "1", "--db", str(db))
    assert result.returncode == 0, result.stderr
    after = rows(db, "select month_wish, total_wish, obfuscated from records where board = 'most-wanted' order by rank")
    assert [(r["month_wish"], r["total_wish"]) for r in after] == before
    assert {r["obfuscated"] for r in after} == {None}


def test_record_keeps_the_fonts_and_a_replay_reads_them(offline, tmp_path):
    recorded = tmp_path / "recorded"
    db = tmp_path / "a.db"
    assert run_cli("crawl.toml", "--offline", "--record", str(recorded), "--db", str(db), "-q").returncode == 0
    manifest = json.loads((recorded / "manifest.json").read_text(encoding="utf-8"))
    fonts = {key: entry for key, entry in manifest["maoyan"].items() if key.startswith("//")}
    assert len(fonts) == 4 and all((recorded / entry["file"]).read_bytes()[:4] == b"wOFF" for entry in fonts.values())
    replay = tmp_path / "b.db"
    assert run_cli("crawl.toml", "--fixtures", str(recorded), "--db", str(replay), "-q").returncode == 0
    assert stored_numbers(replay) == stored_numbers(offline)


def test_a_page_names_the_font_it_draws_digits_with():
    page = (FIXTURES / "maoyan" / "board1.html").read_bytes()
    assert font_url(page, "https://www.maoyan.com/board/1") == "https://vfile.meituan.net/colorstone/9d35690d.woff"
    board2 = (FIXTURES / "maoyan" / "board2.html").read_bytes()  # declares a font, draws nothing with it
    assert font_url(board2, "https://www.maoyan.com/board/2") is None
    real = REPO.parent / "shared" / "realsite" / "maoyan" / "board4_top100_2017-12-22_offset00_hansonhex.html"
    if real.is_file():  # the stonefont @font-face is declared but not used on this board
        assert font_url(real.read_bytes(), "https://maoyan.com/board/4") is None


def test_the_font_comes_over_http_with_the_page(tmp_path, server):
    """A real server: the page names its font on the server's own host, allowed by font_hosts."""
    from tests.helpers import config, fixture_pages

    status, headers, body = fixture_pages("maoyan")["/board/1"]
    server.routes["/board/1"] = (status, headers, body.replace(b"//vfile.meituan.net/colorstone/",
                                                                 server.url.encode() + b"/fonts/"))
    font = (FIXTURES / "maoyan" / "fonts" / "9d35690d.woff").read_bytes()
    server.routes["/fonts/9d35690d.woff"] = (200, {"Content-Type": "font/woff"}, font)
    db = tmp_path / "m.db"
    result = run_cli(str(config(tmp_path, server, maoyan=("cn-box-office",), font_hosts=("127.0.0.1",))),
                     "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert server.count("/fonts/9d35690d.woff") == 1
    top = rows(db, "select realtime_box_office, total_box_office, obfuscated from records order by rank limit 1")
    assert top == [{"realtime_box_office": 9704.62, "total_box_office": 42.57, "obfuscated": None}]
