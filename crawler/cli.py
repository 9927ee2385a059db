"""Command line: parse arguments, call the library, print what happened. Nothing else."""
from __future__ import annotations

import argparse
import difflib
import os
import sqlite3
import sys
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from . import output, query
from .config import MAX_WORKERS, load_config
from .pools import POOL_KINDS
from .progress import Progress
from .scheduler import CrawlResult, Interrupted, crawl
from .store import StoreError, close_db, database_error, open_db, open_readonly
from .errors import CrawlerError

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # some pages were not stored
EXIT_USAGE = 2  # bad arguments, config or database
EXIT_BLOCKED = 3  # a site refused the crawler
EXIT_SIGINT = 130  # stopped with Ctrl-C (128 + the signal's number, as shells report it)
SHOWN_FAILURES = 10
DEFAULT_CONFIG = "crawl.toml"
SQLITE_MAX_INTEGER = 2**63 - 1  # run ids and limits are SQLite integers

COMMANDS_HELP = """commands that read the database (each takes --db PATH and --help):
  runs                      the runs, newest first
  stats [RUN]               a run's stats (default: the latest)
  top BOARD                 a board as it stood in a run
  history TITLE_OR_ID       rank and score of one movie across runs (--plot FILE.png)
  diff [BOARD]              what entered, left, moved or changed score between two runs
  search TEXT               movies by title, other titles or actors
  export --format FMT       every record of a run as csv, json or jsonl
  compare                   Maoyan TOP100 against Douban Top 250
  pages [RUN]               the pages a run did not store, and why (--all: every page)
  reparse [RUN]             re-run today's parsers over a run's stored pages

examples:
  crawler crawl.toml --offline
  crawler top top100 --limit 10
  crawler history 霸王别姬 --plot bawang.png"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class UsageError(CrawlerError):
    """Bad input to a command that argparse could not see (a file that cannot be written)."""


def _positive(text: str, most: int = SQLITE_MAX_INTEGER) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    if value > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, not {value}")
    return value


def _workers(text: str) -> int:
    return _positive(text, MAX_WORKERS)


def _run_id(text: str) -> int | str:
    if text == "latest":
        return text
    return _positive(text)


# -- crawling ------------------------------------------------------------------------------

def crawl_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crawler",
        description="Crawl ranked movie boards (Maoyan, Douban) into SQLite; every run is kept.",
        epilog=COMMANDS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="the crawl's TOML config, e.g. crawl.toml")
    parser.add_argument("--db", metavar="PATH", help="SQLite database to write (default: 'database' in the config)")
    parser.add_argument("--offline", action="store_true",
                        help="serve every page from the bundled fixtures/ instead of the sites (no network)")
    parser.add_argument("--fixtures", metavar="DIR",
                        help="serve every page from this fixture folder (implies --offline), e.g. one made by --record")
    parser.add_argument("--record", metavar="DIR",
                        help="also write every page fetched into DIR in the fixtures format, to replay offline")
    parser.add_argument("--workers", type=_workers, metavar="N",
                        help=f"downloads at once: processes, threads or Dask threads, 1 to {MAX_WORKERS} "
                             f"(default: crawl.workers)")
    parser.add_argument("--pool", choices=POOL_KINDS,
                        help="where downloads run: process (default), thread, or dask (see crawl.pool)")
    parser.add_argument("--dask-scheduler", metavar="ADDRESS",
                        help="with --pool dask: a running scheduler, e.g. tcp://10.0.0.5:8786 "
                             "(default: crawl.dask_scheduler; empty starts a local cluster)")
    parser.add_argument("--resume", nargs="?", const="latest", type=_run_id, metavar="RUN_ID",
                        help="complete an unfinished run, fetching only the pages it lacks (default: the latest)")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    noise.add_argument("-v", "--verbose", action="store_true", help="a line for every page")
    return parser


def stats_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One run's stats as a one-row table, shared by the crawl's summary and `stats`."""
    return [{"run": stats.get("id") or stats.get("run_id"), "status": stats["status"],
             "pages ok": stats["pages_ok"], "retried": stats["pages_retried"], "failed": stats["pages_failed"],
             "blocked": stats["pages_blocked"], "records": stats["records"], "new entries": stats["new_entries"],
             "elapsed s": stats["elapsed"], "pages/s": stats["pages_per_second"]}]


def summary(result: CrawlResult, db_path: str) -> str:
    disallowed = f", {result.pages_disallowed} disallowed by robots.txt" if result.pages_disallowed else ""
    lines = [
        f"run {result.run_id} {result.status}: {result.pages_ok} pages ok, {result.pages_failed} failed, "
        f"{result.pages_blocked} blocked{disallowed}; {result.records} records stored in {db_path} "
        f"in {result.elapsed:.1f} s",
        output.table(stats_rows({**vars(result), "elapsed": round(result.elapsed, 1)})),
    ]
    for url, error in result.failures[:SHOWN_FAILURES]:
        lines.append(f"  not stored: {url}: {error}")
    if len(result.failures) > SHOWN_FAILURES:
        lines.append(f"  ... and {len(result.failures) - SHOWN_FAILURES} more; every one with: "
                     f"python -m crawler pages {result.run_id} --db {db_path}")
    lines += result.notices
    for site in result.blocked_sites:
        seen = result.blocked_pages.get(site)
        lines.append(f"{site} is blocking the crawler ({result.blocks.get(site, 0)} pages blocked"
                     f"{'; its page: ' + seen if seen else ''}): "
                     f"wait before the next run, raise crawl.delay_per_host, or put your browser's "
                     f"cookies in [sites.{site}.cookies]")
    return "\n".join(lines)


def run_crawl(argv: list[str]) -> int:
    args = crawl_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        config = replace(config, pool=args.pool or config.pool,
                         dask_scheduler=args.dask_scheduler if args.dask_scheduler is not None else config.dask_scheduler)
        db_path = args.db or config.database
        result = crawl(config, db_path=db_path, offline=args.offline, fixtures=args.fixtures,
                       workers=args.workers, resume=args.resume, record=args.record,
                       progress=Progress(quiet=args.quiet, verbose=args.verbose))
    except (CrawlerError, OSError) as exc:
        print(f"crawler: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as stop:
        if stop.reason:
            print(f"crawler: error: {stop.reason}", file=sys.stderr)
        if stop.at_once:
            print("crawler: stopped at once; the pages that were still downloading were abandoned",
                  file=sys.stderr)
        print(summary(stop.result, db_path), file=sys.stderr)
        print(f"resume with: python -m crawler {args.config}{' --db ' + args.db if args.db else ''} "
              f"--resume {stop.result.run_id}", file=sys.stderr)
        return 128 + stop.signum if stop.signum else EXIT_INCOMPLETE
    except KeyboardInterrupt:  # before the crawl could set up its own handling: nothing started
        print("crawler: stopped", file=sys.stderr)
        return EXIT_SIGINT
    except Exception as exc:  # a fault of the crawler's own: the run is marked failed, not left running
        if args.verbose:
            traceback.print_exc()
        print(f"crawler: internal error: {exc!r} (the run is marked failed; -v shows where)", file=sys.stderr)
        return EXIT_INCOMPLETE
    print(summary(result, db_path), file=sys.stderr)
    if result.blocked_sites:
        return EXIT_BLOCKED
    return EXIT_OK if result.status == "ok" else EXIT_INCOMPLETE


# -- reading the database ------------------------------------------------------------------

def _default_db() -> str:
    """The database named in ./crawl.toml, as the crawl would use it; else movies.db."""
    if Path(DEFAULT_CONFIG).exists():
        return load_config(DEFAULT_CONFIG).database
    return "movies.db"


def _print(rows: list[dict[str, Any]], fmt: str, out: str | None = None) -> None:
    """Rows in the format asked; with no rows, CSV still has its header and JSON is []."""
    columns = getattr(rows, "columns", None)
    text = output.render(rows, fmt, columns) if rows or fmt != "table" else ""
    if out:
        try:
            Path(out).write_text(text + "\n" if text else "", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from None
    elif text:
        try:
            print(text, flush=True)
        except BrokenPipeError:
            raise
        except OSError as exc:  # > /dev/full, a full disk
            _drop_stdout()
            raise UsageError(f"cannot write the output: {exc.strerror or exc}") from None


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so what is left in its buffer cannot fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _cmd_runs(db, args) -> None:
    _print(query.runs(db), args.format)


def _cmd_stats(db, args) -> None:
    _print(stats_rows(query.run_stats(db, args.run)), args.format)


def _cmd_top(db, args) -> None:
    _print(query.top(db, args.board, args.run, args.limit), args.format)


def _cmd_history(db, args) -> None:
    from .plot import PlotError, check_plot_path, plot_history

    try:
        if args.plot:
            check_plot_path(args.plot)
        rows = query.history(db, args.movie, args.board)
        if args.plot:
            plot_history(rows, args.plot)
    except PlotError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.plot}: {exc.strerror or exc}") from None
    if args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    _print(rows, args.format)


def _cmd_diff(db, args) -> None:
    rows = query.diff(db, args.board, args.from_run, args.to_run)
    if not rows and args.format == "table":
        print("no changes", file=sys.stderr)
    _print(rows, args.format)


def _cmd_search(db, args) -> None:
    _print(query.search(db, args.text), args.format)


def _cmd_export(db, args) -> None:
    rows = query.export_rows(db, args.run)
    _print(rows, args.format, args.out)
    if args.out:
        print(f"{len(rows)} records written to {args.out}", file=sys.stderr)


def _cmd_compare(db, args) -> None:
    rows = query.compare(db)
    _print(rows, args.format)
    if args.format == "table":
        print(f"{len(rows)} films on both boards", file=sys.stderr)


def _cmd_pages(db, args) -> None:
    rows = query.pages(db, args.run, args.all)
    if not rows and args.format == "table":
        print("every page of the run was stored", file=sys.stderr)
    _print(rows, args.format)


def _cmd_reparse(db, args) -> None:
    from .reparse import reparse

    result = reparse(db, query.resolve_run(db, args.run))
    print(f"run {result.run_id}: {result.pages} stored pages parsed again, {result.pages_ok} ok; "
          f"records {result.records_before} -> {result.records_after}")


def command_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = _Parser(prog="crawler", description="Read the crawler's database.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    handlers: dict[str, Callable] = {}

    def command(name: str, handler: Callable, help: str, example: str, formats=output.FORMATS):
        sub = commands.add_parser(name, help=help, description=help, epilog=f"example: {example}")
        sub.add_argument("--db", metavar="PATH", default=None,
                         help="the database (default: the one named in ./crawl.toml, else movies.db)")
        if formats:
            sub.add_argument("--format", choices=formats, default=formats[0],
                             help=f"output format (default: {formats[0]})")
        handlers[name] = handler
        return sub

    command("runs", _cmd_runs, "List the runs, newest first, with status and counts.", "crawler runs")
    sub = command("stats", _cmd_stats, "Print a run's stats: pages ok/retried/failed/blocked, records, "
                  "new entries, elapsed, pages/s.", "crawler stats 3")
    sub.add_argument("run", nargs="?", type=_positive, help="run id (default: the latest)")
    sub = command("top", _cmd_top, "Show a board as it stood in a run.", "crawler top top250 --limit 10")
    sub.add_argument("board", help=f"one of: {', '.join(query.board_names())} (SITE/BOARD always works)")
    sub.add_argument("--run", type=_positive, help="run id (default: the latest run with this board)")
    sub.add_argument("--limit", type=_positive, metavar="N", help="only the first N ranks")
    sub = command("history", _cmd_history, "Show one movie's rank and score in every run.",
                  "crawler history 霸王别姬 --board top100 --plot bawang.png")
    sub.add_argument("movie", metavar="TITLE_OR_MOVIE_ID", help="exact title, or the site's movie id")
    sub.add_argument("--board", help="only this board")
    sub.add_argument("--plot", metavar="FILE", help="also draw rank over time (rank 1 at the top), a line per "
                     "board, as FILE.png, FILE.svg or FILE.pdf")
    sub = command("diff", _cmd_diff, "What entered, left, moved up or down, or changed score between two runs.",
                  "crawler diff top100 --from 1 --to 3")
    sub.add_argument("board", nargs="?", help="only this board (default: every board both runs have)")
    sub.add_argument("--from", dest="from_run", type=_positive, metavar="RUN", help="older run (default: the one before --to)")
    sub.add_argument("--to", dest="to_run", type=_positive, metavar="RUN", help="newer run (default: the latest)")
    sub = command("search", _cmd_search, "Find movies by title, other titles or actors (full-text).",
                  "crawler search 张国荣")
    sub.add_argument("text", help="words to look for (three characters or more use the full-text index)")
    sub = command("export", _cmd_export, "Write every record of a run as csv, json or jsonl.",
                  "crawler export --format csv --out run3.csv --run 3", formats=("csv", "json", "jsonl"))
    sub.add_argument("--run", type=_positive, help="run id (default: the latest)")
    sub.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    command("compare", _cmd_compare, "Maoyan TOP100 against Douban Top 250, joined on title and year: "
            "films on both and how their ranks differ.", "crawler compare --format csv")
    sub = command("pages", _cmd_pages, "List the pages of a run that were not stored, with the reason "
                  "(failed, blocked, or never fetched).", "crawler pages 3 --all")
    sub.add_argument("run", nargs="?", type=_positive, help="run id (default: the latest)")
    sub.add_argument("--all", action="store_true", help="every page of the run, stored or not")
    sub = command("reparse", _cmd_reparse, "Re-run today's parsers over a run's stored pages and replace "
                  "its records; no site is asked.", "crawler reparse 3", formats=())
    sub.add_argument("run", nargs="?", type=_positive, help="run id (default: the latest)")
    return parser, handlers


# The one command that writes; the others open the database read-only.
WRITING_COMMANDS = ("reparse",)


def run_command(argv: list[str]) -> int:
    parser, handlers = command_parser()
    args = parser.parse_args(argv)
    db = None
    try:
        path = args.db or _default_db()
        if args.command in WRITING_COMMANDS:
            if not Path(path).is_file():
                raise StoreError(f"no database at {path}: crawl first (python -m crawler crawl.toml) "
                                 f"or pass --db PATH")
            db = open_db(path)
        else:
            db = open_readonly(path)
        handlers[args.command](db, args)
    except CrawlerError as exc:
        print(f"crawler {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.Error as exc:
        print(f"crawler {args.command}: error: {database_error(path, exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `crawler export ... | head`: the reader has what it wanted
        _drop_stdout()
    finally:
        if db is not None and args.command in WRITING_COMMANDS:
            close_db(db)
        elif db is not None:
            db.conn.close()
    return EXIT_OK


COMMANDS = ("runs", "stats", "top", "history", "diff", "search", "export", "compare", "pages", "reparse")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crawler")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["crawl"]:  # `crawler crawl crawl.toml`, as Scrapy users type it
        argv = argv[1:]
    if argv[:1] == ["--version"]:
        print(f"crawler {_version()}")
        return EXIT_OK
    if argv and argv[0] in COMMANDS:
        return run_command(argv)
    if argv and not argv[0].startswith("-") and not Path(argv[0]).exists() and not argv[0].endswith(".toml"):
        close = difflib.get_close_matches(argv[0], [*COMMANDS, "crawl"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (commands: {', '.join(COMMANDS)})"
        print(f"crawler: error: unknown command or config file '{argv[0]}'{hint}", file=sys.stderr)
        return EXIT_USAGE
    return run_crawl(argv)
