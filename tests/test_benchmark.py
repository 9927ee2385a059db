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
