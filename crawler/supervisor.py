"""The pool supervisor: hands tasks to the pool, knows their deadlines, replaces a pool that lost one.

A worker killed mid-task never answers. Worse, a worker killed while idle may die
holding multiprocessing.Pool's task-queue lock, after which no worker gets another task.
So a task past its deadline means a fresh pool: the lost task is retried, the others the
old pool held are handed to the new one. A pool that reschedules a dead worker's tasks
itself (Dask) is kept.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from .fetch import FetchTask, fetch
from .pools import PoolUnavailable

# Time a task may take beyond the page deadline before it is presumed lost with its worker.
LOST_TASK_GRACE = 5.0
# Up to this many tasks per worker are submitted at once, where the host's limits allow.
SUBMIT_AHEAD = 3


@dataclass
class InFlight:
    task: FetchTask
    host: str
    deadline: float


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


class PoolSupervisor:
    """The pool and the tasks in it, each with the time after which it is presumed lost."""

    def __init__(self, make_pool: Callable[[], Any], workers: int, page_deadline: float, pool: Any = None) -> None:
        self.make_pool = make_pool
        self.pool = pool if pool is not None else make_pool()
        self.workers, self.page_deadline = workers, page_deadline
        self.in_flight: dict[str, InFlight] = {}

    def submit(self, task: FetchTask, host: str, now: float, on_result: Callable[[Any], None],
               on_error: Callable[[BaseException], None]) -> None:
        # A task submitted ahead may first wait for workers to finish the pages before it.
        rounds = 1 + len(self.in_flight) // self.workers
        self.in_flight[task.url] = InFlight(task, host, now + self.page_deadline * rounds + LOST_TASK_GRACE)
        self.pool.apply_async(fetch, (task,), callback=on_result, error_callback=on_error)

    def settle(self, task: FetchTask) -> InFlight | None:
        """Take a task out of flight; None if this answer belongs to an attempt already given up."""
        flight = self.in_flight.get(task.url)
        if flight is None or flight.task is not task:
            return None
        return self.in_flight.pop(task.url)

    def wait_time(self, wake: float, now: float, poll: float) -> float:
        """Until a task is due (`wake`), the next deadline, or `poll` seconds, whichever comes first."""
        return max(0.0, min([wake, now + poll, *(f.deadline for f in self.in_flight.values())]) - now)

    def reap(self, now: float) -> tuple[list[InFlight], list[InFlight]]:
        """(lost, handed back): tasks past their deadline, and those the replaced pool held."""
        lost = [f for f in self.in_flight.values() if f.deadline <= now]
        if not lost:
            return [], []
        for flight in lost:
            del self.in_flight[flight.task.url]
        if not getattr(self.pool, "replace_when_task_lost", True):
            return lost, []
        old, self.pool = self.pool, self.make_pool()
        shutdown_pool(old)
        handed_back, self.in_flight = list(self.in_flight.values()), {}
        return lost, handed_back

    def check(self) -> None:
        """Raise PoolUnavailable if the pool can no longer run tasks (a cluster's scheduler is gone)."""
        broken = getattr(self.pool, "broken", None)
        reason = broken() if broken else None
        if reason:
            raise PoolUnavailable(reason)

    def stop_site(self, site: str, why: int) -> None:
        self.pool.stop_site(site, why)

    def close(self) -> None:
        shutdown_pool(self.pool)
