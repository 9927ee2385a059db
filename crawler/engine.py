"""The crawl loop: submit what the frontier allows, take outcomes, write them, reap lost tasks.

Two hazards of multiprocessing.Pool shape it:
- an exception escaping a callback kills the pool's result-handler thread and every later
  wait hangs, so the callbacks catch everything and only put an outcome on a queue;
- callbacks run on that result-handler thread, so they never touch SQLite: the main thread
  owns the one connection and writes each page as its outcome arrives (the pages of
  outcomes that arrived together share a commit).
Every wait has a bound: each task has a deadline, after which it is given up and retried.
"""
from __future__ import annotations

import queue
import time
from contextlib import nullcontext
from typing import Any, ContextManager, Iterator, Protocol

from . import pipeline, robots
from .decisions import Decisions
from .fetch import FetchTask
from .frontier import Frontier
from .pipeline import PageOutcome
from .site import Site
from .sites import SITES
from .supervisor import PoolSupervisor

POLL = 0.5
# At most this many pages that arrived together are stored in one transaction.
PAGES_PER_COMMIT = 50


class Timings(Protocol):
    """Where the crawl spends its time, for the benchmark: measure(label) wraps each step."""

    def measure(self, label: str) -> ContextManager[Any]: ...


class NoTimings:
    def measure(self, label: str) -> ContextManager[Any]:
        return nullcontext()


class Engine:
    """Runs the loop until every page is settled, or the crawl is told to stop."""

    def __init__(self, decisions: Decisions, frontier: Frontier, supervisor: PoolSupervisor, max_submitted: int,
                 timings: Timings | None = None) -> None:
        self.decisions, self.frontier, self.supervisor = decisions, frontier, supervisor
        self.max_submitted = max_submitted
        self.timings = timings or NoTimings()
        self.outcomes: queue.Queue[tuple[FetchTask, PageOutcome]] = queue.Queue()
        # Set by a signal handler: the signal that asked the crawl to stop, and whether a
        # second one asked it not to wait for the pages under way.
        self.stop_signal: int | None = None
        self.at_once = False
        self._stop_announced = False

    def run(self) -> None:
        """Submit, take outcomes, store, reap, until every page is settled.

        Once asked to stop, nothing more is submitted, what waits in the pool is dropped,
        and the pages already downloading are awaited (each within its deadline) and stored.
        """
        while self.supervisor.in_flight or (self.stop_signal is None and not self.frontier.empty):
            if self.stop_signal is not None and not self._stop_announced:
                self._stop_announced = True
                self.decisions.stopping = True
                self.decisions.stop_all()
            with self.timings.measure("submit"):
                wake = self._submit_ready() if self.stop_signal is None else float("inf")
            try:
                with self.timings.measure("wait"):
                    now = time.monotonic()
                    first = self.outcomes.get(timeout=self.supervisor.wait_time(wake, now, POLL))
            except queue.Empty:
                pass
            else:
                self._take(first)
            with self.timings.measure("reap"):
                self._reap()
            self.supervisor.check()

    def _take(self, first: tuple[FetchTask, PageOutcome]) -> None:
        """Handle `first` and the outcomes already waiting behind it, their pages in one commit.

        When the crawl keeps up, that is one page per commit. When pages arrive faster than
        they are stored, up to PAGES_PER_COMMIT share a commit, which costs SQLite far less.
        """
        with self.timings.measure("store"), self.decisions.writer.together():
            for task, outcome in [first, *self._waiting(PAGES_PER_COMMIT - 1)]:
                flight = self.supervisor.settle(task)
                if flight is None:
                    continue  # the answer to an attempt already given up as lost
                self.frontier.finished(flight.host)
                with self.timings.measure("handle"):
                    self.decisions.handle(task, outcome)

    def _waiting(self, most: int) -> Iterator[tuple[FetchTask, PageOutcome]]:
        """Up to `most` outcomes already queued, without waiting for more."""
        for _ in range(most):
            try:
                yield self.outcomes.get_nowait()
            except queue.Empty:
                return

    def _submit_ready(self) -> float:
        """Submit what the limits allow; return when a held task next comes due."""
        self.decisions.writer.note_pending(self.frontier.refill())
        now = time.monotonic()
        wake = self.frontier.release_due(now)
        for host in self.frontier.hosts():
            while (task := self.frontier.peek(host)) and len(self.supervisor.in_flight) < self.max_submitted:
                verdict = self.decisions.verdict(task)
                if verdict == "wait":
                    break  # the site's robots.txt is on its way
                if verdict != "go":
                    self.decisions.drop(self.frontier.pop(host), verdict)
                    continue
                free_at = self.frontier.free_at(host, now)
                if free_at is not None:
                    wake = min(wake, free_at)
                    break
                self._submit(self.frontier.pop(host), host, now)
        return wake

    def _submit(self, task: FetchTask, host: str, now: float) -> None:
        self.frontier.started(host, now)
        site = None if robots.is_robots(task) else SITES[task.site]
        self.supervisor.submit(task, host, now, lambda result: self._on_result(task, site, result),
                               lambda error: self._on_error(task, error))

    # -- callbacks: on the pool's result-handler thread; they must never raise -------------------
    def _on_result(self, task: FetchTask, site: Site | None, result: Any) -> None:
        try:
            with self.timings.measure("parse"):
                outcome = robots.answer(task, result) if site is None else pipeline.process(task, result, site)
        except BaseException as exc:  # noqa: BLE001 - anything escaping here hangs the pool
            outcome = PageOutcome(task, "error", error=f"internal error: {exc!r}")
        self.outcomes.put((task, outcome))

    def _on_error(self, task: FetchTask, error: BaseException) -> None:
        try:
            outcome = pipeline.failed(task, error)
        except BaseException as exc:  # noqa: BLE001
            outcome = PageOutcome(task, "error", error=f"internal error: {exc!r}", retryable=True)
        self.outcomes.put((task, outcome))

    def _reap(self) -> None:
        """Tasks past their deadline are retried; those a replaced pool held are queued again as they were."""
        lost, handed_back = self.supervisor.reap(time.monotonic())
        for flight in [*lost, *handed_back]:
            self.frontier.finished(flight.host)
        with self.decisions.writer.together():
            for flight in lost:
                self.decisions.handle(flight.task, PageOutcome(
                    flight.task, "error", retryable=True,
                    error="no answer from the worker before the page deadline (worker lost?)"))
        for flight in handed_back:
            self.frontier.add(flight.task)

