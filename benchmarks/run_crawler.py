"""One crawl by the real crawler against the benchmark server; bench.py runs it in a subprocess.

    python benchmarks/run_crawler.py --base-url URL --pages N --concurrency C --db PATH --out JSON

The same code path as `python -m crawler CONFIG`: a Config from crawler.config.parse_config
(base_url pointing at the server, delay_per_host = 0, max_in_flight_per_host = workers = C)
handed to crawler.scheduler.crawl with a real SQLite file. Only two things differ, both in
this process only: the catalog's TOP100 board is given N pages (crawler/sites.py knows 10),
and crawler.store.save_page / save_pages are wrapped to note when the first and last pages
were stored.

It writes a JSON report: wall time of crawl(), CPU time of this process and of its (reaped)
pool workers during crawl(), time to the first stored page, and what the database holds.
With --profile timers it also times, inside the crawl, the parts of the main process's work
per page (see PROFILE below); with --profile cprofile it writes cProfile stats of the main
thread and of the pool's result-handler thread (where the callbacks parse).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sqlite3
import sys
import threading
import time
from typing import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The imports of the CLI (crawler/cli.py), before anything is measured.
from crawler import pipeline, scheduler, store  # noqa: E402
from crawler.config import parse_config  # noqa: E402
from crawler.scheduler import crawl  # noqa: E402
from crawler.sites import SITES, Board  # noqa: E402

PAGE_PATH = "/board/4?offset={}"


def config_text(base_url: str, concurrency: int, db: str, per_host: int | None = None, pool: str = "process") -> str:
    return (
        f'database = "{db}"\n'
        "[crawl]\n"
        f'pool = "{pool}"\n'
        f"workers = {concurrency}\n"
        "delay_per_host = 0.0\n"
        f"max_in_flight_per_host = {per_host or concurrency}\n"
        "[sites.maoyan]\n"
        f'base_url = "{base_url}"\n'
        'boards = ["top100"]\n'
        "obey_robots = false\n"  # as the Scrapy spider: the same pages asked of the server
    )


def install_board(pages: int) -> None:
    """TOP100 with `pages` pages, in this process's catalog only."""
    site = SITES["maoyan"]
    top100 = site.boards["top100"]
    board = Board(top100.name, top100.label, tuple(PAGE_PATH.format(n * 10) for n in range(pages)), False)
    SITES["maoyan"] = dataclasses.replace(site, boards={**site.boards, "top100": board})


def cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by Python thread name."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        out[thread.name] = (int(fields[11]) + int(fields[12])) / tick
    return out


class Timers:
    """Accumulated wall and thread-CPU seconds of wrapped functions, by label."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, list[float]] = {}  # label -> [calls, wall, cpu]

    def wrap(self, label: str, fn):
        perf, tcpu = time.perf_counter, time.thread_time

        def timed(*args, **kwargs):
            w0, c0 = perf(), tcpu()
            try:
                return fn(*args, **kwargs)
            finally:
                w, c = perf() - w0, tcpu() - c0
                with self.lock:
                    entry = self.data.setdefault(label, [0, 0.0, 0.0])
                    entry[0] += 1
                    entry[1] += w
                    entry[2] += c
        timed.__wrapped__ = fn
        return timed

    def report(self) -> dict[str, dict[str, float]]:
        return {k: {"calls": v[0], "wall": v[1], "cpu": v[2]} for k, v in self.data.items()}


def install_timers(timers: Timers) -> None:
    """Time the main process's work per page where it happens.

    Result-handler thread (the pool's callbacks): pipeline.process = decode + classify + parse,
    and inside it the site parser and pipeline.decode. Main thread: Scheduler._handle_waiting
    (Scheduler._handle for each outcome, then store.save_pages), those two and store.save_page
    on their own, Scheduler._submit_ready (heap and apply_async), Scheduler._wait_time,
    Scheduler._reap_lost, and the wait on the outcome queue.
    """
    site = SITES["maoyan"]
    SITES["maoyan"] = dataclasses.replace(site, parse=timers.wrap("callback: parser (maoyan.parse_board)", site.parse))
    pipeline.decode = timers.wrap("callback: pipeline.decode", pipeline.decode)
    process = pipeline.process
    pipeline.process = timers.wrap("callback: pipeline.process (all)", process)
    store.save_page = timers.wrap("main: store.save_page", store.save_page)
    store.save_pages = timers.wrap("main: store.save_pages (incl. save_page's)", store.save_pages)
    S = scheduler.Scheduler
    S._handle_waiting = timers.wrap("main: Scheduler._handle_waiting (incl. save_pages)", S._handle_waiting)
    S._handle = timers.wrap("main: Scheduler._handle", S._handle)
    S._submit_ready = timers.wrap("main: Scheduler._submit_ready (incl. apply_async)", S._submit_ready)
    S._wait_time = timers.wrap("main: Scheduler._wait_time", S._wait_time)
    S._reap_lost = timers.wrap("main: Scheduler._reap_lost", S._reap_lost)
    S._submit = timers.wrap("main: Scheduler._submit (apply_async)", S._submit)
    # Once per crawl, before the first page and after the last (whatever this version has).
    for owner, name, label in ((S, "add_boards", "start: Scheduler.add_boards (pages noted pending)"),
                               (store, "open_db", "start: store.open_db"),
                               (store, "start_run", "start: store.start_run"),
                               (store, "finish_run", "end: store.finish_run (all)"),
                               (store, "run_counts", "end: store.run_counts"),
                               (store, "new_entries", "end: store.new_entries"),
                               (S, "close", "end: Scheduler.close (pool shutdown)")):
        if hasattr(owner, name):
            setattr(owner, name, timers.wrap(label, getattr(owner, name)))


def install_cprofile(out_dir: Path):
    """cProfile the main thread during crawl(), and the result-handler thread's callbacks."""
    import cProfile

    callback_profile = cProfile.Profile()
    S = scheduler.Scheduler
    on_result = S._on_result

    def profiled_on_result(self, task, parse, result):
        callback_profile.enable()
        try:
            return on_result(self, task, parse, result)
        finally:
            callback_profile.disable()

    S._on_result = profiled_on_result
    main_profile = cProfile.Profile()

    def dump() -> dict[str, str]:
        paths = {"main": str(out_dir / "main-thread.prof"), "callbacks": str(out_dir / "callback-thread.prof")}
        main_profile.dump_stats(paths["main"])
        callback_profile.dump_stats(paths["callbacks"])
        return paths

    return main_profile, dump


def check(db: str, pages: int) -> dict[str, object]:
    """What the database holds for the run: every page ok and every rank present?"""
    conn = sqlite3.connect(db)
    try:
        outcomes = dict(conn.execute("select outcome, count(*) from pages group by outcome").fetchall())
        records, low, high, distinct = conn.execute(
            "select count(*), min(rank), max(rank), count(distinct rank) from records").fetchone()
        attempts = conn.execute("select coalesce(sum(attempts), 0) from pages").fetchone()[0]
    finally:
        conn.close()
    complete = (outcomes.get("ok", 0) == pages and records == pages * 10 and distinct == pages * 10
                and low == 1 and high == pages * 10)
    return {"pages_ok": outcomes.get("ok", 0), "outcomes": outcomes, "records": records,
            "distinct_ranks": distinct, "attempts": attempts, "complete": complete}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", choices=("none", "timers", "cprofile"), default="none")
    parser.add_argument("--per-host", type=int, default=None, help="max_in_flight_per_host (default: --concurrency)")
    parser.add_argument("--pool", choices=("process", "thread"), default="process")
    args = parser.parse_args(argv)

    install_board(args.pages)
    config = parse_config(config_text(args.base_url, args.concurrency, args.db, args.per_host, args.pool), "bench.toml")

    first_stored: list[float] = []
    last_stored: list[float] = [0.0]

    def noting(save: Callable[..., None]) -> Callable[..., None]:
        def save_and_note(*a, **kw):
            save(*a, **kw)
            last_stored[0] = time.perf_counter()
            if not first_stored:
                first_stored.append(last_stored[0])
        return save_and_note

    # The crawl stores the pages of the outcomes it handles together with save_pages; a page
    # handled on its own (a lost task, the way out after a signal) with save_page.
    store.save_page, store.save_pages = noting(store.save_page), noting(store.save_pages)
    timers = Timers()
    if args.profile == "timers":
        install_timers(timers)
    main_profile = dump = None
    if args.profile == "cprofile":
        main_profile, dump = install_cprofile(Path(args.out).parent)

    threads_cpu: dict[str, float] = {}
    close = scheduler.Scheduler.close

    def noting_close(self):
        threads_cpu.update(thread_cpu())  # the pool's threads still live here
        return close(self)

    scheduler.Scheduler.close = noting_close

    self0, children0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if main_profile:
        main_profile.enable()
    error = None
    try:
        result = crawl(config, db_path=args.db, workers=args.concurrency)
    except BaseException as exc:  # noqa: BLE001 - reported, and the run counts as failed
        result, error = None, f"{type(exc).__name__}: {exc}"
    if main_profile:
        main_profile.disable()
    elapsed = time.perf_counter() - started
    self1, children1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)

    report: dict[str, object] = {
        "tool": "crawler",
        "pages": args.pages,
        "concurrency": args.concurrency,
        "per_host": args.per_host or args.concurrency,
        "elapsed": elapsed,
        "first_page": (first_stored[0] - started) if first_stored else None,
        "last_page": (last_stored[0] - started) if first_stored else None,
        "cpu_parent": cpu(self1) - cpu(self0),
        "cpu_workers": cpu(children1) - cpu(children0),
        "max_rss_parent_kb": self1.ru_maxrss,
        # Everything this process and its reaped children used, imports included.
        "cpu_process_total": cpu(self1) + cpu(children1),
        "threads_cpu": threads_cpu,
        "status": result.status if result else None,
        "error": error,
        **check(args.db, args.pages),
    }
    if args.profile == "timers":
        report["timers"] = timers.report()
    if dump:
        report["profiles"] = dump()
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
