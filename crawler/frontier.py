"""The frontier: pages waiting to be fetched, per host, and each host's slots (politeness).

Board pages are planned as iterators and queued a chunk at a time, so a board of 20,000
pages holds no more memory than one of 2,000; retries wait in a heap until due. Every
call costs in proportion to the hosts, not to the pages waiting.
"""
from __future__ import annotations

import heapq
from collections import deque
from itertools import islice
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

from .fetch import FetchTask

# Pages of the configured boards are queued (and noted pending) this many at a time per
# host, as the crawl gets to them.
QUEUE_CHUNK = 100

Planned = tuple[str, str, str]  # (site, board, url)


class Frontier:
    """Per-host queues of tasks, retries due later, and the requests each host has in flight.

    A host gets at most `host_limit` requests at once and `delay` seconds between two
    (more where `slow_down` says so, e.g. a robots.txt Crawl-delay).
    """

    def __init__(self, make_task: Callable[[str, str, str], FetchTask], goes_first: Callable[[FetchTask], bool],
                 host_limit: int, delay: float, chunk_when_fewer_than: int) -> None:
        self.make_task, self.goes_first = make_task, goes_first
        self.host_limit, self.delay = host_limit, delay
        self.chunk_when_fewer_than = chunk_when_fewer_than
        self.ready: dict[str, deque[FetchTask]] = {}
        self.later: list[tuple[float, int, FetchTask]] = []  # heap of (not before, order, task)
        self.order = 0
        self.sources: dict[str, deque[Iterator[Planned]]] = {}
        self.busy: dict[str, int] = {}
        self.next_at: dict[str, float] = {}
        self.delays: dict[str, float] = {}

    @property
    def empty(self) -> bool:
        return not (self.sources or self.ready or self.later)

    def plan(self, host: str, pages: Iterator[Planned]) -> None:
        self.sources.setdefault(host, deque()).append(pages)

    def add(self, task: FetchTask, not_before: float = 0.0, now: float = 0.0) -> None:
        """Queue a task (before its host's others if it goes first); `not_before` holds it until then."""
        if not_before > now:
            self.order += 1
            heapq.heappush(self.later, (not_before, self.order, task))
            return
        tasks = self.ready.setdefault(host_of(task), deque())
        if self.goes_first(task):
            tasks.appendleft(task)
        else:
            tasks.append(task)

    def refill(self) -> list[Planned]:
        """Queue the next chunk of each host's planned pages where few wait; return what was queued."""
        queued: list[Planned] = []
        for host, sources in list(self.sources.items()):
            if len(self.ready.get(host, ())) >= self.chunk_when_fewer_than:
                continue
            chunk: list[Planned] = []
            while sources and len(chunk) < QUEUE_CHUNK:
                chunk.extend(islice(sources[0], QUEUE_CHUNK - len(chunk)))
                if len(chunk) < QUEUE_CHUNK:
                    sources.popleft()  # that board is all queued
            if not sources:
                del self.sources[host]
            for site, board, url in chunk:
                self.ready.setdefault(host, deque()).append(self.make_task(site, board, url))
            queued += chunk
        return queued

    def release_due(self, now: float) -> float:
        """Move the retries that are due to their hosts' queues; return when the next one is."""
        while self.later and self.later[0][0] <= now:
            self.add(heapq.heappop(self.later)[2])
        return self.later[0][0] if self.later else float("inf")

    def hosts(self) -> list[str]:
        return list(self.ready)

    def peek(self, host: str) -> FetchTask | None:
        tasks = self.ready.get(host)
        if not tasks:
            self.ready.pop(host, None)
            return None
        return tasks[0]

    def pop(self, host: str) -> FetchTask:
        return self.ready[host].popleft()

    def free_at(self, host: str, now: float) -> float | None:
        """None when the host may be asked now; else when it may (inf: when a request ends)."""
        if self.busy.get(host, 0) >= self.host_limit:
            return float("inf")
        at = self.next_at.get(host, 0.0)
        return at if at > now else None

    def started(self, host: str, now: float) -> None:
        self.busy[host] = self.busy.get(host, 0) + 1
        self.next_at[host] = now + self.delays.get(host, self.delay)

    def finished(self, host: str) -> None:
        self.busy[host] -= 1

    def slow_down(self, host: str, delay: float) -> None:
        """Space this host's requests by `delay` where that is more than the crawl's own delay."""
        self.delays[host] = max(self.delay, delay)


def host_of(task: FetchTask) -> str:
    return urlsplit(task.url).netloc


def planned(site: str, board: str, base_url: str, paths: Iterable[str], skip: set[str]) -> Iterator[Planned]:
    for path in paths:
        if base_url + path not in skip:
            yield site, board, base_url + path
