"""Shared test tools: the real CLI in a subprocess, and a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
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


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


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
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with server.lock:
                    server.requests.append(self.path)
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
