"""One crawl by the real crawler against the benchmark server; bench.py runs it in a subprocess.

    python benchmarks/run_crawler.py --base-url URL --pages N --concurrency C --db PATH --out JSON

The same code path as `python -m crawler CONFIG`: a Config from crawler.config.parse_config
(base_url pointing at the server, delay_per_host = 0, max_in_flight_per_host = workers = C)
handed to crawler.scheduler.crawl with a real SQLite file. Only two things differ, both in
this process only: the catalog's TOP100 board is given N pages (crawler/sites.py knows 10),
and the crawl's timings hook notes when the first and last pages were stored.

It writes a JSON report: wall time of crawl(), CPU time of this process and of its (reaped)
pool workers during crawl(), time to the first stored page, and what the database holds.
With --profile timers it also times, through the same hook, each step of the main process's
work (parse, handle, store, submit, wait, reap, close); with --profile cprofile it writes
cProfile stats of the main thread and of the pool's result-handler thread (where the
callbacks parse).
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
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The imports of the CLI (crawler/cli.py), before anything is measured.
from crawler.config import parse_config  # noqa: E402
from crawler.scheduler import crawl  # noqa: E402
from crawler.sites import SITES, Board  # noqa: E402

PAGE_PATH = "/board/4?offset={}"


def config_text(base_url: str, concurrency: int, db: str, per_host: int | None = None, pool: str = "process",
                dask_scheduler: str = "") -> str:
    return (
        f'database = "{db}"\n'
        "[crawl]\n"
        f'pool = "{pool}"\n'
        f'dask_scheduler = "{dask_scheduler}"\n'
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


class Timings:
    """The crawl's timings hook (crawler.engine.Timings): wall and thread-CPU seconds by step.

    It always notes when the first and last pages were stored ("store" steps) and the CPU
    of each thread when the pool is being closed (they still live then); with `timed`, it
    also adds up every step; with `callback_profile`, it profiles the parsing callbacks.
    """

    def __init__(self, timed: bool = False, callback_profile=None) -> None:
        self.timed, self.callback_profile = timed, callback_profile
        self.lock = threading.Lock()
        self.data: dict[str, list[float]] = {}  # label -> [calls, wall, cpu]
        self.first_stored: float | None = None
        self.last_stored = 0.0
        self.threads_cpu: dict[str, float] = {}

    @contextmanager
    def measure(self, label: str):
        if label == "close":
            self.threads_cpu.update(thread_cpu())
        profile = self.callback_profile if label == "parse" else None
        if profile:
            profile.enable()
        w0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            w, c = time.perf_counter() - w0, time.thread_time() - c0
            if profile:
                profile.disable()
            if label == "store":
                self.last_stored = time.perf_counter()
                if self.first_stored is None:
                    self.first_stored = self.last_stored
            if self.timed:
                with self.lock:
                    entry = self.data.setdefault(label, [0, 0.0, 0.0])
                    entry[0] += 1
                    entry[1] += w
                    entry[2] += c

    def report(self) -> dict[str, dict[str, float]]:
        return {k: {"calls": v[0], "wall": v[1], "cpu": v[2]} for k, v in self.data.items()}


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
    parser.add_argument("--pool", choices=("process", "thread", "dask"), default="process")
    parser.add_argument("--dask-scheduler", default="", metavar="ADDRESS",
                        help="with --pool dask: the scheduler of a running cluster (empty: a local cluster)")
    args = parser.parse_args(argv)

    install_board(args.pages)
    config = parse_config(config_text(args.base_url, args.concurrency, args.db, args.per_host, args.pool,
                                      args.dask_scheduler), "bench.toml")

    callback_profile = main_profile = None
    if args.profile == "cprofile":
        import cProfile

        callback_profile, main_profile = cProfile.Profile(), cProfile.Profile()
    timings = Timings(timed=args.profile == "timers", callback_profile=callback_profile)

    self0, children0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if main_profile:
        main_profile.enable()
    error = None
    try:
        result = crawl(config, db_path=args.db, workers=args.concurrency, timings=timings)
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
        "first_page": (timings.first_stored - started) if timings.first_stored else None,
        "last_page": (timings.last_stored - started) if timings.first_stored else None,
        "cpu_parent": cpu(self1) - cpu(self0),
        "cpu_workers": cpu(children1) - cpu(children0),
        "max_rss_parent_kb": self1.ru_maxrss,
        # Everything this process and its reaped children used, imports included.
        "cpu_process_total": cpu(self1) + cpu(children1),
        "threads_cpu": timings.threads_cpu,
        "status": result.status if result else None,
        "error": error,
        **check(args.db, args.pages),
    }
    if args.profile == "timers":
        report["timers"] = timings.report()
    if main_profile:
        folder = Path(args.out).parent
        report["profiles"] = {"main": str(folder / "main-thread.prof"), "callbacks": str(folder / "callback-thread.prof")}
        main_profile.dump_stats(report["profiles"]["main"])
        callback_profile.dump_stats(report["profiles"]["callbacks"])
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
