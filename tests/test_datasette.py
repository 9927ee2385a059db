"""datasette.json against a real database: two offline crawls, the second with 热映口碑榜 changed.

Datasette runs in this process (its ASGI client, no server, no browser). The canned queries are
checked against the read commands of the CLI, which say what a board, a history and a diff are.
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
from html.parser import HTMLParser

import pytest

from tests.helpers import FIXTURES, OFFLINE, REPO, changed_fixtures, crawl_quietly, rows, run_cli

datasette_app = pytest.importorskip("datasette.app")

METADATA = json.loads((REPO / "datasette.json").read_text(encoding="utf-8"))
QUERIES = METADATA["databases"]["movies"]["queries"]


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("datasette")
    path = folder / "movies.db"  # the metadata is keyed by the database's name, "movies"
    unreadable = folder / "unreadable-font"  # 最受期待榜's first page with a font that cannot be read
    shutil.copytree(FIXTURES, unreadable)
    (unreadable / "maoyan" / "fonts" / "71106919.woff").write_bytes(b"wOFF and then nothing a font has")
    first = run_cli("crawl.toml", "--fixtures", str(unreadable), "--db", str(path), "-q")
    assert first.returncode == 0, first.stderr
    second = run_cli("crawl.toml", "--fixtures", str(changed_fixtures(folder / "fixtures")), "--db", str(path), "-q")
    assert second.returncode == 0, second.stderr
    return path


def get(db, path):
    """GET one path from a Datasette serving `db` with datasette.json, in this process."""
    async def request():
        ds = datasette_app.Datasette([str(db)], metadata=METADATA)
        await ds.invoke_startup()
        return await ds.client.get(path)
    return asyncio.run(request())


def query(db, name, **params):
    """The rows of a canned query as a list of dicts, every parameter given (empty when not named)."""
    args = "&".join(f"{key}={value}" for key, value in params.items())
    response = get(db, f"/movies/{name}.json?_shape=array&{args}")
    assert response.status_code == 200, response.text
    return response.json()


def cli_json(db, *args):
    result = run_cli(*args, "--db", str(db), "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_metadata_loads_with_every_query_titled_described_and_read_only(db):
    listed = get(db, "/movies.json").json()
    assert {q["name"]: q["title"] for q in listed["queries"]} == {
        "board_in_run": "A board as it stood in a run",
        "movie_history": "One movie's history",
        "changes_between_runs": "What changed between two runs",
    }
    for name, spec in QUERIES.items():
        assert spec["title"] and spec["description"], name
        assert not spec.get("write"), name
        assert re.match(r"\s*(select|with)\b", spec["sql"], re.I), name
        # The form asks for exactly the parameters the SQL uses.
        assert set(spec["params"]) == set(re.findall(r":(\w+)", spec["sql"])), name
    assert [q["params"] for q in QUERIES.values()] == [["board", "run"], ["movie"], ["from_run", "to_run", "board"]]
    hidden = {t["name"] for t in listed["tables"] if t["hidden"]}
    assert "page_html" in hidden and "records" not in hidden


def test_a_board_as_it_stood_in_a_run(db):
    board = query(db, "board_in_run", board="top100", run=1)
    assert [r["rank"] for r in board] == list(range(1, OFFLINE.records_of("maoyan", "top100") + 1))
    assert all(r["title"] and isinstance(r["score"], float) for r in board)
    assert {r["run"] for r in board} == {1} and {r["board"] for r in board} == {"top100"}
    cli = cli_json(db, "top", "top100", "--run", "1")
    assert [(r["rank"], r["title"], r["score"]) for r in board] == [(r["rank"], r["title"], r["score"]) for r in cli]
    assert board[0]["title"] == "我不是药神" and board[0]["score"] == 9.6

    # No run: the latest one that has the board, where 热映口碑榜 had changed.
    hot = query(db, "board_in_run", board="hot", run="")
    assert {r["run"] for r in hot} == {2}
    assert [r["title"] for r in hot] == [r["title"] for r in cli_json(db, "top", "hot")]
    assert [r["title"] for r in hot[:3]] == ["哪吒之魔童降世", "银河补习班", "千与千寻"] and hot[0]["score"] == 9.8
    assert [r["title"] for r in query(db, "board_in_run", board="hot", run=1)[:3]] == ["哪吒之魔童降世", "千与千寻", "银河补习班"]

    # No board: every board of the run, every record.
    assert len(query(db, "board_in_run", board="", run=2)) == OFFLINE.records


def test_the_boards_own_numbers_say_what_the_site_hid(db):
    top250 = query(db, "board_in_run", board="top250", run=1)
    stored = rows(db, "select rank, year, votes from records where run_id = 1 and board = 'top250' order by rank")
    assert [r["numbers"] for r in top250] == [f"{s['year']} · {s['votes']:,} ratings" for s in stored]

    wanted = query(db, "board_in_run", board="most-wanted", run=1)
    stored = rows(db, "select rank, month_wish, total_wish, obfuscated from records "
                      "where run_id = 1 and board = 'most-wanted' order by rank")
    assert len(wanted) == len(stored) == OFFLINE.records_of("maoyan", "most-wanted")
    for shown, record in zip(wanted, stored):
        hidden = (record["obfuscated"] or "").split(",")
        month = "hidden" if "month_wish" in hidden else f"{record['month_wish']:,}"
        total = "hidden" if "total_wish" in hidden else f"{record['total_wish']:,}"
        assert shown["numbers"] == f"want to see: {month} this month, {total} in all", shown
    assert "want to see: hidden this month" in wanted[0]["numbers"]  # its font could not be read
    assert any("hidden" not in r["numbers"] for r in wanted)

    box = {r["rank"]: r["numbers"] for r in query(db, "board_in_run", board="cn-box-office", run=1)}
    assert box[2] == "box office: realtime 3987.12万, total 7.06亿"
    assert box[4] == "box office: realtime 1203.45万, total 5.87亿"


def test_one_movies_history(db):
    history = query(db, "movie_history", movie="霸王别姬")
    assert [(r["site"], r["board"], r["run"], r["rank"]) for r in history] == [
        ("douban", "top250", 1, 2), ("douban", "top250", 2, 2), ("maoyan", "top100", 1, 5), ("maoyan", "top100", 2, 5)]
    cli = cli_json(db, "history", "霸王别姬")
    assert [{"run_id": r["run"], **{k: v for k, v in r.items() if k != "run"}} for r in history] == cli

    by_id = query(db, "movie_history", movie="1205909")  # 银河补习班 on Maoyan, 3rd then 2nd
    assert [(r["title"], r["run"], r["rank"]) for r in by_id] == [("银河补习班", 1, 3), ("银河补习班", 2, 2)]
    assert query(db, "movie_history", movie="no such movie") == []


def test_what_changed_between_two_runs(db):
    changes = query(db, "changes_between_runs", from_run=1, to_run=2, board="hot")
    assert [(c["change"], c["title"]) for c in changes] == [
        ("score", "哪吒之魔童降世"), ("up", "银河补习班"), ("down", "千与千寻"), ("entered", "狮子王"), ("left", "爱宠大机密2")]
    assert changes == cli_json(db, "diff", "hot", "--from", "1", "--to", "2")
    # Every board, the last two runs: only 热映口碑榜 changed.
    assert query(db, "changes_between_runs", from_run="", to_run="", board="") == cli_json(db, "diff")
    # Backwards, what entered has left.
    backwards = query(db, "changes_between_runs", from_run=2, to_run=1, board="")
    assert backwards == cli_json(db, "diff", "--from", "2", "--to", "1")
    assert {(c["change"], c["title"]) for c in backwards} >= {("entered", "爱宠大机密2"), ("left", "狮子王")}
    assert query(db, "changes_between_runs", from_run=1, to_run=1, board="") == []


@pytest.fixture(scope="module")
def renamed_db(tmp_path_factory):
    """Two runs where two titles of 热映口碑榜 changed under the same movie ids, one of them moving up."""
    folder = tmp_path_factory.mktemp("datasette-renamed")
    path = crawl_quietly(folder / "movies.db")
    fixtures = folder / "fixtures"
    shutil.copytree(FIXTURES, fixtures)
    page = fixtures / "maoyan" / "board7.html"
    html = page.read_text(encoding="utf-8")
    html = (html.replace('board-index-2">2<', "@@").replace('board-index-3">3<', 'board-index-2">2<')
            .replace("@@", 'board-index-3">3<'))
    html = html.replace("银河补习班", "银河补习班（重映）").replace("烈火英雄", "烈火英雄（纪念版）")
    page.write_text(html, encoding="utf-8")
    second = run_cli("crawl.toml", "--fixtures", str(fixtures), "--db", str(path), "-q")
    assert second.returncode == 0, second.stderr
    return path


def test_a_title_changed_under_the_same_movie_id_is_a_rename_as_the_cli_says(renamed_db):
    changes = query(renamed_db, "changes_between_runs", from_run=1, to_run=2, board="hot")
    assert [(c["change"], c["title"], c["from_title"]) for c in changes] == [
        ("up", "银河补习班（重映）", "银河补习班"), ("down", "千与千寻", None), ("renamed", "烈火英雄（纪念版）", "烈火英雄")]
    assert changes == cli_json(renamed_db, "diff", "hot", "--from", "1", "--to", "2")
    assert query(renamed_db, "changes_between_runs", from_run="", to_run="", board="") == cli_json(renamed_db, "diff")


class Page(HTMLParser):
    """The stylesheets, body classes and table cell classes of a page."""

    def __init__(self, text):
        super().__init__()
        self.stylesheets, self.body, self.cells = [], set(), set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and attrs.get("rel") == "stylesheet":
            self.stylesheets.append(attrs["href"])
        elif tag == "body":
            self.body = set(attrs.get("class", "").split())
        elif tag == "td":
            self.cells.update(attrs.get("class", "").split())


def test_records_and_runs_pages_carry_the_css_that_keeps_them_readable(db):
    css = METADATA["extra_css_urls"]
    for url in css:
        assert url.startswith("data:text/css,")
        # In a data: URL, '#' would end the stylesheet and '%' start an escape.
        assert "#" not in url and "%" not in url and url.count("{") == url.count("}")
    rules = " ".join(css)
    for path, body, cells in [("/movies/records", {"table", "db-movies", "table-records"}, {"col-title", "col-url", "col-run_id"}),
                              ("/movies/runs", {"table", "db-movies", "table-runs"}, {"col-config", "col-started"}),
                              ("/movies/board_in_run?board=top250&run=1", {"query", "db-movies"}, {"col-title", "col-numbers"})]:
        response = get(db, path)
        assert response.status_code == 200, path
        page = Page(response.text)
        assert [url for url in page.stylesheets if url.startswith("data:")] == css, path
        # The selectors name what Datasette really prints.
        assert page.body >= body and page.cells >= cells, path
    # What the rules do: a run's config one line cut short in the table; URLs short words; titles never wrapped.
    assert re.search(r"body\.db-movies\.table\.table-runs td\.col-config \{max-width: 14em; overflow: hidden; "
                     r"text-overflow: ellipsis; white-space: nowrap\}", rules)
    assert "td.col-url a:after {content: 'movie'}" in rules and "td.col-title" in rules
    # The record's own page is not cut: no rule of the table pages applies to body.row.
    assert get(db, "/movies/records/1,douban,top250,1").status_code == 200
