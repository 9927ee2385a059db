"""Run today's parsers over the pages a run stored, so a parser fix repairs old runs offline."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import sqlite_utils

from . import pipeline, store
from .fetch import FetchResult, FetchTask
from .sites import SITES


@dataclass
class ReparseResult:
    run_id: int
    pages: int
    pages_ok: int
    records_before: int
    records_after: int


def reparse(db: sqlite_utils.Database, run_id: int) -> ReparseResult:
    """Replace the run's records with what the parsers make of its stored pages, in one transaction."""
    before = db.execute("select count(*) from records where run_id = ?", [run_id]).fetchone()[0]
    stored = db.execute("""select h.url, p.site, p.board, p.final_url, h.content_type, h.html, p.attempts
                           from page_html h join pages p on p.run_id = h.run_id and p.url = h.url
                           where h.run_id = ?""", [run_id]).fetchall()
    ok = 0
    with db.atomic():
        db.execute("delete from records where run_id = ?", [run_id])
        for url, site, board, final_url, content_type, html, attempts in stored:
            body = zlib.decompress(html)
            result = FetchResult(url, final_url or url, 200, {"content-type": content_type or ""}, body, 0.0)
            outcome = pipeline.process(FetchTask(site, board, url, attempts), result, SITES[site].parse)
            ok += outcome.outcome == "ok"
            db["pages"].update((run_id, url), {"outcome": outcome.outcome, "error": outcome.error,
                                               "records": len(outcome.records)})
            store.save_records(db, run_id, site, board, url, outcome.records)
        stats = store.run_counts(db, run_id)
        db["runs"].update(run_id, stats)
    return ReparseResult(run_id, len(stored), ok, before, stats["records"])
