"""The scheduler: hands pages to the pool, parses in its callbacks, writes from the main thread.

Two hazards of multiprocessing.Pool shape this module:
- an exception escaping a callback kills the pool's result-handler thread and every later
  wait hangs, so the callbacks catch everything and only put an outcome on a queue;
- callbacks run on that result-handler thread, so they never touch SQLite: the main thread
  owns the one connection and writes each page as its outcome arrives (the pages of
  outcomes that arrived together share a commit).
Every wait has a bound: each task has a deadline, after which it is given up and retried
(a worker killed mid-download never reports back).
"""
from __future__ import annotations

import heapq
import multiprocessing
import os
import queue
import signal
import sqlite3
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import sqlite_utils

from . import pipeline, policy, pools, robots, store
from .config import Config, ConfigError
from .fetch import BLOCKED, STOPPING, FetchTask, SiteHTTP, SiteStops, WorkerSettings, fetch, not_fetched
from .offline import FIXTURES, FixtureError, check_fixtures
from .pipeline import PageOutcome
from .progress import Progress
from .record import Recorder
from .sites import SITES

# Time a task may take beyond the page deadline before it is presumed lost with its worker.
LOST_TASK_GRACE = 5.0
POLL = 0.5
# Up to this many tasks per worker are submitted at once, where the host's limits allow.
SUBMIT_AHEAD = 3
# Pages of the configured boards are queued (and noted pending) this many at a time per
# host, as the crawl gets to them: a board of 20,000 pages holds no more memory than one of 2,000.
QUEUE_CHUNK = 100
# At most this many pages that arrived together are stored in one transaction.
PAGES_PER_COMMIT = 50


@dataclass
class CrawlResult:
    run_id: int
    status: str
    pages_ok: int
    pages_failed: int
    pages_blocked: int
    records: int
    elapsed: float
    pages_disallowed: int = 0
    pages_retried: int = 0
    new_entries: int = 0
    pages_per_second: float | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)
    blocked_sites: list[str] = field(default_factory=list)
    # site -> file holding the first page that site blocked us with, for the user to read
    blocked_pages: dict[str, str] = field(default_factory=dict)
    # site -> its pages that came back blocked
    blocks: dict[str, int] = field(default_factory=dict)
    # What else the user should know (a robots.txt that could not be read)
    notices: list[str] = field(default_factory=list)


@dataclass
class _InFlight:
    task: FetchTask
    host: str
    deadline: float


def worker_settings(config: Config, fixtures: str | None) -> WorkerSettings:
    """What each worker needs; `fixtures` is the folder an offline crawl is served from."""
    return WorkerSettings(
        user_agent=config.user_agent,
        request_timeout=config.request_timeout,
        page_deadline=config.page_deadline,
        max_page_bytes=config.max_page_bytes,
        sites={s.name: SiteHTTP(s.base_url, dict(s.headers), dict(s.cookies)) for s in config.sites},
        offline_fixtures=fixtures,
    )


def make_pool(config: Config, settings: WorkerSettings, workers: int, stops: SiteStops | None = None) -> pools.Pool:
    return pools.make_pool(config.pool, workers, settings, config.start_method, config.dask_scheduler or None,
                           stops)


def shutdown_pool(pool: Any, timeout: float = 5.0) -> None:
    """Stop a pool's workers, within a bound.

    Pool.terminate() takes the task queue's lock first; if a killed worker died holding
    it, terminate() waits forever. It runs in a daemon thread here, and when it has not
    returned in time the workers are killed directly.
    """
    stopper = threading.Thread(target=pool.terminate, name="pool-terminate", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        for process in getattr(pool, "_pool", []):
            if hasattr(process, "kill") and process.is_alive():
                process.kill()


class Scheduler:
    def __init__(self, config: Config, db: sqlite_utils.Database, run_id: int, make_pool: Callable[[], Any],
                 offline: bool, workers: int, blocked_dir: Path, progress: Progress | None = None,
                 recorder: Recorder | None = None, pool: Any = None) -> None:
        self.config, self.db, self.run_id = config, db, run_id
        self.make_pool = make_pool
        self.pool = pool if pool is not None else make_pool()
        self.blocked_dir = blocked_dir
        self.progress = progress or Progress(quiet=True)
        self.recorder = recorder
        self.blocked_pages: dict[str, str] = {}
        self.workers = workers
        # Offline nothing is asked of the sites, so there is nothing to be polite about.
        self.delay = 0.0 if offline else config.delay_per_host
        self.per_host = workers if offline else config.max_in_flight_per_host
        # A worker that finishes a page should find the next one waiting in the pool, not
        # wait for the main process to handle the page and submit another. Submitting ahead
        # cannot put more requests in flight than there are workers, so it is allowed
        # where that stays within the host's limit and no delay between requests is asked.
        # A Dask cluster may have more threads than `workers`: there, only what is in flight
        # is submitted, or the host's limit would not hold.
        ahead = self.delay == 0 and self.per_host >= workers and getattr(self.pool, "runs_at_most_workers", True)
        self.max_submitted = workers * SUBMIT_AHEAD if ahead else workers
        self.host_limit = self.max_submitted if ahead else self.per_host
        self.outcomes: queue.Queue[tuple[FetchTask, PageOutcome]] = queue.Queue()
        # Tasks due now, per host in the order they were added; and tasks due later (retries).
        self.ready: dict[str, deque[FetchTask]] = {}
        self.later: list[tuple[float, int, FetchTask]] = []  # heap of (not before, order, task)
        self.order = 0
        self.in_flight: dict[str, _InFlight] = {}
        self.host_busy: dict[str, int] = {}
        self.host_next: dict[str, float] = {}
        # Pages of the configured boards not queued yet, per host: (site, board, url) iterators.
        self.sources: dict[str, deque[Iterator[tuple[str, str, str]]]] = {}
        # URLs of the boards that follow their pager, to ask for each page once.
        self.known: set[str] = set()
        # URL -> the newest earlier stored copy and its validators, for conditional requests.
        self.copies: dict[str, dict[str, Any]] = {}
        self.blocks: dict[str, int] = {}
        self.given_up: set[str] = set()
        self.offline = offline
        # Each site's robots.txt once read, and the sites still waiting for theirs.
        self.robots: dict[str, robots.Rules] = {}
        self.robots_pending: set[str] = set()
        # Per host, the delay between requests where its robots.txt asks more than delay_per_host.
        self.host_delay: dict[str, float] = {}
        # What the user should be told at the end, besides the pages (robots.txt that failed).
        self.notices: list[str] = []
        self.failures: list[tuple[str, str]] = []
        # While several outcomes are handled at once, the pages they store, for one commit.
        self.unsaved: list[store.PageWrite] | None = None
        # Set by a signal handler: the number of the signal that asked the crawl to stop,
        # and whether a second one asked it not to wait for the pages under way.
        self.stop_signal: int | None = None
        self.at_once = False
        self.stop_announced = False

    # -- what to fetch -------------------------------------------------------------------
    def add(self, site: str, board: str, url: str, attempt: int = 1, not_before: float = 0.0) -> None:
        copy = self.copies.get(url, {})
        task = FetchTask(site, board, url, attempt, copy.get("etag"), copy.get("last_modified"))
        if not_before > time.monotonic():
            self.order += 1
            heapq.heappush(self.later, (not_before, self.order, task))
        else:
            self._queue(task)

    def _queue(self, task: FetchTask) -> None:
        tasks = self.ready.setdefault(urlsplit(task.url).netloc, deque())
        if robots.is_robots(task):
            tasks.appendleft(task)  # the site's pages wait for it
        else:
            tasks.append(task)

    def add_boards(self, skip: set[str] = frozenset()) -> None:
        """Plan every page of the configured boards but those in `skip`; they are queued by chunks.

        A site that obeys robots.txt has it asked for first; its pages wait for the answer.
        """
        total = 0
        for site_config in self.config.sites:
            site = SITES[site_config.name]
            host = urlsplit(site_config.base_url).netloc
            if site_config.obey_robots and site.name not in self.robots:
                self.robots_pending.add(site.name)
                self._queue(robots.robots_task(site.name, site_config.base_url))
            for board_name in site_config.boards:
                board = site.boards[board_name]
                urls = (site_config.base_url + path for path in board.pages)
                count = sum(url not in skip for url in urls)
                if not count:
                    continue
                total += count
                if board.follow_pager:
                    self.known.update(site_config.base_url + path for path in board.pages)
                self.sources.setdefault(host, deque()).append(
                    _planned(site.name, board_name, site_config.base_url, board.pages, skip))
        self.progress.add_pages(total)

    def add_owed(self, pages: list[dict[str, str]]) -> None:
        """Pages a resumed run noted but never stored (pending, retrying, failed) and no board plans."""
        planned = {site_config.base_url + path for site_config in self.config.sites
                   for board in site_config.boards for path in SITES[site_config.name].boards[board].pages}
        owed = [p for p in pages if p["url"] not in self.known and p["url"] not in planned]
        for page in owed:
            self.known.add(page["url"])
            self.add(page["site"], page["board"], page["url"])
        self.progress.add_pages(len(owed))

    def _queue_planned(self) -> None:
        """Queue the next chunk of each host's planned pages once fewer than can be submitted wait."""
        for host, sources in list(self.sources.items()):
            if len(self.ready.get(host, ())) >= self.max_submitted:
                continue
            chunk: list[tuple[str, str, str]] = []
            while sources and len(chunk) < QUEUE_CHUNK:
                chunk.extend(islice(sources[0], QUEUE_CHUNK - len(chunk)))
                if len(chunk) < QUEUE_CHUNK:
                    sources.popleft()  # that board is all queued
            if not sources:
                del self.sources[host]
            self._note_pending([{"url": url, "site": site, "board": board} for site, board, url in chunk])
            for site, board, url in chunk:
                self.add(site, board, url)

    def _note_pending(self, pages: list[dict[str, str]]) -> None:
        """Note pages before fetching them, so an interrupted run knows what it still owes."""
        if pages:
            with self.db.atomic():
                self.db["pages"].insert_all(
                    [{"run_id": self.run_id, "outcome": "pending", "attempts": 0, **p} for p in pages],
                    pk=("run_id", "url"), ignore=True)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> list[tuple[str, str]]:
        """Submit, take outcomes, store, reap, until every page is settled.

        Once asked to stop, nothing more is submitted, and the pages already downloading
        are awaited (each within its deadline) and stored; a second Ctrl-C cuts that short.
        """
        while self.in_flight or (self.stop_signal is None and (self.sources or self.ready or self.later)):
            if self.stop_signal is not None and not self.stop_announced:
                self.stop_announced = True
                for site in self.config.sites:  # what waits in the pool is dropped, not sent
                    self.pool.stop_site(site.name, STOPPING)
                self.progress.note("stopping: finishing the pages already downloading "
                                   "(press Ctrl-C again to stop at once)")
            wake = self._submit_ready() if self.stop_signal is None else float("inf")
            try:
                first = self.outcomes.get(timeout=self._wait_time(wake))
            except queue.Empty:
                pass
            else:
                self._handle_waiting(first)
            self._reap_lost()
        return self.failures

    def _handle_waiting(self, first: tuple[FetchTask, PageOutcome]) -> None:
        """Handle `first` and the outcomes already waiting behind it, storing their pages in one commit.

        When the crawl keeps up, that is one page per commit, as before. When pages arrive
        faster than they are stored, up to PAGES_PER_COMMIT share a commit, which costs SQLite
        far less than one each. Should that commit fail, the pages are stored one at a time,
        so those before a page that cannot be written are kept; its error stops the crawl.
        """
        self.unsaved = []
        try:
            for task, outcome in [first, *self._waiting(PAGES_PER_COMMIT - 1)]:
                self._handle(task, outcome)
        finally:
            unsaved, self.unsaved = self.unsaved, None
            if unsaved:
                try:
                    store.save_pages(self.db, self.run_id, unsaved)
                except sqlite3.Error:
                    for write in unsaved:
                        store.save_page(self.db, self.run_id, *write)

    def _waiting(self, most: int) -> Iterator[tuple[FetchTask, PageOutcome]]:
        """Up to `most` outcomes already queued, without waiting for more."""
        for _ in range(most):
            try:
                yield self.outcomes.get_nowait()
            except queue.Empty:
                return

    def _wait_time(self, wake: float) -> float:
        """Sleep until an outcome arrives, a held task comes due, or a deadline passes."""
        now = time.monotonic()
        deadlines = [f.deadline for f in self.in_flight.values()]
        return max(0.0, min([wake, now + POLL, *deadlines]) - now)

    def _submit_ready(self) -> float:
        """Submit what the limits allow; return when a held task next comes due.

        Work per call is bounded by the number of hosts, not of pages waiting.
        """
        self._queue_planned()
        now = time.monotonic()
        while self.later and self.later[0][0] <= now:
            self._queue(heapq.heappop(self.later)[2])
        wake = self.later[0][0] if self.later else float("inf")
        for host in list(self.ready):
            tasks = self.ready[host]
            while tasks and len(self.in_flight) < self.max_submitted:
                if tasks[0].site in self.robots_pending and not robots.is_robots(tasks[0]):
                    break  # the site's robots.txt is on its way
                if tasks[0].site in self.given_up:
                    self._give_up(tasks.popleft())
                elif not self._allowed(tasks[0]):
                    self._disallow(tasks.popleft())
                elif self.host_busy.get(host, 0) >= self.host_limit:
                    break  # an outcome from this host frees it
                elif self.host_next.get(host, 0.0) > now:
                    wake = min(wake, self.host_next[host])
                    break
                else:
                    self._submit(tasks.popleft(), host, now)
            if not tasks:
                del self.ready[host]
        return wake

    def _submit(self, task: FetchTask, host: str, now: float) -> None:
        self.host_busy[host] = self.host_busy.get(host, 0) + 1
        self.host_next[host] = now + self.host_delay.get(host, self.delay)
        # A task submitted ahead may first wait for workers to finish the pages before it.
        rounds = 1 + len(self.in_flight) // self.workers
        deadline = now + self.config.page_deadline * rounds + LOST_TASK_GRACE
        self.in_flight[task.url] = _InFlight(task, host, deadline)
        parse = None if robots.is_robots(task) else SITES[task.site].parse
        self.pool.apply_async(fetch, (task,), callback=partial(self._on_result, task, parse),
                              error_callback=partial(self._on_error, task))

    # -- callbacks: on the pool's result-handler thread; they must never raise ---------------
    def _on_result(self, task: FetchTask, parse, result) -> None:
        try:
            outcome = robots.answer(task, result) if parse is None else pipeline.process(task, result, parse)
        except BaseException as exc:  # noqa: BLE001 - anything escaping here hangs the pool
            outcome = PageOutcome(task, "error", error=f"internal error: {exc!r}")
        self.outcomes.put((task, outcome))

    def _on_error(self, task: FetchTask, error: BaseException) -> None:
        try:
            outcome = pipeline.failed(task, error)
        except BaseException as exc:  # noqa: BLE001
            outcome = PageOutcome(task, "error", error=f"internal error: {exc!r}", retryable=True)
        self.outcomes.put((task, outcome))

    # -- main thread: decide and store ---------------------------------------------------
    def _handle(self, task: FetchTask, outcome: PageOutcome) -> None:
        flight = self.in_flight.get(task.url)
        if flight is None or flight.task is not task:
            return  # the answer to an attempt already given up as lost
        self._release(task.url)
        if outcome.error == not_fetched(task.site, STOPPING):
            return  # dropped on the way out: still noted pending, for --resume
        if robots.is_robots(task):
            self._settle_robots(task, outcome)
            return
        if outcome.not_modified and task.url not in self.copies:
            outcome.outcome, outcome.error = "error", "HTTP 304 to a request that was not conditional"
        if outcome.outcome == "ok":
            page_urls = outcome.page_urls
            if outcome.not_modified:
                copy = self.copies[task.url]
                store.reuse_page(self.db, self.run_id, copy["run_id"], self._page_row(task, outcome, True))
                self.progress.page(task, outcome, True)
                page_urls = store.board_pages(self.db, copy["run_id"], task.site, task.board)
            else:
                self._save(task, outcome)
            if SITES[task.site].boards[task.board].follow_pager:
                new = [u for u in dict.fromkeys(page_urls) if u not in self.known]
                self.known.update(new)
                self._note_pending([{"url": u, "site": task.site, "board": task.board} for u in new])
                for url in new:
                    self.add(task.site, task.board, url)
                self.progress.add_pages(len(new))
            return
        if outcome.outcome == "blocked":
            self.blocks[task.site] = self.blocks.get(task.site, 0) + 1
            if task.site not in self.blocked_pages:
                self._keep_blocked_page(task, outcome)
            if policy.stop_asking(self.blocks[task.site]) and task.site not in self.given_up:
                self.given_up.add(task.site)
                self.pool.stop_site(task.site)  # tasks already in the pool must not send either
        elif policy.should_retry(outcome.retryable, task.attempt, self.config.max_attempts) \
                and self.stop_signal is None:
            self._save(task, outcome, final=False)
            self._retry(task, outcome.retry_after)
            return
        self._save(task, outcome)
        self.failures.append((task.url, outcome.error or outcome.outcome))

    def _settle_robots(self, task: FetchTask, outcome: PageOutcome) -> None:
        """Retry robots.txt as a page would be; once it is settled, let the site's pages go."""
        if policy.should_retry(outcome.retryable, task.attempt, self.config.max_attempts) \
                and self.stop_signal is None:
            self._retry(task, outcome.retry_after)
            return
        rules = robots.rules(outcome, self.config.user_agent)
        self.robots[task.site] = rules
        self.robots_pending.discard(task.site)
        delay = rules.crawl_delay()
        if delay and not self.offline:  # a floor under delay_per_host, never lower
            host = urlsplit(task.url).netloc
            self.host_delay[host] = max(self.delay, delay)
        if rules.why:
            self.notices.append(f"{task.site}: {rules.why}")
            self.progress.note(self.notices[-1])
        if self.recorder is not None and outcome.status == 200:
            self.recorder.save(task.site, task.url, outcome.body, outcome.headers.get("content-type"))

    def _allowed(self, task: FetchTask) -> bool:
        rules = self.robots.get(task.site)
        return rules is None or robots.is_robots(task) or rules.allows(task.url)

    def _disallow(self, task: FetchTask) -> None:
        outcome = PageOutcome(task, "disallowed", error=self.robots[task.site].reason())
        self._save(task, outcome)
        self.failures.append((task.url, outcome.error))

    def _keep_blocked_page(self, task: FetchTask, outcome: PageOutcome) -> None:
        path = self.blocked_dir / f"blocked-{task.site}-run{self.run_id}.html"
        try:
            path.write_text(outcome.html or f"<!-- {task.url}: {outcome.error} -->", encoding="utf-8")
        except OSError:
            return  # the page row still says what happened
        self.blocked_pages[task.site] = str(path)

    def _retry(self, task: FetchTask, retry_after: float | None) -> None:
        wait = policy.retry_delay(task.attempt, self.config.retry_backoff, retry_after)
        self.add(task.site, task.board, task.url, task.attempt + 1, time.monotonic() + wait)

    def _reap_lost(self) -> None:
        """Give up on tasks past their deadline, and on the pool they were lost in.

        A worker killed mid-task never answers. Worse, a worker killed while idle may die
        holding the pool's task-queue lock, after which no worker gets another task. So a
        lost task means a fresh pool: the lost page is retried, the others are resubmitted.
        A pool that reschedules a dead worker's tasks itself (Dask) is kept.
        """
        now = time.monotonic()
        lost = [f for f in self.in_flight.values() if f.deadline <= now]
        if not lost:
            return
        replace = getattr(self.pool, "replace_when_task_lost", True)
        if replace:
            old, self.pool = self.pool, self.make_pool()
            shutdown_pool(old)
        for flight in lost:
            self._handle(flight.task, PageOutcome(
                flight.task, "error", retryable=True,
                error="no answer from the worker before the page deadline (worker lost?)"))
        if replace:  # what the old pool was doing is lost with it
            for url, flight in list(self.in_flight.items()):
                self._release(url)
                self._queue(flight.task)

    def close(self) -> None:
        shutdown_pool(self.pool)

    def _release(self, url: str) -> None:
        flight = self.in_flight.pop(url)
        self.host_busy[flight.host] -= 1

    def _give_up(self, task: FetchTask) -> None:
        outcome = PageOutcome(task, "error", error=not_fetched(task.site, BLOCKED))
        self._save(task, outcome)
        self.failures.append((task.url, outcome.error))

    def _save(self, task: FetchTask, outcome: PageOutcome, final: bool = True) -> None:
        html = None
        if outcome.status == 200 and outcome.body:
            html = {"body": outcome.body, "compressed": outcome.compressed,
                    "content_type": outcome.headers.get("content-type"),
                    "etag": outcome.headers.get("etag"), "last_modified": outcome.headers.get("last-modified")}
            if self.recorder is not None:
                self.recorder.save(task.site, task.url, outcome.body, html["content_type"])
        write = (self._page_row(task, outcome, final), outcome.records, html)
        if self.unsaved is not None:
            self.unsaved.append(write)  # stored with the other outcomes being handled
        else:
            store.save_page(self.db, self.run_id, *write)
        self.progress.page(task, outcome, final)

    @staticmethod
    def _page_row(task: FetchTask, outcome: PageOutcome, final: bool) -> dict[str, Any]:
        return {"url": task.url, "site": task.site, "board": task.board, "final_url": outcome.final_url,
                "status": outcome.status, "bytes": outcome.bytes, "elapsed": round(outcome.elapsed, 4),
                "attempts": task.attempt, "outcome": outcome.outcome if final else "retrying",
                "error": outcome.error}


def _planned(site: str, board: str, base_url: str, paths: tuple[str, ...],
             skip: set[str]) -> Iterator[tuple[str, str, str]]:
    for path in paths:
        if base_url + path not in skip:
            yield site, board, base_url + path


class Interrupted(Exception):
    """The crawl was stopped by a signal; what was parsed before it is stored.

    at_once: a second signal came, and the pages still downloading were abandoned.
    """

    def __init__(self, result: CrawlResult, signum: int, at_once: bool = False) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.result = result
        self.signum = signum
        self.at_once = at_once


def crawl(config: Config, db_path: str | None = None, offline: bool = False, workers: int | None = None,
          resume: int | str | None = None, fixtures: str | Path | None = None, record: str | Path | None = None,
          progress: Progress | None = None) -> CrawlResult:
    """Crawl every board the config names into the database as one new run.

    offline: serve pages from `fixtures` (default: the bundled fixtures/) instead of the sites.
    resume: a run id, or "latest" for the latest unfinished run; only the pages that run
    does not have yet are fetched into it. record: a folder to write every page into, in
    the fixtures format. On SIGINT or SIGTERM the crawl stops submitting, stores what is
    parsed, marks the run interrupted and raises Interrupted. However it ends, the
    database's main file holds everything stored (the write-ahead log is folded back in).
    """
    path = db_path or config.database
    folder = str(fixtures or FIXTURES) if (offline or fixtures) else None
    # Both folders are checked before the database is touched: a bad one must leave no run behind.
    try:
        if folder:
            check_fixtures(folder)
    except FixtureError as exc:
        raise ConfigError(f"{'--fixtures' if fixtures else '--offline'}: {exc}") from None
    try:
        recorder = Recorder(record, {s.name: s.base_url for s in config.sites}) if record else None
    except FixtureError as exc:
        raise ConfigError(f"--record: {exc}") from None
    db = store.open_db(path)
    try:
        return _crawl(config, db, path, folder, workers or config.workers, resume, recorder, progress)
    except sqlite3.Error as exc:
        raise store.database_error(path, exc) from None
    finally:
        try:
            store.close_db(db)
        except sqlite3.Error:
            pass  # what was committed is in the log; SQLite folds it in at the next open


def _crawl(config: Config, db: sqlite_utils.Database, db_path: str, fixtures: str | None, workers: int,
           resume: int | str | None, recorder: Recorder | None, progress: Progress | None) -> CrawlResult:
    started = time.monotonic()
    # One set of stop flags for every pool of the crawl: a replacement pool inherits the decisions.
    stops = SiteStops((s.name for s in config.sites),
                      multiprocessing.get_context(None if config.start_method == "default" else config.start_method))
    make = partial(make_pool, config, worker_settings(config, fixtures), workers, stops)
    pool = make()  # first: a pool that cannot start must leave no run behind
    try:
        if resume is None:
            run_id, done = store.start_run(db, config.path, config.text, fixtures is not None), set()
        else:
            run_id = store.reopen_run(db, resume)
            done = store.pages_done(db, run_id)
    except BaseException:
        shutdown_pool(pool)
        raise
    scheduler = Scheduler(config, db, run_id, make, fixtures is not None, workers, Path(db_path).resolve().parent,
                          progress, recorder, pool)
    scheduler.copies = store.stored_copies(db, run_id)
    error: Exception | None = None
    with _stop_on_signals(scheduler):
        try:
            scheduler.add_boards(skip=done)
            scheduler.add_owed(store.pages_owed(db, run_id))
            scheduler.run()
        except KeyboardInterrupt:
            pass  # a second signal: the downloads under way are abandoned
        except Exception as exc:  # the database or the disk failed us: the run must say so
            error = exc
        finally:
            try:
                scheduler.close()
            except KeyboardInterrupt:  # the second signal came while the pool was stopping
                scheduler.close()
            scheduler.progress.close()
    elapsed = time.monotonic() - started
    if error is not None:
        try:
            store.finish_run(db, run_id, "failed", f"stopped by an error: {error}", elapsed)
        except sqlite3.Error:
            pass  # the database itself is the error; --resume can still take the run up
        raise error
    if scheduler.stop_signal is not None:
        message = (f"stopped at once by a second signal ({scheduler.stop_signal} first)" if scheduler.at_once
                   else f"stopped by signal {scheduler.stop_signal}")
        stats = store.finish_run(db, run_id, "interrupted", message, elapsed)
        raise Interrupted(_result(run_id, "interrupted", elapsed, scheduler.failures, scheduler, stats),
                          scheduler.stop_signal, scheduler.at_once)
    counts = store.run_counts(db, run_id)
    if counts["pages_ok"] == counts["pages"]:
        status = "ok"
    elif counts["records"]:
        status = "partial"
    else:
        status = "failed"
    stats = store.finish_run(db, run_id, status, None, elapsed)
    return _result(run_id, status, elapsed, scheduler.failures, scheduler, stats)


def _result(run_id: int, status: str, elapsed: float, failures: list[tuple[str, str]],
            scheduler: Scheduler, stats: dict[str, Any]) -> CrawlResult:
    return CrawlResult(run_id=run_id, status=status, elapsed=elapsed, failures=failures,
                       blocked_sites=sorted(scheduler.given_up), blocked_pages=dict(scheduler.blocked_pages),
                       blocks=dict(scheduler.blocks), notices=list(scheduler.notices),
                       **{name: stats[name] for name in (
                           "pages_ok", "pages_failed", "pages_blocked", "pages_disallowed", "records",
                           "pages_retried", "new_entries", "pages_per_second")})


@contextmanager
def _stop_on_signals(scheduler: Scheduler):
    """First SIGINT/SIGTERM: finish cleanly. A second one: stop at once; any more: ignored.

    Installed after the pool has started its workers; a worker forked later still
    inherits it, so the handler lets only the main process keep running.
    """
    owner = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != owner:
            os._exit(128 + signum)
        if scheduler.stop_signal is None:
            scheduler.stop_signal = signum
        elif not scheduler.at_once:
            scheduler.at_once = True
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
