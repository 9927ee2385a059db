"""The crawler's benchmark: a local board server with a fixed latency, the real crawler, optionally Scrapy.

    python benchmarks/bench.py [--pages 2000] [--concurrency 8[,32,...]] [--latency-ms 50]
                               [--scrapy | --no-scrapy] [--smoke] [--profile timers|cprofile]
                               [--json FILE] [--strict]

Starts benchmarks/server.py (its own process: it must not compete with the crawler for a
GIL) serving Maoyan TOP100 pages in the real markup after --latency-ms, then for each
concurrency C runs benchmarks/run_crawler.py in a subprocess: crawler.scheduler.crawl with
a Config from crawler.config.parse_config, workers = max_in_flight_per_host = C,
delay_per_host = 0, a fresh SQLite file in a temporary folder. When Scrapy is installed
(or with --scrapy) benchmarks/scrapy_spider.py does the same crawl after it.

For each run it prints pages/s and its share of the latency limit (C / latency), CPU ms per
page of all the run's processes (main process + pool workers, from getrusage), the peak of
the summed proportional set size (Pss, /proc/PID/smaps_rollup) of the run's process tree
sampled every --sample-ms, the time from the start of the crawl to the first stored page,
and the pages and records stored. Exit status: 0 when every run stored every page (and,
with --strict, met the targets below), 1 otherwise.

--smoke: 40 pages at 4 in flight, 10 ms latency, no Scrapy unless --scrapy: a few seconds, for CI.

--pools dask: the crawler on a Dask cluster in processes of its own, as an operator runs one
(`dask scheduler`, `dask worker` with nanny, on 127.0.0.1), started for each run and outside
its timing; --dask-scheduler ADDRESS uses a running cluster instead. The CPU of the cluster's
processes (workers and scheduler, from /proc) counts with the crawl's.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# The targets (2-core machine, 50 ms latency, 2000 pages).
TARGET_SHARE_OF_LIMIT_AT_8 = 0.90
TARGET_VS_SCRAPY_AT_32 = 1.25
TARGET_CPU_MS_PER_PAGE_AT_32 = 8.0
TARGET_PEAK_MB_AT_8 = 150.0
TARGET_STARTUP_S = 1.0
# A Dask cluster on the same machine (--pools process,dask), against the process pool in the same run.
TARGET_DASK_SHARE_OF_PROCESS_AT_8 = 0.80
TARGET_DASK_CPU_MS_PER_PAGE_AT_8 = 12.0
# The crawler's runs are named by their pool: "crawler" is the default (process) pool.
TOOL_OF_POOL = {"process": "crawler", "thread": "crawler-thread", "dask": "crawler-dask"}
POOL_OF_TOOL = {tool: kind for kind, tool in TOOL_OF_POOL.items()}


# -- processes and their memory ---------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    """ppid -> pids, from /proc/*/stat (this kernel has no /proc/PID/task/TID/children)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def process_tree(root: int) -> list[int]:
    children = _children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def pss_kb(pid: int) -> int:
    """Proportional set size of one process in kB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_stat() -> tuple[float, float]:
    """(busy, steal): CPU seconds the machine's CPUs ran something (user, nice, system, irq,
    softirq), and seconds the hypervisor gave them to someone else, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]] + [0] * 8
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / tick, fields[7] / tick


def busy_cpu_seconds() -> float:
    return cpu_stat()[0]


class MemorySampler(threading.Thread):
    """Every `interval` s: the sum of Pss over a process and its descendants (and `others`'); keeps the peak."""

    def __init__(self, root: int, interval: float, others: tuple[int, ...] = ()) -> None:
        super().__init__(name="pss-sampler", daemon=True)
        self.root, self.interval, self.others = root, interval, others
        self.peak_kb = 0
        self.peak_processes = 0
        self.peak_main_kb = 0
        self.samples = 0
        self.cpu = 0.0  # this thread's own CPU time, to know what measuring costs
        self.done = threading.Event()

    def run(self) -> None:
        # Reading smaps_rollup costs the kernel ~0.4 ms per crawler process: at 33 processes
        # every 50 ms that would be a third of a core taken from the crawl on a 2-core machine.
        # So this thread runs at the lowest priority (Linux: per thread), and the process tree
        # (a scan of /proc) is rebuilt every 10th sample or when a process is gone.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        start = time.thread_time()
        tree: list[int] = []
        since_scan = 0
        while not self.done.is_set():
            if not tree or since_scan >= 10:
                tree, since_scan = [pid for root in (self.root, *self.others) for pid in process_tree(root)], 0
            since_scan += 1
            sizes = [pss_kb(pid) for pid in tree]
            if 0 in sizes:
                tree = []  # a process is gone: rescan next time
            total = sum(sizes)
            self.samples += 1
            if total > self.peak_kb:
                self.peak_kb, self.peak_processes = total, len(tree)
                # tree[0] is the crawl's main process; the rest are its workers (and theirs)
                self.peak_main_kb = sizes[0] if tree and tree[0] == self.root else 0
            self.done.wait(self.interval)
        self.cpu = time.thread_time() - start


def child_env() -> dict[str, str]:
    """The environment for a process that must import this checkout's crawler."""
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_measured(cmd: list[str], out: Path, interval: float, timeout: float, cluster: DaskCluster | None = None) -> dict:
    """Run one crawl in a subprocess, sampling its tree's memory (and the cluster's); its JSON report + the peak."""
    env = child_env()
    cluster_cpu = cluster.cpu() if cluster else {}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = MemorySampler(proc.pid, interval, tuple(cluster.pids()) if cluster else ())
    if interval > 0:
        sampler.start()
    busy0, steal0 = cpu_stat()
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in process_tree(proc.pid):  # the pool's workers too, not only the crawl's main process
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        output, _ = proc.communicate()
        output += f"\n(killed after {timeout:g} s)"
    busy, steal = (b - a for a, b in zip((busy0, steal0), cpu_stat()))
    sampler.done.set()
    if interval > 0:
        sampler.join()
    wall = time.perf_counter() - started
    try:
        report = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {"complete": False, "error": f"no report (exit {proc.returncode})"}
    report.setdefault("elapsed", None)
    if cluster:  # its processes are not the crawl's children: their CPU is read from /proc
        spent = {part: seconds - cluster_cpu[part] for part, seconds in cluster.cpu().items()}
        report["cpu_workers"] = report.get("cpu_workers", 0) + spent["workers"]
        report["cpu_scheduler"] = spent["scheduler"]
        report["cpu_process_total"] = report.get("cpu_process_total", 0) + spent["workers"] + spent["scheduler"]
    report.update(exit=proc.returncode, machine_busy_cpu=busy, steal=steal / max(wall, 1e-9), process_wall=wall,
                  peak_pss_kb=sampler.peak_kb, peak_main_pss_kb=sampler.peak_main_kb,
                  peak_processes=sampler.peak_processes, samples=sampler.samples, sampler_cpu=sampler.cpu,
                  output=output.strip()[-3000:])
    return report


# -- a Dask cluster ---------------------------------------------------------------------------
class DaskCluster:
    """A Dask scheduler and workers in processes of their own on 127.0.0.1, as an operator starts them.

    Everything is started from this interpreter (`python -m distributed.cli.dask_scheduler`,
    `... dask_worker`), so the workers have the driver's Python, dask and distributed; every
    wait is bounded, and stop() ends each process (and what it started) by its pid.
    """

    def __init__(self, folder: Path, timeout: float = 60.0, tls: tuple[Path, Path] | None = None) -> None:
        """tls: (certificate, key) for every process to speak TLS with, the certificate also its authority."""
        self.folder, self.timeout = folder, timeout
        self.tls_args = (["--tls-ca-file", str(tls[0]), "--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
                         if tls else [])
        self.tls = tls
        folder.mkdir(parents=True, exist_ok=True)
        self.workers: list[subprocess.Popen] = []
        scheduler_file = folder / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)  # an earlier cluster's address is not this one's
        self.scheduler = self._start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                                      "--scheduler-file", str(scheduler_file), "--no-dashboard",
                                      *(["--protocol", "tls"] if tls else []), *self.tls_args], "scheduler")
        try:
            self.address = self._wait(lambda: json.loads(scheduler_file.read_text(encoding="utf-8"))["address"],
                                      self.scheduler, "the scheduler to write its address")
        except BaseException:
            self.stop()
            raise

    def client_environment(self) -> dict[str, str]:
        """The variables that give a client (the crawler) this cluster's TLS settings."""
        if not self.tls:
            return {}
        prefix = "DASK_DISTRIBUTED__COMM__TLS__"
        return {f"{prefix}CA_FILE": str(self.tls[0]), f"{prefix}CLIENT__CERT": str(self.tls[0]),
                f"{prefix}CLIENT__KEY": str(self.tls[1])}

    def add_worker(self, nthreads: int, env: dict[str, str] | None = None, cwd: Path | None = None,
                   nanny: bool = True) -> subprocess.Popen:
        """Start one worker process (with its nanny) of `nthreads` threads; env, cwd: its own, else the benchmark's."""
        args = ["distributed.cli.dask_worker", self.address, "--nthreads", str(nthreads), "--host", "127.0.0.1",
                "--no-dashboard", "--local-directory", str(self.folder), "--nanny" if nanny else "--no-nanny",
                *self.tls_args]
        self.workers.append(self._start(args, f"worker-{len(self.workers)}", env, cwd))
        return self.workers[-1]

    def wait_for_workers(self, count: int) -> None:
        """Until `count` workers have registered with the scheduler."""
        from distributed import Client
        from distributed.security import Security

        security = Security(tls_ca_file=str(self.tls[0]), tls_client_cert=str(self.tls[0]),
                            tls_client_key=str(self.tls[1]), require_encryption=True) if self.tls else None
        with Client(self.address, timeout=self.timeout, set_as_default=False, security=security) as client:
            client.wait_for_workers(count, timeout=self.timeout)

    def pids(self) -> list[int]:
        return [pid for proc in (self.scheduler, *self.workers) for pid in process_tree(proc.pid)]

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the workers (nannies included) and of the scheduler."""
        return {"workers": sum(cpu_seconds(pid) for w in self.workers for pid in process_tree(w.pid)),
                "scheduler": cpu_seconds(self.scheduler.pid)}

    def stop(self) -> None:
        """Terminate each process, workers first; kill what is left of it after a bound."""
        for proc in (*self.workers, self.scheduler):
            tree = process_tree(proc.pid)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass  # gone already
            proc.wait()

    def _start(self, args: list[str], name: str, env: dict[str, str] | None = None,
               cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w", encoding="utf-8")
        try:
            return subprocess.Popen([sys.executable, "-m", *args], cwd=str(cwd or REPO), env=env or child_env(),
                                    stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()  # the child has its own copy

    def _wait(self, read, proc: subprocess.Popen, what: str):
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"dask process exited ({proc.returncode}) before {what}")
            try:
                return read()
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)  # not written yet, or half written
        raise RuntimeError(f"timed out after {self.timeout:g} s waiting for {what}")


# -- the server ------------------------------------------------------------------------------
class Server:
    def __init__(self, pages: int, latency_ms: float) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "server.py"), "--pages", str(pages),
                                      "--latency-ms", str(latency_ms)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        self.url = line.split()[-1]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/__stats", timeout=5) as response:
            return json.loads(response.read())

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def startup_seconds(server: Server, tmp: Path) -> float | None:
    """From starting `python -m crawler CONFIG` (default pool and workers) to its first request."""
    config = tmp / "startup.toml"
    config.write_text(f'database = "{tmp / "startup.db"}"\n[crawl]\ndelay_per_host = 0.0\n'
                      f'[sites.maoyan]\nbase_url = "{server.url}"\nboards = ["top100"]\n', encoding="utf-8")
    env = child_env()
    server.stats()  # starts the server's watch for a first request
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "crawler", str(config), "-q"], cwd=str(REPO), env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    first = server.stats()["first_request_at"]
    return first - started if first is not None else None


def wait_idle(limit: float, max_wait: float) -> float:
    """Wait until the machine's CPUs were less than `limit` cores busy over one second."""
    end = time.monotonic() + max_wait
    while True:
        busy0 = busy_cpu_seconds()
        time.sleep(1.0)
        load = busy_cpu_seconds() - busy0
        if load < limit or time.monotonic() > end:
            return load


def one_run(tool: str, server: Server, pages: int, concurrency: int, args, tmp: Path) -> dict:
    db = tmp / f"{tool}-{concurrency}-{pages}.db"
    out = tmp / f"{tool}-{concurrency}-{pages}.json"
    crawler = tool != "scrapy"
    script = "run_crawler.py" if crawler else "scrapy_spider.py"
    cmd = [sys.executable, str(HERE / script), "--base-url", server.url, "--pages", str(pages),
           "--concurrency", str(concurrency), "--db", str(db), "--out", str(out)]
    if crawler:
        cmd += ["--pool", POOL_OF_TOOL[tool]]
    cluster = None
    if tool == "crawler-dask":
        address = args.dask_scheduler
        if not address:
            cluster = DaskCluster(tmp / f"dask-{concurrency}")
            try:
                for _ in range(args.dask_workers):
                    cluster.add_worker(-(-concurrency // args.dask_workers))
                cluster.wait_for_workers(args.dask_workers)
            except BaseException:
                cluster.stop()
                raise
            address = cluster.address
        cmd += ["--dask-scheduler", address]
    if crawler and args.profile != "none":
        cmd += ["--profile", args.profile]
    if crawler and args.per_host:
        cmd += ["--per-host", str(args.per_host)]
    if args.wait_idle:
        load = wait_idle(0.1, args.wait_idle)
        if load >= 0.1:
            print(f"  (machine still {load:.2f} cores busy after waiting {args.wait_idle:g} s)", flush=True)
    before, server_cpu = server.stats(), server.cpu()
    # Bounded: --timeout, or 50 times the latency limit's time and at least two minutes.
    timeout = args.timeout or max(120.0, 50 * pages * args.latency_ms / 1000.0 / concurrency)
    try:
        report = run_measured(cmd, out, args.sample_ms / 1000.0, timeout, cluster)
    finally:
        if cluster:
            cluster.stop()
    report.update(tool=tool, pages=pages, concurrency=concurrency)
    after = server.stats()
    report["server_requests"] = after["served"] + after["not_found"] - before["served"] - before["not_found"]
    if report.get("profiles"):  # out of the temporary folder, into the current one
        kept = {}
        for name, path in report["profiles"].items():
            target = Path.cwd() / f"bench-crawler-{concurrency}-{name}.prof"
            shutil.copyfile(path, target)
            kept[name] = str(target)
        report["profiles"] = kept
    # Less the one the second /__stats request came on.
    report["server_connections"] = after["connections"] - before["connections"] - 1
    report["server_cpu"] = server.cpu() - server_cpu
    in_flight = min(concurrency, args.per_host or concurrency) if crawler else concurrency
    limit = in_flight / (args.latency_ms / 1000.0) if args.latency_ms > 0 else float("inf")
    elapsed = report.get("elapsed") or report["process_wall"]
    report["pages_per_s"] = report.get("pages_ok", 0) / elapsed if elapsed else 0.0
    report["limit"] = limit
    report["share_of_limit"] = report["pages_per_s"] / limit
    report["cpu_ms_per_page"] = 1000 * (report.get("cpu_parent", 0) + report.get("cpu_workers", 0)
                                        + report.get("cpu_scheduler", 0)) / max(pages, 1)
    # What else kept the machine's CPUs busy meanwhile (other programs, and this benchmark's
    # own sampler), in cores: on a 2-core machine anything above ~0.1 skews the figures.
    own = (report.get("cpu_process_total") or report.get("cpu_parent", 0) + report.get("cpu_workers", 0)) \
        + report["server_cpu"] + report["sampler_cpu"]
    report["other_load"] = max(0.0, report["machine_busy_cpu"] - own) / max(report["process_wall"], 1e-9)
    report["peak_mb"] = report["peak_pss_kb"] / 1024 if report["samples"] else None
    return report


# -- printing --------------------------------------------------------------------------------
def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(reports: list[dict]) -> str:
    head = ("tool", "in flight", "pages", "pages/s", "% of limit", "CPU ms/page", "(main+workers[+scheduler])",
            "peak MB", "(main+rest)", "procs", "1st page s", "last page s", "total s", "stored", "records")
    rows = [head]
    for r in reports:
        rows.append((
            r["tool"], str(r["concurrency"]), str(r["pages"]), fmt(r["pages_per_s"], ".1f"),
            fmt(100 * r["share_of_limit"], ".1f"), fmt(r["cpu_ms_per_page"], ".2f"),
            f"{1000 * r.get('cpu_parent', 0) / r['pages']:.2f}+{1000 * r.get('cpu_workers', 0) / r['pages']:.2f}"
            + (f"+{1000 * r['cpu_scheduler'] / r['pages']:.2f}" if "cpu_scheduler" in r else ""),
            fmt(r["peak_mb"], ".1f"),
            f"{r['peak_main_pss_kb'] / 1024:.0f}+{(r['peak_pss_kb'] - r['peak_main_pss_kb']) / 1024:.0f}"
            if r["peak_mb"] else "-",
            str(r["peak_processes"] or "-"), fmt(r.get("first_page"), ".3f"),
            fmt(r.get("last_page"), ".2f"), fmt(r.get("elapsed"), ".2f"),
            f"{r.get('pages_ok', 0)}/{r['pages']}", str(r.get("records", 0)),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def profile_text(report: dict) -> str:
    pages = max(report["pages"], 1)
    lines = [f"main-process profile, crawler at {report['concurrency']} in flight ({pages} pages), per page:"]
    timers = report.get("timers") or {}
    lines.append(f"  {'part':58} {'calls':>7} {'wall ms':>8} {'CPU ms':>8}")
    for label, t in sorted(timers.items()):
        lines.append(f"  {label:58} {t['calls']:7d} {1000 * t['wall'] / pages:8.3f} {1000 * t['cpu'] / pages:8.3f}")
    threads = report.get("threads_cpu") or {}
    if threads:
        lines.append("  CPU ms per page by thread of the main process (from /proc, up to Scheduler.close):")
        for name, seconds in sorted(threads.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {name:56} {1000 * seconds / pages:8.3f}")
    lines.append(f"  main process in all: {1000 * report.get('cpu_parent', 0) / pages:.3f} CPU ms/page; "
                 f"workers: {1000 * report.get('cpu_workers', 0) / pages:.3f}")
    if report.get("profiles"):
        lines.append("  cProfile stats (python -m pstats FILE): " + ", ".join(report["profiles"].values()))
    return "\n".join(lines)


def targets(reports: list[dict], args) -> list[tuple[str, bool]]:
    """The targets that this run's settings let us judge."""
    out = []
    if args.latency_ms != 50 or args.pages < 2000:
        return out
    by = {(r["tool"], r["concurrency"]): r for r in reports}
    crawler8, crawler32, scrapy32 = by.get(("crawler", 8)), by.get(("crawler", 32)), by.get(("scrapy", 32))
    if crawler8 and crawler8["peak_mb"] is None:
        crawler8 = dict(crawler8, peak_mb=float("nan"))
    if crawler8:
        out.append((f"8 in flight >= {TARGET_SHARE_OF_LIMIT_AT_8:.0%} of the latency limit "
                    f"({crawler8['share_of_limit']:.1%})", crawler8["share_of_limit"] >= TARGET_SHARE_OF_LIMIT_AT_8))
        out.append((f"all processes under {TARGET_PEAK_MB_AT_8:.0f} MB at 8 workers ({crawler8['peak_mb']:.1f} MB)",
                    crawler8["peak_mb"] < TARGET_PEAK_MB_AT_8))
    if crawler32:
        out.append((f"32 in flight <= {TARGET_CPU_MS_PER_PAGE_AT_32:g} ms CPU per page "
                    f"({crawler32['cpu_ms_per_page']:.2f})",
                    crawler32["cpu_ms_per_page"] <= TARGET_CPU_MS_PER_PAGE_AT_32))
    dask8 = by.get(("crawler-dask", 8))
    if dask8 and crawler8:
        share = dask8["pages_per_s"] / crawler8["pages_per_s"]
        out.append((f"dask at 8 in flight >= {TARGET_DASK_SHARE_OF_PROCESS_AT_8:.0%} of the process pool's pages/s "
                    f"({share:.1%})", share >= TARGET_DASK_SHARE_OF_PROCESS_AT_8))
    if dask8:
        out.append((f"dask at 8 in flight <= {TARGET_DASK_CPU_MS_PER_PAGE_AT_8:g} ms CPU per page, the cluster's "
                    f"included ({dask8['cpu_ms_per_page']:.2f})",
                    dask8["cpu_ms_per_page"] <= TARGET_DASK_CPU_MS_PER_PAGE_AT_8))
    if crawler32 and scrapy32:
        ratio = crawler32["pages_per_s"] / scrapy32["pages_per_s"]
        out.append((f"32 in flight >= {TARGET_VS_SCRAPY_AT_32}x Scrapy's pages/s ({ratio:.2f}x)",
                    ratio >= TARGET_VS_SCRAPY_AT_32))
    return out


def pool_kinds(text: str) -> list[str]:
    kinds = [v.strip() for v in text.split(",") if v.strip()]
    if not kinds or set(kinds) - set(POOL_OF_TOOL.values()):
        raise argparse.ArgumentTypeError(f"pools are process, thread and dask, not {text!r}")
    return kinds


def concurrencies(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or a comma-separated list of numbers, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"concurrencies must be at least 1: {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the crawler (and Scrapy) against a local board server.",
                                     epilog="example: python benchmarks/bench.py --concurrency 8,32")
    parser.add_argument("--pages", type=int, default=None, help="pages per run (default 2000; 40 with --smoke)")
    parser.add_argument("--concurrency", type=concurrencies, default=None,
                        help="in flight (= pool workers), or a list like 8,32 (default 8; 4 with --smoke)")
    parser.add_argument("--latency-ms", type=float, default=None,
                        help="server latency per response (default 50; 10 with --smoke)")
    parser.add_argument("--scrapy", action=argparse.BooleanOptionalAction, default=None,
                        help="also run the Scrapy spider (default: when Scrapy is installed; not with --smoke)")
    parser.add_argument("--pools", type=pool_kinds, default=["process"],
                        help="the crawler's pools to run, e.g. process,thread,dask (default process)")
    parser.add_argument("--dask-scheduler", default="", metavar="ADDRESS",
                        help="with --pools dask: a running cluster's scheduler (default: start one per run)")
    parser.add_argument("--dask-workers", type=int, default=2, metavar="N",
                        help="with --pools dask and no --dask-scheduler: worker processes, the in-flight "
                             "count's threads spread over them (default 2)")
    parser.add_argument("--smoke", action="store_true", help="a few pages, fast: for CI")
    parser.add_argument("--profile", choices=("none", "timers", "cprofile"), default="none",
                        help="time the crawler's main-process work per page (timers) or cProfile it")
    parser.add_argument("--per-host", type=int, default=None, metavar="N",
                        help="the crawler's max_in_flight_per_host (default: the concurrency); below it, "
                             "the limit is N / latency")
    parser.add_argument("--sample-ms", type=float, default=200.0,
                        help="memory sampling interval (default 200; 0: no sampling, no peak memory)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up a run after S seconds (default: 50x the latency limit's time, >= 120)")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="S",
                        help="before each run, wait up to S seconds for the machine's other load to drop")
    parser.add_argument("--json", metavar="FILE", help="also write every run's report to FILE")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed too")
    args = parser.parse_args(argv)
    if args.pages is None:
        args.pages = 40 if args.smoke else 2000
    if args.concurrency is None:
        args.concurrency = [4] if args.smoke else [8]
    if args.latency_ms is None:
        args.latency_ms = 10.0 if args.smoke else 50.0
    have_scrapy = importlib.util.find_spec("scrapy") is not None
    if args.scrapy is None:
        args.scrapy = have_scrapy and not args.smoke
    elif args.scrapy and not have_scrapy:
        parser.error("--scrapy: Scrapy is not installed (pip install scrapy)")
    if args.pages < 1:
        parser.error("--pages must be at least 1")

    print(f"benchmark: {args.pages} pages, {','.join(map(str, args.concurrency))} in flight, "
          f"{args.latency_ms:g} ms latency, Scrapy {'on' if args.scrapy else 'off'}; {os.cpu_count()} CPUs",
          flush=True)
    reports: list[dict] = []
    server = Server(args.pages, args.latency_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="crawler-bench-") as tmp:
            for concurrency in args.concurrency:
                tools = [TOOL_OF_POOL[kind] for kind in args.pools] + (["scrapy"] if args.scrapy else [])
                for tool in tools:
                    report = one_run(tool, server, args.pages, concurrency, args, Path(tmp))
                    reports.append(report)
                    print(f"  {tool} at {concurrency}: {report['pages_per_s']:.1f} pages/s, "
                          f"{report.get('pages_ok', 0)}/{args.pages} pages stored "
                          f"({report['server_requests']} requests on {report['server_connections']} connections; "
                          f"server {report['server_cpu']:.2f} s CPU; other load {report['other_load']:.2f} cores, "
                          f"steal {report['steal']:.2f})", flush=True)
                    if not report.get("complete"):
                        print(f"    INCOMPLETE: {report.get('error') or ''}\n    " +
                              report["output"].replace("\n", "\n    "), flush=True)
                    if tool != "scrapy" and args.profile != "none":
                        print(profile_text(report), flush=True)
            startup = startup_seconds(server, Path(tmp))
    finally:
        server.stop()

    print()
    print(table(reports))
    limits = sorted({(r["concurrency"], r["limit"]) for r in reports if r["tool"] != "scrapy"})
    print("latency limit (in flight / latency): " + ", ".join(f"{c}: {lim:.0f} pages/s" for c, lim in limits))
    for concurrency in args.concurrency:
        by = {r["tool"]: r for r in reports if r["concurrency"] == concurrency}
        if "crawler" in by and "scrapy" in by and by["scrapy"]["pages_per_s"]:
            print(f"crawler/Scrapy at {concurrency} in flight: "
                  f"{by['crawler']['pages_per_s'] / by['scrapy']['pages_per_s']:.2f}x pages/s, "
                  f"{by['crawler']['cpu_ms_per_page'] / max(by['scrapy']['cpu_ms_per_page'], 1e-9):.2f}x CPU/page"
                  + (f", {by['crawler']['peak_mb'] / max(by['scrapy']['peak_mb'], 1e-9):.2f}x peak memory"
                     if by["crawler"]["peak_mb"] and by["scrapy"]["peak_mb"] else ""))
    sampler_cpu = sum(r["sampler_cpu"] for r in reports)
    print(f"(memory sampled every {args.sample_ms:g} ms; the sampler used {sampler_cpu:.2f} s CPU in all)")
    busy = [r for r in reports if r["other_load"] > 0.15]
    if busy:
        print("WARNING: other programs kept the CPUs busy during " +
              ", ".join(f"{r['tool']} at {r['concurrency']} ({r['other_load']:.2f} cores)" for r in busy) +
              ": those figures are low")
    print("start-up, from `python -m crawler CONFIG` (default pool) to its first request: "
          + (f"{startup:.2f} s" if startup is not None else "no request arrived"))
    checks = targets(reports, args)
    checks.append((f"start-up under {TARGET_STARTUP_S:g} s ({fmt(startup, '.2f', 'none')})",
                   startup is not None and startup < TARGET_STARTUP_S))
    for text, ok in checks:
        print(f"target {'met   ' if ok else 'MISSED'}: {text}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": reports, "startup_s": startup}, indent=1), encoding="utf-8")
    complete = all(r.get("complete") for r in reports)
    if not complete:
        print("FAILED: not every page was stored", file=sys.stderr)
        return 1
    if args.strict and not all(ok for _, ok in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
