"""Each politeness and failure policy: the pure decision, and the crawl that carries it out.

End-to-end tests run the real CLI against a real server on 127.0.0.1 and read what the
server saw; waits are handshakes (events, server-side counts, rows in the database), and
time appears only as a lower bound a policy guarantees.
"""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from crawler import policy, store
from crawler.config import parse_config
from crawler.fetch import FetchTask
from crawler.pools import make_pool
from crawler.progress import Progress
from crawler.runwriter import RunWriter
from crawler.scheduler import make_engine, worker_settings
from crawler.supervisor import PoolSupervisor
from tests.helpers import (OFFLINE, VERIFY_PAGE, board_pages, config, fixture_pages, rows, run_cli, send, start_cli,
                           wait_for)

# -- the decisions -----------------------------------------------------------------------------


def test_retry_only_what_is_worth_it_while_tries_are_left():
    assert policy.should_retry(True, 1, 3) and policy.should_retry(True, 2, 3)
    assert not policy.should_retry(True, 3, 3)
    assert not policy.should_retry(False, 1, 3)


def test_backoff_doubles_with_each_try_within_its_jitter():
    middle = lambda low, high: (low + high) / 2  # noqa: E731 - jitter's midpoint: x1
    assert [policy.retry_delay(n, 1.0, jitter=middle) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.retry_delay(1, 1.0, jitter=lambda low, high: low) == 0.5
    assert policy.retry_delay(1, 1.0, jitter=lambda low, high: high) == 1.5
    assert policy.retry_delay(20, 1.0, jitter=middle) == policy.MAX_BACKOFF


def test_retry_after_comes_before_the_backoff():
    assert policy.retry_delay(1, 0.05, retry_after=7.0) == 7.0
    assert policy.retry_delay(3, 30.0, retry_after=0.0) == 0.0
    assert policy.retry_delay(1, 0.05, retry_after=3600.0) == policy.MAX_BACKOFF


def test_a_site_is_left_alone_after_three_blocked_pages():
    assert [policy.stop_asking(n) for n in range(5)] == [False, False, False, True, True]


# -- retries, end to end ----------------------------------------------------------------------

def flaky_once(route, first):
    """A route whose first answer is `first` (status, headers, body), then the page itself."""
    answers = [first]

    def answer(handler):
        status, headers, body = answers.pop(0) if answers else route
        send(handler, status, body, headers)
    return answer


def test_a_retry_waits_for_the_backoff(tmp_path, server):
    server.routes["/board/7"] = flaky_once(fixture_pages("maoyan")["/board/7"], (503, {}, b"busy"))
    cfg = config(tmp_path, server, maoyan=("hot",), retry_backoff=1.0)
    result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert len(server.times) == 2
    assert server.times[1] - server.times[0] >= 0.5  # the backoff's least, after jitter


def test_a_retry_obeys_retry_after_over_a_short_backoff(tmp_path, server):
    server.routes["/board/7"] = flaky_once(fixture_pages("maoyan")["/board/7"], (429, {"Retry-After": "2"}, b"wait"))
    cfg = config(tmp_path, server, maoyan=("hot",), retry_backoff=0.01)
    result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert len(server.times) == 2 and server.times[1] - server.times[0] >= 2.0 - 0.05


def test_a_304_to_a_request_that_was_not_conditional_is_an_error(tmp_path, server):
    def not_modified(handler):
        handler.send_response(304)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    server.routes["/board/7"] = not_modified
    db = tmp_path / "m.db"
    result = run_cli(str(config(tmp_path, server, maoyan=("hot",))), "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert rows(db, "select outcome, error from pages") == [
        {"outcome": "error", "error": "HTTP 304 to a request that was not conditional"}]
    assert rows(db, "select status from runs") == [{"status": "failed"}]


# -- a blocked site gets nothing more, in every pool ----------------------------------------------

@pytest.mark.parametrize("pool", ["process", "thread", "dask"])
def test_no_request_starts_after_the_crawler_gives_up_on_a_site(tmp_path, server, pool):
    """Three blocked pages are answered at once; the next ones are held until the decision is stored.

    Every worker is then inside a held request, so no request can start before the test
    counts them; after the release, the tasks waiting in the pool must send nothing.
    """
    if pool == "dask":
        pytest.importorskip("dask.distributed")
    release = threading.Event()
    seen = []

    def blocked(handler):
        with server.lock:
            seen.append(handler.path)
            held = len(seen) > 3
        if held:
            release.wait(60)
        send(handler, 200, VERIFY_PAGE)

    for path in board_pages("maoyan"):
        server.routes[path] = blocked
    cfg = config(tmp_path, server, maoyan=("top100",), workers=4, max_in_flight_per_host=4, pool=pool)
    db = tmp_path / "m.db"
    crawl = start_cli(str(cfg), "--db", str(db))
    try:
        wait_for(lambda: blocked_pages(db) >= 3, timeout=60, what="the third blocked page stored")
        if pool != "dask":  # 12 tasks were handed out: 3 answered, 4 held, 5 waiting in the pool
            wait_for(lambda: len(seen) == 7, timeout=60, what="every worker inside a held request")
        before = len(seen)
        release.set()
        out, err = crawl.communicate(timeout=120)
    finally:
        release.set()
        crawl.kill()
    assert crawl.returncode == 3, err
    if pool != "dask":
        assert len(seen) == before == 7
    else:  # only what runs at once is handed to a cluster: at most 3 + 4 workers were ever asked
        assert len(seen) <= 7
    outcomes = {r["outcome"]: r["n"] for r in rows(db, "select outcome, count(*) n from pages group by outcome")}
    assert outcomes == {"blocked": len(seen), "error": OFFLINE.pages_of("maoyan", "top100") - len(seen)}
    assert rows(db, "select distinct error from pages where outcome = 'error'") == [
        {"error": "not fetched: maoyan is blocking the crawler"}]


def blocked_pages(db: Path) -> int:
    try:
        return rows(db, "select count(*) n from pages where outcome = 'blocked'")[0]["n"]
    except Exception:  # noqa: BLE001 - the crawl has not made its tables yet
        return 0


# -- deadlines -----------------------------------------------------------------------------------

def trickle_until_cut(closed: threading.Event):
    """A page that sends a byte every 0.1 s until the client closes the connection (at most 60 s)."""
    def answer(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        try:
            for _ in range(600):
                handler.wfile.write(b"<")
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            closed.set()
    return answer


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_trickling_page_is_cut_at_its_deadline_and_its_connection_closed(tmp_path, server, pool):
    """The next page (one worker: it comes after) is served only once the trickling connection is closed."""
    closed = threading.Event()
    pages = fixture_pages("maoyan")
    server.routes["/board/7"] = trickle_until_cut(closed)

    def after_the_cut(handler):
        status, headers, body = pages["/board/1"]
        send(handler, status if closed.wait(60) else 500, body, headers)

    server.routes["/board/1"] = after_the_cut
    cfg = config(tmp_path, server, maoyan=("hot", "cn-box-office"), pool=pool, workers=1,
                 page_deadline=3.0, request_timeout=5.0, max_attempts=1)
    db = tmp_path / "m.db"
    result = run_cli(str(cfg), "--db", str(db))
    assert result.returncode == 1, result.stderr
    got = {r["url"].rsplit("/", 1)[1]: r for r in rows(db, "select url, outcome, error from pages")}
    assert got["1"]["outcome"] == "ok"
    expected = ("no complete response within the page deadline (3 s)" if pool == "process"
                else "body still arriving after the page deadline")
    assert got["7"]["outcome"] == "error" and got["7"]["error"].startswith(expected), got["7"]["error"]


def test_tasks_in_flight_are_queued_again_when_the_pool_is_replaced(tmp_path, server):
    """A lost task replaces the pool; the other tasks the old pool held are handed to the new one."""
    pages = fixture_pages("maoyan")
    release = threading.Event()

    def held(handler):
        release.wait(60)
        send(handler, 500, b"released")

    server.routes["/board/7"] = held
    server.routes["/board/1"] = held
    cfg = parse_config(f'[crawl]\nworkers = 2\ndelay_per_host = 0.0\n'
                       f'[sites.maoyan]\nbase_url = "{server.url}"\nboards = ["hot", "cn-box-office"]\n'
                       f'obey_robots = false\n')
    settings = worker_settings(cfg, None)
    db = store.open_db(tmp_path / "m.db")
    writer = RunWriter.open(db, "crawl.toml", cfg.text, False)
    supervisor = PoolSupervisor(lambda: make_pool("thread", 2, settings), 2, cfg.page_deadline)
    engine = make_engine(cfg, writer, supervisor, Progress(quiet=True), 2, False, tmp_path)
    try:
        engine.decisions.plan(set(), [])
        engine._submit_ready()
        wait_for(lambda: len(server.requests) == 2, what="both pages downloading")
        old_pool = supervisor.pool
        lost, other = (supervisor.in_flight[f"{server.url}/board/{n}"] for n in (7, 1))
        lost.deadline = 0.0  # its worker presumed dead
        server.routes["/board/1"] = pages["/board/1"]
        engine._reap()
        assert supervisor.pool is not old_pool and supervisor.in_flight == {}
        assert engine.frontier.peek(server.url.split("//")[1]) is other.task  # queued again as it was
        assert other.task.attempt == 1  # not counted as a failed try
        server.routes["/board/7"] = pages["/board/7"]
        engine.run()
    finally:
        release.set()
        supervisor.close()
    assert rows(tmp_path / "m.db", "select url, attempts, outcome from pages order by url") == [
        {"url": f"{server.url}/board/1", "attempts": 1, "outcome": "ok"},
        {"url": f"{server.url}/board/7", "attempts": 2, "outcome": "ok"}]
    store.close_db(db)


# -- stopping ----------------------------------------------------------------------------------

def start_held_crawl(tmp_path, server, boards, **settings):
    """A crawl (one worker) whose /board/7 is answered and /board/1 held until `release` is set;
    `lines` collects what it says on stderr, as it says it."""
    release = threading.Event()
    pages = fixture_pages("maoyan")
    for path in ("/board/7", "/board/2"):
        server.routes[path] = pages[path]

    def held(handler):
        release.wait(60)
        status, headers, body = pages["/board/1"]
        send(handler, status, body, headers)

    server.routes["/board/1"] = held
    cfg = config(tmp_path, server, maoyan=boards, workers=1, page_deadline=120.0, **settings)
    crawl = start_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(crawl.stderr.readline, "")), daemon=True).start()
    wait_for(lambda: server.count("/board/1") == 1, what="the held page downloading")
    return crawl, lines, release, tmp_path / "m.db"


def test_a_second_ctrl_c_stops_at_once_without_waiting_for_downloads(tmp_path, server):
    """The first Ctrl-C waits for the page under way (held here); the second one does not."""
    crawl, lines, release, db = start_held_crawl(tmp_path, server, ("hot", "cn-box-office"))
    try:
        crawl.send_signal(signal.SIGINT)
        wait_for(lambda: any(line.startswith("stopping: finishing the pages already downloading") for line in lines),
                 what="the first Ctrl-C taken")
        crawl.send_signal(signal.SIGINT)
        crawl.wait(timeout=60)
    finally:
        release.set()
        crawl.kill()
    err = "".join(lines)
    assert crawl.returncode == 130, err
    assert "crawler: stopped at once; the pages that were still downloading were abandoned" in err
    assert "Traceback" not in err
    assert rows(db, "select status, message from runs") == [
        {"status": "interrupted", "message": "stopped at once by a second signal (2 first)"}]
    assert rows(db, "select url, outcome from pages where outcome = 'ok'") == [
        {"url": f"{server.url}/board/7", "outcome": "ok"}]


def test_the_first_ctrl_c_stores_the_pages_under_way(tmp_path, server):
    crawl, lines, release, db = start_held_crawl(tmp_path, server, ("hot", "cn-box-office", "na-box-office"),
                                                 max_in_flight_per_host=1)
    try:
        crawl.send_signal(signal.SIGINT)
        wait_for(lambda: any(line.startswith("stopping:") for line in lines), what="the first Ctrl-C taken")
        release.set()
        crawl.wait(timeout=60)
    finally:
        release.set()
        crawl.kill()
    assert crawl.returncode == 130, "".join(lines)
    assert server.count("/board/2") == 0  # nothing more was asked for
    assert rows(db, "select count(*) n from pages where outcome = 'ok'") == [{"n": 2}]
    records = OFFLINE.records_of("maoyan", "hot", "cn-box-office")  # /board/7, /board/1
    assert rows(db, "select status, records from runs") == [{"status": "interrupted", "records": records}]


# -- robots.txt ----------------------------------------------------------------------------------

def robots_config(tmp_path: Path, server, boards=("hot", "cn-box-office", "na-box-office"), obey: bool | None = None,
                  **crawl) -> Path:
    settings = {"delay_per_host": 0.0, "retry_backoff": 0.05, **crawl}
    lines = ["[crawl]", *(f"{k} = {v!r}" for k, v in settings.items()),
             "[sites.maoyan]", f'base_url = "{server.url}"', "boards = [" + ", ".join(f'"{b}"' for b in boards) + "]"]
    if obey is not None:
        lines.append(f"obey_robots = {str(obey).lower()}")
    path = tmp_path / "crawl.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def text(body: str):
    return (200, {"Content-Type": "text/plain"}, body.encode())


def test_robots_rules_from_each_kind_of_answer():
    from crawler import robots
    from crawler.fetch import FetchResult
    from crawler.pipeline import PageOutcome

    def answered(status: int, body: bytes = b"") -> FetchResult:
        return FetchResult(task.url, task.url, status, {}, body, 0.01)

    task = robots.robots_task("maoyan", "http://example.test")
    ok = PageOutcome(task, "ok", result=answered(200, b"User-agent: *\nDisallow: /board/1\nCrawl-delay: 2\n"))
    rules = robots.rules(ok, "Mozilla/5.0")
    assert not rules.allows("http://example.test/board/1") and rules.allows("http://example.test/board/7")
    assert rules.crawl_delay() == 2.0
    missing = robots.rules(PageOutcome(task, "ok", result=answered(404)), "Mozilla/5.0")
    assert missing.allows("http://example.test/board/1") and missing.crawl_delay() is None and missing.why is None
    task3 = FetchTask("maoyan", robots.ROBOTS_BOARD, task.url, attempt=3)
    down = robots.rules(PageOutcome(task3, "error", result=answered(503), error="HTTP 503", retryable=True),
                        "Mozilla/5.0")
    assert not down.allows("http://example.test/board/7") and "after 3 tries" in down.why
    only_ours = robots.rules(PageOutcome(task, "ok", result=answered(200, b"User-agent: crawler\nDisallow: /\n")),
                             "crawler/1.0")
    assert not only_ours.allows("http://example.test/board/7")


def test_robots_txt_is_asked_once_and_its_disallow_obeyed(tmp_path, server):
    server.serve_fixtures("maoyan")
    server.routes["/robots.txt"] = text("User-agent: *\nDisallow: /board/1\n")
    db = tmp_path / "m.db"
    result = run_cli(str(robots_config(tmp_path, server)), "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert server.robots == ["/robots.txt"]
    assert sorted(server.requests) == ["/board/2", "/board/7"]  # /board/1 never asked for
    assert rows(db, "select outcome, error from pages where url like '%/board/1'") == [
        {"outcome": "disallowed", "error": "not fetched: disallowed by the site's robots.txt"}]
    records = OFFLINE.records_of("maoyan", "hot", "na-box-office")
    assert f"0 blocked, 1 disallowed by robots.txt; {records} records" in result.stderr
    assert rows(db, "select pages_disallowed, status from runs") == [{"pages_disallowed": 1, "status": "partial"}]


def test_obey_robots_false_never_asks_for_it(tmp_path, server):
    server.serve_fixtures("maoyan")
    server.routes["/robots.txt"] = text("User-agent: *\nDisallow: /\n")
    result = run_cli(str(robots_config(tmp_path, server, obey=False)), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert server.robots == [] and len(server.requests) == 3


def test_a_missing_robots_txt_allows_everything(tmp_path, server):
    server.serve_fixtures("maoyan")
    del server.routes["/robots.txt"]  # 404
    result = run_cli(str(robots_config(tmp_path, server)), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    assert server.robots == ["/robots.txt"] and len(server.requests) == 3


def test_crawl_delay_is_a_floor_under_delay_per_host(tmp_path, server):
    server.serve_fixtures("maoyan")
    server.routes["/robots.txt"] = text("User-agent: *\nCrawl-delay: 1\n")
    cfg = robots_config(tmp_path, server, workers=3, max_in_flight_per_host=3)
    began = time.monotonic()  # the same clock in every process here
    result = run_cli(str(cfg), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr
    # The i-th page is handed over at least i - 1 Crawl-delays after the first, which came after
    # `began`; arrival gaps alone prove nothing (each arrival also carries the hand-over's latency).
    arrivals = sorted(server.times)
    assert len(arrivals) == 3 and all(at - began >= i * 1.0 for i, at in enumerate(arrivals))


def test_a_robots_txt_that_fails_is_retried_and_then_keeps_the_crawler_out(tmp_path, server):
    server.serve_fixtures("maoyan")
    server.routes["/robots.txt"] = (503, {"Content-Type": "text/plain"}, b"down")
    db = tmp_path / "m.db"
    result = run_cli(str(robots_config(tmp_path, server, max_attempts=2)), "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert server.robots == ["/robots.txt"] * 2 and server.requests == []
    assert "maoyan: robots.txt could not be read (HTTP 503, after 2 tries)" in result.stderr
    assert rows(db, "select distinct outcome from pages") == [{"outcome": "disallowed"}]


def test_a_robots_txt_that_fails_once_is_retried_then_obeyed(tmp_path, server):
    server.serve_fixtures("maoyan")
    server.routes["/robots.txt"] = flaky_once(text("User-agent: *\nDisallow: /board/7\n"), (503, {}, b"busy"))
    result = run_cli(str(robots_config(tmp_path, server)), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 1, result.stderr
    assert server.robots == ["/robots.txt"] * 2
    assert sorted(server.requests) == ["/board/1", "/board/2"]


def test_offline_fixtures_carry_a_robots_txt_that_is_obeyed(tmp_path):
    import shutil

    from tests.helpers import FIXTURES

    folder = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, folder)
    (folder / "maoyan" / "robots.txt").write_text("User-agent: *\nDisallow: /board/7\n", encoding="utf-8")
    db = tmp_path / "m.db"
    result = run_cli("crawl.toml", "--fixtures", str(folder), "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert rows(db, "select url, outcome from pages where outcome != 'ok'") == [
        {"url": "https://www.maoyan.com/board/7", "outcome": "disallowed"}]
    pages, records = OFFLINE.pages - 1, OFFLINE.records - OFFLINE.records_of("maoyan", "hot")
    assert f"{pages} pages ok, 0 failed, 0 blocked, 1 disallowed by robots.txt; {records} records" in result.stderr
