"""Run today's parsers over the pages a run stored, so a parser fix repairs old runs offline."""
from __future__ import annotations

from dataclasses import dataclass

import sqlite_utils

from . import pipeline, store
from .fetch import FetchTask
from .runwriter import RunWriter
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
    before = store.run_counts(db, run_id)["records"]
    outcomes = [pipeline.process(FetchTask(site, board, url, attempts), result, SITES[site])
                for site, board, url, attempts, result in store.stored_pages(db, run_id)]
    stats = RunWriter(db, run_id).replace_records(outcomes)
    return ReparseResult(run_id, len(outcomes), sum(o.outcome == "ok" for o in outcomes), before, stats["records"])
