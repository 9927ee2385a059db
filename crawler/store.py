"""The SQLite database: every run kept, committed as pages arrive.

One connection, owned by the main thread. Each page's records and its row in `pages`
are written in one transaction (with the other pages the crawl had to store at the same
moment, if any), so a crash leaves whole pages or none.
"""
from __future__ import annotations

import sqlite3
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils

from .errors import CrawlerError
from .fetch import FetchResult
from .fonts import font_hash
from .site import CORE_FIELDS, CORE_MOVIE_FIELDS
from .sites import SITES

# The fields of every site's records, then those each known site declares, then two of the
# crawler's own: the names of the fields a web font hid (stored NULL), and the board's date.
RECORD_COLUMNS: dict[str, type] = {
    "run_id": int, "site": str, "board": str, "rank": int, "page_url": str,
    **{name: kind for name, kind in CORE_FIELDS.items() if name != "rank"},
    **{name: kind for site in SITES.values() for name, kind in site.columns.items()},
    "obfuscated": str,
    "updated": str,
}
RECORD_KEY = ("run_id", "site", "board", "rank")
MOVIE_FIELDS = (*CORE_MOVIE_FIELDS, *dict.fromkeys(name for site in SITES.values() for name in site.movie_fields))
MOVIE_COLUMNS: dict[str, type] = {
    "site": str, "movie_id": str, **{name: RECORD_COLUMNS[name] for name in MOVIE_FIELDS}, "last_run_id": int,
}
# Searched by `crawler search` where the movies have them.
SEARCHED = tuple(name for name in ("title", "actors", "other_titles") if name in MOVIE_COLUMNS)
PAGE_COLUMNS: dict[str, type] = {
    "run_id": int, "url": str, "site": str, "board": str, "final_url": str, "status": int,
    "bytes": int, "elapsed": float, "attempts": int, "outcome": str, "error": str,
    "records": int, "fetched": str,
}
PAGE_HTML_COLUMNS: dict[str, type] = {
    "run_id": int, "url": str, "fetched": str, "content_type": str, "etag": str,
    "last_modified": str, "html": bytes,  # zlib-compressed bytes as received
    "font_hash": str,  # the web font the page drew digits with (its row in fonts), if any
}
# Each web font once, by the SHA-1 of its bytes: a page's digits can be read again from it
# (reparse), by today's decoder or a better one.
FONT_COLUMNS: dict[str, type] = {"hash": str, "url": str, "font": bytes, "fetched": str}


def _replace_sql(table: str, columns: Iterable[str]) -> str:
    names = list(columns)
    return (f"insert or replace into [{table}] ({', '.join(f'[{name}]' for name in names)}) "
            f"values ({', '.join('?' for _ in names)})")


# Every page writes these; sqlite-utils' insert() builds its statement anew on each call and
# checks each value, which was most of the write's cost. The columns are those the tables
# are created with, in that order.
_REPLACE_RECORD = _replace_sql("records", RECORD_COLUMNS)
_REPLACE_MOVIE = _replace_sql("movies", MOVIE_COLUMNS)
_REPLACE_PAGE = _replace_sql("pages", PAGE_COLUMNS)
_REPLACE_PAGE_HTML = _replace_sql("page_html", PAGE_HTML_COLUMNS)
_KEEP_FONT = "insert or ignore into fonts (hash, url, font, fetched) values (?, ?, ?, ?)"


class StoreError(CrawlerError):
    """The database cannot be opened or written; the message says which and why."""


def database_error(path: str | Path, exc: sqlite3.Error) -> StoreError:
    """One line that says what went wrong with the database and what to do about it."""
    if "locked" in str(exc) or "busy" in str(exc):
        return StoreError(f"database {path} is locked by another program; close it (or let the other "
                          f"crawl finish) and run again")
    if "unable to open" in str(exc) or "readonly" in str(exc):
        return StoreError(f"cannot use database {path}: {exc} (can its folder {Path(path).parent} be written?)")
    return StoreError(f"cannot use database {path}: {exc}")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database, in WAL mode, with every table in place.

    For commands that write; close it with close_db() so the main file is whole again.
    """
    path = Path(path)
    if not path.parent.exists():
        raise StoreError(f"cannot open database {path}: folder {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise StoreError(f"cannot open database {path}: it is a folder, not a file")
    try:
        conn = sqlite3.connect(str(path), timeout=5, check_same_thread=True)
        db = sqlite_utils.Database(conn)
        if not path.stat().st_size == 0 and not _is_crawler_database(db):
            conn.close()
            raise StoreError(f"{path} is not a crawler database: pass --db with a new file name or one a crawl made")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        _ensure_tables(db)
    except sqlite3.Error as exc:
        raise database_error(path, exc) from None
    return db


def open_readonly(path: str | Path) -> sqlite_utils.Database:
    """Open a crawler database for reading only: nothing in the file can change, whatever it is."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no database at {path}: crawl first (python -m crawler crawl.toml) or pass --db PATH")
    try:
        db = _reader(path, immutable=False)
        try:
            crawler_db = _is_crawler_database(db)
        except sqlite3.OperationalError:
            # A WAL database in a folder that cannot be written: SQLite cannot make the -shm file
            # it reads through. Nothing can be writing there either, so read it as it stands.
            db.conn.close()
            db = _reader(path, immutable=True)
            crawler_db = _is_crawler_database(db)
    except sqlite3.Error as exc:
        raise database_error(path, exc) from None
    if not crawler_db:
        db.conn.close()
        raise StoreError(f"{path} is not a crawler database")
    return db


def _reader(path: Path, immutable: bool) -> sqlite_utils.Database:
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite_utils.Database(sqlite3.connect(uri, uri=True, timeout=5))


def _is_crawler_database(db: sqlite_utils.Database) -> bool:
    """Whether the file holds the crawler's tables; an empty file holds none.

    Only SQLite's "not a database" means no; any other error (the file cannot be opened,
    it is locked) is raised for what it is.
    """
    try:
        names = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            return False
        raise
    return {"runs", "records", "pages"} <= names


def close_db(db: sqlite_utils.Database) -> None:
    """Fold the write-ahead log back into the main file and close.

    Until then the latest writes live in FILE-wal: a copy of the main file alone, or a
    reader that opens it immutable (datasette -i), would not see them.
    """
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.conn.close()


RUN_COLUMNS: dict[str, type] = {
    "id": int, "started": str, "finished": str, "status": str, "config_path": str,
    "config": str, "offline": int, "pages": int, "pages_ok": int, "pages_retried": int,
    "pages_failed": int, "pages_blocked": int, "records": int, "new_entries": int,
    "elapsed": float, "pages_per_second": float, "message": str, "pages_disallowed": int,
}


TABLES: dict[str, tuple[dict[str, type], str | tuple[str, ...], bool]] = {
    # table: (columns, primary key, refers to runs)
    "runs": (RUN_COLUMNS, "id", False),
    "records": (RECORD_COLUMNS, RECORD_KEY, True),
    "pages": (PAGE_COLUMNS, ("run_id", "url"), True),
    "movies": (MOVIE_COLUMNS, ("site", "movie_id"), False),
    "page_html": (PAGE_HTML_COLUMNS, ("run_id", "url"), True),
    "fonts": (FONT_COLUMNS, "hash", False),
}


def _runs_before_robots_had_none_disallowed(db: sqlite_utils.Database) -> None:
    db.execute("update runs set pages_disallowed = 0 where pages_disallowed is null and status != 'running'")


# Changes of meaning that adding a column cannot make, in order: a database at version N has
# had the first N applied (PRAGMA user_version). A database made before versions existed is at 0.
MIGRATIONS = (
    _runs_before_robots_had_none_disallowed,  # 1: robots.txt is obeyed; earlier runs disallowed nothing
)
SCHEMA_VERSION = len(MIGRATIONS)


def _ensure_tables(db: sqlite_utils.Database) -> None:
    """Every table with every declared column (a new site's included), then the migrations it lacks."""
    with db.atomic():
        for name, (columns, pk, per_run) in TABLES.items():
            table = db[name]
            table.create(columns, pk=pk, if_not_exists=True, foreign_keys=[("run_id", "runs", "id")] if per_run else None)
            for column, kind in columns.items():
                if column not in table.columns_dict:
                    table.add_column(column, kind)  # NULL in the rows written before it existed
        db["records"].create_index(["site", "board", "movie_id", "run_id"], if_not_exists=True)
        db["records"].create_index(["title"], if_not_exists=True)
        version = db.execute("pragma user_version").fetchone()[0]
        for migrate in MIGRATIONS[version:]:
            migrate(db)
        if version < SCHEMA_VERSION:
            db.execute(f"pragma user_version = {SCHEMA_VERSION}")
    if not db["movies"].detect_fts():
        # Trigram: Chinese titles have no spaces, so words cannot be the unit of search.
        db["movies"].enable_fts(list(SEARCHED), create_triggers=True, tokenize="trigram")


def start_run(db: sqlite_utils.Database, config_path: str, config_text: str, offline: bool) -> int:
    with db.atomic():
        return db["runs"].insert({
            "started": now(), "status": "running", "config_path": config_path,
            "config": config_text, "offline": int(offline),
            "pages": 0, "pages_ok": 0, "pages_failed": 0, "pages_blocked": 0, "records": 0,
        }).last_pk


# A page's row in `pages`, its records, and the page as received:
# {"compressed": the body as the worker compressed it, "content_type", "etag", "last_modified"}.
PageWrite = tuple[dict[str, Any], Iterable[dict[str, Any]], dict[str, Any] | None]


def save_pages(db: sqlite_utils.Database, run_id: int, pages: list[PageWrite]) -> None:
    """Store pages, each with its records and its HTML, in one transaction: all or none.

    A commit costs SQLite work of its own (the movies' search index most), so a crawl
    that has several pages to store at once stores them together.
    """
    with db.atomic():
        for page, records, html in pages:
            if html is not None:
                kept_font = None
                if html.get("font") is not None:
                    kept_font = font_hash(html["font"])
                    db.conn.execute(_KEEP_FONT, (kept_font, html.get("font_url"), html["font"], now()))
                db.conn.execute(_REPLACE_PAGE_HTML, (
                    run_id, page["url"], now(), html.get("content_type"), html.get("etag"), html.get("last_modified"),
                    html["compressed"], kept_font))
            count = save_records(db, run_id, page["site"], page["board"], page["url"], records)
            row = {**page, "run_id": run_id, "fetched": now(), "records": count}
            db.conn.execute(_REPLACE_PAGE, [row.get(name) for name in PAGE_COLUMNS])


def save_records(db: sqlite_utils.Database, run_id: int, site: str, board: str, page_url: str,
                 records: Iterable[dict[str, Any]]) -> int:
    """Store one page's records and their movies; the caller holds the transaction."""
    rows = [_record_row(run_id, site, board, page_url, record) for record in records]
    # Whole rows replaced by key: one statement a row, where an upsert takes two.
    db.conn.executemany(_REPLACE_RECORD, rows)
    db.conn.executemany(_REPLACE_MOVIE, [
        (row[_SITE], row[_MOVIE_ID], *(row[i] for i in _MOVIE_FIELD_AT), run_id)
        for row in rows if row[_MOVIE_ID]])
    return len(rows)


_SITE, _MOVIE_ID = (list(RECORD_COLUMNS).index(name) for name in ("site", "movie_id"))
_MOVIE_FIELD_AT = [list(RECORD_COLUMNS).index(name) for name in MOVIE_FIELDS]


def _record_row(run_id: int, site: str, board: str, page_url: str, record: dict[str, Any]) -> tuple[Any, ...]:
    """The record's values in the order of RECORD_COLUMNS."""
    row = {name: record.get(name) for name in RECORD_COLUMNS}
    row.update(run_id=run_id, site=site, board=board, page_url=page_url)
    row["obfuscated"] = ",".join(record.get("obfuscated") or []) or None
    return tuple(int(value) if isinstance(value, bool) else value for value in row.values())


def stored_copies(db: sqlite_utils.Database, run_id: int) -> dict[str, dict[str, Any]]:
    """For each URL, the newest earlier stored copy with its validators (for conditional requests)."""
    rows = db.execute("""
        select h.url, h.run_id, h.etag, h.last_modified from page_html h
        join pages p on p.run_id = h.run_id and p.url = h.url and p.outcome = 'ok'
        where h.run_id < ? and (h.etag is not null or h.last_modified is not null)
          and h.run_id = (select max(h2.run_id) from page_html h2 where h2.url = h.url and h2.run_id < ?)
        """, [run_id, run_id]).fetchall()
    return {url: {"run_id": run, "etag": etag, "last_modified": modified} for url, run, etag, modified in rows}


def reuse_page(db: sqlite_utils.Database, run_id: int, from_run: int, page: dict[str, Any]) -> int:
    """A page the site says is unchanged (304): copy the stored copy's records and HTML into this run."""
    columns = ", ".join(name for name in RECORD_COLUMNS if name != "run_id")
    with db.atomic():
        db.execute(f"""insert or replace into records (run_id, {columns})
                       select ?, {columns} from records where run_id = ? and page_url = ?""",
                   [run_id, from_run, page["url"]])
        db.execute("""insert or replace into page_html (run_id, url, fetched, content_type, etag, last_modified, html,
                                                        font_hash)
                      select ?, url, fetched, content_type, etag, last_modified, html, font_hash
                      from page_html where run_id = ? and url = ?""", [run_id, from_run, page["url"]])
        count = db.execute("select count(*) from records where run_id = ? and page_url = ?",
                           [run_id, page["url"]]).fetchone()[0]
        db["pages"].upsert({"run_id": run_id, "fetched": now(), "records": count, **page}, pk=("run_id", "url"))
    return count


def stored_pages(db: sqlite_utils.Database, run_id: int) -> Iterator[tuple[str, str, str, int, FetchResult]]:
    """(site, board, url, attempts, the page as received) for each page the run kept."""
    for url, site, board, final_url, content_type, html, attempts, font, font_url in db.execute(
            """select h.url, p.site, p.board, p.final_url, h.content_type, h.html, p.attempts, f.font, f.url
               from page_html h join pages p on p.run_id = h.run_id and p.url = h.url
               left join fonts f on f.hash = h.font_hash
               where h.run_id = ?""", [run_id]):
        body = zlib.decompress(html)
        yield site, board, url, attempts, FetchResult(url, final_url or url, 200, {"content-type": content_type or ""},
                                                      body, 0.0, font=font, font_url=font_url)


def board_pages(db: sqlite_utils.Database, run_id: int, site: str, board: str) -> list[str]:
    return [url for (url,) in db.execute("select url from pages where run_id = ? and site = ? and board = ?",
                                         [run_id, site, board])]


def finish_run(db: sqlite_utils.Database, run_id: int, status: str, message: str | None = None,
               elapsed: float | None = None) -> dict[str, Any]:
    """Mark the run ended and store its stats, taken from what was actually stored."""
    stats: dict[str, Any] = run_counts(db, run_id)
    stats["new_entries"] = new_entries(db, run_id)
    if elapsed is not None:
        stats["elapsed"] = round(elapsed, 3)
        stats["pages_per_second"] = round(stats["pages_ok"] / elapsed, 2) if elapsed > 0 else None
    with db.atomic():
        db["runs"].update(run_id, {"finished": now(), "status": status, "message": message, **stats})
    return stats


def new_entries(db: sqlite_utils.Database, run_id: int) -> int:
    """Entries of this run's boards that the previous run of the same board did not have."""
    # The previous run of each board is found once; each entry is then one index lookup.
    return db.execute("""
        with previous as (
            select site, board, max(run_id) as run_id from records where run_id < :run group by site, board
        )
        select count(*) from records r join previous on previous.site = r.site and previous.board = r.board
        where r.run_id = :run and not exists (
            select 1 from records p indexed by idx_records_site_board_movie_id_run_id
            where p.site = r.site and p.board = r.board and p.movie_id = r.movie_id
              and p.run_id = previous.run_id
        )""", {"run": run_id}).fetchone()[0]


def run_counts(db: sqlite_utils.Database, run_id: int) -> dict[str, int]:
    by_outcome = dict(db.execute(
        "select outcome, count(*) from pages where run_id = ? group by outcome", [run_id]).fetchall())
    records = db.execute("select count(*) from records where run_id = ?", [run_id]).fetchone()[0]
    retried = db.execute("select count(*) from pages where run_id = ? and attempts > 1", [run_id]).fetchone()[0]
    return {"pages": sum(by_outcome.values()), "pages_ok": by_outcome.get("ok", 0), "pages_retried": retried,
            "pages_failed": by_outcome.get("error", 0), "pages_blocked": by_outcome.get("blocked", 0),
            "pages_disallowed": by_outcome.get("disallowed", 0), "records": records}



def reopen_run(db: sqlite_utils.Database, run: int | str) -> int:
    """The run to resume: a given id, or "latest" for the newest one that did not finish.

    A run killed outright (kill -9, power loss) never marked itself, so it is still "running".
    """
    if run == "latest":
        row = db.execute("select id from runs where status in ('interrupted', 'running') "
                         "order by id desc limit 1").fetchone()
        if row is None:
            raise StoreError("no interrupted run to resume in this database")
        run_id = row[0]
    else:
        row = db.execute("select id, status from runs where id = ?", [run]).fetchone()
        if row is None:
            raise StoreError(f"no run {run} in this database")
        if row[1] == "ok":
            raise StoreError(f"run {run} is complete; nothing to resume")
        run_id = row[0]
    with db.atomic():
        db["runs"].update(run_id, {"status": "running", "finished": None})
    return run_id


def pages_done(db: sqlite_utils.Database, run_id: int) -> set[str]:
    return {url for (url,) in db.execute("select url from pages where run_id = ? and outcome = 'ok'", [run_id])}


def pages_owed(db: sqlite_utils.Database, run_id: int) -> list[dict[str, str]]:
    """Pages of a run noted but not stored: pending, retrying, failed or blocked."""
    return [{"url": url, "site": site, "board": board} for url, site, board in db.execute(
        "select url, site, board from pages where run_id = ? and outcome != 'ok' order by rowid", [run_id])]
