"""Faults provoked for real: a local HTTP server, real worker processes, real signals."""
from __future__ import annotations

import os
from dataclasses import replace
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import zlib

import pytest

from crawler import engine, scheduler
from crawler.config import load_config
from tests.helpers import (HOLD_BOUND, OFFLINE, VERIFY_PAGE, Overlap, board_pages, config, fixture_pages, rows,
                           run_cli, send, start_cli, start_gated_crawl, stored_pages, wait_for, write_config)

TOP100 = tuple(f"/board/4?offset={n}" for n in range(0, 100, 10))
TOP100_RECORDS = OFFLINE.records_of("maoyan", "top100")  # config()'s board by default
SERVICE_UNAVAILABLE = (503, {"Content-Type": "text/plain"}, b"busy")


def _answer(handler, answers, final):
    status, headers, body = answers.pop(0) if answers else final
    send(handler, status, body, headers)


def count_records(db, run_id=1):
    return rows(db, "select count(*) n from records where run_id = ?", run_id)[0]["n"]


def records_on(server, urls) -> int:
    """The records on these Maoyan pages of the test server, as the fixtures hold them."""
    return sum(OFFLINE.records_at("maoyan", url.removeprefix(server.url)) for url in urls)


def test_politeness_bounds_requests_in_flight_and_spaces_them(tmp_path, server, monkeypatch):
    """In-process, to see when the scheduler hands each page over: no two hand-overs to the
    host are closer than delay_per_host, and at the server the i-th request arrives no sooner
    than i delays after the crawl began (arrival times themselves also carry the hand-over's
    latency, so their gaps prove nothing either way)."""
    delay = 0.25
    overlap = Overlap(server, target=2, total=len(TOP100))
    handed_over: list[tuple[float, str]] = []
    real_submit = engine.Engine._submit

    def submit(self, task, host, now, *rest):
        handed_over.append((now, task.url))
        return real_submit(self, task, host, now, *rest)

    monkeypatch.setattr(engine.Engine, "_submit", submit)
    cfg = load_config(config(tmp_path, server, workers=4, max_in_flight_per_host=2, delay_per_host=delay))
    began = time.monotonic()
    result = scheduler.crawl(cfg, str(tmp_path / "m.db"))
    assert result.status == "ok" and result.records == TOP100_RECORDS
    assert overlap.peak == 2 and overlap.timeouts == 0
    pages = [now for now, url in handed_over if "/board/" in url]
    assert len(pages) == len(TOP100) and all(b - a >= delay for a, b in zip(pages, pages[1:]))
    arrivals = sorted(server.times)
    assert len(arrivals) == len(TOP100) and all(at - began >= i * delay for i, at in enumerate(arrivals))


@pytest.mark.parametrize("workers, per_host, expected_peak", [(4, 2, 2), (3, 3, 3), (2, 8, 2)])
def test_tasks_submitted_ahead_never_exceed_the_limits(tmp_path, server, workers, per_host, expected_peak):
    """Without a delay, pages are handed to the pool ahead of free workers; requests at once
    stay within both the workers and the host's limit, and reach it."""
    overlap = Overlap(server, target=expected_peak, total=len(TOP100))
    cfg = config(tmp_path, server, workers=workers, max_in_flight_per_host=per_host)
    result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert overlap.peak == expected_peak and overlap.timeouts == 0
    assert rows(tmp_path / "m.db", "select count(*) n from records")[0]["n"] == TOP100_RECORDS


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
            released.wait(HOLD_BOUND)  # never answered: its worker is killed meanwhile
            return
        _answer(handler, [], pages["/board/7"])

    server.routes["/board/7"] = hang_once
    db = tmp_path / "m.db"
    # The lost page is given up page_deadline + LOST_TASK_GRACE after it was handed over; the
    # deadline is short to keep the test short, and still far more than a healthy page needs.
    crawl = start_cli(str(config(tmp_path, server, maoyan=("hot",), page_deadline=5.0, workers=2)),
                      "--db", str(db))
    try:
        wait_for(lambda: ports, what="the first request")
        workers = subprocess.run(["pgrep", "-P", str(crawl.pid)], capture_output=True, text=True).stdout.split()
        busy = _pid_with_port(ports[0], [int(pid) for pid in workers])
        assert busy is not None
        for pid in [int(pid) for pid in workers] if victims == "all" else [busy]:
            os.kill(pid, signal.SIGKILL)
        out, err = crawl.communicate(timeout=120)
    finally:
        released.set()
        crawl.kill()
    assert crawl.returncode == 0, err
    assert count_records(db) == OFFLINE.records_of("maoyan", "hot")
    [page] = rows(db, "select attempts, outcome from pages")
    assert page == {"attempts": 2, "outcome": "ok"}


@pytest.mark.parametrize("behaviour", ["silent", "trickle"])
def test_a_server_that_never_finishes_is_cut_off(tmp_path, server, behaviour):
    """A server that says nothing is cut off by request_timeout; one that trickles bytes (each
    wait for a byte short) only by page_deadline. Each bound is set far from the other, so
    which one cuts the page does not depend on how busy the machine is."""
    stop = threading.Event()

    def never(handler):
        try:
            if behaviour == "trickle":
                handler.send_response(200)
                handler.send_header("Content-Length", "1000000")
                handler.end_headers()
                while not stop.is_set():
                    handler.wfile.write(b"<")
                    handler.wfile.flush()
                    stop.wait(0.05)
            else:
                stop.wait(HOLD_BOUND)
        except OSError:
            pass  # the crawler hung up, as it should

    server.routes["/board/7"] = never
    timeouts = {"silent": {"request_timeout": 1.0, "page_deadline": 60.0},
                "trickle": {"request_timeout": 30.0, "page_deadline": 1.5}}[behaviour]
    cfg = config(tmp_path, server, maoyan=("hot",), max_attempts=2, **timeouts)
    try:
        result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"), timeout=300)
    finally:
        stop.set()
    assert result.returncode == 1, result.stderr
    [page] = rows(tmp_path / "m.db", "select attempts, outcome, error from pages")
    assert page["attempts"] == 2 and page["outcome"] == "error"
    expected = "page deadline" if behaviour == "trickle" else "timed out"
    assert expected in page["error"], page["error"]
    assert server.count("/board/7") == 2


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
    assert count_records(db) == OFFLINE.records_of("douban")  # Douban finished
    outcomes = rows(db, "select outcome, count(*) n from pages where site = 'maoyan' group by outcome")
    assert {r["outcome"]: r["n"] for r in outcomes} == {"blocked": 3, "error": len(TOP100) - 3}
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
def test_interrupt_keeps_what_was_stored_and_resume_completes_it(tmp_path, server, gate, signum, code):
    """Three pages are answered, the two workers' next requests are held; the signal comes
    with those in flight, and only then are they answered: they must be finished and stored.
    Requests that arrive after that (handed to the pool before the crawler read the signal)
    get a 503, so exactly 3 + 2 pages are stored however fast the crawler reads the signal."""
    crawl, cfg, db, held = start_gated_crawl(tmp_path, server, gate, ("top100", "most-wanted"), free=3,
                                             late=SERVICE_UNAVAILABLE)
    try:
        wait_for(lambda: stored_pages(db) >= 3 and held.held >= 2, what="three pages stored and two in flight")
        crawl.send_signal(signum)
        held.open()
        out, _ = crawl.communicate(timeout=120)
    finally:
        crawl.kill()
    err = (tmp_path / "stderr.txt").read_text(encoding="utf-8")
    assert crawl.returncode == code, err
    assert "Traceback" not in err
    assert f"resume with: python -m crawler {cfg} --db {db} --resume 1" in err
    [run] = rows(db, "select status, records from runs")
    stored = rows(db, "select url from pages where outcome = 'ok'")
    assert run["status"] == "interrupted" and run["records"] == count_records(db) == records_on(
        server, [page["url"] for page in stored])
    assert len(stored) == 3 + 2  # the two downloading when the signal came were finished and stored
    server.serve_fixtures("maoyan")
    before = list(server.requests)

    result = run_cli(str(cfg), "--db", str(db), "--resume")
    assert result.returncode == 0, result.stderr
    records = OFFLINE.records_of("maoyan", "top100", "most-wanted")
    assert rows(db, "select id, status, records from runs") == [{"id": 1, "status": "ok", "records": records}]
    again = server.requests[len(before):]
    for page in stored:
        assert page["url"].removeprefix(server.url) not in again  # stored pages are not fetched again


def test_kill_9_leaves_a_sound_database_that_resumes(tmp_path, server, gate):
    crawl, cfg, db, held = start_gated_crawl(tmp_path, server, gate, ("top100",), free=2)
    try:
        wait_for(lambda: stored_pages(db) >= 2 and held.held >= 2, what="two pages stored and two in flight")
        workers = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(crawl.pid)], capture_output=True,
                                                      text=True).stdout.split()]
        crawl.kill()
        crawl.wait(timeout=60)
        for pid in workers:  # orphaned by the kill: they would wait on the held pages
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        crawl.kill()
        held.open()
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    ok_pages = [url for (url,) in conn.execute("select url from pages where outcome = 'ok'")]
    assert len(ok_pages) == 2 and conn.execute("select count(*) from records").fetchone()[0] == records_on(
        server, ok_pages)
    conn.close()
    server.serve_fixtures("maoyan")
    result = run_cli(str(cfg), "--db", str(db), "--resume")
    assert result.returncode == 0, result.stderr
    assert rows(db, "select status, records from runs") == [{"status": "ok", "records": TOP100_RECORDS}]


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
    # Its robots.txt cannot be had either; that case is robots.txt's own (test_policies).
    cfg = write_config(tmp_path / "c.toml", f'[crawl]\nmax_attempts = 2\nretry_backoff = 0.01\n'
                                            f'[sites.maoyan]\nbase_url = "http://127.0.0.1:{port}"\n'
                                            'boards = ["hot", "cn-box-office"]\nobey_robots = false\n')
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


def test_a_gbk_page_with_no_charset_anywhere_is_decoded(tmp_path, server):
    """TOP100 in GBK, with neither a charset in Content-Type nor a <meta charset>: every record
    is stored as the same pages in UTF-8 give it, Chinese titles included."""
    columns = "rank, movie_id, title, actors, release_date, release_region, score"
    server.serve_fixtures("maoyan")
    reference = tmp_path / "utf8.db"
    assert run_cli(str(config(tmp_path, server)), "--db", str(reference)).returncode == 0
    for path in TOP100:
        html = fixture_pages("maoyan")[path][2].decode("utf-8")
        gbk = re.sub(r"<meta[^>]*charset[^>]*>", "", html, flags=re.I).encode("gbk")
        assert b"charset" not in gbk.lower()
        with pytest.raises(UnicodeDecodeError):
            gbk.decode("utf-8")  # so only the fallback can read it
        server.routes[path] = (200, {"Content-Type": "text/html"}, gbk)
    db = tmp_path / "m.db"
    result = run_cli(str(config(tmp_path, server)), "--db", str(db))
    assert result.returncode == 0, result.stderr
    stored = rows(db, f"select {columns} from records order by rank")
    assert len(stored) == TOP100_RECORDS and stored == rows(reference, f"select {columns} from records order by rank")
    assert stored[0]["title"] == "我不是药神" and stored[4]["title"] == "霸王别姬"
    [(kept,)] = sqlite3.connect(db).execute("select html from page_html where url = ?", (server.url + TOP100[0],))
    assert zlib.decompress(kept) == server.routes[TOP100[0]][2]  # stored as received, in GBK


ALL_MAOYAN = ("top100", "hot", "most-wanted", "cn-box-office", "na-box-office")


def flaky_plan(paths) -> dict[str, list[str]]:
    """Per page, how its first requests fail before it is served: every third page (in path
    order) fails once and every ninth twice, with a 500, a 503, a connection closed without an
    answer, or a body cut short, in turn: about a third of the answers fail."""
    kinds = ("500", "503", "drop", "cut")
    plan, turn = {}, 0
    for i, path in enumerate(sorted(paths)):
        failures = (i % 3 == 0) + (i % 9 == 0)
        plan[path] = [kinds[(turn + n) % len(kinds)] for n in range(failures)]
        turn += failures
    return plan


def serve_flaky(server, pages, plan) -> None:
    """Each path answers by its own request counter, so which requests fail is fixed in advance."""
    asked: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(path, page):
        def answer(handler):
            with lock:
                n = asked[path] = asked.get(path, 0) + 1
            kind = plan[path][n - 1] if n <= len(plan[path]) else "ok"
            if kind in ("500", "503"):
                send(handler, int(kind), b"oops")
            elif kind == "drop":
                handler.close_connection = True  # not a word
                handler.connection.shutdown(socket.SHUT_RDWR)
            elif kind == "cut":
                handler.send_response(200)
                handler.send_header("Content-Type", page[1]["Content-Type"])
                handler.send_header("Content-Length", str(len(page[2])))
                handler.end_headers()
                handler.wfile.write(page[2][: len(page[2]) // 2])
                handler.close_connection = True
            else:
                send(handler, page[0], page[2], page[1])
        return answer

    for path, page in pages.items():
        server.routes[path] = flaky(path, page)


@pytest.mark.parametrize("options", [[], ["--workers", "1"], ["--pool", "thread"]], ids=["process", "workers-1", "thread"])
def test_a_flaky_server_still_yields_every_record(tmp_path, server, options):
    """A third of the pages fail at first (500, 503, a dropped connection, a cut body; some
    twice): every page ends stored after its retries, whatever the pool."""
    server.serve_fixtures("maoyan")  # their robots.txt
    server.serve_fixtures("douban", prefix="/douban")
    pages = {**board_pages("maoyan"), **{"/douban" + p: r for p, r in board_pages("douban").items()}}
    plan = flaky_plan(pages)
    serve_flaky(server, pages, plan)
    cfg = config(tmp_path, server, maoyan=ALL_MAOYAN, douban=("top250",), max_attempts=3)
    db = tmp_path / "m.db"
    result = run_cli(str(cfg), "--db", str(db), *options)
    assert result.returncode == 0, result.stderr
    if "thread" not in options:  # see test_pools: the thread pool's terminate() may print one
        assert "Traceback" not in result.stderr
    assert count_records(db) == OFFLINE.records
    retried = [path for path, failures in plan.items() if failures]
    thirds, ninths = -(-OFFLINE.pages // 3), -(-OFFLINE.pages // 9)  # the pages i % 3 == 0, and i % 9 == 0
    assert len(retried) == thirds and sum(map(len, plan.values())) == thirds + ninths
    assert rows(db, "select status, pages_ok, pages_retried, pages_failed from runs") == [
        {"status": "ok", "pages_ok": OFFLINE.pages, "pages_retried": len(retried), "pages_failed": 0}]
    attempts = {r["url"].removeprefix(server.url): (r["outcome"], r["attempts"])
                for r in rows(db, "select url, outcome, attempts from pages")}
    assert attempts == {path: ("ok", 1 + len(failures)) for path, failures in plan.items()}
    assert {path: server.count(path) for path in plan} == {path: 1 + len(f) for path, f in plan.items()}


def gzip_bomb(size: int = 1 << 30) -> bytes:
    """`size` zero bytes, gzipped: about 4.5 MB that decompress to 1 GiB."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    block = bytes(1 << 20)
    return b"".join([*(packer.compress(block) for _ in range(size // len(block))), packer.flush()])


def test_a_gzip_bomb_is_cut_off_at_max_page_bytes(tmp_path, server):
    """A page that decompresses to 1 GiB, in a crawl whose processes may each map 768 MiB: the
    page is an error at max_page_bytes (decompressed), the others are stored."""
    server.serve_fixtures("maoyan")
    bomb = gzip_bomb()

    def answer(handler):
        try:
            send(handler, 200, bomb, {"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"})
        except OSError:
            pass  # the crawler stopped reading at its limit and hung up

    server.routes["/board/7"] = answer
    cfg = config(tmp_path, server, maoyan=("top100", "hot"), max_page_bytes=200_000)
    db = tmp_path / "m.db"
    result = run_cli(str(cfg), "--db", str(db), memory_limit=768 << 20)
    assert result.returncode == 1, result.stderr
    assert f"not stored: {server.url}/board/7: page larger than max_page_bytes" in result.stderr
    [page] = rows(db, "select status, bytes, attempts, outcome, error from pages where outcome != 'ok'")
    assert page == {"status": 200, "bytes": 200_000, "attempts": 1, "outcome": "error",
                    "error": "page larger than max_page_bytes (200000 bytes kept); not parsed"}
    assert rows(db, "select count(*) n from pages where outcome = 'ok'") == [{"n": len(TOP100)}]
    assert count_records(db) == TOP100_RECORDS and server.count("/board/7") == 1
    assert len(bomb) < 200_000 * 25 < (1 << 30)  # a small download, a huge page


def test_a_redirect_off_the_site_is_not_followed(tmp_path, server):
    """A board page sends the crawler to another host. The crawl goes through this server as
    its HTTP proxy, so a redirect followed by mistake would come here too (never leave
    127.0.0.1): the server must see exactly the two pages asked for, once each."""
    pages = fixture_pages("maoyan")
    base = server.url
    server.routes[f"{base}/board/7"] = (302, {"Location": "http://other.example/board/7"}, b"")
    server.routes[f"{base}/board/1"] = pages["/board/1"]
    cfg = config(tmp_path, server, maoyan=("hot", "cn-box-office"))
    db = tmp_path / "m.db"
    proxies = {name: None for name in os.environ if name.lower().endswith("_proxy")}
    result = run_cli(str(cfg), "--db", str(db), env={**proxies, "HTTP_PROXY": base, "HTTPS_PROXY": base})
    assert result.returncode == 1, result.stderr
    pages = [url for url in server.requests if not url.endswith(".woff")]  # /board/1's font comes through it too
    assert sorted(pages) == [f"{base}/board/1", f"{base}/board/7"]
    error = "redirected off the site to http://other.example/board/7; not followed"
    assert f"not stored: {base}/board/7: {error}" in result.stderr
    assert rows(db, "select url, status, attempts, outcome, error from pages where outcome != 'ok'") == [
        {"url": f"{base}/board/7", "status": 302, "attempts": 1, "outcome": "error", "error": error}]
    assert count_records(db) == OFFLINE.records_of("maoyan", "cn-box-office")


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

    monkeypatch.setitem(sites.SITES, "maoyan", replace(sites.SITES["maoyan"], parse=fragile))
    result = crawl(load_config(config(tmp_path, server)), db_path=str(tmp_path / "m.db"), workers=2)
    assert result.status == "partial" and result.pages_ok == len(TOP100) - 1
    assert result.records == TOP100_RECORDS - OFFLINE.records_at("maoyan", "/board/4?offset=50")
    [(url, error)] = result.failures
    assert url == f"{server.url}/board/4?offset=50"
    expected = "parser failed: IndexError" if failure == "raises" else "instead of a BoardPage"
    assert expected in error  # the parser's own error, not a page given up at its deadline
    [page] = rows(tmp_path / "m.db", "select attempts, outcome, error from pages where url = ?", url)
    assert page == {"attempts": 1, "outcome": "error", "error": error}


def test_a_page_cut_short_is_retried_then_reported(tmp_path, server):
    status, headers, body = fixture_pages("maoyan")["/board/7"]
    server.routes["/board/7"] = (200, headers, body[: len(body) * 2 // 3])
    db = tmp_path / "m.db"
    result = run_cli(str(config(tmp_path, server, maoyan=("hot",), max_attempts=2)), "--db", str(db))
    assert result.returncode == 1
    assert "page cut short (no closing </html>)" in result.stderr
    assert server.count("/board/7") == 2 and count_records(db) == 0


def test_a_second_ctrl_c_stops_at_once_and_the_database_stays_sound(tmp_path, server, gate):
    """Two pages in flight are held and never answered, with a page deadline far beyond the
    test's bound: the crawl can only end by not waiting for them. The second Ctrl-C is sent
    once the crawler has said it took the first (two signals sent together may reach
    Python's handler as one)."""
    crawl, cfg, db, held = start_gated_crawl(tmp_path, server, gate, ("top100", "most-wanted"), free=2,
                                             page_deadline=3600.0)
    stderr = tmp_path / "stderr.txt"
    try:
        wait_for(lambda: stored_pages(db) >= 2 and held.held >= 2, what="two pages stored and two in flight")
        crawl.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping" in stderr.read_text(encoding="utf-8") or crawl.poll() is not None,
                 what="the crawler to take the first Ctrl-C")
        if crawl.poll() is None:
            crawl.send_signal(signal.SIGINT)
        crawl.communicate(timeout=120)
    finally:
        crawl.kill()
    err = stderr.read_text(encoding="utf-8")
    assert crawl.returncode == 130, err
    assert "Traceback" not in err
    assert not held.opened.is_set() and held.held == 2  # it ended with both pages still unanswered
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.close()
    [run] = rows(db, "select status, message from runs")
    assert run["status"] == "interrupted" and run["message"].startswith("stopped at once by a second signal")
    held.open()
    server.serve_fixtures("maoyan")
    assert run_cli(str(cfg), "--db", str(db), "--resume").returncode == 0
    records = OFFLINE.records_of("maoyan", "top100", "most-wanted")
    assert rows(db, "select status, records from runs") == [{"status": "ok", "records": records}]


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

    server.serve_fixtures("maoyan")  # its robots.txt
    for path, route in board_pages("maoyan").items():
        server.routes[path] = conditional(route, f'"{abs(hash(path))}"')
    cfg = config(tmp_path, server, maoyan=("hot", "most-wanted"))
    db = tmp_path / "m.db"
    assert run_cli(str(cfg), "--db", str(db)).returncode == 0
    first_asks = len(asked)
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 0, result.stderr
    second = asked[first_asks:]
    pages = OFFLINE.pages_of("maoyan", "hot", "most-wanted")
    assert first_asks == len(second) == pages  # /board/7 and the pages of /board/6, found again without parsing
    assert all(etag and since == "Wed, 26 Nov 2026 08:00:00 GMT" for _, etag, since in second)
    assert {p["status"] for p in rows(db, "select status from pages where run_id = 2")} == {304}
    columns = "site, board, rank, movie_id, title, score, month_wish, obfuscated"
    assert rows(db, f"select {columns} from records where run_id = 1 order by board, rank") == \
        rows(db, f"select {columns} from records where run_id = 2 order by board, rank")
    records = OFFLINE.records_of("maoyan", "hot", "most-wanted")
    assert rows(db, "select records from runs where id = 2") == [{"records": records}]
    assert rows(db, "select count(*) n from page_html where run_id = 2") == [{"n": pages}]
