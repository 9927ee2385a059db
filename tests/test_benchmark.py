"""The benchmark still runs end to end: a smoke run on a few pages (not a timed test)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO


def test_benchmark_smoke_run_stores_every_page(tmp_path):
    report = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--smoke", "--no-scrapy",
                             "--pools", "process,thread", "--json", str(report)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "40/40" in result.stdout and "pages/s" in result.stdout
    figures = json.loads(report.read_text(encoding="utf-8"))
    assert [(run["tool"], run["pages_ok"], run["server_requests"]) for run in figures["runs"]] == [
        ("crawler", 40, 40), ("crawler-thread", 40, 40)]
    # The real CLI reached the server: start-up was measured, whatever it came to.
    assert figures["startup_s"] is not None and figures["startup_s"] > 0


def test_the_dask_targets_are_judged_against_the_process_pool_of_the_same_run():
    from argparse import Namespace

    from benchmarks.bench import targets

    def run(tool: str, pages_per_s: float, cpu_ms: float) -> dict:
        return {"tool": tool, "concurrency": 8, "pages_per_s": pages_per_s, "cpu_ms_per_page": cpu_ms,
                "share_of_limit": pages_per_s / 160, "peak_mb": 120.0}

    full = Namespace(latency_ms=50, pages=2000)
    judged = dict(targets([run("crawler", 140.0, 9.0), run("crawler-dask", 119.0, 11.9)], full))
    assert judged == {
        "8 in flight >= 90% of the latency limit (87.5%)": False,
        "all processes under 150 MB at 8 workers (120.0 MB)": True,
        "dask at 8 in flight >= 80% of the process pool's pages/s (85.0%)": True,
        "dask at 8 in flight <= 12 ms CPU per page, the cluster's included (11.90)": True,
    }
    slow = dict(targets([run("crawler", 140.0, 9.0), run("crawler-dask", 110.0, 12.5)], full))
    assert [ok for text, ok in slow.items() if text.startswith("dask")] == [False, False]
    assert targets([run("crawler-dask", 119.0, 11.9)], Namespace(latency_ms=50, pages=40)) == []  # a smoke run
