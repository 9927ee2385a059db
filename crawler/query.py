"""Questions asked of the database: runs, boards as they stood, a movie's history, what changed.

Plain functions over a sqlite_utils.Database returning lists of dicts; the CLI only
prints them. Bad input (an unknown board, run or movie) raises QueryError.
"""
from __future__ import annotations

from typing import Any

import sqlite_utils

from .sites import SITES
from .errors import CrawlerError



class QueryError(CrawlerError):
    """A question the database cannot answer as asked; the message says why."""


class Rows(list):
    """Rows as dicts, with the query's column names: an empty answer still has its header."""

    columns: list[str]


def _rows(db: sqlite_utils.Database, sql: str, params: Any = ()) -> Rows:
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    rows = Rows(dict(zip(names, row)) for row in cursor.fetchall())
    rows.columns = names
    return rows


def _like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, its own % and _ taken literally (ESCAPE '\\')."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def board_names() -> list[str]:
    """Every board as a command takes it: BOARD where one site has it, else SITE/BOARD."""
    owners = _owners()
    return [board if len(owners[board]) == 1 else f"{site.name}/{board}"
            for site in SITES.values() for board in site.boards]


def _owners() -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for site in SITES.values():
        for board in site.boards:
            owners.setdefault(board, []).append(site.name)
    return owners


def board_key(text: str) -> tuple[str, str]:
    """(site, board) from SITE/BOARD, or from BOARD alone when only one site has such a board."""
    site, _, board = text.rpartition("/")
    owners = _owners().get(board, [])
    if site and site in owners:
        return site, board
    if not site and len(owners) == 1:
        return owners[0], board
    if not site and owners:
        raise QueryError(f"board {board!r} is on {' and '.join(owners)}: say which, e.g. {owners[0]}/{board}")
    raise QueryError(f"unknown board {text!r} (known: {', '.join(board_names())})")


def resolve_run(db: sqlite_utils.Database, run: int | None = None, key: tuple[str, str] | None = None) -> int:
    """The run asked for, or the latest one (holding the board `key`, when given)."""
    if run is not None:
        if not db.execute("select 1 from runs where id = ?", [run]).fetchone():
            raise QueryError(f"no run {run} in this database (see: crawler runs)")
        return run
    sql, params = "select max(id) from runs", []
    if key:
        sql, params = "select max(run_id) from records where site = ? and board = ?", list(key)
    latest = db.execute(sql, params).fetchone()[0]
    if latest is None:
        raise QueryError("no run in this database yet" + (f" with board {key[1]!r}" if key else "")
                         + ": crawl first (python -m crawler crawl.toml)")
    return latest


def runs(db: sqlite_utils.Database) -> Rows:
    return _rows(db, """select id, started, finished, status, pages, pages_ok, pages_failed,
                        pages_blocked, records, new_entries from runs order by id desc""")


def run_stats(db: sqlite_utils.Database, run: int | None = None) -> dict[str, Any]:
    run_id = resolve_run(db, run)
    return _rows(db, "select * from runs where id = ?", [run_id])[0]


def top(db: sqlite_utils.Database, board: str, run: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    site, board = board_key(board)
    run_id = resolve_run(db, run, (site, board))
    extra = ", ".join(f"[{name}]" for name in SITES[site].boards[board].shows)
    rows = _rows(db, f"""select rank, title, score, {extra}, movie_id from records
                         where run_id = ? and site = ? and board = ? order by rank
                         limit ?""", [run_id, site, board, -1 if limit is None else limit])
    if not rows:
        raise QueryError(f"run {run_id} has no records of board {board!r}")
    return rows


def history(db: sqlite_utils.Database, movie: str, board: str | None = None) -> list[dict[str, Any]]:
    """Rank and score of one movie (a title or a movie id) in every run that has it."""
    site, board = board_key(board) if board else (None, None)
    rows = _rows(db, """select r.run_id, substr(runs.started, 1, 19) as started, r.site, r.board, r.rank,
                               r.score, r.title, r.movie_id
                        from records r join runs on runs.id = r.run_id
                        where (r.title = :movie or r.movie_id = :movie)
                          and (:board is null or (r.site = :site and r.board = :board))
                        order by r.site, r.board, r.run_id""", {"movie": movie, "site": site, "board": board})
    if not rows:
        raise QueryError(f"no movie titled or with id {movie!r} in this database"
                         + (f" on board {board!r}" if board else ""))
    return rows


def diff(db: sqlite_utils.Database, board: str | None = None, from_run: int | None = None,
         to_run: int | None = None) -> Rows:
    """What entered, left, moved, was renamed or changed score between two runs (default: the last two).

    Entries are matched by the site's movie id, so a title changed under the same id is
    "renamed" (its old title in from_title), not one film leaving and another entering.
    """
    site, board = board_key(board) if board else (None, None)
    to_id = resolve_run(db, to_run, (site, board) if board else None)
    if from_run is None:
        sql = "select max(run_id) from records where run_id < ?" + (" and site = ? and board = ?" if board else "")
        from_id = db.execute(sql, [to_id, site, board] if board else [to_id]).fetchone()[0]
        if from_id is None:
            raise QueryError(f"nothing to compare run {to_id} with: it is the first run"
                             + (f" with board {board!r}" if board else ""))
    else:
        from_id = resolve_run(db, from_run)
    side = """select site, board, coalesce(movie_id, title) as movie, title, rank, score
              from records where run_id = ? and (? is null or (site = ? and board = ?))"""
    old = {(r["site"], r["board"], r["movie"]): r for r in _rows(db, side, [from_id, board, site, board])}
    new = {(r["site"], r["board"], r["movie"]): r for r in _rows(db, side, [to_id, board, site, board])}
    boards = {key[:2] for key in new} & {key[:2] for key in old}  # boards both runs crawled
    changes = []
    # By board and rank; at equal rank what entered comes before what left.
    for key in sorted(set(old) | set(new), key=lambda k: (k[0], k[1], (new.get(k) or old[k])["rank"],
                                                          k not in new, k[2])):
        if key[:2] not in boards:
            continue
        before, after = old.get(key), new.get(key)
        renamed = before is not None and after is not None and before["title"] != after["title"]
        row = {"board": key[1], "title": (after or before)["title"],
               "from_rank": before and before["rank"], "to_rank": after and after["rank"],
               "move": None, "from_score": before and before["score"], "to_score": after and after["score"],
               "from_title": before["title"] if renamed else None}
        if before is None:
            row["change"] = "entered"
        elif after is None:
            row["change"] = "left"
        elif before["rank"] != after["rank"]:
            row["move"] = before["rank"] - after["rank"]
            row["change"] = "up" if row["move"] > 0 else "down"
        elif renamed:
            row["change"] = "renamed"
        elif before["score"] != after["score"]:
            row["change"] = "score"
        else:
            continue
        changes.append({"from_run": from_id, "to_run": to_id, "change": row.pop("change"), **row})
    changes = Rows(changes)
    changes.columns = ["from_run", "to_run", "change", "board", "title", "from_rank", "to_rank", "move",
                       "from_score", "to_score", "from_title"]
    return changes


def search(db: sqlite_utils.Database, text: str) -> Rows:
    """Movies whose title, other titles or actors contain the text."""
    text = text.strip()
    if not text:
        raise QueryError("search needs some text")
    if len(text) >= 3:  # the trigram index answers from three characters up
        where = "rowid in (select rowid from movies_fts where movies_fts match ?)"
        params = ['"' + text.replace('"', '""') + '"']
    else:
        where = "(title like ? escape '\\' or actors like ? escape '\\' or other_titles like ? escape '\\')"
        params = [_like(text)] * 3
    return _rows(db, f"""select site, movie_id, title, actors, release_date, last_run_id from movies
                         where {where} order by site, title""", params)


def export_rows(db: sqlite_utils.Database, run: int | None = None) -> Rows:
    run_id = resolve_run(db, run)
    return _rows(db, "select * from records where run_id = ? order by site, board, rank", [run_id])


def compare(db: sqlite_utils.Database) -> Rows:
    """Maoyan TOP100 against Douban Top 250, as each stood in its latest run.

    Joined on title and year. Maoyan often shows a re-release date, so a Maoyan year
    later than Douban's still matches; an earlier one does not.
    """
    maoyan_run = resolve_run(db, None, ("maoyan", "top100"))
    douban_run = resolve_run(db, None, ("douban", "top250"))
    return _rows(db, """
        select m.title, d.year, m.rank as maoyan_rank, d.rank as douban_rank,
               m.rank - d.rank as difference, m.score as maoyan_score, d.score as douban_score
        from records m join records d on d.title = m.title
        where m.run_id = ? and m.site = 'maoyan' and m.board = 'top100'
          and d.run_id = ? and d.site = 'douban' and d.board = 'top250'
          and (m.release_date is null or cast(substr(m.release_date, 1, 4) as integer) >= d.year)
        order by m.rank""", [maoyan_run, douban_run])


def pages(db: sqlite_utils.Database, run: int | None = None, every: bool = False) -> Rows:
    """A run's pages that were not stored (all of them with every=True), with the reason."""
    run_id = resolve_run(db, run)
    return _rows(db, """select url, site, board, outcome, attempts, status, error from pages
                        where run_id = ? and (? or outcome != 'ok') order by rowid""", [run_id, int(every)])
