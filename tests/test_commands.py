"""The read commands, as subprocesses, over a database made by two real offline crawls."""
from __future__ import annotations

import csv
import io
import json
import os
import pty
import shutil
import struct
import subprocess
import sys

import pytest

from crawler.fetch import FetchTask
from crawler.pipeline import PageOutcome
from crawler.progress import Progress
from tests.helpers import OFFLINE, REPO, changed_fixtures, console_script, crawl_quietly, rows, run_cli


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("commands")
    path = crawl_quietly(folder / "movies.db")
    return crawl_quietly(path, changed_fixtures(folder / "fixtures"))


def cli(db, *args, expect=0):
    result = run_cli(*args, "--db", str(db))
    assert result.returncode == expect, result.stderr
    return result


def as_json(db, *args):
    return json.loads(cli(db, *args, "--format", "json").stdout)


def test_runs_newest_first(db):
    runs = as_json(db, "runs")
    assert [(r["id"], r["status"], r["records"], r["pages_ok"]) for r in runs] == [
        (2, "ok", OFFLINE.records, OFFLINE.pages), (1, "ok", OFFLINE.records, OFFLINE.pages)]
    table = cli(db, "runs").stdout.splitlines()
    assert table[0].split()[:4] == ["id", "started", "finished", "status"] and table[2].split()[0] == "2"
    parsed = list(csv.DictReader(io.StringIO(cli(db, "runs", "--format", "csv").stdout)))
    assert [r["id"] for r in parsed] == ["2", "1"]


def test_stats_of_a_run_and_the_new_entries_it_brought(db):
    [latest] = as_json(db, "stats")
    assert latest["run"] == 2 and latest["records"] == OFFLINE.records and latest["new entries"] == 1  # 狮子王
    assert latest["pages ok"] == OFFLINE.pages and latest["failed"] == 0 and latest["pages/s"] > 0
    [first] = as_json(db, "stats", "1")
    assert first["run"] == 1 and first["new entries"] == 0
    assert "new entries" in cli(db, "stats", "1").stdout


def test_top_shows_a_board_as_it_stood(db):
    now = as_json(db, "top", "hot")
    before = as_json(db, "top", "hot", "--run", "1")
    assert [r["title"] for r in before[:3]] == ["哪吒之魔童降世", "千与千寻", "银河补习班"]
    assert [r["title"] for r in now[:3]] == ["哪吒之魔童降世", "银河补习班", "千与千寻"]
    assert now[0]["score"] == 9.8 and before[0]["score"] == 9.6
    table = cli(db, "top", "top250", "--limit", "3").stdout.splitlines()
    assert len(table) == 5 and "肖申克的救赎" in table[2] and "1994" in table[2]


def test_history_of_a_movie_across_runs_and_its_plot(db, tmp_path):
    history = as_json(db, "history", "银河补习班", "--board", "hot")
    assert [(h["run_id"], h["rank"]) for h in history] == [(1, 3), (2, 2)]
    by_id = as_json(db, "history", history[0]["movie_id"])
    assert [h["rank"] for h in by_id] == [3, 2]
    png = tmp_path / "rank.png"
    result = cli(db, "history", "霸王别姬", "--plot", str(png))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (900, 500)
    assert f"plot written to {png}" in result.stderr


def test_diff_names_what_entered_left_moved_and_rescored(db):
    changes = as_json(db, "diff", "hot")
    summary = {(c["change"], c["title"]): (c["from_rank"], c["to_rank"], c["move"]) for c in changes}
    assert summary == {
        ("score", "哪吒之魔童降世"): (1, 1, None),
        ("up", "银河补习班"): (3, 2, 1),
        ("down", "千与千寻"): (2, 3, -1),
        ("entered", "狮子王"): (None, 10, None),
        ("left", "爱宠大机密2"): (10, None, None),
    }
    assert next(c for c in changes if c["change"] == "score")["to_score"] == 9.8
    assert as_json(db, "diff") == changes  # the other boards did not change
    assert as_json(db, "diff", "--from", "1", "--to", "1") == []


def test_search_titles_and_actors(db):
    found = as_json(db, "search", "张国荣")
    assert {"霸王别姬", "阿飞正传"} <= {r["title"] for r in found}
    assert {r["site"] for r in found} == {"maoyan", "douban"}
    assert {r["title"] for r in as_json(db, "search", "千寻")} == {"千与千寻"}  # two characters
    assert as_json(db, "search", "no such movie at all") == []


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_export_parses_back(db, tmp_path, fmt):
    out = tmp_path / f"run1.{fmt}"
    result = cli(db, "export", "--format", fmt, "--run", "1", "--out", str(out))
    text = out.read_text(encoding="utf-8")
    records = {"csv": lambda: list(csv.DictReader(io.StringIO(text))),
               "json": lambda: json.loads(text),
               "jsonl": lambda: [json.loads(line) for line in text.splitlines()]}[fmt]()
    assert len(records) == OFFLINE.records and f"{OFFLINE.records} records written" in result.stderr
    first = records[0]
    assert first["board"] == "top250" and first["title"] == "肖申克的救赎" and str(first["run_id"]) == "1"


def test_export_to_standard_output(db):
    lines = cli(db, "export", "--format", "jsonl").stdout.splitlines()
    assert len(lines) == OFFLINE.records and all(json.loads(line)["run_id"] == 2 for line in lines)


def test_compare_joins_the_two_boards_on_title_and_year(db):
    both = as_json(db, "compare")
    shawshank = next(r for r in both if r["title"] == "肖申克的救赎")
    assert (shawshank["maoyan_rank"], shawshank["douban_rank"], shawshank["difference"]) == (2, 1, 1)
    assert len(both) > 20 and len({r["title"] for r in both}) == len(both)


def test_reparse_rebuilds_a_runs_records_from_its_stored_pages(tmp_path):
    path = tmp_path / "m.db"
    assert run_cli("crawl.toml", "--offline", "--db", str(path), "-q").returncode == 0
    import sqlite3

    with sqlite3.connect(path) as conn:  # what a parser bug might have stored
        conn.execute("update records set title = 'garbled', score = null where run_id = 1 and board = 'hot'")
    result = run_cli("reparse", "1", "--db", str(path))
    assert result.returncode == 0, result.stderr
    pages, records = OFFLINE.pages, OFFLINE.records
    assert result.stdout.strip() == (f"run 1: {pages} stored pages parsed again, {pages} ok; "
                                     f"records {records} -> {records}")
    hot = rows(path, "select title, score from records where board = 'hot' order by rank")
    assert hot[0] == {"title": "哪吒之魔童降世", "score": 9.6} and not any(r["title"] == "garbled" for r in hot)


def test_record_writes_fixtures_that_replay_to_the_same_records(tmp_path):
    recorded = tmp_path / "recorded"
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    assert run_cli("crawl.toml", "--offline", "--db", str(first), "--record", str(recorded), "-q").returncode == 0
    manifest = json.loads((recorded / "manifest.json").read_text(encoding="utf-8"))
    # the board pages, each site's robots.txt, and the fonts the pages draw digits with
    assert sum(len(pages) for pages in manifest.values()) == OFFLINE.pages + OFFLINE.robots + OFFLINE.fonts
    assert sum(key.startswith("//vfile.meituan.net/") for key in manifest["maoyan"]) == OFFLINE.fonts
    assert manifest["maoyan"]["/board/4?offset=10"]["file"] == "maoyan/board_4_offset_10.html"
    assert run_cli("crawl.toml", "--fixtures", str(recorded), "--db", str(second), "-q").returncode == 0
    columns = "site, board, rank, movie_id, title, score, votes, release_date, obfuscated"
    query = f"select {columns} from records order by site, board, rank"
    assert rows(first, query) == rows(second, query)


def test_verbose_names_every_page_and_quiet_only_the_summary(tmp_path):
    loud = run_cli("crawl.toml", "--offline", "--db", str(tmp_path / "v.db"), "-v")
    assert loud.stderr.count("      ok  https://") == OFFLINE.pages
    quiet = run_cli("crawl.toml", "--offline", "--db", str(tmp_path / "q.db"), "-q")
    assert quiet.stderr.splitlines()[0].startswith(f"run 1 ok: {OFFLINE.pages} pages ok")
    assert "https://" not in quiet.stderr


def test_a_terminal_gets_a_progress_bar(tmp_path):
    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="120")
    process = subprocess.Popen([sys.executable, "-m", "crawler", "crawl.toml", "--offline", "--db",
                                str(tmp_path / "t.db")], cwd=REPO, env=env, stdin=follower, stdout=follower,
                               stderr=follower)
    os.close(follower)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        assert process.wait(timeout=120) == 0
        os.close(leader)
    text = seen.decode("utf-8", "replace")
    assert f"{OFFLINE.pages}/{OFFLINE.pages}" in text and "page/s" in text and "records=" in text



class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_bar_draws_the_final_count_however_fast_the_pages_came():
    terminal = Terminal()
    progress = Progress(stream=terminal)
    progress.add_pages(26)
    task = FetchTask("maoyan", "hot", "https://www.maoyan.com/board/7")
    for _ in range(26):  # far inside tqdm's 0.1 s between redraws
        progress.page(task, PageOutcome(task, "ok", records=[{}] * 10), True)
    progress.close()
    assert "26/26" in terminal.getvalue() and "records=260" in terminal.getvalue()

@pytest.mark.parametrize("args, message", [
    (["top", "nope"], "unknown board 'nope'"),
    (["top", "hot", "--run", "9"], "no run 9 in this database"),
    (["history", "no such film"], "no movie titled or with id 'no such film'"),
    (["stats", "7"], "no run 7 in this database"),
    (["diff", "--to", "1"], "nothing to compare run 1 with"),
    (["history", "霸王别姬", "--plot", "/no/such/folder/x.png"], "cannot write /no/such/folder/x.png"),
    (["export", "--format", "csv", "--out", "/no/such/folder/x.csv"], "cannot write /no/such/folder/x.csv"),
    (["export", "--format", "xml"], "invalid choice: 'xml'"),
    (["top"], "the following arguments are required: board"),
])
def test_bad_arguments_are_one_line_and_exit_2(db, args, message):
    result = cli(db, *args, expect=2)
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_database_is_one_line_and_exit_2(tmp_path):
    result = run_cli("runs", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 2 and "no database at" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("command", ["runs", "stats", "top", "history", "diff", "search", "export", "compare",
                                     "reparse"])
def test_every_command_explains_itself(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "example: crawler " + command in result.stdout


def test_datasette_shows_labels_and_facets(db):
    datasette = console_script("datasette", "datasette")  # this environment's, whatever PATH says
    result = subprocess.run([str(datasette), str(db), "-m", str(REPO / "datasette.json"), "--get",
                             "/movies/records.json?_size=1&board=hot&_labels=on&_shape=objects"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert set(page["facet_results"]) >= {"board", "run_id", "site"}
    assert page["filtered_table_rows_count"] == 2 * OFFLINE.records_of("maoyan", "hot")  # two runs
    run = page["rows"][0]["run_id"]
    assert run["value"] in (1, 2) and run["label"].startswith("20")  # labelled with its start time


@pytest.mark.parametrize("command", [["runs"], ["top", "hot"]])
def test_a_database_in_a_read_only_folder_is_read_or_refused_for_what_it_is(db, tmp_path, read_only, command):
    """A crawler database whose folder cannot be written (published on read-only media, say):
    a read command reads it, or says in one line why it cannot; never that it is not a
    crawler database. Nothing in the folder changes."""
    folder = tmp_path / "published"
    folder.mkdir()
    copy = folder / "movies.db"
    shutil.copyfile(db, copy)
    read_only(folder)
    result = run_cli(*command, "--db", str(copy))
    assert "not a crawler database" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if result.returncode == 0:
        assert result.stdout == run_cli(*command, "--db", str(db)).stdout
    else:
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and str(copy) in result.stderr
    assert [path.name for path in folder.iterdir()] == ["movies.db"] and copy.read_bytes() == db.read_bytes()
