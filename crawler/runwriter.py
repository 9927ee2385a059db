"""The run writer: the one piece of code that writes a run's rows.

Pages noted pending, pages stored with their records and HTML, pages reused on a 304,
the run's start, resumption and stats all go through here, over the one connection the
main thread owns. A page is written whole or not at all; pages that arrive together share
a commit, and if that commit fails they are stored one at a time, so the pages before one
that cannot be written are kept.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from typing import Any, Iterator

import sqlite_utils

from . import store
from .fetch import FetchTask
from .pipeline import PageOutcome
from .record import Recorder


class RunWriter:
    """Writes one run: its pages as their outcomes arrive, and its stats at the end."""

    def __init__(self, db: sqlite_utils.Database, run_id: int, recorder: Recorder | None = None) -> None:
        self.db, self.run_id, self.recorder = db, run_id, recorder
        self._group: list[store.PageWrite] | None = None

    @classmethod
    def open(cls, db: sqlite_utils.Database, config_path: str, config_text: str, offline: bool,
             resume: int | str | None = None, recorder: Recorder | None = None) -> RunWriter:
        """A new run, or (resume: an id or "latest") an unfinished one taken up again."""
        if resume is None:
            return cls(db, store.start_run(db, config_path, config_text, offline), recorder)
        return cls(db, store.reopen_run(db, resume), recorder)

    def done(self) -> set[str]:
        """Pages this run has already stored (a resumed run does not fetch them again)."""
        return store.pages_done(self.db, self.run_id)

    def owed(self) -> list[dict[str, str]]:
        return store.pages_owed(self.db, self.run_id)

    def stored_copies(self) -> dict[str, dict[str, Any]]:
        return store.stored_copies(self.db, self.run_id)

    def note_pending(self, pages: list[tuple[str, str, str]]) -> None:
        """Note pages (site, board, url) before fetching them, so an interrupted run knows what it owes."""
        if pages:
            with self.db.atomic():
                self.db["pages"].insert_all(
                    [{"run_id": self.run_id, "outcome": "pending", "attempts": 0, "site": site, "board": board,
                      "url": url} for site, board, url in pages], pk=("run_id", "url"), ignore=True)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Pages written inside share one commit; should it fail, they are stored one at a time."""
        self._group = []
        try:
            yield
        finally:
            group, self._group = self._group, None
            if group:
                try:
                    store.save_pages(self.db, self.run_id, group)
                except sqlite3.Error:
                    for write in group:
                        store.save_pages(self.db, self.run_id, [write])

    def write(self, task: FetchTask, outcome: PageOutcome, final: bool = True) -> None:
        """A page's outcome: its row, its records, and the page as received (kept, and --record)."""
        result, html = outcome.result, None
        if result is not None and result.status == 200 and result.body:
            html = {"compressed": result.compressed, "content_type": result.headers.get("content-type"),
                    "etag": result.headers.get("etag"), "last_modified": result.headers.get("last-modified"),
                    "font": result.font, "font_url": result.font_url}
            self.record(task, outcome)
        write = (page_row(task, outcome, final), outcome.records, html)
        if self._group is not None:
            self._group.append(write)
        else:
            store.save_pages(self.db, self.run_id, [write])

    def record(self, task: FetchTask, outcome: PageOutcome) -> None:
        """Keep a response in the --record folder (pages with their fonts, robots.txt), if there is one."""
        result = outcome.result
        if self.recorder is not None and result is not None and result.status == 200:
            self.recorder.save(task.site, task.url, result.body, outcome.headers.get("content-type"))
            if result.font is not None and result.font_url:
                self.recorder.save(task.site, result.font_url, result.font, "font/woff")

    def reuse(self, task: FetchTask, outcome: PageOutcome, from_run: int) -> list[str]:
        """A page the site says is unchanged: its stored copy's records join this run. Returns the
        URLs of the board's pages in that run, as the page's pager would have given them."""
        store.reuse_page(self.db, self.run_id, from_run, page_row(task, outcome, True))
        return store.board_pages(self.db, from_run, task.site, task.board)

    def replace_records(self, outcomes: list[PageOutcome]) -> dict[str, int]:
        """The run's pages parsed again (reparse): their records replace the run's, in one transaction."""
        with self.db.atomic():
            self.db.execute("delete from records where run_id = ?", [self.run_id])
            for outcome in outcomes:
                task = outcome.task
                self.db["pages"].update((self.run_id, task.url), {
                    "outcome": outcome.outcome, "error": outcome.error, "records": len(outcome.records)})
                store.save_records(self.db, self.run_id, task.site, task.board, task.url, outcome.records)
            stats = store.run_counts(self.db, self.run_id)
            self.db["runs"].update(self.run_id, stats)
        return stats

    def counts(self) -> dict[str, int]:
        return store.run_counts(self.db, self.run_id)

    def finish(self, status: str, message: str | None, elapsed: float) -> dict[str, Any]:
        return store.finish_run(self.db, self.run_id, status, message, elapsed)


def page_row(task: FetchTask, outcome: PageOutcome, final: bool) -> dict[str, Any]:
    """The page's row in `pages`; a try that will be retried is noted "retrying"."""
    return {"url": task.url, "site": task.site, "board": task.board, "final_url": outcome.final_url,
            "status": outcome.status, "bytes": outcome.bytes, "elapsed": round(outcome.elapsed, 4),
            "attempts": task.attempt, "outcome": outcome.outcome if final else "retrying",
            "error": outcome.error}
