"""The benchmark still runs end to end: a smoke run on a few pages (not a timed test)."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_benchmark_smoke_run_stores_every_page():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--smoke", "--no-scrapy"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "40/40" in result.stdout and "pages/s" in result.stdout
