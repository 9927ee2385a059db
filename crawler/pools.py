"""The pool the scheduler hands pages to: processes (the default), threads, or a Dask cluster.

The scheduler needs only multiprocessing.Pool's shape: apply_async(fn, args, callback=,
error_callback=) with the callbacks run in the driver, one at a time, and a terminate()
that ends. Each kind sets up crawler.fetch in its workers the way init_worker does:
- process: init_worker itself (one Session per process, Ctrl-C left to the driver);
- thread: one Session per thread (requests.Session is not thread-safe) and no signal
  calls (signal.signal raises ValueError outside the main thread);
- dask: a WorkerPlugin does the same on every worker, including one Dask restarts after
  it died. Dask is an optional extra: this module imports it only when a dask pool is made.

In threads (thread, dask) fetch() cannot use its SIGALRM hard deadline; the per-chunk
check in fetch._read and the scheduler's per-task deadline bound a slow page instead.
"""
from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
from functools import partial
from multiprocessing.pool import ThreadPool
from typing import Any, Callable, Protocol

from .fetch import BLOCKED, SiteStops, WorkerSettings, configure, init_worker, stop_here
from .errors import CrawlerError

POOL_KINDS = ("process", "thread", "dask")
DASK_MISSING = "the dask pool needs dask.distributed: pip install -e '.[dask]'"
# Seconds to reach a configured dask scheduler; to fetch one result; to shut a pool down.
DASK_CONNECT_TIMEOUT = 10.0
DASK_RESULT_TIMEOUT = 30.0
DASK_TERMINATE_TIMEOUT = 4.0  # under scheduler.shutdown_pool's 5 s, so its fallback is never needed

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
              dask_address: str | None = None, stops: SiteStops | None = None) -> Pool:
    """A Pool-shaped object of the given kind whose workers are set up to run crawler.fetch.fetch.

    start_method applies to the process pool only (Dask starts its worker processes with spawn).
    stops: the sites' stop flags, shared by every pool of one crawl (a new pool must not
    ask a site the crawl gave up on); made here when not given. A Dask pool's workers
    each keep their own, set through the scheduler: they are on other hosts.
    """
    if kind == "dask":
        return DaskPool.start(workers, settings, address=dask_address or None)
    if kind not in POOL_KINDS:
        raise ValueError(f"unknown pool {kind!r} (known: {', '.join(POOL_KINDS)})")
    pool: ProcessPool | SiteThreadPool
    try:
        if kind == "process":
            context = multiprocessing.get_context(None if start_method in (None, "default") else start_method)
            # What exists now is shared with forked workers page by page until either side writes
            # to it; a collection in either writes to every object it visits. Frozen, they are
            # left alone (about 10 MB less in all at 8 workers).
            gc.collect()
            gc.freeze()
            stops = stops or SiteStops(settings.sites, context)
            pool = ProcessPool(workers, initializer=init_worker, initargs=(settings, stops), context=context)
        else:
            stops = stops or SiteStops(settings.sites)
            # configure, not init_worker: signal handlers can only be set in the main thread.
            pool = SiteThreadPool(workers, initializer=configure, initargs=(settings, stops))
    except (OSError, RuntimeError) as exc:  # fork or thread creation refused: EAGAIN, ENOMEM
        what = "processes" if kind == "process" else "threads"
        why = getattr(exc, "strerror", None) or str(exc)
        raise PoolUnavailable(f"the system refused to start {workers} worker {what} ({why}): "
                              f"lower --workers or crawl.workers, or free memory and processes") from None
    pool.stops = stops
    return pool


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

    class SessionPlugin(WorkerPlugin):
        """Sets up crawler.fetch on each Dask worker, as init_worker does in a process pool."""

        name = "crawler-sessions"
        idempotent = False  # registering again (a fresh pool) replaces the settings

        def __init__(self, settings: WorkerSettings, ignore_sigint: bool = False) -> None:
            self.settings = settings
            self.ignore_sigint = ignore_sigint

        def setup(self, worker: Any) -> None:
            # Our own worker processes share the terminal: Ctrl-C is for the driver to handle.
            if self.ignore_sigint and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            configure(self.settings, SiteStops(self.settings.sites))

    SessionPlugin.__module__, SessionPlugin.__qualname__ = __name__, "SessionPlugin"
    return SessionPlugin


async def _stop_on_worker(site: str, why: int) -> None:
    """stop_here, in a Dask worker's event loop: Dask runs only coroutines without waiting for them."""
    stop_here(site, why)


def __getattr__(name: str) -> Any:
    """crawler.pools.SessionPlugin, made on first access, so that workers can unpickle it by name."""
    if name == "SessionPlugin":
        globals()[name] = cls = _session_plugin_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DaskPool:
    """A dask.distributed Client in the shape of multiprocessing.Pool, as the scheduler uses it."""

    # Dask reruns a dead worker's tasks elsewhere; a new cluster would only cost seconds.
    replace_when_task_lost = False
    # The cluster runs as many tasks at once as it has threads, whatever `workers` says.
    runs_at_most_workers = False

    def __init__(self, client: Any, cluster: Any = None) -> None:
        self.client, self.cluster = client, cluster
        self._futures: set[Any] = set()
        self._lock = threading.Lock()
        self._state = "run"  # then "close" or "terminate"
        self._stopper: threading.Thread | None = None

    @classmethod
    def start(cls, workers: int, settings: WorkerSettings, address: str | None = None,
              processes: bool = True, n_workers: int | None = None) -> DaskPool:
        """Connect to the scheduler at address, or start a LocalCluster: a few processes, threads in each."""
        try:
            from distributed import Client, LocalCluster
            from distributed.comm import get_address_host_port
        except ImportError:
            raise PoolUnavailable(DASK_MISSING) from None
        plugin_class = sys.modules[__name__].SessionPlugin
        cluster = client = None
        try:
            if address:
                if not address.startswith("inproc://"):
                    # A bad address checked here, not by Client(): a half-made Client complains at exit.
                    get_address_host_port(address)
                client = Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
            else:
                n_workers = n_workers or (min(2, workers) if processes else 1)
                # Its HTTP server on any free loopback port: a fresh pool may start before the old one ends.
                cluster = LocalCluster(n_workers=n_workers, threads_per_worker=math.ceil(workers / n_workers),
                                       processes=processes, dashboard_address="127.0.0.1:0",
                                       silence_logs=logging.ERROR)
                client = Client(cluster, set_as_default=False)
            client.register_plugin(plugin_class(settings, ignore_sigint=cluster is not None and processes))
        except BaseException as exc:
            pool = cls(client, cluster)
            pool.terminate()
            if isinstance(exc, (OSError, ValueError)) and address:  # unreachable, or not an address
                raise PoolUnavailable(f"cannot reach the dask scheduler at {address}: {exc}") from None
            if isinstance(exc, ImportError):  # remote workers without this package
                raise PoolUnavailable(f"the dask workers cannot set up the crawler: {exc!r}") from None
            raise
        return cls(client, cluster)

    def apply_async(self, fn: Callable[..., Any], args: tuple = (), kwds: dict | None = None,
                    callback: Callable[[Any], Any] | None = None,
                    error_callback: Callable[[BaseException], Any] | None = None) -> Any:
        """Submit fn(*args); pure=False, so a retry of the same call really runs again."""
        if self._state != "run":
            raise ValueError("Pool not running")
        future = self.client.submit(fn, *args, pure=False, **(kwds or {}))
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(partial(self._done, callback, error_callback))
        return future

    def _done(self, callback: Callable[[Any], Any] | None, error_callback: Callable[[BaseException], Any] | None,
              future: Any) -> None:
        """On Dask's one callback thread, in completion order, as the stdlib result handler: never raises."""
        try:
            with self._lock:
                self._futures.discard(future)  # the result is freed on the worker once it is read
            if self._state == "terminate" or future.cancelled():
                return
            try:
                if future.status == "error":
                    value, handler = future.exception(timeout=DASK_RESULT_TIMEOUT), error_callback
                else:
                    value, handler = future.result(timeout=DASK_RESULT_TIMEOUT), callback
            except BaseException as exc:  # noqa: BLE001 - lost data, a client closing: still an answer
                value, handler = exc, error_callback
            if handler is not None and self._state != "terminate":
                handler(value)
        except BaseException:  # noqa: BLE001
            log.exception("a dask pool callback raised")

    def stop_site(self, site: str, why: int = BLOCKED) -> None:
        """Set the site's stop flag in every worker process, out of band of the tasks queued there."""
        self.client.run(_stop_on_worker, site, why, wait=False)

    def close(self) -> None:
        self._state = "close"

    def join(self, timeout: float = 60.0) -> None:
        """Wait, within timeout, for the submitted tasks; then release the client and cluster."""
        with self._lock:
            futures = list(self._futures)
        if futures:
            from distributed import wait

            try:
                wait(futures, timeout=timeout)
            except Exception:  # noqa: BLE001 - a timeout, a client gone: stop waiting either way
                pass
        self._shutdown(DASK_TERMINATE_TIMEOUT)

    def terminate(self) -> None:
        """Cancel what is pending, close the client and our own cluster, within DASK_TERMINATE_TIMEOUT."""
        self._state = "terminate"
        self._shutdown(DASK_TERMINATE_TIMEOUT)

    def _shutdown(self, timeout: float) -> None:
        """Close in a daemon thread; past the bound, kill our LocalCluster's worker processes."""
        with self._lock:
            if self._stopper is not None:
                return
            futures, self._futures = list(self._futures), set()
            self._stopper = threading.Thread(target=self._stop, args=(futures,), name="dask-pool-shutdown",
                                             daemon=True)
        pids = self._worker_pids()
        self._stopper.start()
        self._stopper.join(timeout)
        if self._stopper.is_alive():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def _stop(self, futures: list[Any]) -> None:
        # No timeouts passed to dask here: one that expires leaves a "Future exception was never
        # retrieved" on stderr. The bound is the caller's join.
        for step in (lambda: futures and self.client.cancel(futures, force=True),
                     lambda: self.client.close(),
                     lambda: self.cluster.close()):
            try:
                step()
            except Exception:  # noqa: BLE001 - a part already gone, or not there at all
                pass

    def _worker_pids(self) -> list[int]:
        try:  # Nanny -> WorkerProcess -> AsyncProcess; an in-process cluster has none
            return [n.process.process.pid for n in self.cluster.workers.values() if n.process and n.process.process]
        except Exception:  # noqa: BLE001
            return []
