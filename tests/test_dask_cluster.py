"""The dask pool against a cluster as an operator runs one: `dask scheduler` and `dask worker`
in processes of their own on 127.0.0.1, started here (benchmarks/bench.py's DaskCluster) and
stopped by their pids.

Most tests share one cluster (a scheduler, two workers of four threads); those that kill or
stop its scheduler get their own. Every wait is a bounded handshake: the scheduler's file,
workers registered, requests counted by the test server, rows in the database.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

distributed = pytest.importorskip("distributed")

from benchmarks.bench import DaskCluster, child_env  # noqa: E402
from crawler import pools, scheduler  # noqa: E402
from crawler.config import load_config  # noqa: E402
from crawler.fetch import FetchTask, SiteHTTP, WorkerSettings, fetch  # noqa: E402
from crawler.pools import PoolUnavailable, make_pool  # noqa: E402
from tests.helpers import (HOLD_BOUND, OFFLINE, REPO, Overlap, Server, board_pages, fixture_pages, rows,  # noqa: E402
                           run_cli, send, start_cli, wait_for, write_config)

TOP100 = OFFLINE.records_of("maoyan", "top100")
# Far above what any exchange with a scheduler on this machine needs, even loaded.
TIMEOUT = 30.0


@contextmanager
def running_cluster(folder: Path, workers: int) -> Iterator[DaskCluster]:
    """A scheduler and `workers` workers of four threads each, all stopped by their pids at the end."""
    made = DaskCluster(folder)
    try:
        for _ in range(workers):
            made.add_worker(4, nanny=False)
        made.wait_for_workers(workers)
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[DaskCluster]:
    """Shared by the tests that leave it as it was."""
    with running_cluster(tmp_path_factory.mktemp("dask"), 2) as made:
        yield made


@pytest.fixture
def own_cluster(tmp_path) -> Iterator[DaskCluster]:
    """For a test that kills or stops the scheduler."""
    with running_cluster(tmp_path / "dask", 1) as made:
        yield made


@pytest.fixture
def client(cluster) -> Iterator[Any]:
    with distributed.Client(cluster.address, timeout=TIMEOUT, set_as_default=False) as made:
        yield made


def dask_config(tmp_path: Path, server, address: str, name: str = "crawl", cookie: str | None = None,
                **crawl: Any) -> Path:
    """A config crawling Maoyan's TOP100 from the test server on the cluster at address."""
    settings = {"pool": "dask", "dask_scheduler": address, "delay_per_host": 0.0, "retry_backoff": 0.05, **crawl}
    lines = ["[crawl]", *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
             "[sites.maoyan]", f'base_url = "{server.url}"', 'boards = ["top100"]', "font_hosts = []"]
    if cookie:
        lines.append(f'cookies = {{ crawl = "{cookie}" }}')
    return write_config(tmp_path / f"{name}.toml", "\n".join(lines) + "\n")


def runs(db: Path) -> list[dict]:
    """The runs a database holds; none when the crawl never made its tables."""
    try:
        return rows(db, "select id, status from runs order by id")
    except Exception:  # noqa: BLE001 - sqlite3.OperationalError: no such table
        return []


def ranks(db: Path) -> list[int]:
    return [r["rank"] for r in rows(db, "select rank from records where board = 'top100' order by rank")]


def crawler_state(client) -> list[str]:
    """Whatever of a crawl the cluster holds: plugins on the scheduler and the workers, handlers on the workers."""
    on_scheduler = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    on_workers = client.run(lambda dask_worker: [*dask_worker.plugins, *dask_worker.handlers])
    return [name for name in [*on_scheduler, *(n for names in on_workers.values() for n in names)]
            if name.startswith("crawler-")]


def settings_for(server, cookie: str = "") -> WorkerSettings:
    return WorkerSettings(user_agent="crawler-tests", request_timeout=30.0, page_deadline=60.0,
                          max_page_bytes=5_000_000, sites={"maoyan": SiteHTTP(server.url, {}, {"crawl": cookie})})


def silent_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A port that accepts connections and never says a word (as a dashboard's would, to Dask)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return  # closed at the test's end

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted


def add_worker_without_the_crawler(cluster: DaskCluster, folder: Path, version: str | None = None) -> str:
    """A worker where `import crawler` fails (a stand-in package first on its path), or, with
    version, where the crawler imports but its installed metadata says `version`; its address."""
    folder.mkdir()
    path = [str(folder)]
    if version is None:
        (folder / "crawler").mkdir()
        (folder / "crawler" / "__init__.py").write_text('raise ImportError("no crawler on this worker")\n')
    else:
        info = folder / f"crawler-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: crawler\nVersion: {version}\n")
        path.append(str(REPO))
    with distributed.Client(cluster.address, timeout=TIMEOUT, set_as_default=False) as client:
        before = set(client.scheduler_info(n_workers=-1)["workers"])
        cluster.add_worker(2, env=dict(child_env(), PYTHONPATH=os.pathsep.join(path)), cwd=folder, nanny=False)
        client.wait_for_workers(len(before) + 1, timeout=TIMEOUT)
        [address] = set(client.scheduler_info(n_workers=-1)["workers"]) - before
    return address


def remove_last_worker(cluster: DaskCluster) -> None:
    """Stop the worker added last, by its pid, and wait until the scheduler no longer lists it."""
    worker = cluster.workers.pop()
    worker.terminate()
    worker.wait(TIMEOUT)
    with distributed.Client(cluster.address, timeout=TIMEOUT, set_as_default=False) as client:
        wait_for(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == len(cluster.workers),
                 what="the scheduler to drop the stopped worker")


# -- 1. crawls sharing a cluster --------------------------------------------------------------

def test_two_crawls_at_once_on_one_cluster_each_send_their_own_settings(tmp_path, cluster, client):
    """Crawl A's pages are held at its server until crawl B's first request arrives at B's, so
    both crawls are set up on the cluster at once; every request carries its own crawl's cookie."""
    servers = {"A": Server(), "B": Server()}
    cookies: dict[str, list[str]] = {"A": [], "B": []}
    b_started = threading.Event()
    for name, server in servers.items():
        server.thread.start()
        for path, page in fixture_pages("maoyan").items():
            server.routes[path] = _cookie_route(name, page, cookies[name], b_started)
    try:
        procs = {}
        for name in ("A", "B"):
            cfg = dask_config(tmp_path, servers[name], cluster.address, name, cookie=name, workers=4,
                              max_in_flight_per_host=4)
            procs[name] = start_cli(str(cfg), "--db", str(tmp_path / f"{name}.db"), "-q")
            if name == "A":
                wait_for(lambda: cookies["A"], timeout=TIMEOUT, what="crawl A's first request")
        outputs = {name: proc.communicate(timeout=HOLD_BOUND) for name, proc in procs.items()}
    finally:
        b_started.set()
        for server in servers.values():
            server.httpd.shutdown()
            server.httpd.server_close()
    for name in ("A", "B"):
        assert procs[name].returncode == 0, outputs[name][1]
        assert set(cookies[name]) == {f"crawl={name}"} and len(cookies[name]) >= OFFLINE.pages_of("maoyan", "top100")
        assert ranks(tmp_path / f"{name}.db") == list(range(1, TOP100 + 1))
    assert crawler_state(client) == []


def _cookie_route(name: str, page: tuple[int, dict[str, str], bytes], seen: list[str], b_started: threading.Event):
    def answer(handler) -> None:
        seen.append(handler.headers.get("Cookie", ""))
        if name == "B":
            b_started.set()
        elif not b_started.wait(HOLD_BOUND):
            return
        send(handler, page[0], page[2], page[1])
    return answer


# -- 2. an address that never answers ---------------------------------------------------------

def test_an_address_that_accepts_and_never_answers_is_one_line_within_the_timeout(tmp_path, server):
    listener, accepted = silent_listener()
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(PoolUnavailable) as caught:
            make_pool("dask", 2, settings_for(server), dask_address=address, dask_timeout=1.0)
        assert accepted, "the crawler never connected"
        assert str(caught.value) == (f"nothing answered as a dask scheduler at {address} within 1 s: give the "
                                     f"scheduler's address (port 8786 unless it was started with another), "
                                     f"not its dashboard's")
        # Through the crawl: the pool comes first, so no run is left behind.
        cfg = load_config(dask_config(tmp_path, server, address))
        db = tmp_path / "movies.db"
        with pytest.raises(PoolUnavailable):
            scheduler.crawl(cfg, str(db), make_pool=lambda: make_pool(
                "dask", 2, settings_for(server), dask_address=address, dask_timeout=1.0))
        assert runs(db) == []
    finally:
        listener.close()


def test_cli_against_a_silent_address_says_so_in_one_line_and_exits_2(tmp_path, server):
    listener, _ = silent_listener()
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:
        result = run_cli(str(dask_config(tmp_path, server, address, dask_timeout=1.0)), "--db",
                         str(tmp_path / "movies.db"), timeout=20)
    finally:
        listener.close()
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"crawler: error: nothing answered as a dask scheduler at {address} "
                                          f"within 1 s: give the scheduler's address (port 8786 unless it was "
                                          f"started with another), not its dashboard's"]
    assert runs(tmp_path / "movies.db") == []


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as an operator might make for a cluster's TLS."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=crawler-tests"], check=True, capture_output=True, timeout=60)
    return cert, key


def test_a_cluster_that_speaks_tls_is_crawled_with_dasks_own_tls_settings(tmp_path, server, certificate):
    """The README's advice: TLS on the scheduler and workers, Dask's TLS settings on the driver."""
    server.serve_fixtures("maoyan")
    cluster = DaskCluster(tmp_path / "dask", tls=certificate)
    try:
        cluster.add_worker(2, nanny=False)
        cluster.wait_for_workers(1)
        assert cluster.address.startswith("tls://")
        cfg = dask_config(tmp_path, server, cluster.address)
        without = run_cli(str(cfg), "--db", str(tmp_path / "without.db"), "-q",
                          env=dict.fromkeys(cluster.client_environment()))
        assert without.returncode == 2
        assert without.stderr.splitlines() == [
            f"crawler: error: {cluster.address} is a TLS address, and this host has no TLS settings "
            f"for Dask: set DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and "
            f"DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY (or distributed.comm.tls in Dask's configuration)"]
        assert runs(tmp_path / "without.db") == []
        db = tmp_path / "movies.db"
        result = run_cli(str(cfg), "--db", str(db), "-q", env=cluster.client_environment())
        assert result.returncode == 0, result.stderr
        assert ranks(db) == list(range(1, OFFLINE.records_of("maoyan", "top100") + 1))
    finally:
        cluster.stop()


def test_ctrl_c_while_connecting_stops_without_claiming_a_run(tmp_path, server):
    listener, accepted = silent_listener()
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    db = tmp_path / "movies.db"
    try:
        proc = start_cli(str(dask_config(tmp_path, server, address)), "--db", str(db))
        try:
            wait_for(lambda: accepted, what="the crawler to connect to the silent address")
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        listener.close()
    assert proc.returncode == 130, stderr
    assert stderr.splitlines() == ["crawler: stopped"]
    assert runs(db) == []


# -- 3. workers that cannot run the crawler ------------------------------------------------------

@pytest.mark.parametrize("version, says", [
    (None, "cannot run the crawler (ImportError('no crawler on this worker')): install it there, with the same Python, dask and "
           "distributed as this host, and restart the worker"),
    ("9.9.9", "has crawler 9.9.9; this host has crawler {mine}: install the same crawler, Python, dask and "
              "distributed on every worker"),
])
def test_a_worker_that_cannot_run_this_crawler_is_named_in_one_line_before_any_run(
        version, says, tmp_path, server, cluster, client):
    """The worker joins after earlier crawls: they left no plugin behind that it would fail to set up."""
    server.serve_fixtures("maoyan")
    mine = pools._versions()["crawler"]
    address = add_worker_without_the_crawler(cluster, tmp_path / "stand-in", version)
    try:
        assert client.scheduler_info(n_workers=-1)["workers"][address]["status"] == "running"
        db = tmp_path / "movies.db"
        result = run_cli(str(dask_config(tmp_path, server, cluster.address)), "--db", str(db))
    finally:
        remove_last_worker(cluster)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"crawler: error: dask worker {address} {says.format(mine=mine)}"]
    assert runs(db) == [] and server.requests == []
    assert crawler_state(client) == []


# -- 4. nothing of a crawl stays on the cluster ----------------------------------------------------

def test_a_crawl_leaves_nothing_on_the_cluster_however_it_ends(tmp_path, server, gate, cluster, client):
    """Stopped by Ctrl-C here; the other tests' crawls end complete or refused, and check the same."""
    server.serve_fixtures("maoyan")  # robots.txt
    held = gate(free=3)
    held.serve(server, board_pages("maoyan"))
    db = tmp_path / "movies.db"
    proc = start_cli(str(dask_config(tmp_path, server, cluster.address, workers=2, max_in_flight_per_host=2)),
                     "--db", str(db))
    try:
        wait_for(lambda: held.held, what="a page held at the gate")
        assert crawler_state(client), "the crawl is not set up on the cluster"
        proc.send_signal(signal.SIGINT)
        held.open()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert runs(db) == [{"id": 1, "status": "interrupted"}]
    assert crawler_state(client) == []


def test_a_worker_without_the_crawler_joining_mid_crawl_is_left_out_not_stuck(
        tmp_path, server, gate, cluster, client):
    """Added to the workers one by one, the crawl never reaches the scheduler's list of plugins
    that a joining worker must set up: so such a worker starts (and the crawl goes on) instead
    of failing to start and staying `closing`, which held up every later crawl."""
    server.serve_fixtures("maoyan")  # robots.txt
    held = gate(free=3)
    held.serve(server, board_pages("maoyan"))
    db = tmp_path / "movies.db"
    proc = start_cli(str(dask_config(tmp_path, server, cluster.address, workers=2, max_in_flight_per_host=2)),
                     "--db", str(db), "-q")
    try:
        wait_for(lambda: held.held, what="a page held at the gate")
        address = add_worker_without_the_crawler(cluster, tmp_path / "stand-in")
        held.open()
        _, stderr = proc.communicate(timeout=120)
        status = client.scheduler_info(n_workers=-1)["workers"][address]["status"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        remove_last_worker(cluster)
    assert proc.returncode == 0, stderr
    assert status == "running"
    assert ranks(db) == list(range(1, TOP100 + 1))
    assert crawler_state(client) == []


# -- 5. the scheduler lost mid-crawl --------------------------------------------------------------

def test_a_killed_scheduler_interrupts_the_run_and_resume_completes_it_on_a_new_cluster(
        tmp_path, server, gate, own_cluster):
    server.serve_fixtures("maoyan")  # robots.txt
    held = gate(free=3)
    held.serve(server, board_pages("maoyan"))
    db = tmp_path / "movies.db"
    cfg = str(dask_config(tmp_path, server, own_cluster.address, workers=2, max_in_flight_per_host=2))
    proc = start_cli(cfg, "--db", str(db))
    try:
        wait_for(lambda: held.held, what="a page held at the gate")
        os.kill(own_cluster.scheduler.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = stderr.splitlines()
    assert proc.returncode == 1, stderr
    assert re.fullmatch(rf"crawler: error: lost the dask scheduler at {re.escape(own_cluster.address)}: .+", lines[0])
    assert lines[-1] == f"resume with: python -m crawler {cfg} --db {db} --resume 1"
    assert not [line for line in lines if "Traceback" in line or "distributed" in line], stderr
    assert runs(db) == [{"id": 1, "status": "interrupted"}]

    held.open()
    with running_cluster(tmp_path / "dask-2", 1) as replacement:
        result = run_cli(cfg, "--db", str(db), "--dask-scheduler", replacement.address, "--resume", "1", "-q")
    assert result.returncode == 0, result.stderr
    assert runs(db) == [{"id": 1, "status": "ok"}]
    assert ranks(db) == list(range(1, TOP100 + 1))


def test_a_scheduler_that_stops_answering_is_lost_within_the_timeout(server, own_cluster):
    """SIGSTOP: its connections stay open, only the heartbeat can tell; apply_async then says why."""
    server.serve_fixtures("maoyan")
    pool = make_pool("dask", 2, settings_for(server), dask_address=own_cluster.address, dask_timeout=5.0)
    try:
        assert pool.broken() is None
        os.kill(own_cluster.scheduler.pid, signal.SIGSTOP)
        try:
            reason = wait_for(pool.broken, timeout=120, what="the silent scheduler to count as lost")
        finally:
            os.kill(own_cluster.scheduler.pid, signal.SIGCONT)
        assert reason == f"lost the dask scheduler at {own_cluster.address}: no answer within 5 s"
        with pytest.raises(PoolUnavailable, match=f"^{re.escape(reason)}$"):
            pool.apply_async(fetch, (FetchTask("maoyan", "top100", server.url + "/board/4?offset=0"),))
    finally:
        pool.terminate()


# -- 6. politeness across the cluster's threads ----------------------------------------------------

def downloading(client) -> int:
    """Pages the workers are handling for a crawl now: calls to a crawl's handler in progress (the
    request sent, sending, or about to be), as each worker's own list of its connections says."""
    found = client.run(lambda dask_worker: sum(1 for op in dask_worker._comms.values()
                                               if op and op.startswith("crawler-") and not op.endswith("-stop")))
    return sum(found.values())


class FirstRoundHeld(Overlap):
    """Overlap, except that the first round is held until every download the workers have
    begun has reached the server: a cluster that ran more than the limit at once would have
    them all in the server together, whatever the machine's speed."""

    def __init__(self, server, target: int, total: int, client) -> None:
        super().__init__(server, target, total)
        self.client = client
        self.first_round = threading.Event()

    def _route(self, page):
        answer = super()._route(page)

        def held(handler):
            with self.changed:
                self.active += 1
                self.peak = max(self.peak, self.active)
                self.changed.notify_all()
                if not self.changed.wait_for(self.first_round.is_set, timeout=HOLD_BOUND):
                    self.timeouts += 1
                self.active -= 1
            answer(handler)
        return held

    def watch(self) -> None:
        """Release the first round once the workers' downloads are all in the server (bounded)."""
        for _ in range(int(HOLD_BOUND / 0.02)):
            with self.changed:
                arrived = self.active
            if arrived >= self.target and downloading(self.client) == arrived:
                break
            threading.Event().wait(0.02)
        with self.changed:
            self.first_round.set()
            self.changed.notify_all()


@pytest.mark.parametrize("workers, per_host", [(4, 4), (8, 2)])
def test_the_host_limit_holds_however_many_threads_the_cluster_has(workers, per_host, tmp_path, server, cluster,
                                                                   client):
    """The cluster has 8 threads. The first requests are held until `per_host` are in the server
    and every download the workers began is among them; after that, requests wait at the server
    until `per_host` are in at once (Overlap): the peak reaches the limit and no further."""
    overlap = FirstRoundHeld(server, target=per_host, total=OFFLINE.pages_of("maoyan", "top100"), client=client)
    watcher = threading.Thread(target=overlap.watch, daemon=True)
    watcher.start()
    cfg = dask_config(tmp_path, server, cluster.address, workers=workers, max_in_flight_per_host=per_host)
    result = run_cli(str(cfg), "--db", str(tmp_path / "movies.db"), "-q")
    watcher.join(HOLD_BOUND)
    assert result.returncode == 0, result.stderr
    assert overlap.peak == per_host and overlap.timeouts == 0


# -- 8. the benchmark runs on a cluster ------------------------------------------------------------

def test_benchmark_runs_on_a_dask_cluster(tmp_path, cluster):
    report = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--smoke", "--no-scrapy",
                             "--pools", "dask", "--dask-scheduler", cluster.address, "--json", str(report)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [run] = json.loads(report.read_text(encoding="utf-8"))["runs"]
    assert (run["tool"], run["pages_ok"], run["server_requests"]) == ("crawler-dask", 40, 40)
