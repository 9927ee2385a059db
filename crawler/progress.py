"""What a crawl shows while it runs: a bar on a terminal, log lines elsewhere, or nothing."""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from tqdm import tqdm

from .fetch import FetchTask
from .pipeline import PageOutcome

LOG_EVERY = 5.0  # seconds between two progress lines when stderr is not a terminal


class Progress:
    """Counts pages as the scheduler settles them; quiet=True shows nothing, verbose a line a page."""

    def __init__(self, quiet: bool = False, verbose: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet, self.verbose = quiet, verbose
        self.total = self.done = self.records = self.errors = 0
        self.started = time.monotonic()
        self.last_log = self.started
        self.bar: tqdm | None = None
        if not quiet and self.stream.isatty():
            # A terminal that reports no size (a bare pty) would otherwise hide the bar.
            size = shutil.get_terminal_size((100, 24))
            self.bar = tqdm(total=0, unit="page", file=self.stream, ncols=min(size.columns, 120),
                            nrows=max(size.lines, 2), leave=False)

    def add_pages(self, count: int) -> None:
        self.total += count
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def page(self, task: FetchTask, outcome: PageOutcome, final: bool) -> None:
        if self.verbose and not self.quiet:
            what = outcome.outcome if final else f"retry (attempt {task.attempt})"
            detail = f"{len(outcome.records)} records" if outcome.outcome == "ok" else outcome.error
            self._write(f"{what:>8}  {task.url}  {detail}  {outcome.elapsed:.2f} s")
        if not final:
            return
        self.done += 1
        self.records += len(outcome.records)
        self.errors += outcome.outcome != "ok"
        if self.bar is not None:
            self.bar.set_postfix(records=self.records, errors=self.errors, refresh=False)
            self.bar.update(1)
        elif not self.quiet and time.monotonic() - self.last_log >= LOG_EVERY:
            self.last_log = time.monotonic()
            self._write(self.line())

    def note(self, text: str) -> None:
        """A line the user should see now (unless quiet), between progress updates."""
        if not self.quiet:
            self._write(text)

    def line(self) -> str:
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        return (f"{self.done}/{self.total} pages, {self.records} records, {self.errors} errors, "
                f"{rate:.1f} pages/s")

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            # tqdm skips redraws closer than 0.1 s apart; draw the final count before clearing.
            self.bar.refresh()
            self.bar.close()
