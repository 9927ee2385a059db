"""A local stand-in for Maoyan's TOP100 board, for benchmarks: every answer comes after a fixed latency.

    python benchmarks/server.py [--port 0] [--latency-ms 50] [--pages 2000]

Serves /board/4?offset=N for N = 0, 10, ... up to (pages - 1) * 10, in the real markup
(fixtures/maoyan/board4_offset0.html), with ranks N+1..N+10 and movie ids made unique per
entry, so that a crawl which stores every page stores pages * 10 distinct records.
Anything else is a 404. GET /__stats answers at once with a JSON count of what was served.

One asyncio process, HTTP/1.1 with keep-alive: a request costs the server a few tens of
microseconds, and the latency is a timer, not a sleeping thread, so hundreds of requests
can wait at once. It prints `listening on http://127.0.0.1:PORT` when ready, and exits on
SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "fixtures" / "maoyan" / "board4_offset0.html"
BOARD_PATH = "/board/4"

# What varies from page to page: the rank of each entry and its movie id.
_RANK = re.compile(r'(board-index board-index-)(\d+)(">)(\d+)(</i>)')
_FILM = re.compile(r"(/films/|movieId:)(\d+)")


class Template:
    """The fixture page cut at the numbers that vary, so one page is rendered with a join."""

    def __init__(self, html: str) -> None:
        self.parts: list[str | int] = []  # str: text as is; int k: the rank of entry k (0-based) ...
        self.kinds: list[str] = []        # ... kind "rank" or "film" for each int part
        entry = -1
        pos = 0
        marks = sorted([(m.start(), m.end(), "rank", m) for m in _RANK.finditer(html)]
                       + [(m.start(), m.end(), "film", m) for m in _FILM.finditer(html)])
        for start, end, kind, m in marks:
            self.parts.append(html[pos:start])
            if kind == "rank":
                entry = int(m.group(4)) - 1
                self.parts += [m.group(1), entry, m.group(3), entry, m.group(5)]
                self.kinds += ["rank", "rank"]
            else:
                self.parts += [m.group(1), max(entry, 0)]
                self.kinds.append("film")
            pos = end
        self.parts.append(html[pos:])
        self.entries = entry + 1
        if self.entries < 1:
            raise ValueError(f"{PAGE} has no board entries")

    def render(self, offset: int) -> bytes:
        out: list[str] = []
        kinds = iter(self.kinds)
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif next(kinds) == "rank":
                out.append(str(offset + part + 1))
            else:
                out.append(str(9_000_000 + offset + part + 1))  # unique per (page, entry)
        return "".join(out).encode("utf-8")


class Board:
    def __init__(self, pages: int, latency: float, page_file: Path = PAGE) -> None:
        self.template = Template(page_file.read_text(encoding="utf-8"))
        self.pages = pages
        self.latency = latency
        self.served = 0
        self.not_found = 0
        self.bytes = 0
        self.connections = 0
        # time.monotonic() (one clock for every process here) of the first board page asked
        # for since the last /__stats; that call reports it and starts the watch anew.
        self.first_request_at: float | None = None

    def answer(self, target: str) -> tuple[int, str, bytes, bool]:
        """(status, content type, body, delayed?) for a request target."""
        parts = urlsplit(target)
        if parts.path == "/__stats":
            stats = {"served": self.served, "not_found": self.not_found, "bytes": self.bytes,
                     "connections": self.connections, "pages": self.pages, "first_request_at": self.first_request_at}
            self.first_request_at = None
            return 200, "application/json", json.dumps(stats).encode(), False
        if parts.path == BOARD_PATH:
            if self.first_request_at is None:
                self.first_request_at = time.monotonic()
            values = parse_qs(parts.query).get("offset", ["0"])
            if values[0].isdigit():
                offset = int(values[0])
                if offset % 10 == 0 and offset // 10 < self.pages:
                    body = self.template.render(offset)
                    self.served += 1
                    self.bytes += len(body)
                    return 200, "text/html; charset=utf-8", body, True
        self.not_found += 1
        return 404, "text/plain; charset=utf-8", b"not found", True


class HTTP(asyncio.Protocol):
    """Minimal HTTP/1.1 for GET: keep-alive, Content-Length, answers in request order."""

    def __init__(self, board: Board, loop: asyncio.AbstractEventLoop) -> None:
        self.board, self.loop = board, loop
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending = 0  # answers scheduled and not yet written
        self.close_after = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.board.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:
                    self.transport.close()
                return
            head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self.transport.close()
                return
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            status, ctype, body, delayed = self.board.answer(target)
            if method == "HEAD":
                body_out = b""
            else:
                body_out = body
            reason = {200: "OK", 404: "Not Found"}[status]
            response = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                        f"Content-Length: {len(body)}\r\n"
                        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode("latin-1") + body_out
            self.pending += 1
            self.close_after = self.close_after or close
            if delayed and self.board.latency > 0:
                self.loop.call_later(self.board.latency, self._send, response)
            else:
                self._send(response)

    def _send(self, response: bytes) -> None:
        self.pending -= 1
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response)
        if self.close_after and not self.pending:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.transport = None


async def serve(port: int, board: Board, ready=print) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HTTP(board, loop), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve Maoyan TOP100 board pages on 127.0.0.1 after a fixed latency.")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="delay before each answer (default 50)")
    parser.add_argument("--pages", type=int, default=2000, help="board pages served (default 2000)")
    args = parser.parse_args(argv)
    board = Board(args.pages, args.latency_ms / 1000.0)

    def ready(line: str) -> None:
        print(line, flush=True)

    try:
        asyncio.run(serve(args.port, board, ready))
    except KeyboardInterrupt:
        pass
    print(json.dumps({"served": board.served, "not_found": board.not_found}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
