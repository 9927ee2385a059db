"""What the tests share: the real CLI in a subprocess, a real HTTP server on 127.0.0.1, fixture
folders changed for a scenario, and the offline crawl's size as the bundled fixtures give it.

A plain module: test files import from here (`from tests.helpers import ...`); conftest.py holds
only the pytest fixtures made from these.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import pytest

from crawler.fetch import font_url
from crawler.sites import SITES

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"


def _environment(changes: dict[str, str | None] | None) -> dict[str, str]:
    """This environment, with PYTHONPATH on the checkout and `changes` applied (None removes a variable)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for name, value in (changes or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _memory_limit(limit: int | None) -> Callable[[], None] | None:
    """A preexec_fn capping the address space of the child (and of the workers it forks) at `limit` bytes."""
    if limit is None:
        return None
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict[str, str | None] | None = None,
            memory_limit: int | None = None) -> subprocess.CompletedProcess:
    """Run `python -m crawler ARGS` as a user would, bounded in time.

    env: variables to set (None: to remove) for this run; memory_limit: bytes of address
    space the crawler's processes may each have (RLIMIT_AS)."""
    return subprocess.run([sys.executable, "-m", "crawler", *args], cwd=cwd or REPO, env=_environment(env),
                          capture_output=True, text=True, timeout=timeout, preexec_fn=_memory_limit(memory_limit))


def crawl_quietly(db: Path, fixtures: Path | None = None) -> Path:
    """db, after `python -m crawler crawl.toml` crawled into it from the fixtures (the project's
    own with --offline, else this folder with --fixtures), as a user would; it must succeed."""
    source = ("--fixtures", str(fixtures)) if fixtures else ("--offline",)
    result = run_cli("crawl.toml", *source, "--db", str(db), "-q")
    assert result.returncode == 0, result.stderr
    return db


def start_cli(*args: str, cwd: Path | None = None, stderr_to: Path | None = None) -> subprocess.Popen:
    """Start `python -m crawler ARGS` in the background, for tests that signal or kill it.

    stderr_to: a file to write the crawler's stderr to, for a test to read while it runs
    (what it says is the only sign of some of its decisions); else a pipe."""
    stderr = open(stderr_to, "w", encoding="utf-8") if stderr_to else subprocess.PIPE
    try:
        return subprocess.Popen([sys.executable, "-m", "crawler", *args], cwd=cwd or REPO, env=_environment(None),
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    finally:
        if stderr_to:
            stderr.close()  # the child has its own copy


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll until predicate() is truthy; fail the test (never hang) after timeout seconds.

    The timeout is a guard against a hang, never an expectation of how long anything takes:
    keep it far above what the awaited thing needs even on a loaded machine."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def config(tmp_path: Path, server: "Server", maoyan=("top100",), douban=(), font_hosts=(), **crawl) -> Path:
    """A config whose sites are served by the test server (Douban under /douban), no delays.

    The fixtures' pages name their fonts on Maoyan's font host: no font is fetched from
    anywhere but the hosts given here (the test server's, for a test of fonts), never the internet.
    """
    settings = {"delay_per_host": 0.0, "retry_backoff": 0.05, **crawl}
    lines = ["[crawl]", *(f"{k} = {v!r}".replace("'", '"') for k, v in settings.items())]
    for site, boards in (("maoyan", maoyan), ("douban", douban)):
        if boards:
            prefix = "" if site == "maoyan" else "/douban"
            lines += [f"[sites.{site}]", f'base_url = "{server.url}{prefix}"',
                      "boards = [" + ", ".join(f'"{b}"' for b in boards) + "]"]
    if maoyan:
        lines.insert(lines.index("[sites.maoyan]") + 3, "font_hosts = [" + ", ".join(f'"{h}"' for h in font_hosts) + "]")
    return write_config(tmp_path / "crawl.toml", "\n".join(lines) + "\n")


def manifest(folder: Path = FIXTURES) -> dict[str, dict[str, dict]]:
    """A fixture folder's manifest.json: {site: {path+query: {"file", "status", "content_type"}}}."""
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def fixture_pages(site: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
    """The bundled fixtures of one site as server routes: path+query -> (status, headers, body)."""
    return {
        path: (entry.get("status", 200), {"Content-Type": entry.get("content_type", "text/html; charset=utf-8")},
               (FIXTURES / entry["file"]).read_bytes())
        for path, entry in manifest()[site].items()
    }


def board_pages(site: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
    """fixture_pages without the site's robots.txt and fonts (keyed //HOST/PATH): the pages of its boards."""
    return {path: page for path, page in fixture_pages(site).items()
            if not path.endswith("/robots.txt") and not path.startswith("//")}


Route = Callable[[BaseHTTPRequestHandler], None]


class Server:
    """A threaded HTTP server whose answers a test sets per path (+query)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route | tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[str] = []
        self.times: list[float] = []
        self.robots: list[str] = []  # requests for a robots.txt
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with server.lock:  # robots.txt apart, so that the counts are those of the pages
                    if self.path == "/robots.txt" or self.path.endswith("/robots.txt"):
                        server.robots.append(self.path)
                    else:
                        server.requests.append(self.path)
                        server.times.append(time.monotonic())
                route = server.routes.get(self.path)
                if route is None:
                    route = (404, {"Content-Type": "text/plain"}, b"not found")
                if callable(route):
                    route(self)
                    return
                status, headers, body = route
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve_fixtures(self, site: str, prefix: str = "") -> None:
        for path, route in fixture_pages(site).items():
            self.routes[prefix + path] = route

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests.count(path)


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """Answer a request from inside a route function."""
    handler.send_response(status)
    for name, value in (headers or {"Content-Type": "text/html; charset=utf-8"}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def rows(db: Path, sql: str, *params) -> list[dict]:
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def stored_pages(db: Path) -> int:
    """Pages stored (outcome ok, committed) so far by a crawl that may not have made its tables yet."""
    try:
        return rows(db, "select count(*) n from pages where outcome = 'ok'")[0]["n"]
    except sqlite3.OperationalError:
        return 0


# A held request is answered at the latest after this long, so that no server thread
# outlives its test for good; tests open their gates long before (in teardown at the latest).
HOLD_BOUND = 300.0


class Gate:
    """Routes that answer the first `free` requests at once and hold every later one until open().

    A test waits (wait_for) until the crawler has `held` requests waiting, acts on the crawl
    (a signal, a kill) while they are in flight, and opens the gate. Held requests are then
    answered with their page; requests that arrive once the gate is open get `late`
    (status, headers, body) if given, else their page. No timing is involved: what the
    crawler has been answered is fixed by the gate, not by how fast anything ran.
    """

    def __init__(self, free: int, late: tuple[int, dict[str, str], bytes] | None = None) -> None:
        self.free, self.late = free, late
        self.lock = threading.Lock()
        self.arrived = self.held = 0
        self.opened = threading.Event()

    def serve(self, server: "Server", pages: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        for path, page in pages.items():
            server.routes[path] = self._route(page)

    def open(self) -> None:
        self.opened.set()

    def _route(self, page: tuple[int, dict[str, str], bytes]) -> Route:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            with self.lock:
                self.arrived += 1
                free = self.arrived <= self.free
                hold = not free and not self.opened.is_set()
                self.held += hold
            if hold:
                self.opened.wait(HOLD_BOUND)
            status, headers, body = self.late if (self.late and not free and not hold) else page
            try:
                send(handler, status, body, headers)
            except OSError:
                pass  # the process that asked is gone (killed, or stopped at once)
        return answer


class Overlap:
    """Serves pages holding each request until `target` requests are in the server at once (or
    every one of `total` requests has arrived), and records the peak of requests at once.

    A request counts from its arrival until its answer is about to be written, so a slot the
    crawler frees on reading an answer is already free here. The peak reaches the target
    whatever the machine's speed: requests wait for each other instead of for a clock.
    """

    def __init__(self, server, target: int, total: int) -> None:
        self.target, self.total = target, total
        self.active = self.peak = self.arrived = self.released = self.timeouts = 0
        self.changed = threading.Condition()
        server.serve_fixtures("maoyan")  # its robots.txt
        for path, page in board_pages("maoyan").items():
            server.routes[path] = self._route(page)

    def _route(self, page):
        def answer(handler):
            with self.changed:
                self.arrived += 1
                mine = self.arrived
                self.active += 1
                self.peak = max(self.peak, self.active)
                if self.active >= self.target or self.arrived >= self.total:
                    self.released = self.arrived  # this request and every one waiting
                    self.changed.notify_all()
                if not self.changed.wait_for(lambda: mine <= self.released, timeout=HOLD_BOUND):
                    self.timeouts += 1
                self.active -= 1
            send(handler, page[0], page[2], page[1])
        return answer


def console_script(name: str, distribution: str) -> Path:
    """The console script `name` of the running interpreter's environment (not whatever PATH finds).

    Skips the test only when `distribution` is not installed in that environment; fails it
    when the distribution is installed but its script is missing.
    """
    folders = list(dict.fromkeys([Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]))
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    site = list(dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]))
    names = {(d.metadata["Name"] or "").lower() for d in importlib.metadata.distributions(path=site)}
    if distribution.lower() not in names:
        pytest.skip(f"{distribution} is not installed in {sys.prefix}")
    raise AssertionError(f"{distribution} is installed in {sys.prefix}, but no {name} script is in "
                         f"{', '.join(map(str, folders))}")


# -- fixture folders changed for a scenario ---------------------------------------------------------

# What Maoyan answers a crawler it has caught: its verification page.
VERIFY_PAGE = ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>猫眼验证中心</title></head>"
               "<body><div id=\"app\">请拖动滑块完成验证</div></body></html>").encode("utf-8")


def changed_fixtures(folder: Path) -> Path:
    """The bundled fixtures with 热映口碑榜 changed: two swapped, a new score, one replaced."""
    shutil.copytree(FIXTURES, folder)
    page = folder / "maoyan" / "board7.html"
    html = page.read_text(encoding="utf-8")
    html = (html.replace('board-index-2">2<', "@@").replace('board-index-3">3<', 'board-index-2">2<')
            .replace("@@", 'board-index-3">3<'))
    html = html.replace('<i class="fraction">6</i>', '<i class="fraction">8</i>', 1)
    html = html.replace("爱宠大机密2", "狮子王").replace("1213246", "1190122")
    page.write_text(html, encoding="utf-8")
    return folder


def blocked_fixtures(folder: Path) -> Path:
    """The bundled fixtures with every Maoyan page replaced by the verification page."""
    shutil.copytree(FIXTURES, folder)
    for entry in manifest(folder)["maoyan"].values():
        (folder / entry["file"]).write_bytes(VERIFY_PAGE)
    return folder


def start_gated_crawl(tmp_path, server, gate, boards, free, late=None, **settings):
    """A crawl in the background (2 workers) whose first `free` requests are answered and the
    later ones held by a gate, so that the test acts on it with pages stored and pages in flight."""
    server.serve_fixtures("maoyan")  # its robots.txt
    held = gate(free, late)
    held.serve(server, board_pages("maoyan"))
    cfg = config(tmp_path, server, maoyan=boards, workers=2, **settings)
    db = tmp_path / "m.db"
    return start_cli(str(cfg), "--db", str(db), stderr_to=tmp_path / "stderr.txt"), cfg, db, held


# -- the offline crawl's size, from the fixtures ------------------------------------------------------

@dataclass(frozen=True)
class OfflineCounts:
    """What a crawl of every board over the bundled fixtures finds, counted from the fixtures
    themselves: so that a test of the whole offline crawl states its totals without a number
    that the next fixture page would change.

    page_records: (site, path) -> (board, records on the page); listed: the pages their boards name
    before the crawl starts (Board.pages), the others being found through a pager;
    robots: the sites with a robots.txt; fonts: the fonts (in the fixtures) the pages draw digits
    with, and font_pages: the pages that draw digits with one of them.
    """

    page_records: dict[tuple[str, str], tuple[str, int]]
    listed: frozenset[tuple[str, str]]
    robots: int
    fonts: int
    font_pages: int

    def _pages(self, site: str | None = None, boards: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        return [key for key, (board, _) in self.page_records.items()
                if site in (None, key[0]) and (not boards or board in boards)]

    @property
    def pages(self) -> int:
        """Board pages, every site's."""
        return len(self.page_records)

    @property
    def records(self) -> int:
        """Records on every board page."""
        return sum(n for _, n in self.page_records.values())

    @property
    def records_per_board(self) -> dict[tuple[str, str], int]:
        """(site, board) -> its records."""
        counts: dict[tuple[str, str], int] = {}
        for (site, _), (board, n) in self.page_records.items():
            counts[site, board] = counts.get((site, board), 0) + n
        return counts

    def pages_of(self, site: str, *boards: str) -> int:
        """The pages of these boards of the site (of all its boards when none is named)."""
        return len(self._pages(site, boards))

    def records_of(self, site: str, *boards: str) -> int:
        """The records of these boards of the site (of all its boards when none is named)."""
        return sum(self.page_records[key][1] for key in self._pages(site, boards))

    def records_at(self, site: str, path: str) -> int:
        """The records on one page, by its path + query below the site's base URL."""
        return self.page_records[site, path][1]

    def listed_pages_of(self, site: str | None = None, *boards: str) -> int:
        """The pages a crawl asks for when no pager is read, of these boards of the site (of every
        board of it, or of every site, when none is named)."""
        return len([key for key in self._pages(site, boards) if key in self.listed])


def offline_counts(folder: Path = FIXTURES) -> OfflineCounts:
    """The counts of the fixture folder's manifest: its board pages are the keys that are neither
    /robots.txt nor a font (//HOST/PATH), each parsed with its site's parser."""
    page_records: dict[tuple[str, str], tuple[str, int]] = {}
    listed: set[tuple[str, str]] = set()
    drawn: list[str] = []
    pages = manifest(folder)
    for site, entries in pages.items():
        for path, entry in entries.items():
            if path == "/robots.txt" or path.startswith("//"):
                continue
            body = (folder / entry["file"]).read_bytes()
            url = SITES[site].base_url + path
            records = SITES[site].parse(body.decode("utf-8"), url).records
            page_records[site, path] = (_board_of(site, path), len(records))
            if any(path in board.pages for board in SITES[site].boards.values()):
                listed.add((site, path))
            font = font_url(body, url)
            if font and "//" + font.split("//", 1)[1] in entries:
                drawn.append(font)
    robots = sum("/robots.txt" in entries for entries in pages.values())
    return OfflineCounts(page_records, frozenset(listed), robots, len(set(drawn)), len(drawn))


def _board_of(site: str, path: str) -> str:
    """The board a page is of: one that names it, or one that follows its pager on the same path."""
    for board in SITES[site].boards.values():
        if path in board.pages or (board.follow_pager and urlsplit(path).path == urlsplit(board.pages[0]).path):
            return board.name
    raise ValueError(f"fixtures/manifest.json: {site} {path} is a page of none of {site}'s boards")


OFFLINE = offline_counts()
