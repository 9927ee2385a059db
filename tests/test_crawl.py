"""End to end: the real CLI in a subprocess, a real Pool, a real SQLite file."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from crawler import engine, scheduler, store
from crawler.config import load_config
from crawler.progress import Progress
from crawler.sites import SITES, Board
from tests.helpers import (HOLD_BOUND, OFFLINE, REPO, board_pages, config, console_script, fixture_pages, rows,
                           run_cli, send, stored_pages, wait_for, write_config)

EXPECTED_ROWS = OFFLINE.records_per_board
PAGES = OFFLINE.pages


def board_counts(db, run_id):
    return {(r["site"], r["board"]): r["n"] for r in rows(
        db, "select site, board, count(*) n from records where run_id = ? group by site, board", run_id)}


def config_with_start_method(tmp_path, method):
    text = (REPO / "crawl.toml").read_text(encoding="utf-8")
    return write_config(tmp_path / "crawl.toml", text.replace('start_method = "default"', f'start_method = "{method}"'))


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_offline_crawl_stores_every_board_under_every_start_method(tmp_path, method):
    config = config_with_start_method(tmp_path, method)
    db = tmp_path / "movies.db"
    result = run_cli(str(config), "--offline", "--db", str(db), "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert board_counts(db, 1) == EXPECTED_ROWS
    assert f"run 1 ok: {PAGES} pages ok, 0 failed, 0 blocked; {OFFLINE.records} records stored" in result.stderr
    ranks = [r["rank"] for r in rows(db, "select rank from records where board = 'top250' order by rank")]
    assert ranks == list(range(1, OFFLINE.records_of("douban", "top250") + 1))
    ranks = [r["rank"] for r in rows(db, "select rank from records where board = 'top100' order by rank")]
    assert ranks == list(range(1, OFFLINE.records_of("maoyan", "top100") + 1))
    [run] = rows(db, "select * from runs")
    assert run["status"] == "ok" and run["pages_ok"] == PAGES and run["records"] == OFFLINE.records
    assert run["started"] <= run["finished"] and run["config"] == config.read_text(encoding="utf-8")
    pages = rows(db, "select outcome, attempts, status from pages")
    assert len(pages) == PAGES and all(p == {"outcome": "ok", "attempts": 1, "status": 200} for p in pages)


def test_two_runs_are_kept_and_hold_the_same_records(tmp_path):
    db = tmp_path / "movies.db"
    for _ in range(2):
        assert run_cli("crawl.toml", "--offline", "--db", str(db)).returncode == 0
    assert [r["id"] for r in rows(db, "select id from runs order by id")] == [1, 2]
    assert board_counts(db, 1) == board_counts(db, 2) == EXPECTED_ROWS
    columns = "site, board, rank, movie_id, title, score, release_date, votes, month_wish, obfuscated"
    first = rows(db, f"select {columns} from records where run_id = 1 order by site, board, rank")
    second = rows(db, f"select {columns} from records where run_id = 2 order by site, board, rank")
    assert first == second
    movies = rows(db, "select count(*) n from movies")[0]["n"]
    assert movies == len({(r["site"], r["movie_id"]) for r in first})


def test_records_hold_the_parsed_values(tmp_path):
    db = tmp_path / "movies.db"
    assert run_cli("crawl.toml", "--offline", "--db", str(db)).returncode == 0
    top = rows(db, "select * from records where board = 'top100' order by rank")
    assert all(r["title"] and r["movie_id"] and r["url"].startswith("https://www.maoyan.com/films/") for r in top)
    assert all(isinstance(r["score"], float) and 0 < r["score"] <= 10 for r in top)
    douban = rows(db, "select * from records where board = 'top250' order by rank")
    assert douban[0]["title"] == "肖申克的救赎" and douban[0]["year"] == 1994
    assert all(r["votes"] > 0 and r["url"].startswith("https://movie.douban.com/subject/") for r in douban)
    wanted = rows(db, "select * from records where board = 'most-wanted'")
    # Drawn with the pages' web fonts, read by shape: every number is there, none left hidden.
    assert len(wanted) == OFFLINE.records_of("maoyan", "most-wanted")
    assert all(r["month_wish"] > 0 and r["total_wish"] > 0 and not r["obfuscated"] for r in wanted)


def test_live_path_against_a_local_server_stores_what_it_can_and_names_the_rest(tmp_path, server):
    server.serve_fixtures("maoyan")
    del server.routes["/board/4?offset=30"]  # this page now answers 404
    cfg = config(tmp_path, server, maoyan=("top100", "hot", "most-wanted", "cn-box-office", "na-box-office"))
    db = tmp_path / "movies.db"
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert f"not stored: {server.url}/board/4?offset=30: HTTP 404" in result.stderr
    counts = board_counts(db, 1)
    assert counts[("maoyan", "top100")] == OFFLINE.records_of("maoyan", "top100") - OFFLINE.records_at(
        "maoyan", "/board/4?offset=30")
    assert counts[("maoyan", "most-wanted")] == OFFLINE.records_of("maoyan", "most-wanted")
    assert rows(db, "select status from runs")[0]["status"] == "partial"
    [page] = rows(db, "select * from pages where outcome != 'ok'")
    assert page["status"] == 404 and page["error"] == "HTTP 404" and page["attempts"] == 1
    assert server.count("/board/4?offset=30") == 1  # a 404 is not retried


def test_a_503_is_retried_and_the_page_stored(tmp_path, server):
    pages = fixture_pages("maoyan")
    answers = [(503, {"Retry-After": "0"}, b"busy")]

    def flaky(handler):
        status, headers, body = answers.pop(0) if answers else pages["/board/7"]
        send(handler, status, body, headers)

    server.routes["/board/7"] = flaky
    db = tmp_path / "m.db"
    result = run_cli(str(config(tmp_path, server, maoyan=("hot",))), "--db", str(db))
    assert result.returncode == 0, result.stderr
    [page] = rows(db, "select * from pages")
    assert page["outcome"] == "ok" and page["attempts"] == 2
    assert board_counts(db, 1) == {("maoyan", "hot"): OFFLINE.records_of("maoyan", "hot")}


def test_a_database_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    result = run_cli("crawl.toml", "--offline", "--db", str(tmp_path / "no" / "such" / "m.db"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "folder" in result.stderr and "does not exist" in result.stderr
    result = run_cli("crawl.toml", "--offline", "--db", str(tmp_path))  # a folder, not a file
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("case", [
    "new",
    "existing",
])
def test_a_database_in_a_read_only_folder_is_one_line_and_exit_2(tmp_path, server, read_only, case):
    """The database's folder cannot be written (for root too): a new database cannot be made
    there, and an existing one (in WAL mode) cannot be opened to write. One line naming the
    database, exit 2, no traceback, nothing fetched, nothing in the folder changed."""
    server.serve_fixtures("maoyan")
    cfg = config(tmp_path, server, maoyan=("hot",))
    folder = tmp_path / "locked"
    folder.mkdir()
    db = folder / "m.db"
    if case == "existing":
        assert run_cli(str(cfg), "--db", str(db)).returncode == 0
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    asked = len(server.requests)
    read_only(folder)
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("crawler: error: ") and str(db) in result.stderr
    assert "not a crawler database" not in result.stderr, result.stderr
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert len(server.requests) == asked


def test_console_script_does_the_same_as_python_m(tmp_path):
    """The script next to this interpreter (PATH may not have the virtualenv's bin folder)."""
    script = console_script("crawler", "crawler")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: crawler" in result.stdout and "--offline" in result.stdout
    assert result.stdout == run_cli("--help").stdout
    db = tmp_path / "movies.db"
    crawl = subprocess.run([str(script), "crawl.toml", "--offline", "--db", str(db), "-q"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert crawl.returncode == 0, crawl.stderr
    assert board_counts(db, 1) == EXPECTED_ROWS


@pytest.mark.parametrize("pool", ["thread", "dask"])
def test_every_pool_stores_the_same_records(tmp_path, pool):
    if pool == "dask":
        pytest.importorskip("distributed")
    columns = "site, board, rank, movie_id, title, score, release_date, votes, month_wish, obfuscated, updated"
    query = f"select {columns} from records order by site, board, rank"
    reference, other = tmp_path / "process.db", tmp_path / f"{pool}.db"
    assert run_cli("crawl.toml", "--offline", "--db", str(reference), "-q").returncode == 0
    result = run_cli("crawl.toml", "--offline", "--pool", pool, "--db", str(other), "-q")
    assert result.returncode == 0, result.stderr
    assert rows(other, query) == rows(reference, query) and len(rows(other, query)) == OFFLINE.records


def test_the_dask_pool_without_dask_installed_says_how_to_get_it(tmp_path):
    hidden = tmp_path / "hide"
    for package in ("dask", "distributed"):
        (hidden / package).mkdir(parents=True)
        (hidden / package / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = dict(os.environ, PYTHONPATH=f"{hidden}{os.pathsep}{REPO}")
    result = subprocess.run([sys.executable, "-m", "crawler", "crawl.toml", "--offline", "--pool", "dask",
                             "--db", str(tmp_path / "m.db")], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr == "crawler: error: the dask pool needs dask.distributed: pip install -e '.[dask]'\n"
    assert rows(tmp_path / "m.db", "select count(*) n from runs") == [{"n": 0}]


def test_a_bad_pool_name_is_refused(tmp_path):
    result = run_cli("crawl.toml", "--pool", "fibers")
    assert result.returncode == 2 and "invalid choice: 'fibers'" in result.stderr


def test_a_long_board_is_queued_by_chunks_and_crawled_whole(tmp_path, server, monkeypatch):
    """Pages are noted pending (and queued) a chunk at a time, not all before the first request."""
    pages = 300
    body = fixture_pages("maoyan")["/board/4?offset=0"][2]
    db = tmp_path / "m.db"
    noted_at_first_request: list[int] = []
    first = threading.Lock()  # requests arrive on several server threads at once

    def answer(handler):
        with first:
            if not noted_at_first_request:
                with sqlite3.connect(db) as conn:
                    noted_at_first_request.append(conn.execute("select count(*) from pages").fetchone()[0])
        send(handler, 200, body, {"Content-Type": "text/html; charset=utf-8"})

    paths = tuple(f"/board/4?offset={n * 10}" for n in range(pages))
    for path in paths:
        server.routes[path] = answer
    monkeypatch.setitem(SITES["maoyan"].boards, "top100", Board("top100", "TOP100榜", paths))
    result = scheduler.crawl(load_config(config(tmp_path, server, workers=4)), str(db))
    assert result.status == "ok" and result.pages_ok == pages
    assert noted_at_first_request == [scheduler.QUEUE_CHUNK]
    assert rows(db, "select count(*) n, sum(outcome = 'ok') ok from pages") == [{"n": pages, "ok": pages}]


def test_a_proxy_from_the_environment_is_used(tmp_path, server):
    """Sessions read HTTP_PROXY once per site rather than per request; it must still apply.
    The site's host does not resolve: only the proxy (the test server) can answer."""
    body = fixture_pages("maoyan")["/board/7"][2]
    server.routes["http://maoyan.test/board/7"] = (200, {"Content-Type": "text/html; charset=utf-8"}, body)
    cfg = write_config(tmp_path / "crawl.toml", '[crawl]\ndelay_per_host = 0\n'
                       '[sites.maoyan]\nbase_url = "http://maoyan.test"\nboards = ["hot"]\n')
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PYTHONPATH=str(REPO), HTTP_PROXY=server.url)
    result = subprocess.run([sys.executable, "-m", "crawler", str(cfg), "--db", str(tmp_path / "m.db")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert server.requests == ["http://maoyan.test/board/7"]
    assert rows(tmp_path / "m.db", "select count(*) n from records")[0]["n"] == OFFLINE.records_of("maoyan", "hot")


def without_robots(tmp_path):
    """crawl.toml with robots.txt not asked for: the crawl's first outcomes are pages (a site's
    pages wait for its robots.txt, which would hold them back while the main thread is held)."""
    text = (REPO / "crawl.toml").read_text(encoding="utf-8")
    assert text.count("obey_robots = true") == 2
    return load_config(write_config(tmp_path / "crawl.toml", text.replace("obey_robots = true", "obey_robots = false")))


def hold_main_thread(monkeypatch, queued: int) -> None:
    """Hold the crawl's main thread at its first outcome until `queued` more wait behind it.

    Outcomes then pile up because the main thread is held, not because it happens to be
    slower than the workers: the crawl submits several tasks per worker up front, and their
    outcomes queue while it is held.
    """
    class Held(engine.Engine):
        held = False

        def _take(self, first):
            if not self.held:
                self.held = True
                wait_for(lambda: self.outcomes.qsize() >= queued, what=f"{queued} outcomes queued behind the first")
            super()._take(first)

    monkeypatch.setattr(scheduler, "Engine", Held)


def pages_per_commit(monkeypatch, rolled_back: list[int] | None = None) -> list[int]:
    """Trace the crawl's connection: how many page rows each COMMIT (or ROLLBACK) ended."""
    groups, written = [], [0]
    real_open_db = store.open_db

    def open_db(path):
        db = real_open_db(path)

        def trace(sql):
            statement = sql.lstrip().lower()
            if statement.startswith("insert or replace into [pages]"):
                written[0] += 1
            elif statement.startswith(("commit", "rollback")) and written[0]:
                (groups if statement.startswith("commit") else rolled_back).append(written[0])
                written[0] = 0

        db.conn.set_trace_callback(trace)
        return db

    monkeypatch.setattr(store, "open_db", open_db)
    return groups


def test_pages_that_arrive_together_share_a_commit_up_to_the_bound(tmp_path, monkeypatch):
    """Five outcomes wait behind the first (two workers, three tasks each submitted up front):
    the first commit takes four, the bound, and not the fifth."""
    groups = pages_per_commit(monkeypatch)
    monkeypatch.setattr(engine, "PAGES_PER_COMMIT", 4)
    hold_main_thread(monkeypatch, queued=4)
    db = tmp_path / "m.db"
    result = scheduler.crawl(without_robots(tmp_path), str(db), offline=True, workers=2,
                             progress=Progress(quiet=True))
    assert result.status == "ok" and sum(groups) == PAGES
    assert groups[0] == max(groups) == 4  # pages waited, and no more than the bound went into one commit
    assert board_counts(db, 1) == EXPECTED_ROWS


def test_a_page_that_arrives_alone_is_committed_alone(tmp_path, server, monkeypatch):
    """Each page is answered only once the one before it is committed: a crawl that waited to
    gather pages into a commit would never get the next one (and the wait would fail)."""
    groups = pages_per_commit(monkeypatch)
    db = tmp_path / "m.db"
    lock = threading.Lock()
    arrived, late = [0], []

    def after_the_previous_is_stored(page):
        def answer(handler):
            with lock:
                arrived[0] += 1
                before = arrived[0] - 1
            if not wait_for_quietly(lambda: stored_pages(db) >= before):
                late.append(handler.path)
            send(handler, page[0], page[2], page[1])
        return answer

    server.serve_fixtures("maoyan")  # its robots.txt
    for path, page in board_pages("maoyan").items():
        server.routes[path] = after_the_previous_is_stored(page)
    result = scheduler.crawl(load_config(config(tmp_path, server, workers=1)), str(db))
    assert result.status == "ok" and groups == [1] * OFFLINE.pages_of("maoyan", "top100") and late == []


def wait_for_quietly(predicate, timeout: float = HOLD_BOUND) -> bool:
    """wait_for for a server thread: True once predicate() holds, False at the bound (never raises)."""
    try:
        wait_for(predicate, timeout=timeout)
        return True
    except AssertionError:
        return False


def test_a_failed_write_keeps_the_pages_handled_before_it(tmp_path, monkeypatch):
    """SQLite refuses the sixth page while several wait to be stored together: five are kept."""
    rolled_back: list[int] = []
    pages_per_commit(monkeypatch, rolled_back)
    db = tmp_path / "m.db"
    store.open_db(db).execute(
        "create trigger refuse before insert on pages when new.outcome = 'ok' "
        "and (select count(*) from pages where outcome = 'ok') >= 5 begin select raise(abort, 'disk I/O error'); end")
    handled: list[str] = []

    class Handled(Progress):
        def page(self, task, outcome, final):
            handled.append(task.url)
            super().page(task, outcome, final)

    hold_main_thread(monkeypatch, queued=5)  # the first six pages are then stored together
    with pytest.raises(store.StoreError, match="disk I/O error"):
        scheduler.crawl(without_robots(tmp_path), str(db), offline=True, workers=2,
                        progress=Handled(quiet=True))
    assert rolled_back and rolled_back[0] >= 6  # the refused page was being stored with the five before it
    assert {r["url"] for r in rows(db, "select url from pages where outcome = 'ok'")} == set(handled[:5])
    assert rows(db, "select count(distinct page_url) n from records")[0]["n"] == 5
