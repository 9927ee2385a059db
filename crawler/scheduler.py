"""The crawl, top down: open the run, plan its pages, loop (submit, take outcomes, write, reap), finish.

Each step has its module: the frontier (crawler.frontier) holds the pages waiting and
each host's slots, the supervisor (crawler.supervisor) the pool and its deadlines, the
decisions (crawler.decisions) apply the retry, block and robots.txt rules, the run writer
(crawler.runwriter) is the only code writing the run's rows, and the engine
(crawler.engine) turns the loop.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from . import pools, robots, store
from .config import Config, ConfigError
from .decisions import Decisions
from .engine import Engine, NoTimings, Timings
from .fetch import SiteHTTP, SiteStops, WorkerSettings
from .frontier import QUEUE_CHUNK, Frontier
from .offline import FIXTURES, FixtureError, check_fixtures
from .pools import PoolUnavailable
from .progress import Progress
from .record import Recorder
from .runwriter import RunWriter
from .sites import SITES
from .supervisor import SUBMIT_AHEAD, PoolSupervisor, shutdown_pool

__all__ = ["CrawlResult", "Interrupted", "QUEUE_CHUNK", "crawl", "make_engine", "shutdown_pool", "worker_settings"]


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


def worker_settings(config: Config, fixtures: str | None) -> WorkerSettings:
    """What each worker needs; `fixtures` is the folder an offline crawl is served from."""
    return WorkerSettings(
        user_agent=config.user_agent,
        request_timeout=config.request_timeout,
        page_deadline=config.page_deadline,
        max_page_bytes=config.max_page_bytes,
        # The site's own default headers (Accept-Language...), then the config's.
        sites={s.name: SiteHTTP(s.base_url, {**SITES[s.name].headers, **s.headers}, dict(s.cookies), s.font_hosts)
               for s in config.sites},
        offline_fixtures=fixtures,
    )


class Interrupted(Exception):
    """The crawl was stopped before its end; what was parsed before it is stored, and it can be resumed.

    signum: the signal that stopped it (0 when the pool was lost: `reason` says how).
    at_once: a second signal came, and the pages still downloading were abandoned.
    """

    def __init__(self, result: CrawlResult, signum: int, at_once: bool = False, reason: str | None = None) -> None:
        super().__init__(reason or f"stopped by signal {signum}")
        self.result = result
        self.signum = signum
        self.at_once = at_once
        self.reason = reason


def crawl(config: Config, db_path: str | None = None, offline: bool = False, workers: int | None = None,
          resume: int | str | None = None, fixtures: str | Path | None = None, record: str | Path | None = None,
          progress: Progress | None = None, timings: Timings | None = None,
          make_pool: Callable[[], pools.Pool] | None = None) -> CrawlResult:
    """Crawl every board the config names into the database as one new run.

    offline: serve pages from `fixtures` (default: the bundled fixtures/) instead of the sites.
    resume: a run id, or "latest" for the latest unfinished run; only the pages that run
    does not have yet are fetched into it. record: a folder to write every page into, in
    the fixtures format. On SIGINT or SIGTERM the crawl stops submitting, stores what is
    parsed, marks the run interrupted and raises Interrupted. However it ends, the
    database's main file holds everything stored (the write-ahead log is folded back in).
    timings: a hook told of each step of the loop (the benchmark's timers). make_pool:
    a Pool-shaped object factory instead of the configured pool (tests use in-process ones).
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
        return _crawl(config, db, path, folder, workers or config.workers, resume, recorder,
                      progress or Progress(quiet=True), timings or NoTimings(), make_pool)
    except sqlite3.Error as exc:
        raise store.database_error(path, exc) from None
    finally:
        try:
            store.close_db(db)
        except sqlite3.Error:
            pass  # what was committed is in the log; SQLite folds it in at the next open


def _crawl(config: Config, db: sqlite_utils.Database, db_path: str, fixtures: str | None, workers: int,
           resume: int | str | None, recorder: Recorder | None, progress: Progress, timings: Timings,
           make_pool: Callable[[], pools.Pool] | None) -> CrawlResult:
    started = time.monotonic()
    offline = fixtures is not None
    # One set of stop flags for every pool of the crawl: a replacement pool inherits the decisions.
    stops = SiteStops((s.name for s in config.sites),
                      multiprocessing.get_context(None if config.start_method == "default" else config.start_method))
    make = make_pool or partial(pools.make_pool, config.pool, workers, worker_settings(config, fixtures),
                                config.start_method, config.dask_scheduler or None, stops,
                                dask_timeout=config.dask_timeout, verbose=progress.verbose)
    supervisor = PoolSupervisor(make, workers, config.page_deadline)  # first: no run if no pool
    try:
        writer = RunWriter.open(db, config.path, config.text, offline, resume, recorder)
        done = writer.done() if resume is not None else set()
    except BaseException:
        supervisor.close()
        raise
    engine = make_engine(config, writer, supervisor, progress, workers, offline, Path(db_path).resolve().parent,
                         timings)
    decisions = engine.decisions
    error: Exception | None = None
    lost: PoolUnavailable | None = None
    with _stop_on_signals(engine):
        try:
            decisions.plan(done, writer.owed())
            engine.run()
        except KeyboardInterrupt:
            pass  # a second signal: the downloads under way are abandoned
        except PoolUnavailable as exc:  # the cluster went away: what was stored is kept, to resume
            lost = exc
        except Exception as exc:  # the database or the disk failed us: the run must say so
            error = exc
        finally:
            with timings.measure("close"):
                try:
                    supervisor.close()
                except KeyboardInterrupt:  # the second signal came while the pool was stopping
                    supervisor.close()
            progress.close()
    return _finish(writer, engine, error, lost, time.monotonic() - started)


def make_engine(config: Config, writer: RunWriter, supervisor: PoolSupervisor, progress: Progress, workers: int,
                offline: bool, blocked_dir: Path, timings: Timings | None = None) -> Engine:
    """The loop and its parts, with the limits that apply to this crawl."""
    # Offline nothing is asked of the sites, so there is nothing to be polite about.
    delay = 0.0 if offline else config.delay_per_host
    per_host = workers if offline else config.max_in_flight_per_host
    # A worker that finishes a page should find the next one waiting in the pool, not wait
    # for the main process. Submitting ahead cannot put more requests in flight than there
    # are workers (every pool, a Dask one too, runs at most `workers` at once), so it is
    # allowed where that stays within the host's limit and no delay is asked.
    ahead = delay == 0 and per_host >= workers
    max_submitted = workers * SUBMIT_AHEAD if ahead else workers
    decisions = Decisions(config, writer, supervisor, progress, offline, blocked_dir)
    decisions.frontier = Frontier(decisions.task, robots.is_robots, max_submitted if ahead else per_host, delay,
                                  max_submitted)
    return Engine(decisions, decisions.frontier, supervisor, max_submitted, timings)


def _finish(writer: RunWriter, engine: Engine, error: Exception | None, lost: PoolUnavailable | None,
            elapsed: float) -> CrawlResult:
    """Mark the run with what became of it, from what was actually stored."""
    if error is not None:
        try:
            writer.finish("failed", f"stopped by an error: {error}", elapsed)
        except sqlite3.Error:
            pass  # the database itself is the error; --resume can still take the run up
        raise error
    if lost is not None:
        stats = writer.finish("interrupted", str(lost), elapsed)
        raise Interrupted(_result(writer.run_id, "interrupted", elapsed, engine.decisions, stats), 0, reason=str(lost))
    if engine.stop_signal is not None:
        message = (f"stopped at once by a second signal ({engine.stop_signal} first)" if engine.at_once
                   else f"stopped by signal {engine.stop_signal}")
        stats = writer.finish("interrupted", message, elapsed)
        raise Interrupted(_result(writer.run_id, "interrupted", elapsed, engine.decisions, stats),
                          engine.stop_signal, engine.at_once)
    counts = writer.counts()
    if counts["pages_ok"] == counts["pages"]:
        status = "ok"
    elif counts["records"]:
        status = "partial"
    else:
        status = "failed"
    return _result(writer.run_id, status, elapsed, engine.decisions, writer.finish(status, None, elapsed))


def _result(run_id: int, status: str, elapsed: float, decisions: Decisions, stats: dict[str, Any]) -> CrawlResult:
    return CrawlResult(run_id=run_id, status=status, elapsed=elapsed, failures=decisions.failures,
                       blocked_sites=sorted(decisions.given_up), blocked_pages=dict(decisions.blocked_pages),
                       blocks=dict(decisions.blocks), notices=list(decisions.notices),
                       **{name: stats[name] for name in (
                           "pages_ok", "pages_failed", "pages_blocked", "pages_disallowed", "records",
                           "pages_retried", "new_entries", "pages_per_second")})


@contextmanager
def _stop_on_signals(engine: Engine):
    """First SIGINT/SIGTERM: finish cleanly. A second one: stop at once; any more: ignored.

    Installed after the pool has started its workers; a worker forked later still
    inherits it, so the handler lets only the main process keep running.
    """
    owner = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != owner:
            os._exit(128 + signum)
        if engine.stop_signal is None:
            engine.stop_signal = signum
        elif not engine.at_once:
            engine.at_once = True
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
