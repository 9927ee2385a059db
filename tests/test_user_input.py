"""What users type and do, end to end: the real CLI in a subprocess, real database files."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import (FIXTURES, OFFLINE, REPO, blocked_fixtures, config, crawl_quietly, fixture_pages, rows,
                           run_cli, start_gated_crawl, stored_pages, wait_for)

READ_COMMANDS = [
    ("runs",), ("stats",), ("top", "top100"), ("history", "霸王别姬"), ("diff", "--from", "1", "--to", "1"), ("search", "张国荣"),
    ("export", "--format", "csv"), ("compare",), ("pages",),
]


@pytest.fixture(scope="module")
def crawled(tmp_path_factory) -> Path:
    """A database made by one offline crawl, never written by the tests that use it."""
    return crawl_quietly(tmp_path_factory.mktemp("crawled") / "movies.db")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- the database's main file is whole when a writing command exits ----------------------------

def records_in_main_file_alone(db: Path, tmp_path: Path) -> int:
    """Copy only FILE (not FILE-wal), as `cp` or a backup would, and count what it holds."""
    copy = tmp_path / "copy-of-main-file.db"
    shutil.copyfile(db, copy)
    return rows(copy, "select count(*) n from records")[0]["n"]


def test_after_a_crawl_the_main_file_holds_every_record(tmp_path):
    db = tmp_path / "movies.db"
    result = run_cli("crawl.toml", "--offline", "--db", str(db), "-q")
    assert result.returncode == 0, result.stderr
    assert records_in_main_file_alone(db, tmp_path) == OFFLINE.records
    assert not (tmp_path / "movies.db-wal").exists() or (tmp_path / "movies.db-wal").stat().st_size == 0


def test_after_a_failed_crawl_the_main_file_holds_what_was_stored(tmp_path, server):
    routes = fixture_pages("maoyan")
    server.routes["/board/7"] = routes["/board/7"]  # the other boards answer 404
    cfg = config(tmp_path, server, maoyan=("hot", "cn-box-office"))
    db = tmp_path / "m.db"
    result = run_cli(str(cfg), "--db", str(db), "-q")
    assert result.returncode == 1, result.stderr
    assert records_in_main_file_alone(db, tmp_path) == OFFLINE.records_of("maoyan", "hot")
    assert rows(tmp_path / "copy-of-main-file.db", "select status from runs") == [{"status": "partial"}]


def test_after_an_interrupted_crawl_the_main_file_holds_what_was_stored(tmp_path, server, gate):
    process, _, db, held = start_gated_crawl(tmp_path, server, gate, ("top100",), free=2)
    try:
        wait_for(lambda: stored_pages(db) >= 2 and held.held >= 1, what="two pages stored, one in flight")
        process.send_signal(signal.SIGINT)
        held.open()
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    stored = rows(db, "select count(*) n from records")[0]["n"]
    assert stored >= 20 and records_in_main_file_alone(db, tmp_path) == stored
    assert rows(tmp_path / "copy-of-main-file.db", "select status from runs") == [{"status": "interrupted"}]


def test_after_reparse_the_main_file_holds_every_record(tmp_path, crawled):
    db = tmp_path / "movies.db"
    shutil.copyfile(crawled, db)
    result = run_cli("reparse", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert records_in_main_file_alone(db, tmp_path) == OFFLINE.records


# -- read commands never write -------------------------------------------------------------------

def foreign_database(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("create table notes (id integer primary key, text text)")
    conn.execute("insert into notes (text) values ('not a crawl')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_read_commands_leave_any_file_unchanged(tmp_path, crawled, command):
    mine = tmp_path / "movies.db"
    shutil.copyfile(crawled, mine)
    foreign = foreign_database(tmp_path / "other-app.db")
    empty = tmp_path / "empty.db"
    empty.touch()
    before = {path: digest(path) for path in (mine, foreign, empty)}

    result = run_cli(*command, "--db", str(mine))
    assert result.returncode == 0, result.stderr
    for path in (foreign, empty):
        line = one_line_error(run_cli(*command, "--db", str(path)))
        assert line.endswith(f"{path} is not a crawler database"), line
    assert {path: digest(path) for path in before} == before
    assert rows(foreign, "select name from sqlite_master") == [{"name": "notes"}]
    assert empty.stat().st_size == 0


def test_a_crawl_refuses_a_database_of_another_program(tmp_path):
    foreign = foreign_database(tmp_path / "other-app.db")
    before = digest(foreign)
    line = one_line_error(run_cli("crawl.toml", "--offline", "--db", str(foreign)))
    assert "is not a crawler database" in line
    assert digest(foreign) == before


def test_reparse_of_a_database_that_cannot_be_written_is_one_line(tmp_path, crawled, read_only):
    db = tmp_path / "movies.db"
    shutil.copyfile(crawled, db)
    before = digest(db)
    read_only(db)
    line = one_line_error(run_cli("reparse", "--db", str(db)))
    assert str(db) in line and "readonly" in line.replace("read-only", "readonly"), line
    assert digest(db) == before


# -- --record and --fixtures are checked before a run is made -----------------------------------

def bad_manifest(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "bad-fixtures"
    folder.mkdir()
    (folder / "manifest.json").write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("case", ["file", "bad-json", "wrong-shape", "missing-page"])
def test_a_bad_fixtures_folder_is_one_line_and_no_run(tmp_path, case):
    if case == "file":
        folder = tmp_path / "a-file"
        folder.write_text("x")
    elif case == "bad-json":
        folder = bad_manifest(tmp_path, "{not json")
    elif case == "wrong-shape":
        folder = bad_manifest(tmp_path, '{"maoyan": ["board1.html"]}')
    else:
        folder = bad_manifest(tmp_path, '{"maoyan": {"/board/7": {"file": "maoyan/gone.html"}}}')
    db = tmp_path / "movies.db"
    line = one_line_error(run_cli("crawl.toml", "--fixtures", str(folder), "--db", str(db)))
    assert line.startswith("crawler: error: --fixtures: ") and str(folder) in line, line
    assert not db.exists()


@pytest.mark.parametrize("case", ["file", "unwritable", "bad-manifest"])
def test_a_bad_record_folder_is_one_line_and_no_run(tmp_path, case, read_only):
    if case == "file":
        folder = tmp_path / "a-file"
        folder.write_text("x")
    elif case == "unwritable":
        folder = tmp_path / "locked"
        folder.mkdir()
        read_only(folder)
    else:
        folder = bad_manifest(tmp_path, "[1, 2]")
    db = tmp_path / "movies.db"
    line = one_line_error(run_cli("crawl.toml", "--offline", "--record", str(folder), "--db", str(db)))
    assert line.startswith("crawler: error: --record: ") and str(folder) in line, line
    assert not db.exists()


# -- numbers, output streams, workers ----------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("stats", "9223372036854775808"), ("top", "top100", "--limit", "99999999999999999999"),
    ("top", "top100", "--run", "9223372036854775808"), ("diff", "--from", "1", "--to", "1" + "0" * 30),
    ("export", "--run", "9" * 40), ("reparse", "9" * 25),
])
def test_integers_beyond_sqlite_are_one_line(crawled, args):
    line = one_line_error(run_cli(*args, "--db", str(crawled)))
    assert "must be at most 9223372036854775807" in line, line


def test_resume_beyond_sqlite_is_one_line(tmp_path):
    line = one_line_error(run_cli("crawl.toml", "--offline", "--resume", "9223372036854775808",
                                  "--db", str(tmp_path / "m.db")))
    assert "must be at most" in line and not (tmp_path / "m.db").exists()


def test_largest_sqlite_integer_is_a_run_that_does_not_exist(crawled):
    line = one_line_error(run_cli("stats", "9223372036854775807", "--db", str(crawled)))
    assert "no run 9223372036854775807" in line


def test_output_to_a_full_device_is_one_line(crawled):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "crawler", "export", "--format", "csv", "--db", str(crawled)],
                                cwd=REPO, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
    line = one_line_error(result)
    assert line == "crawler export: error: cannot write the output: No space left on device", line


def test_a_closed_pipe_is_silence(crawled):
    process = subprocess.Popen([sys.executable, "-m", "crawler", "export", "--format", "jsonl", "--db", str(crawled)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    process.stdout.readline()
    process.stdout.close()  # the reader goes away, as `| head -1` does
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and err == b"", err.decode()


def test_workers_have_an_upper_bound(tmp_path):
    line = one_line_error(run_cli("crawl.toml", "--offline", "--workers", "100000", "--db", str(tmp_path / "m.db")))
    assert "--workers" in line and "must be at most 128" in line, line
    cfg = tmp_path / "many.toml"
    cfg.write_text("[crawl]\nworkers = 5000\n[sites.douban]\n", encoding="utf-8")
    line = one_line_error(run_cli(str(cfg), "--offline", "--db", str(tmp_path / "m.db")))
    assert line == "crawler: error: crawl.workers must be at most 128, not 5000"
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("pool, refuse", [
    ("process", "os.fork"),
    ("thread", "threading._start_new_thread"),
])
def test_a_worker_the_system_refuses_is_said_plainly(tmp_path, pool, refuse):
    """The system refuses the second process or thread (EAGAIN), as under `ulimit -u`."""
    module, name = refuse.rsplit(".", 1)
    code = f"""
import errno, sys, {module}
real, calls = {module}.{name}, []
def refusing(*args, **kwargs):
    calls.append(1)
    if len(calls) > 1:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable") if {pool!r} == "process" \\
            else RuntimeError("can't start new thread")
    return real(*args, **kwargs)
{module}.{name} = refusing
from crawler.cli import main
sys.exit(main(sys.argv[1:]))
"""
    db = tmp_path / "m.db"
    result = subprocess.run([sys.executable, "-c", code, "crawl.toml", "--offline", "--pool", pool,
                             "--workers", "4", "--db", str(db)],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    line = one_line_error(result)
    what = "processes" if pool == "process" else "threads"
    assert line.startswith(f"crawler: error: the system refused to start 4 worker {what} ("), line
    assert "lower --workers" in line
    assert rows(db, "select count(*) n from runs") == [{"n": 0}]


# -- results that were wrong -------------------------------------------------------------------

@pytest.mark.parametrize("text", ["%", "_", "%%", "__"])
def test_search_takes_wildcards_literally(crawled, text):
    result = run_cli("search", text, "--db", str(crawled), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_search_still_finds_short_text(crawled):
    found = json.loads(run_cli("search", "药神", "--db", str(crawled), "--format", "json").stdout)
    assert {m["title"] for m in found} == {"我不是药神"}


@pytest.mark.parametrize("args, header", [
    (("search", "no such film anywhere", "--format", "csv"), "site,movie_id,title,actors,release_date,last_run_id"),
    (("diff", "--format", "csv", "--from", "1", "--to", "1"), "from_run,to_run,change,board,title,from_rank,"
                                                               "to_rank,move,from_score,to_score,from_title"),
    (("pages", "--format", "csv"), "url,site,board,outcome,attempts,status,error"),
])
def test_csv_with_no_rows_still_has_its_header(crawled, args, header):
    result = run_cli(*args, "--db", str(crawled))
    assert result.returncode == 0, result.stderr
    assert result.stdout == header + "\n"


def test_json_with_no_rows_is_an_empty_list(crawled):
    result = run_cli("search", "no such film anywhere", "--format", "json", "--db", str(crawled))
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("name, magic", [("rank.png", b"\x89PNG"), ("rank.svg", b"<?xml"), ("rank.PDF", b"%PDF")])
def test_history_plot_writes_the_format_its_name_says(tmp_path, crawled, name, magic):
    out = tmp_path / name
    result = run_cli("history", "霸王别姬", "--plot", str(out), "--db", str(crawled))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["rank.gif", "rank.jpg", "rank"])
def test_history_plot_refuses_other_formats(tmp_path, crawled, name):
    out = tmp_path / name
    line = one_line_error(run_cli("history", "霸王别姬", "--plot", str(out), "--db", str(crawled)))
    assert ".png, .svg or .pdf" in line and not out.exists()


def test_diff_shows_a_renamed_movie(tmp_path, crawled):
    folder = tmp_path / "renamed"
    shutil.copytree(FIXTURES, folder)
    page = folder / "maoyan" / "board7.html"
    page.write_text(page.read_text(encoding="utf-8").replace("千与千寻", "千与千寻（重映）"), encoding="utf-8")
    db = tmp_path / "movies.db"
    shutil.copyfile(crawled, db)
    assert run_cli("crawl.toml", "--fixtures", str(folder), "--db", str(db), "-q").returncode == 0
    changes = json.loads(run_cli("diff", "hot", "--db", str(db), "--format", "json").stdout)
    assert [(c["change"], c["title"], c["from_title"], c["from_rank"], c["to_rank"]) for c in changes] == [
        ("renamed", "千与千寻（重映）", "千与千寻", 2, 2)]


# -- habits users bring --------------------------------------------------------------------------

def test_version():
    result = run_cli("--version")
    assert result.returncode == 0 and re.fullmatch(r"crawler \S+\n", result.stdout), result.stdout


@pytest.mark.parametrize("word, hint", [("stat", "stats"), ("seach", "search"), ("runz", "runs"),
                                        ("xyzzy", "commands: runs")])
def test_an_unknown_word_gets_the_closest_command(tmp_path, word, hint):
    line = one_line_error(run_cli(word, cwd=tmp_path))
    assert line.startswith(f"crawler: error: unknown command or config file '{word}'") and hint in line, line


def test_crawl_as_a_command_word(tmp_path):
    result = run_cli("crawl", "crawl.toml", "--offline", "--db", str(tmp_path / "m.db"), "-q")
    assert result.returncode == 0, result.stderr
    assert f"{OFFLINE.records} records stored" in result.stderr


def test_a_missing_toml_config_is_still_named_as_a_config(tmp_path):
    line = one_line_error(run_cli("nope.toml", cwd=tmp_path))
    assert line == "crawler: error: config file not found: nope.toml"


def test_readme_sqlite_utils_tables_are_what_it_shows(crawled):
    """The README's `sqlite-utils ... --table` examples, run for real (wcwidth aligns the Chinese)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r'^\$ sqlite-utils movies\.db "([^"]+)" --table\n(.*?)\n(?=\n|```)', readme, re.M | re.S)
    assert len(examples) >= 3
    cli = Path(sys.executable).with_name("sqlite-utils")
    for sql, shown in examples:
        result = subprocess.run([str(cli), str(crawled), sql, "--table"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip("\n") == shown, sql


# -- blocked sites: what is counted and where to see every page ---------------------------------

def test_a_blocked_site_offline_is_counted_and_every_page_listed(tmp_path):
    folder = blocked_fixtures(tmp_path / "blocked")
    db = tmp_path / "movies.db"
    result = run_cli("crawl.toml", "--fixtures", str(folder), "--db", str(db), "--workers", "4")
    assert result.returncode == 3, result.stderr
    counts = {r["outcome"]: r["n"] for r in rows(
        db, "select outcome, count(*) n from pages where site = 'maoyan' group by outcome")}
    blocked = counts["blocked"]  # those answered before the third was read: offline, most of them
    maoyan = OFFLINE.listed_pages_of("maoyan")  # most-wanted's pager never read
    assert blocked >= 3 and blocked + counts.get("error", 0) == maoyan
    assert f"{blocked} blocked; {OFFLINE.records_of('douban')} records" in result.stderr
    assert f"maoyan is blocking the crawler ({blocked} pages blocked" in result.stderr
    assert f"every one with: python -m crawler pages 1 --db {db}" in result.stderr
    listed = json.loads(run_cli("pages", "1", "--db", str(db), "--format", "json").stdout)
    assert len(listed) == maoyan and {p["site"] for p in listed} == {"maoyan"}
    assert sum(p["outcome"] == "blocked" for p in listed) == blocked
    every = json.loads(run_cli("pages", "--all", "--db", str(db), "--format", "json").stdout)
    assert len(every) == OFFLINE.listed_pages_of()
