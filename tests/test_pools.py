"""The pool choice (crawler.pools): process, thread and dask pools under the one scheduler.

Unit tests hand crawler.fetch.fetch to each pool against the test server; end-to-end tests
run crawler.scheduler.crawl with each pool over the offline fixtures into a real SQLite
file and compare the rows with the process pool's. Every wait is bounded.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from crawler import pools
from crawler.config import Config, load_config, parse_config
from crawler.fetch import FetchError, FetchResult, FetchTask, SiteHTTP, WorkerSettings, fetch
from crawler.offline import FIXTURES
from crawler.pools import DaskPool, PoolUnavailable, make_pool
from crawler import scheduler
from crawler.scheduler import shutdown_pool
from tests.helpers import HOLD_BOUND, OFFLINE, REPO, config, fixture_pages, rows, send, wait_for

KINDS = ["process", "thread", "dask"]
PAGE = "/board/4?offset=0"


def settings_for(config: Config, fixtures: str | None = None, page_deadline: float = 60.0,
                 request_timeout: float = 30.0) -> WorkerSettings:
    return WorkerSettings(user_agent="crawler-tests", request_timeout=request_timeout, page_deadline=page_deadline,
                          max_page_bytes=5_000_000, offline_fixtures=fixtures,
                          sites={s.name: SiteHTTP(s.base_url, dict(s.headers), dict(s.cookies)) for s in config.sites})


def server_settings(server, **bounds: float) -> WorkerSettings:
    return settings_for(parse_config(f'[sites.maoyan]\nbase_url = "{server.url}"\n'), **bounds)


def new_pool(kind: str, settings: WorkerSettings, workers: int = 2) -> Any:
    """make_pool, except that dask here is an in-process LocalCluster (starts in a fraction of a second)."""
    if kind == "dask":
        pytest.importorskip("dask.distributed")
        return DaskPool.start(workers, settings, processes=False)
    return make_pool(kind, workers, settings)


@pytest.fixture
def pool_of() -> Callable[..., Any]:
    made: list[Any] = []

    def make(kind: str, settings: WorkerSettings, workers: int = 2) -> Any:
        made.append(new_pool(kind, settings, workers))
        return made[-1]

    yield make
    for pool in made:
        shutdown_pool(pool)


def run_one(pool: Any, task: FetchTask, timeout: float = 120.0, keep: list | None = None) -> tuple[str, Any, int]:
    """apply_async one fetch; return (which callback, its argument, the pid it ran in).

    keep: a list to hold what apply_async returned (a dask future keeps its result alive)."""
    done = threading.Event()
    got: list[tuple[str, Any, int]] = []

    def on(kind: str, value: Any) -> None:
        got.append((kind, value, os.getpid()))
        done.set()

    handle = pool.apply_async(fetch, (task,), callback=lambda r: on("result", r),
                              error_callback=lambda e: on("error", e))
    if keep is not None:
        keep.append(handle)
    assert done.wait(timeout), "no callback within the bound"
    return got[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- each pool, one task at a time --------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_callback_gets_the_page_in_the_driver(kind, server, pool_of):
    server.serve_fixtures("maoyan")
    pool = pool_of(kind, server_settings(server))
    which, result, pid = run_one(pool, FetchTask("maoyan", "top100", server.url + PAGE))
    assert which == "result" and pid == os.getpid()
    assert isinstance(result, FetchResult) and result.status == 200
    assert result.body == fixture_pages("maoyan")[PAGE][2]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", ["redirect-loop", "refused"])
def test_error_callback_gets_the_original_fetch_error(kind, case, server, pool_of):
    server.routes["/loop"] = lambda h: send(h, 302, b"", {"Location": "/loop"})
    url = server.url + "/loop" if case == "redirect-loop" else f"http://127.0.0.1:{closed_port()}/board/4"
    pool = pool_of(kind, server_settings(server))
    which, error, pid = run_one(pool, FetchTask("maoyan", "top100", url))
    assert which == "error" and pid == os.getpid()
    assert type(error) is FetchError and error.url == url
    assert error.retryable is (case == "refused")


# How long a test lets terminate() take before it calls it stuck: far more than any
# terminate needs, far less than the bounds (page deadline, request timeout, the server's
# hold) after which the page in flight would end by itself.
TERMINATE_GUARD = 60.0


@pytest.mark.parametrize("kind", KINDS)
def test_terminate_returns_with_a_page_in_flight(kind, server, pool_of, monkeypatch):
    """terminate() returns, without raising, while a page is still downloading. The page is
    held until terminate() has returned, and neither the worker's page deadline nor its
    request timeout can end it before the guard: so terminate() did not wait for it."""
    release = threading.Event()

    def slow(handler) -> None:
        release.wait(HOLD_BOUND)
        try:
            send(handler, 200, b"late")
        except OSError:
            pass  # the worker asking was killed by terminate()

    server.routes["/slow"] = slow
    monkeypatch.setattr(pools, "DASK_TERMINATE_TIMEOUT", 1.0)  # in-process workers wait for a stuck task
    bounds = {"page_deadline": 10 * TERMINATE_GUARD, "request_timeout": 10 * TERMINATE_GUARD}
    pool = pool_of(kind, server_settings(server, **bounds))
    pool.apply_async(fetch, (FetchTask("maoyan", "top100", server.url + "/slow"),))
    ended: list[BaseException | None] = []

    def terminate() -> None:
        try:
            pool.terminate()
            ended.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            ended.append(exc)

    try:
        wait_for(lambda: server.count("/slow"), what="the slow page to be asked for")
        stopper = threading.Thread(target=terminate, daemon=True)
        stopper.start()
        stopper.join(TERMINATE_GUARD)
        assert not stopper.is_alive(), "terminate() waited for the page in flight"
        if ended[0] is not None:
            raise ended[0]
    finally:
        release.set()


def test_process_pool_replaces_a_dead_worker(server, pool_of):
    """The process pool's worker handler no longer wakes on results; it must still wake
    when a worker dies, and start another in its place."""
    server.serve_fixtures("maoyan")
    pool = pool_of("process", server_settings(server))
    assert isinstance(pool, pools.ProcessPool)
    first = {p.pid for p in pool._pool}
    victim = pool._pool[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: len({p.pid for p in pool._pool if p.is_alive()} - first) == 1,
             what="a new worker in the dead one's place")
    # (Asking it for a page is not tested here: a worker killed while idle may die holding
    # the task queue's lock, which is why the scheduler replaces a pool that lost a task.)


def test_thread_pool_gives_each_thread_its_own_session(server):
    import crawler.fetch

    pool = make_pool("thread", 3, server_settings(server))
    barrier = threading.Barrier(3, timeout=60)

    def session_of_this_thread() -> int:
        barrier.wait()  # all three threads at once, so no thread answers twice
        return id(crawler.fetch._downloads.session())

    try:
        ids = [pool.apply_async(session_of_this_thread) for _ in range(3)]
        assert len({r.get(timeout=120) for r in ids}) == 3
    finally:
        shutdown_pool(pool)


def test_unknown_pool_kind_is_refused(server):
    with pytest.raises(ValueError, match="unknown pool 'fibers'"):
        make_pool("fibers", 2, server_settings(server))


def test_without_dask_installed_importing_works_and_choosing_dask_says_what_to_install():
    script = (
        "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
        "import crawler.scheduler, crawler.pools as p\n"
        "from crawler.fetch import WorkerSettings\n"
        "try:\n"
        "    p.make_pool('dask', 2, WorkerSettings('ua', 1.0, 1.0, 1, {}))\n"
        "except p.PoolUnavailable as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "the dask pool needs dask.distributed: pip install -e '.[dask]'"
    plain = subprocess.run([sys.executable, "-c", "import sys, crawler.pools, crawler.scheduler; "
                            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "[]", plain.stderr


# -- dask specifics -----------------------------------------------------------------------

def test_dask_resubmitting_the_same_call_really_runs_it_again(server, pool_of):
    hits = []

    def fails_once(handler) -> None:
        hits.append(1)
        if len(hits) == 1:
            handler.close_connection = True  # no answer at all: a retryable FetchError
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        send(handler, 200, fixture_pages("maoyan")[PAGE][2])

    server.routes[PAGE] = fails_once
    pool = pool_of("dask", server_settings(server))
    task = FetchTask("maoyan", "top100", server.url + PAGE)
    held: list = []  # the failed attempt's future is still alive, as it may be when a retry is sent
    first = run_one(pool, task, keep=held)
    second = run_one(pool, task, keep=held)  # the same function and the same argument, as a retry sends it
    assert first[0] == "error" and type(first[1]) is FetchError and first[1].retryable
    assert second[0] == "result" and second[1].status == 200
    assert len(hits) == 2 and held[0].key != held[1].key


def test_dask_callback_that_raises_does_not_stop_the_later_ones(server, pool_of):
    server.serve_fixtures("maoyan")
    pool = pool_of("dask", server_settings(server))
    task = FetchTask("maoyan", "top100", server.url + PAGE)
    pool.apply_async(fetch, (task,), callback=lambda r: 1 / 0)
    assert run_one(pool, task)[0] == "result"


def test_dask_address_uses_that_cluster_and_leaves_it_running(server):
    distributed = pytest.importorskip("dask.distributed")
    server.serve_fixtures("maoyan")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  dashboard_address="127.0.0.1:0") as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        pool = make_pool("dask", 2, server_settings(server), dask_address=cluster.scheduler_address)
        try:
            assert run_one(pool, FetchTask("maoyan", "top100", server.url + PAGE))[0] == "result"
        finally:
            pool.terminate()
        with distributed.Client(cluster, set_as_default=False) as client:
            assert client.submit(len, "still up").result(timeout=60) == 8


@pytest.mark.parametrize("address, why", [
    ("tcp://127.0.0.1:{port}", r"Timed out trying to connect to tcp://127\.0\.0\.1:\d+ after 1 s$"),
    ("127.0.0.1", r"missing port number"),
    ("tcp://127.0.0.1:99999", r"port 99999 is out of range \(1 to 65535\)$"),
    ("foo://127.0.0.1:{port}", r"unknown address scheme 'foo'"),
])
def test_dask_scheduler_that_cannot_be_reached_is_one_clear_error(address, why, server, monkeypatch):
    """Nothing listens there: Dask retries until the connect timeout, the crawler's
    DASK_CONNECT_TIMEOUT (the message says which bound ended it, not the clock)."""
    pytest.importorskip("dask.distributed")
    monkeypatch.setattr(pools, "DASK_CONNECT_TIMEOUT", 1.0)
    address = address.format(port=closed_port())
    with pytest.raises(PoolUnavailable, match=f"^cannot reach the dask scheduler at {address}: ") as caught:
        make_pool("dask", 2, server_settings(server), dask_address=address)
    assert "\n" not in str(caught.value)
    assert re.search(why, str(caught.value)), str(caught.value)


# -- end to end: the scheduler with each pool -----------------------------------------------

OFFLINE_CONFIG = "[crawl]\npage_deadline = 60.0\nretry_backoff = 0.05\n[sites.maoyan]\n[sites.douban]\n"
RECORD_ROWS = OFFLINE.records
PAGES = OFFLINE.pages


def crawl(config: Config, make: Callable[[], Any], folder: Path, offline: bool, workers: int = 4) -> Path:
    """One run of the real crawl with the given pool into a fresh SQLite file."""
    folder.mkdir(parents=True, exist_ok=True)
    db_path = folder / "movies.db"
    result = scheduler.crawl(config, str(db_path), offline=offline, workers=workers, make_pool=make)
    assert result.failures == [] and result.status == "ok"
    return db_path


def stored(db_path: Path) -> tuple[list[dict], list[dict]]:
    """Records and pages, without what differs between two runs (run ids, times)."""
    records = rows(db_path, "select * from records order by site, board, rank")
    pages = rows(db_path, "select url, site, board, status, bytes, attempts, outcome, error from pages order by url")
    for record in records:
        record.pop("run_id")
    return records, pages


@pytest.fixture(scope="module")
def process_pool_rows(tmp_path_factory) -> tuple[list[dict], list[dict]]:
    config = parse_config(OFFLINE_CONFIG)
    settings = settings_for(config, str(FIXTURES))
    db = crawl(config, lambda: make_pool("process", 4, settings), tmp_path_factory.mktemp("process"), True)
    return stored(db)


@pytest.mark.parametrize("kind", ["thread", "dask-threads", "dask-processes"])
def test_scheduler_stores_the_same_rows_with_every_pool(kind, tmp_path, process_pool_rows):
    config = parse_config(OFFLINE_CONFIG)
    settings = settings_for(config, str(FIXTURES))
    if kind == "thread":
        make = lambda: make_pool("thread", 4, settings)  # noqa: E731
    else:
        pytest.importorskip("dask.distributed")
        make = lambda: DaskPool.start(4, settings, processes=kind == "dask-processes")  # noqa: E731
    records, pages = stored(crawl(config, make, tmp_path, True))
    assert len(records) == RECORD_ROWS and len(pages) == PAGES
    assert all(p["outcome"] == "ok" and p["attempts"] == 1 for p in pages)
    assert (records, pages) == process_pool_rows


def test_crawl_completes_when_a_dask_worker_is_killed_mid_page(tmp_path, server):
    pytest.importorskip("dask.distributed")
    import psutil

    slow = "/board/4?offset=50"
    server.serve_fixtures("maoyan")
    body = server.routes[slow][2]
    asked, release = threading.Event(), threading.Event()
    peers: list[int] = []

    def slow_the_first_time(handler) -> None:
        if not peers:
            peers.append(handler.client_address[1])
            asked.set()
            release.wait(HOLD_BOUND)  # the worker asking is killed meanwhile
        try:
            send(handler, 200, body)
        except OSError:
            pass

    server.routes[slow] = slow_the_first_time
    # Dask notices the dead worker and runs the page again elsewhere, well within the page
    # deadline; a deadline that came first would make the scheduler retry it instead.
    cfg = load_config(config(tmp_path, server, maoyan=("top100",), page_deadline=600.0))
    settings = settings_for(cfg, page_deadline=600.0)
    pools_made: list[DaskPool] = []

    def make() -> DaskPool:
        pools_made.append(DaskPool.start(4, settings, processes=True, n_workers=2))
        return pools_made[-1]

    killed: list[int] = []

    def kill_the_worker_fetching_the_slow_page() -> None:
        try:
            if not asked.wait(HOLD_BOUND):
                return
            for pid in pools_made[0].client.run(os.getpid).values():
                ports = {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.laddr}
                if peers[0] in ports:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
        finally:
            release.set()

    killer = threading.Thread(target=kill_the_worker_fetching_the_slow_page, daemon=True)
    killer.start()
    db = crawl(cfg, make, tmp_path, False)
    killer.join(HOLD_BOUND)
    assert len(killed) == 1, "the worker fetching the slow page was not found"
    assert len(pools_made) == 1  # Dask rescheduled the page: the scheduler never gave up on its pool
    assert server.count(slow) == 2
    ranks = [r["rank"] for r in rows(db, "select rank from records where board = 'top100' order by rank")]
    assert ranks == list(range(1, OFFLINE.records_of("maoyan", "top100") + 1))
    [page] = rows(db, "select outcome, attempts from pages where url = ?", server.url + slow)
    assert page == {"outcome": "ok", "attempts": 1}


def test_dask_terminate_that_overruns_its_bound_kills_the_worker_processes(monkeypatch):
    pytest.importorskip("dask.distributed")
    import psutil

    pool = DaskPool.start(1, settings_for(parse_config(OFFLINE_CONFIG), str(FIXTURES)), processes=True)
    pids = list(pool.client.run(os.getpid).values())
    monkeypatch.setattr(pools, "DASK_TERMINATE_TIMEOUT", 0.01)
    # The client's close is held until the test lets it go: terminate() cannot end by it,
    # only by giving up at its bound and killing the worker processes.
    real_close, let_close = pool.client.close, threading.Event()

    def stuck_close(*args, **kwargs):
        let_close.wait(HOLD_BOUND)
        return real_close(*args, **kwargs)

    monkeypatch.setattr(pool.client, "close", stuck_close)
    stopper = threading.Thread(target=pool.terminate, daemon=True)
    try:
        stopper.start()
        stopper.join(TERMINATE_GUARD)
        assert not stopper.is_alive(), "terminate() waited for the close it should give up on"
        wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                                 for p in pids), what="the worker process to be gone")
        assert not let_close.is_set()  # gone while the close was still held: killed
    finally:
        let_close.set()
        # The close goes on in the pool's own thread; let it end here, not in atexit.
        wait_for(lambda: not any(t.name == "dask-pool-shutdown" and t.is_alive() for t in threading.enumerate()),
                 what="the pool's close to end")
