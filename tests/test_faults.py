"""Faults provoked for real: a local HTTP server, real worker processes, real signals."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from tests.conftest import config, fixture_pages, rows, run_cli, send, start_cli, wait_for, write_config

VERIFY_PAGE = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>猫眼验证中心</title></head>"
               "<body><div id=\"app\">请拖动滑块完成验证</div></body></html>").encode("utf-8")


def slow(route, seconds):
    """A fixture route answered after a delay, so a crawl is still going when the test acts."""
    status, headers, body = route

    def answer(handler):
        time.sleep(seconds)
        send(handler, status, body, headers)
    return answer


def _answer(handler, answers, final):
    status, headers, body = answers.pop(0) if answers else final
    send(handler, status, body, headers)


def start_slow_crawl(tmp_path, server, boards, seconds):
    """A crawl in the background against pages that take `seconds` each, to be stopped mid-way."""
    for path, route in fixture_pages("maoyan").items():
        server.routes[path] = slow(route, seconds)
    cfg = config(tmp_path, server, maoyan=boards, workers=2)
    db = tmp_path / "m.db"
    return start_cli(str(cfg), "--db", str(db)), cfg, db


def pages_stored(db) -> int:
    """Pages stored so far by a crawl that may not have created its tables yet."""
    try:
        return rows(db, "select count(*) n from pages where outcome = 'ok'")[0]["n"]
    except sqlite3.OperationalError:
        return 0


def count_records(db, run_id=1):
    return rows(db, "select count(*) n from records where run_id = ?", run_id)[0]["n"]


def _track_concurrency(server) -> list[int]:
    """Serve the Maoyan fixtures slowly; the returned list's one item is the peak of requests at once."""
    active, peak, lock = [0], [0], threading.Lock()

    def tracked(route):
        def answer(handler):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.6)  # long enough for requests to overlap
            with lock:
                active[0] -= 1
            send(handler, route[0], route[2], route[1])
        return answer

    for path, route in fixture_pages("maoyan").items():
        server.routes[path] = tracked(route)
    return peak


def test_politeness_bounds_requests_in_flight_and_spaces_them(tmp_path, server):
    peak = _track_concurrency(server)
    cfg = config(tmp_path, server, workers=4, max_in_flight_per_host=2, delay_per_host=0.25)
    result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert peak[0] == 2
    gaps = [b - a for a, b in zip(server.times, server.times[1:])]
    # Spacing is kept when requests are handed to the workers; allow for the hand-over jitter.
    assert len(server.times) == 10 and min(gaps) >= 0.15


@pytest.mark.parametrize("workers, per_host, expected_peak", [(4, 2, 2), (3, 3, 3), (2, 8, 2)])
def test_tasks_submitted_ahead_never_exceed_the_limits(tmp_path, server, workers, per_host, expected_peak):
    """Without a delay, pages are handed to the pool ahead of free workers; requests at once
    stay within both the workers and the host's limit."""
    peak = _track_concurrency(server)
    cfg = config(tmp_path, server, workers=workers, max_in_flight_per_host=per_host)
    result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert peak[0] == expected_peak
    assert rows(tmp_path / "m.db", "select count(*) n from records")[0]["n"] == 100


def test_retry_after_is_honoured(tmp_path, server):
    pages = fixture_pages("maoyan")
    answers = [(429, {"Retry-After": "2"}, b"slow down")]
    server.routes["/board/7"] = lambda handler: _answer(handler, answers, pages["/board/7"])
    result = run_cli(str(config(tmp_path, server, maoyan=("hot",))), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert len(server.times) == 2 and server.times[1] - server.times[0] >= 1.9
    [page] = rows(tmp_path / "m.db", "select attempts, outcome from pages")
    assert page == {"attempts": 2, "outcome": "ok"}


def _pid_with_port(port: int, candidates: list[int]) -> int | None:
    """The process among candidates that owns the TCP socket bound to this local port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in candidates:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if any(link == f"socket:[{inode}]" for link in links for inode in inodes):
            return pid
    return None


@pytest.mark.parametrize("victims", ["busy", "all"])
def test_a_killed_worker_does_not_hang_the_crawl(tmp_path, server, victims):
    """Killing the busy worker loses its task; killing the idle ones too can leave the
    pool's task-queue lock held by a dead process. Either way the crawl completes."""
    pages = fixture_pages("maoyan")
    released = threading.Event()
    ports = []

    def hang_once(handler):
        if not ports:
            ports.append(handler.client_address[1])
            released.wait(20)  # its worker is killed long before this
            return
        _answer(handler, [], pages["/board/7"])

    server.routes["/board/7"] = hang_once
    db = tmp_path / "m.db"
    crawl = start_cli(str(config(tmp_path, server, maoyan=("hot",), page_deadline=2.0, workers=2)),
                      "--db", str(db))
    try:
        wait_for(lambda: ports, what="the first request")
        workers = subprocess.run(["pgrep", "-P", str(crawl.pid)], capture_output=True, text=True).stdout.split()
        busy = _pid_with_port(ports[0], [int(pid) for pid in workers])
        assert busy is not None
        for pid in [int(pid) for pid in workers] if victims == "all" else [busy]:
            os.kill(pid, signal.SIGKILL)
        out, err = crawl.communicate(timeout=30)
    finally:
        released.set()
        crawl.kill()
    assert crawl.returncode == 0, err
    assert count_records(db) == 10
    [page] = rows(db, "select attempts, outcome from pages")
    assert page == {"attempts": 2, "outcome": "ok"}


@pytest.mark.parametrize("behaviour", ["silent", "trickle"])
def test_a_server_that_never_finishes_is_cut_off(tmp_path, server, behaviour):
    stop = threading.Event()

    def never(handler):
        if behaviour == "trickle":
            handler.send_response(200)
            handler.send_header("Content-Length", "1000000")
            handler.end_headers()
            while not stop.is_set():
                handler.wfile.write(b"<")
                handler.wfile.flush()
                time.sleep(0.05)
        else:
            stop.wait(30)

    server.routes["/board/7"] = never
    cfg = config(tmp_path, server, maoyan=("hot",), request_timeout=1.0, page_deadline=1.5, max_attempts=2)
    try:
        started = time.monotonic()
        result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"), timeout=30)
        took = time.monotonic() - started
    finally:
        stop.set()
    assert result.returncode == 1, result.stderr
    [page] = rows(tmp_path / "m.db", "select attempts, outcome, error from pages")
    assert page["attempts"] == 2 and page["outcome"] == "error"
    expected = "page deadline" if behaviour == "trickle" else "timed out"
    assert expected in page["error"], page["error"]
    assert took < 20


def test_a_blocked_site_is_left_alone_and_the_rest_finishes(tmp_path, server):
    for path in fixture_pages("maoyan"):
        server.routes[path] = (200, {"Content-Type": "text/html; charset=utf-8"}, VERIFY_PAGE)
    server.serve_fixtures("douban", prefix="/douban")
    cfg = config(tmp_path, server, maoyan=("top100",), douban=("top250",), max_in_flight_per_host=1)
    db = tmp_path / "m.db"
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 3, result.stderr
    maoyan_requests = [p for p in server.requests if p.startswith("/board/")]
    assert len(maoyan_requests) == 3
    assert count_records(db) == 250  # Douban finished
    outcomes = rows(db, "select outcome, count(*) n from pages where site = 'maoyan' group by outcome")
    assert {r["outcome"]: r["n"] for r in outcomes} == {"blocked": 3, "error": 7}
    saved = tmp_path / "blocked-maoyan-run1.html"
    assert saved.read_bytes() == VERIFY_PAGE
    assert f"maoyan is blocking the crawler (3 pages blocked; its page: {saved})" in result.stderr
    assert "cookies" in result.stderr


def test_douban_refusals_are_blocks(tmp_path, server):
    for path in fixture_pages("douban"):
        server.routes["/douban" + path] = (418, {"Content-Type": "text/html"}, b"<html>I'm a teapot</html>")
    cfg = config(tmp_path, server, maoyan=(), douban=("top250",), max_in_flight_per_host=1)
    result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 3 and "douban is blocking the crawler" in result.stderr
    assert len(server.requests) == 3


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_keeps_what_was_stored_and_resume_completes_it(tmp_path, server, signum, code):
    crawl, cfg, db = start_slow_crawl(tmp_path, server, ("top100", "most-wanted"), 0.3)
    try:
        wait_for(lambda: pages_stored(db) >= 3, what="three pages stored")
        crawl.send_signal(signum)
        out, err = crawl.communicate(timeout=20)
    finally:
        crawl.kill()
    assert crawl.returncode == code, err
    assert "Traceback" not in err
    assert f"resume with: python -m crawler {cfg} --db {db} --resume 1" in err
    [run] = rows(db, "select status, records from runs")
    stored = rows(db, "select url from pages where outcome = 'ok'")
    assert run["status"] == "interrupted" and run["records"] == count_records(db) == 10 * len(stored)
    assert len(stored) < 13
    before = list(server.requests)

    result = run_cli(str(cfg), "--db", str(db), "--resume")
    assert result.returncode == 0, result.stderr
    assert rows(db, "select id, status, records from runs") == [{"id": 1, "status": "ok", "records": 130}]
    again = server.requests[len(before):]
    for page in stored:
        assert page["url"].removeprefix(server.url) not in again  # stored pages are not fetched again


def test_kill_9_leaves_a_sound_database_that_resumes(tmp_path, server):
    crawl, cfg, db = start_slow_crawl(tmp_path, server, ("top100",), 0.2)
    try:
        wait_for(lambda: pages_stored(db) >= 2,
                 what="two pages stored")
        crawl.kill()
        crawl.wait(timeout=10)
    finally:
        crawl.kill()
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    ok_pages = conn.execute("select count(*) from pages where outcome = 'ok'").fetchone()[0]
    assert conn.execute("select count(*) from records").fetchone()[0] == 10 * ok_pages >= 20
    conn.close()
    result = run_cli(str(cfg), "--db", str(db), "--resume")
    assert result.returncode == 0, result.stderr
    assert rows(db, "select status, records from runs") == [{"status": "ok", "records": 100}]


def test_a_locked_database_is_one_line_and_exit_2(tmp_path, server):
    db = tmp_path / "m.db"
    assert run_cli(str(config(tmp_path, server, maoyan=("hot",))), "--db", str(db)).returncode == 1  # 404s
    holder = sqlite3.connect(db)
    holder.execute("begin exclusive")
    try:
        result = run_cli(str(tmp_path / "crawl.toml"), "--db", str(db))
    finally:
        holder.rollback()
        holder.close()
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"database {db} is locked by another program" in result.stderr
    assert rows(db, "select count(*) n from runs")[0]["n"] == 1


def test_a_site_that_refuses_connections_fails_cleanly(tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = write_config(tmp_path / "c.toml", f'[crawl]\nmax_attempts = 2\nretry_backoff = 0.01\n'
                                            f'[sites.maoyan]\nbase_url = "http://127.0.0.1:{port}"\n'
                                            'boards = ["hot", "cn-box-office"]\n')
    db = tmp_path / "m.db"
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 1
    assert f"not stored: http://127.0.0.1:{port}/board/7: connection failed (connection refused)" in result.stderr
    assert rows(db, "select status, records, pages_failed from runs") == [
        {"status": "failed", "records": 0, "pages_failed": 2}]


def test_a_page_in_gbk_is_decoded_not_garbled(tmp_path, server):
    status, headers, body = fixture_pages("douban")["/top250?start=0"]
    server.routes["/douban/top250?start=0"] = (200, {"Content-Type": "text/html; charset=GBK"},
                                               body.decode("utf-8").encode("gb18030"))
    cfg = config(tmp_path, server, maoyan=(), douban=("top250",))
    db = tmp_path / "m.db"
    run_cli(str(cfg), "--db", str(db))
    assert rows(db, "select title from records where rank = 1") == [{"title": "肖申克的救赎"}]


def test_a_flaky_server_still_yields_every_record(tmp_path, server):
    """30% of requests fail with 500/503, a dropped connection or a cut body; nothing is lost."""
    pages = {**fixture_pages("maoyan"), **{"/douban" + p: r for p, r in fixture_pages("douban").items()}}
    chance = random.Random(20261128)
    lock = threading.Lock()

    def flaky(route):
        def answer(handler):
            with lock:
                roll = chance.random()
            if roll < 0.10:
                send(handler, 500, b"oops")
            elif roll < 0.20:
                send(handler, 503, b"busy")
            elif roll < 0.25:
                handler.close_connection = True  # drop without a word
                handler.connection.shutdown(2)
            elif roll < 0.30:
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(route[2])))
                handler.end_headers()
                handler.wfile.write(route[2][: len(route[2]) // 2])
                handler.close_connection = True
            else:
                send(handler, route[0], route[2], route[1])
        return answer

    for path, route in pages.items():
        server.routes[path] = flaky(route)
    cfg = config(tmp_path, server, maoyan=("top100", "hot", "most-wanted", "cn-box-office", "na-box-office"),
                 douban=("top250",), max_attempts=8)
    db = tmp_path / "m.db"
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert count_records(db) == 410
    retried = rows(db, "select count(*) n from pages where attempts > 1")[0]["n"]
    assert retried >= 3 and len(server.requests) > 26


@pytest.mark.parametrize("failure", ["raises", "rubbish"])
def test_a_parser_failing_on_one_page_costs_that_page_only(tmp_path, server, monkeypatch, failure):
    """In-process crawl with the real Pool: parsers run in this process's callbacks."""
    from crawler import sites
    from crawler.config import load_config
    from crawler.scheduler import crawl

    server.serve_fixtures("maoyan")
    real = sites.SITES["maoyan"].parse

    def fragile(html, url):
        if url.endswith("offset=50"):
            if failure == "raises":
                raise IndexError("list index out of range")
            return {"not": "a board page"}
        return real(html, url)

    monkeypatch.setitem(sites.SITES, "maoyan", sites.Site("maoyan", server.url, fragile,
                                                          sites.SITES["maoyan"].boards))
    started = time.monotonic()
    result = crawl(load_config(config(tmp_path, server)), db_path=str(tmp_path / "m.db"), workers=2)
    assert time.monotonic() - started < 30
    assert result.status == "partial" and result.pages_ok == 9 and result.records == 90
    [(url, error)] = result.failures
    assert url == f"{server.url}/board/4?offset=50"
    expected = "parser failed: IndexError" if failure == "raises" else "instead of a BoardPage"
    assert expected in error


def test_a_page_cut_short_is_retried_then_reported(tmp_path, server):
    status, headers, body = fixture_pages("maoyan")["/board/7"]
    server.routes["/board/7"] = (200, headers, body[: len(body) * 2 // 3])
    db = tmp_path / "m.db"
    result = run_cli(str(config(tmp_path, server, maoyan=("hot",), max_attempts=2)), "--db", str(db))
    assert result.returncode == 1
    assert "page cut short (no closing </html>)" in result.stderr
    assert server.count("/board/7") == 2 and count_records(db) == 0


def test_a_second_ctrl_c_stops_at_once_and_the_database_stays_sound(tmp_path, server):
    crawl, cfg, db = start_slow_crawl(tmp_path, server, ("top100", "most-wanted"), 0.3)
    try:
        wait_for(lambda: pages_stored(db) >= 2, what="two pages stored")
        crawl.send_signal(signal.SIGINT)
        time.sleep(0.05)
        crawl.send_signal(signal.SIGINT)
        out, err = crawl.communicate(timeout=20)
    finally:
        crawl.kill()
    assert crawl.returncode == 130, err
    assert "Traceback" not in err
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.close()
    assert run_cli(str(cfg), "--db", str(db), "--resume").returncode == 0
    assert rows(db, "select status, records from runs") == [{"status": "ok", "records": 130}]


def test_a_recrawl_asks_conditionally_and_reuses_unchanged_pages(tmp_path, server):
    """The second run sends If-None-Match / If-Modified-Since; on 304 the stored copy's records are reused."""
    asked = []

    def conditional(route, etag):
        status, headers, body = route

        def answer(handler):
            asked.append((handler.path, handler.headers.get("If-None-Match"),
                          handler.headers.get("If-Modified-Since")))
            if handler.headers.get("If-None-Match") == etag:
                handler.send_response(304)
                handler.send_header("ETag", etag)
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            send(handler, status, body, {**headers, "ETag": etag,
                                         "Last-Modified": "Wed, 26 Nov 2026 08:00:00 GMT"})
        return answer

    for path, route in fixture_pages("maoyan").items():
        server.routes[path] = conditional(route, f'"{abs(hash(path))}"')
    cfg = config(tmp_path, server, maoyan=("hot", "most-wanted"))
    db = tmp_path / "m.db"
    assert run_cli(str(cfg), "--db", str(db)).returncode == 0
    first_asks = len(asked)
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 0, result.stderr
    second = asked[first_asks:]
    assert first_asks == len(second) == 4  # /board/7 and three pages of /board/6, found again without parsing
    assert all(etag and since == "Wed, 26 Nov 2026 08:00:00 GMT" for _, etag, since in second)
    assert {p["status"] for p in rows(db, "select status from pages where run_id = 2")} == {304}
    columns = "site, board, rank, movie_id, title, score, month_wish, obfuscated"
    assert rows(db, f"select {columns} from records where run_id = 1 order by board, rank") == \
        rows(db, f"select {columns} from records where run_id = 2 order by board, rank")
    assert rows(db, "select records from runs where id = 2") == [{"records": 40}]
    assert rows(db, "select count(*) n from page_html where run_id = 2") == [{"n": 4}]
