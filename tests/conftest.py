"""Shared test tools: the real CLI in a subprocess, and a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m crawler ARGS` as a user would, bounded in time."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "crawler", *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """Start `python -m crawler ARGS` in the background, for tests that signal or kill it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "crawler", *args], cwd=cwd or REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Poll until predicate() is truthy; fail the test (never hang) after timeout seconds."""
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


def config(tmp_path: Path, server: "Server", maoyan=("top100",), douban=(), **crawl) -> Path:
    """A config whose sites are served by the test server (Douban under /douban), no delays."""
    settings = {"delay_per_host": 0.0, "retry_backoff": 0.05, **crawl}
    lines = ["[crawl]", *(f"{k} = {v!r}".replace("'", '"') for k, v in settings.items())]
    for site, boards in (("maoyan", maoyan), ("douban", douban)):
        if boards:
            prefix = "" if site == "maoyan" else "/douban"
            lines += [f"[sites.{site}]", f'base_url = "{server.url}{prefix}"',
                      "boards = [" + ", ".join(f'"{b}"' for b in boards) + "]"]
    return write_config(tmp_path / "crawl.toml", "\n".join(lines) + "\n")


def fixture_pages(site: str) -> dict[str, tuple[int, dict[str, str], bytes]]:
    """The bundled fixtures of one site as server routes: path+query -> (status, headers, body)."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
    return {
        path: (entry.get("status", 200), {"Content-Type": entry.get("content_type", "text/html; charset=utf-8")},
               (FIXTURES / entry["file"]).read_bytes())
        for path, entry in manifest[site].items()
    }


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


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    """Answer a request from inside a route function."""
    handler.send_response(status)
    for name, value in (headers or {"Content-Type": "text/html; charset=utf-8"}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def rows(db: Path, sql: str, *params) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()
