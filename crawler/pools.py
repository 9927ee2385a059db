"""The pool the scheduler hands pages to: processes (the default), threads, or a Dask cluster.

The scheduler needs only multiprocessing.Pool's shape: apply_async(fn, args, callback=,
error_callback=) with the callbacks run in the driver, one at a time, and a terminate()
that ends. Each kind gives its workers a crawler.fetch.Downloads (the crawl's settings,
stop flags and a Session per thread):
- process: init_worker, in each process (Ctrl-C left to the driver);
- thread: configure, once, in the driver, whose threads share it (no signal calls:
  signal.signal raises ValueError outside the main thread);
- dask: a WorkerPlugin, one per crawl, which the driver adds to each running worker (one
  that joins, or that Dask restarts, too) and removes when the crawl ends. Pages go
  from the driver straight to a worker's handler and back, not as Dask tasks: a task costs
  the scheduler, the worker and the driver about 11 ms of CPU, four times the download.
  Dask is an optional extra: this module imports it only when a dask pool is made.

In threads (thread, dask) fetch() cannot use its SIGALRM hard deadline; the per-chunk
check in fetch._read and the scheduler's per-task deadline bound a slow page instead.
"""
from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import itertools
import logging
import math
import multiprocessing
import multiprocessing.pool
import os
import pickle
import platform
import queue
import signal
import sys
import threading
import uuid
import warnings
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from typing import Any, Callable, Protocol

from .fetch import (BLOCKED, Downloads, FetchError, FetchTask, SiteStops, WorkerSettings, configure, fetch,
                    init_worker, not_fetched)
from .errors import CrawlerError

POOL_KINDS = ("process", "thread", "dask")
DASK_MISSING = "the dask pool needs dask.distributed: pip install -e '.[dask]'"
# crawl.dask_timeout's default: seconds for the dask scheduler to answer (connecting, checking
# the workers, registering and removing the crawl's plugin), and after which a scheduler that
# stopped answering counts as lost.
DASK_CONNECT_TIMEOUT = 30.0
DASK_TERMINATE_TIMEOUT = 4.0  # under scheduler.shutdown_pool's 5 s, so its fallback is never needed
# Seconds between two requests for the cluster's running workers (also the scheduler's heartbeat).
DASK_WATCH_INTERVAL = 1.0
# Seconds between two looks for a worker, when none can take a page.
DASK_NO_WORKER_WAIT = 0.1

log = logging.getLogger(__name__)


class PoolUnavailable(CrawlerError):
    """The chosen pool cannot be had (dask not installed, scheduler unreachable); the message is one line."""


class Pool(Protocol):
    """What the scheduler uses of a pool (multiprocessing.Pool's names and meanings)."""

    def apply_async(self, fn: Callable[..., Any], args: tuple = ..., kwds: dict = ...,
                    callback: Callable[[Any], Any] | None = ...,
                    error_callback: Callable[[BaseException], Any] | None = ...) -> Any: ...

    def terminate(self) -> None: ...

    def stop_site(self, site: str, why: int = BLOCKED) -> None:
        """Send nothing more to this site, not even for tasks already submitted (why: fetch.BLOCKED or STOPPING)."""


def make_pool(kind: str, workers: int, settings: WorkerSettings, start_method: str | None = None,
              dask_address: str | None = None, stops: SiteStops | None = None, dask_timeout: float | None = None,
              verbose: bool = False) -> Pool:
    """A Pool-shaped object of the given kind whose workers are set up to run crawler.fetch.fetch.

    start_method applies to the process pool only (Dask starts its worker processes with spawn).
    stops: the sites' stop flags, shared by every pool of one crawl (a new pool must not
    ask a site the crawl gave up on); made here when not given. A Dask pool's workers
    each keep their own, set by the driver: they are on other hosts. dask_timeout
    (crawl.dask_timeout) bounds each exchange with the dask scheduler; verbose lets Dask's
    own log lines through (-v).
    """
    if kind == "dask":
        pool = DaskPool.start(workers, settings, address=dask_address or None, timeout=dask_timeout,
                              verbose=verbose, stops=stops)
        _freeze_what_exists()  # the Dask client's objects too
        return pool
    if kind not in POOL_KINDS:
        raise ValueError(f"unknown pool {kind!r} (known: {', '.join(POOL_KINDS)})")
    pool: ProcessPool | SiteThreadPool
    try:
        _freeze_what_exists()
        if kind == "process":
            context = multiprocessing.get_context(None if start_method in (None, "default") else start_method)
            stops = stops or SiteStops(settings.sites, context)
            pool = ProcessPool(workers, initializer=init_worker, initargs=(settings, stops), context=context)
        else:
            stops = stops or SiteStops(settings.sites)
            # The threads share this process's downloads (each its own Session); no init_worker:
            # signal handlers are the main thread's to set.
            configure(settings, stops)
            pool = SiteThreadPool(workers)
    except (OSError, RuntimeError) as exc:  # fork or thread creation refused: EAGAIN, ENOMEM
        what = "processes" if kind == "process" else "threads"
        why = getattr(exc, "strerror", None) or str(exc)
        raise PoolUnavailable(f"the system refused to start {workers} worker {what} ({why}): "
                              f"lower --workers or crawl.workers, or free memory and processes") from None
    pool.stops = stops
    return pool


def _freeze_what_exists() -> None:
    """Leave the objects made so far (modules, the pool's own) out of every later collection.

    Parsing makes garbage fast, so the cycle collector runs often; its full collections,
    which visit every object, held the driver's every thread for tens of milliseconds each
    (the Dask client alone brings 30,000 objects), and the pool's workers ran dry meanwhile.
    A process pool's forked workers also share what is frozen page by page, as a
    collection no longer writes to it (about 10 MB less in all at 8 workers).
    """
    gc.collect()
    gc.freeze()


class _SharedStops:
    """stop_site for pools whose workers read SiteStops before each request."""

    stops: SiteStops

    def stop_site(self, site: str, why: int = BLOCKED) -> None:
        self.stops.stop(site, why)


class SiteThreadPool(_SharedStops, ThreadPool):
    """multiprocessing's ThreadPool, with stop_site, that fails cleanly when a thread is refused."""

    def _repopulate_pool(self) -> None:
        try:
            super()._repopulate_pool()
        except RuntimeError:  # "can't start new thread": end those started, or Pool's clean-up fails on them
            for _ in self._pool:
                self._inqueue.put(None)
            for thread in self._pool:
                thread.join(5.0)
            self._pool.clear()
            raise


class ProcessPool(_SharedStops, multiprocessing.pool.Pool):
    """multiprocessing.Pool whose worker-handler thread is not woken by every result.

    The stock pool's worker handler also waits on the result pipe, so while a callback
    is parsing and results wait unread it wakes, finds nothing to do and waits again, in a
    loop that competes with the parser for the interpreter lock. It has no use for the
    results: a dead worker wakes it through its own sentinel, a change of state or an
    emptied cache through the notifier, which is all it is left waiting on here.
    """

    def _get_sentinels(self) -> list[Any]:
        return [self._change_notifier._reader]


def _session_plugin_class() -> type:
    """Build SessionPlugin on first use: it subclasses dask's WorkerPlugin (duck types are refused)."""
    from distributed.diagnostics.plugin import WorkerPlugin
    from distributed.protocol import to_serialize

    class SessionPlugin(WorkerPlugin):
        """One crawl's downloads on a Dask worker: its handlers `name` (a page) and `name`-stop (a site's flag)."""

        idempotent = False

        def __init__(self, name: str, settings: WorkerSettings, ignore_sigint: bool = False) -> None:
            self.name, self.settings, self.ignore_sigint = name, settings, ignore_sigint

        def setup(self, worker: Any) -> None:
            # Our own worker processes share the terminal: Ctrl-C is for the driver to handle.
            if self.ignore_sigint and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            # The crawl's own downloads (settings, stop flags, sessions): a worker may serve several crawls.
            self._downloads = Downloads(self.settings, SiteStops(self.settings.sites))
            self._threads = worker.executors["default"]  # the worker's --nthreads
            worker.handlers[self.name] = self.fetch
            worker.handlers[f"{self.name}-stop"] = self.stop

        def teardown(self, worker: Any) -> None:
            for op in (self.name, f"{self.name}-stop"):
                worker.handlers.pop(op, None)

        async def fetch(self, task: bytes) -> dict[str, Any]:
            """A page (a pickled FetchTask), downloaded in one of the worker's threads; what it
            raised is an answer too.

            The task and the result travel pickled, as bytes: Dask's own serialization of them
            cost the worker and the driver more than the download."""
            try:
                result = await asyncio.get_running_loop().run_in_executor(self._threads, self._downloads.fetch,
                                                                           pickle.loads(task))
            except Exception as exc:  # noqa: BLE001 - a FetchError, or a fault: the driver's error callback gets it
                return {"status": "error", "exception": to_serialize(exc)}
            return {"status": "OK", "result": pickle.dumps(result, pickle.HIGHEST_PROTOCOL)}

        def stop(self, site: str, why: int) -> None:
            self._downloads.stop(site, why)

    SessionPlugin.__module__, SessionPlugin.__qualname__ = __name__, "SessionPlugin"
    return SessionPlugin


def __getattr__(name: str) -> Any:
    """crawler.pools.SessionPlugin, made on first access, so that workers can unpickle it by name."""
    if name == "SessionPlugin":
        globals()[name] = cls = _session_plugin_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _versions() -> dict[str, str]:
    """What must be the same on the driver and on every worker (run on each worker, by reference:
    a worker without the crawler fails to unpickle it, which says so)."""
    import dask
    import distributed

    try:
        crawler = importlib.metadata.version("crawler")
    except importlib.metadata.PackageNotFoundError:
        crawler = "(not installed)"
    return {"crawler": crawler, "Python": ".".join(platform.python_version_tuple()[:2]),
            "dask": dask.__version__, "distributed": distributed.__version__}


def _quiet_dask() -> None:
    """Dask's own log lines (reconnecting, rescheduling, version tables) are not the crawl's to show; -v shows them."""
    for name in [n for n in logging.root.manager.loggerDict if n == "distributed" or n.startswith("distributed.")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _named(workers: list[str]) -> str:
    """'dask worker A', 'dask workers A, B, C and 4 more': one line whatever the cluster's size."""
    shown = ", ".join(workers[:3]) + (f" and {len(workers) - 3} more" if len(workers) > 3 else "")
    return f"dask worker{'s' if len(workers) > 1 else ''} {shown}"


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class DaskCall:
    """What DaskPool.apply_async returns: the call's key, new for each call (a retry is another call)."""

    key: str


class DaskPool:
    """A dask.distributed cluster in the shape of multiprocessing.Pool, as the scheduler uses it.

    Every page is a call from the driver to a worker's handler, on the Dask client's event
    loop: to the running worker with the most room, again elsewhere if that worker dies or
    cannot be reached (as Dask reruns a dead worker's tasks). No more than `workers` pages
    download at once, as in a Pool of that many processes, so the scheduler may submit ahead:
    each worker is sent at most its share of them, and the rest wait here, as in a Pool's
    queue. The callbacks run on a thread of their own, one at a time, in the order the pages
    came back.
    """

    # A worker lost mid-page has its page sent elsewhere; a new cluster would only cost seconds.
    replace_when_task_lost = False

    def __init__(self, client: Any, cluster: Any, address: str, timeout: float, workers: int,
                 stops: SiteStops, page_deadline: float = 0.0) -> None:
        self.client, self.cluster, self.address, self.timeout = client, cluster, address, timeout
        self.page_deadline = page_deadline
        # At most `workers` pages are downloading, however many threads the cluster has (the
        # per-host limits count on it); the pages submitted beyond wait here, as in a Pool's queue.
        self.workers, self.stops = workers, stops
        # The plugin's name, and its handlers': the crawl's own, so that crawls sharing a cluster stay apart.
        self.name = f"crawler-{uuid.uuid4().hex}"
        self._state = "run"  # then "terminate"
        self._lost: str | None = None  # why the scheduler counts as gone
        self._calls = itertools.count(1)
        # On the event loop only: threads per worker the crawl is set up on, its share of the
        # `workers` downloads at once, pages sent to each and not back, workers not asked until
        # when, workers the crawl could not be set up on; pages submitted and not yet sent.
        self._threads: dict[str, int] = {}
        self._share: dict[str, int] = {}
        self._sent: Counter[str] = Counter()
        self._shunned: dict[str, float] = {}
        self._refused: set[str] = set()
        self._pending: deque[tuple[FetchTask, Callable[[Any], Any] | None, Callable[[BaseException], Any] | None]] \
            = deque()
        self._calls_out: set[asyncio.Future] = set()  # held here: the event loop keeps only weak references
        self._retry: asyncio.TimerHandle | None = None
        self._plugin = b""  # the crawl's plugin, pickled once for every worker it is added to
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._callbacks = threading.Thread(target=self._run_callbacks, name="dask-pool-callbacks", daemon=True)
        self._stopper: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def start(cls, workers: int, settings: WorkerSettings, address: str | None = None, processes: bool = True,
              n_workers: int | None = None, timeout: float | None = None, verbose: bool = False,
              stops: SiteStops | None = None) -> DaskPool:
        """Connect to the scheduler at address, or start a LocalCluster (a few processes, threads in each);
        check the workers can run this crawler, and set the crawl up on them. Each step is bounded by
        timeout (crawl.dask_timeout); whatever fails is a one-line PoolUnavailable. stops: the crawl's
        stop flags, checked before a waiting page is sent (the workers keep their own)."""
        timeout = timeout or DASK_CONNECT_TIMEOUT
        client, cluster = _connect(workers, address, processes, n_workers, timeout, verbose)
        pool = cls(client, cluster, address or cluster.scheduler_address, timeout, workers,
                   stops or SiteStops(settings.sites), settings.page_deadline)
        try:
            _set_up(pool, settings, ignore_sigint=cluster is not None and processes, check=bool(address))
        except BaseException:
            pool.terminate()
            raise
        return pool

    # -- pages ---------------------------------------------------------------------------------
    def apply_async(self, fn: Callable[..., Any], args: tuple = (), kwds: dict | None = None,
                    callback: Callable[[Any], Any] | None = None,
                    error_callback: Callable[[BaseException], Any] | None = None) -> DaskCall:
        """Send fetch(task) to a worker; raise PoolUnavailable, with why, once the scheduler is lost."""
        if fn is not fetch:
            raise ValueError("a dask pool runs crawler.fetch.fetch only")
        if self._state != "run":
            raise ValueError("Pool not running")
        reason = self.broken()
        if reason:
            raise PoolUnavailable(reason)
        (task,) = args
        self.client.loop.add_callback(self._queue, task, callback, error_callback)
        return DaskCall(f"{self.name}-{next(self._calls)}")

    def _queue(self, task: FetchTask, callback: Callable[[Any], Any] | None,
               error_callback: Callable[[BaseException], Any] | None) -> None:
        self._pending.append((task, callback, error_callback))
        self._dispatch()

    def _dispatch(self) -> None:
        """Send the pending pages, in order, to the workers with room for them (on the event loop)."""
        while self._pending and self._state == "run":
            task, callback, error_callback = self._pending[0]
            why = self.stops.why(task.site)
            if why:  # stopped while the page waited here: not sent, as a worker would not ask the site
                self._pending.popleft()
                self._answers.put((error_callback, FetchError(task.url, not_fetched(task.site, why),
                                                              retryable=False)))
                continue
            worker = self._pick()
            if worker is None:
                if self._retry is None:  # none can take it now: when a call ends, or soon
                    self._retry = asyncio.get_running_loop().call_later(DASK_NO_WORKER_WAIT, self._look_again)
                return
            self._pending.popleft()
            self._sent[worker] += 1
            call = asyncio.ensure_future(self._call(worker, task, callback, error_callback))
            self._calls_out.add(call)
            call.add_done_callback(self._calls_out.discard)

    def _look_again(self) -> None:
        self._retry = None
        self._dispatch()

    async def _call(self, worker: str, task: FetchTask, callback: Callable[[Any], Any] | None,
                    error_callback: Callable[[BaseException], Any] | None) -> None:
        try:
            answer = await getattr(self.client.rpc(worker), self.name)(task=pickle.dumps(task, pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - the worker died, cannot be reached, or lacks the crawl: elsewhere
            answer = None
        finally:
            self._sent[worker] -= 1
        if isinstance(answer, dict) and answer.get("status") == "OK":
            self._answers.put((callback, answer["result"]))
        elif isinstance(answer, dict) and "exception" in answer:
            self._answers.put((error_callback, answer["exception"]))
        else:  # no answer (a connection closing): the page goes first to another worker, and this
            # one gets none until a page it may still be downloading is past its deadline.
            self._shunned[worker] = asyncio.get_running_loop().time() + max(self.timeout, self.page_deadline)
            self._pending.appendleft((task, callback, error_callback))
        self._dispatch()

    def _pick(self) -> str | None:
        """The worker with the most room for pages, leaving out those that just failed a call."""
        now = asyncio.get_running_loop().time()
        ready = [w for w in self._share if self._shunned.get(w, 0.0) <= now and self._free(w) > 0]
        return max(ready, key=self._free, default=None)

    def _free(self, worker: str) -> int:
        # Only as many as it may download at once: a page waiting on a worker would be asked of
        # its site even after the crawl gave up on the site, if the worker's stop flag came later.
        return self._share[worker] - self._sent[worker]

    def _allot(self) -> None:
        """Share `workers` downloads at once among the workers the crawl runs on, none above its
        threads. A worker keeps its share while it runs (the pages it has stay within it); a
        worker that leaves frees its share for the others, and one that joins gets what is unallotted."""
        self._share = {w: self._share.get(w, 0) for w in self._threads}
        free = self.workers - sum(self._share.values())
        while free > 0:
            spare = [w for w in self._share if self._share[w] < self._threads[w]]
            if not spare:
                break
            most = max(spare, key=lambda w: self._threads[w] - self._share[w])
            self._share[most] += 1
            free -= 1
        self._dispatch()

    def _run_callbacks(self) -> None:
        """The callbacks, one at a time, in the order the answers came: never raises."""
        while (answer := self._answers.get()) is not None:
            handler, value = answer
            if handler is None or self._state != "run":
                continue
            try:
                handler(pickle.loads(value) if isinstance(value, bytes) else value)  # a FetchResult comes pickled
            except BaseException:  # noqa: BLE001
                log.exception("a dask pool callback raised")

    def broken(self) -> str | None:
        """Why the pool can take no more pages (its scheduler is gone), or None."""
        if self._lost is None and self.client.status not in ("running", "newly-created"):
            self._lost = f"lost the dask scheduler at {self.address}: the connection to it closed"
        return self._lost

    def stop_site(self, site: str, why: int = BLOCKED) -> None:
        """Set the site's stop flag here and on every worker, out of band of the pages they are downloading."""
        self.stops.stop(site, why)
        self.client.loop.add_callback(_tell_workers, self, f"{self.name}-stop", site=site, why=why)

    # -- the end -------------------------------------------------------------------------------
    def terminate(self) -> None:
        """Drop what is pending; remove the crawl from the cluster; close the client and our own
        cluster: within DASK_TERMINATE_TIMEOUT."""
        self._state = "terminate"
        with self._lock:
            if self._stopper is not None:
                return
            self._stopper = threading.Thread(target=_remove_crawl, args=(self,), name="dask-pool-shutdown",
                                             daemon=True)
        self._answers.put(None)
        pids = _worker_pids(self)
        self._stopper.start()
        self._stopper.join(DASK_TERMINATE_TIMEOUT)
        if self._stopper.is_alive():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


# -- setting a crawl up on a cluster: connect, check the workers, add the crawl's plugin to each ----

def _connect(workers: int, address: str | None, processes: bool, n_workers: int | None, timeout: float,
             verbose: bool) -> tuple[Any, Any]:
    """(client, our LocalCluster or None): the scheduler at address, or a LocalCluster started here."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise PoolUnavailable(DASK_MISSING) from None
    if not verbose:
        _quiet_dask()
    cluster = client = None
    try:
        with warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")  # Dask's table of mismatched versions: checked below, in one line
            if address:
                _answers_handshake(address, timeout)
                client = Client(address, timeout=timeout, set_as_default=False)
            else:
                n_workers = n_workers or (min(2, workers) if processes else 1)
                # Its HTTP server on any free loopback port: a fresh pool may start before the old one ends.
                cluster = LocalCluster(n_workers=n_workers, threads_per_worker=math.ceil(workers / n_workers),
                                       processes=processes, dashboard_address="127.0.0.1:0",
                                       silence_logs=logging.ERROR if not verbose else False)
                client = Client(cluster, set_as_default=False)
    except BaseException as exc:
        DaskPool(client, cluster, address or "", timeout, workers, SiteStops(())).terminate()
        if isinstance(exc, (OSError, ValueError)) and address:  # unreachable, or not an address
            raise PoolUnavailable(f"cannot reach the dask scheduler at {address}: {_reason(exc)}") from None
        raise
    return client, cluster


def _set_up(pool: DaskPool, settings: WorkerSettings, ignore_sigint: bool, check: bool) -> None:
    """Check the workers of a cluster we did not start; add the crawl's plugin to each; watch the scheduler."""
    from distributed.protocol.pickle import dumps

    if check:
        try:
            pool.client.wait_for_workers(1, timeout=pool.timeout)
        except TimeoutError:
            raise PoolUnavailable(f"the dask scheduler at {pool.address} has no workers (none came within "
                                  f"{pool.timeout:g} s): start them with `dask worker {pool.address}`") from None
    running = _bounded(pool, pool.client.scheduler.ncores_running, "listing its workers")
    if check:
        _check_workers(pool, list(running))
    pool._plugin = dumps(sys.modules[__name__].SessionPlugin(pool.name, settings, ignore_sigint))
    failed = pool.client.sync(_add_crawl, pool, running)
    if failed:
        worker, exc = next(iter(failed.items()))
        if isinstance(exc, OSError):  # refused, closed, or no answer within the timeout
            raise PoolUnavailable(f"cannot reach {_named(sorted(failed))} from this host ({_reason(exc)}): the "
                                  f"crawler sends each page to its worker directly; let this host connect to {worker}")
        raise PoolUnavailable(f"{_named(sorted(failed))} cannot set the crawl up ({_reason(exc)})")
    pool._callbacks.start()
    pool.client.loop.add_callback(_watch, pool)


async def _add_crawl(pool: DaskPool, threads: dict[str, int]) -> dict[str, BaseException]:
    """Add the crawl's plugin to these workers, each within the timeout; those it failed on, and why.

    Straight to each worker, not through the scheduler: the scheduler never holds the crawl's
    cookies, and a worker that cannot take the plugin (one without the crawler, joined
    mid-crawl) is only left out, instead of failing to start and holding up every later crawl.
    """
    async def add(worker: str) -> None:
        answer = await asyncio.wait_for(getattr(pool.client.rpc(worker), "plugin-add")(
            plugin=pool._plugin, name=pool.name), pool.timeout)
        if answer.get("status") != "OK":
            raise RuntimeError(answer.get("exception_text") or "the crawl's plugin failed to start")

    answers = await asyncio.gather(*(add(w) for w in threads), return_exceptions=True)
    failed = {}
    for worker, answer in zip(threads, answers):
        if isinstance(answer, BaseException):
            failed[worker] = answer
        else:
            pool._threads[worker] = threads[worker]
    pool._allot()
    return failed


async def _tell_workers(pool: DaskPool, op: str, **message: Any) -> None:
    """Call `op` on every worker the crawl is set up on, each within the timeout; whatever they answer."""
    await asyncio.gather(*(asyncio.wait_for(getattr(pool.client.rpc(w), op)(**message), pool.timeout)
                           for w in list(pool._threads)), return_exceptions=True)


def _check_workers(pool: DaskPool, workers: list[str]) -> None:
    """Every worker must import this crawler, with the same versions as here."""
    here = _versions()
    found = _bounded(pool, pool.client._run, "checking its workers", _versions, workers=workers, on_error="return")
    lacking = {w: r for w, r in found.items() if isinstance(r, BaseException)}
    if lacking:
        why = _reason(next(iter(lacking.values())))
        raise PoolUnavailable(f"{_named(sorted(lacking))} cannot run the crawler ({why}): install it there, with "
                              f"the same Python, dask and distributed as this host, and restart the worker")
    for worker, theirs in sorted(found.items()):
        differ = [name for name in here if theirs.get(name) != here[name]]
        if differ:
            same = [w for w, r in found.items() if all(r.get(n) == theirs.get(n) for n in differ)]
            raise PoolUnavailable(
                f"{_named(sorted(same))} {'has' if len(same) == 1 else 'have'} "
                f"{', '.join(f'{n} {theirs.get(n)}' for n in differ)}; this host has "
                f"{', '.join(f'{n} {here[n]}' for n in differ)}: install the same crawler, Python, dask and "
                f"distributed on every worker")


def _bounded(pool: DaskPool, call: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """call(*args, **kwargs) on the client's event loop, within the timeout: Dask's own calls wait forever."""
    try:
        return pool.client.sync(call, *args, callback_timeout=pool.timeout, **kwargs)
    except (TimeoutError, asyncio.TimeoutError):
        raise PoolUnavailable(f"the dask scheduler at {pool.address} did not answer within {pool.timeout:g} s "
                              f"({what})") from None


async def _watch(pool: DaskPool) -> None:
    """The scheduler's running workers, every DASK_WATCH_INTERVAL: the crawl is added to those that
    joined, and a scheduler that does not answer within the timeout is lost."""
    while pool._state == "run":
        try:
            running = await asyncio.wait_for(pool.client.scheduler.ncores_running(), pool.timeout)
        except (asyncio.TimeoutError, TimeoutError):
            pool._lost = f"lost the dask scheduler at {pool.address}: no answer within {pool.timeout:g} s"
            return
        except Exception as exc:  # noqa: BLE001 - gone, refused, closed
            pool._lost = f"lost the dask scheduler at {pool.address}: {_reason(exc)}"
            return
        gone = [w for w in pool._threads if w not in running]
        for worker in gone:
            del pool._threads[worker]
        if gone:
            pool._allot()
        joined = {w: n for w, n in running.items() if w not in pool._threads and w not in pool._refused}
        if joined:
            pool._refused.update(await _add_crawl(pool, joined))
            if pool._state != "run":  # it ended meanwhile: its removal may have missed them
                await _tell_workers(pool, "plugin-remove", name=pool.name)
        await asyncio.sleep(DASK_WATCH_INTERVAL)


def _remove_crawl(pool: DaskPool) -> None:
    """Take the crawl off its workers, then close the client and our own cluster."""
    # The plugin holds the crawl's cookies and headers: nothing of the crawl stays on the cluster,
    # even when the scheduler is gone. The caller's join bounds the whole.
    steps = [lambda: pool.client.sync(_tell_workers, pool, "plugin-remove", name=pool.name),
             lambda: pool.client.close(), lambda: pool.cluster.close()]
    for step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001 - a part already gone, or not there at all
            pass


def _worker_pids(pool: DaskPool) -> list[int]:
    try:  # Nanny -> WorkerProcess -> AsyncProcess; an in-process cluster has none
        return [n.process.process.pid for n in pool.cluster.workers.values() if n.process and n.process.process]
    except Exception:  # noqa: BLE001
        return []


def _answers_handshake(address: str, timeout: float) -> None:
    """Raise unless a Dask server at address answers a handshake: Client() waits forever for one
    that accepts the connection and says nothing (a dashboard's port, any silent listener)."""
    from distributed.comm import connect, get_address_host_port
    from distributed.security import Security

    if not address.startswith("inproc://"):
        _, port = get_address_host_port(address)  # a bad address said here (ValueError), not by a half-made Client
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range (1 to 65535)")
    # Dask's TLS settings (distributed.comm.tls.*, from its configuration or DASK_* variables),
    # as the Client will use them.
    tls = Security().get_connection_args("client")
    if address.startswith("tls://") and tls.get("ssl_context") is None:
        variables = [f"DASK_DISTRIBUTED__COMM__TLS__{name}" for name in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY")]
        raise PoolUnavailable(f"{address} is a TLS address, and this host has no TLS settings for "
                              f"Dask: set {', '.join(variables[:2])} and {variables[2]} (or distributed.comm.tls in "
                              f"Dask's configuration)")

    async def handshake() -> None:
        comm = await connect(address, timeout=timeout, **tls)  # connecting alone: at most `timeout`
        comm.abort()

    try:
        # The handshake gets a `timeout` of its own after connecting's.
        asyncio.run(asyncio.wait_for(handshake(), 2 * timeout))
    except (asyncio.TimeoutError, TimeoutError):
        raise PoolUnavailable(f"nothing answered as a dask scheduler at {address} within {timeout:g} s: give the "
                              f"scheduler's address (port 8786 unless it was started with another), not its "
                              f"dashboard's") from None
