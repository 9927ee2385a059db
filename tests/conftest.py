"""The pytest fixtures the tests share: a real HTTP server on 127.0.0.1, gates that hold its
answers, files made read-only. Everything else they share is in tests/helpers.py."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Gate, Server


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture
def gate(server):
    """gate(free, late=None) -> a Gate; every gate is opened at teardown, so no request stays held."""
    made: list[Gate] = []

    def make(free: int, late: tuple[int, dict[str, str], bytes] | None = None) -> Gate:
        made.append(Gate(free, late))
        return made[-1]

    yield make
    for each in made:
        each.open()


@pytest.fixture
def read_only():
    """read_only(path): make a file or folder unwritable, even for root, until the test ends.

    As root, permissions do not stop writes: the path is made immutable (chattr +i), and the
    test is skipped where that cannot be done (no chattr, a file system without the flag).
    Otherwise chmod 555 (a folder) or 444 (a file). Undone at teardown whatever happened.
    """
    made: list[Path] = []

    def make(path: Path) -> Path:
        if os.geteuid() == 0:
            if shutil.which("chattr") is None or subprocess.run(
                    ["chattr", "+i", str(path)], capture_output=True).returncode != 0:
                pytest.skip("running as root where chattr +i is not available: nothing is read-only to root")
        else:
            path.chmod(0o555 if path.is_dir() else 0o444)
        made.append(path)
        return path

    try:
        yield make
    finally:
        for path in reversed(made):
            if os.geteuid() == 0:
                subprocess.run(["chattr", "-i", str(path)], capture_output=True)
            path.chmod(0o755 if path.is_dir() else 0o644)

