"""Command line: parse arguments, call the library, print what happened. Nothing else.

Every command is defined once, below, with click. The crawl is the default command, so
`crawler crawl.toml` and `crawler crawl crawl.toml` are the same; the other commands read the
database. Mistakes keep the words and the single line the crawler has always printed
(argparse's): `crawler: error: ...` or `crawler top: error: ...`, exit code 2, never click's
usage block.
"""
from __future__ import annotations

import difflib
import os
import re
import sqlite3
import sys
import traceback
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import click
import sqlite_utils
from click_default_group import DefaultGroup

from . import output, query
from .config import MAX_WORKERS, load_config
from .errors import CrawlerError
from .plot import check_plot_path, plot_history, require_matplotlib
from .pools import POOL_KINDS
from .progress import Progress
from .reparse import reparse
from .scheduler import CrawlResult, Interrupted, crawl
from .store import StoreError, close_db, database_error, open_db, open_readonly

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # some pages were not stored
EXIT_USAGE = 2  # bad arguments, config or database
EXIT_BLOCKED = 3  # a site refused the crawler
EXIT_SIGINT = 130  # stopped with Ctrl-C (128 + the signal's number, as shells report it)
SHOWN_FAILURES = 10
DEFAULT_CONFIG = "crawl.toml"
DEFAULT_COMMAND = "crawl"
SQLITE_MAX_INTEGER = 2**63 - 1  # run ids and limits are SQLite integers
NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")


class UsageError(CrawlerError):
    """Bad input that no parameter's type could see (a file that cannot be written, an unknown word)."""


def _error(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# -- parameters, refused in the words the crawler has always used ---------------------------

class Whole(click.ParamType):
    """A whole number from 1 to `most` (SQLite's largest integer unless said), or one of `words`."""

    name = "integer"

    def __init__(self, most: int = SQLITE_MAX_INTEGER, words: tuple[str, ...] = ()) -> None:
        self.most, self.words = most, words

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or value in self.words:
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"must be a whole number, not {value!r}", param, ctx)
        if number < 1:
            self.fail(f"must be at least 1, not {number}", param, ctx)
        if number > self.most:
            self.fail(f"must be at most {self.most}, not {number}", param, ctx)
        return number


class OneOf(click.Choice):
    """click's Choice, refused as argparse refused a choice."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        self.fail(f"invalid choice: {value!r} (choose from {', '.join(map(repr, self.choices))})", param, ctx)


def _argument_name(param: click.Parameter) -> str:
    """How an error names a parameter: -q/--quiet, or an argument's metavar or name."""
    if isinstance(param, click.Option):
        return "/".join(param.opts)
    return param.metavar or param.name or "?"


def _in_argparse_words(exc: click.UsageError) -> str:
    """A mistake click found, said as argparse said it (the messages users and scripts know)."""
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        return f"the following arguments are required: {_argument_name(exc.param)}"
    if isinstance(exc, click.BadParameter) and exc.param is not None:
        return f"argument {_argument_name(exc.param)}: {exc.message}"
    return exc.message


def _not_with(other: str) -> Callable[[click.Context, click.Parameter, bool], bool]:
    """A flag that excludes the flag `other`; the error names the one given second, as argparse did."""
    def check(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value and ctx.params.get(other):
            first = next(p for p in ctx.command.params if p.name == other)
            raise click.BadParameter(f"not allowed with argument {_argument_name(first)}", ctx, param)
        return value
    return check


class OptionalValue(click.Option):
    """An option whose value may be left out (`--resume` alone: the latest run), argparse's nargs='?'."""


def _looks_like_option(word: str) -> bool:
    """argparse's reading of a word: an option, unless it is '-', a negative number, or has a space."""
    return word.startswith("-") and word != "-" and " " not in word and not NEGATIVE_NUMBER.fullmatch(word)


def _as_argparse_read(ctx: click.Context, params: list[click.Parameter], args: list[str]) -> tuple[list[str], list[str]]:
    """The words as argparse read them, where click reads them otherwise. The unambiguous start of a
    long option stands for it (--off for --offline); an option that needs a value never takes the
    next option as one (`--record --offline` is a mistake, not a folder named --offline); a flag
    takes no value; a negative number is a word, not an option. Returns the words for click to
    parse, and the options no parameter knows."""
    options = {name: p for p in params if isinstance(p, click.Option) for name in p.opts}
    long_names = [name for name in options if name.startswith("--")]
    short_flags = {name[1] for name, p in options.items() if len(name) == 2 and name[1] != "-" and p.is_flag}
    read: list[str] = []
    unknown: list[str] = []
    index = 0
    while index < len(args):
        arg, index = args[index], index + 1
        if arg == "--":
            return read + args[index - 1:], unknown
        if not _looks_like_option(arg):
            read.append(arg)
            continue
        name, equals, value = arg.partition("=")
        if name.startswith("--") and name not in options:
            matches = [known for known in long_names if known.startswith(name)]
            if len(matches) > 1:
                raise click.UsageError(f"ambiguous option: {name} could match {', '.join(matches)}", ctx)
            if matches:
                name, arg = matches[0], matches[0] + equals + value
        option = options.get(name)
        if option is None:  # unknown, unless a cluster of short flags (-qv)
            (read if not name.startswith("--") and set(arg[1:]) <= short_flags else unknown).append(arg)
            continue
        if equals and option.is_flag:
            raise click.UsageError(f"argument {_argument_name(option)}: ignored explicit argument {value!r}", ctx)
        read.append(arg)
        if option.is_flag or equals:
            continue
        following = args[index] if index < len(args) else None
        if isinstance(option, OptionalValue):
            if following is None or following.startswith("-"):
                continue
        elif following is None or _looks_like_option(following):
            raise click.UsageError(f"argument {_argument_name(option)}: expected one argument", ctx)
        read.append(following)
        index += 1
    return read, unknown


class Command(click.Command):
    """A command whose usage line and mistakes read as they always have."""

    # Words no parameter takes are refused below, all at once (click would stop at the first); a
    # negative number reaches the parameter it was given for.
    allow_extra_args = True
    ignore_unknown_options = True

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, " ".join(self.collect_usage_pieces(ctx)), prefix="usage: ")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        words, unknown = _as_argparse_read(ctx, self.get_params(ctx), args)
        rest = super().parse_args(ctx, words)
        if unknown or ctx.args:  # named by `crawler` itself, as argparse's top parser named them
            left = sorted(unknown + ctx.args, key=args.index)
            raise click.UsageError(f"unrecognized arguments: {' '.join(left)}")
        return rest


# -- the command group: the crawl by default ------------------------------------------------

def _prog(ctx: click.Context | None) -> str:
    """`crawler` for the crawl (however typed) and before any command; `crawler top` for `top`."""
    if ctx is None or ctx.parent is None or ctx.command.name == DEFAULT_COMMAND:
        return "crawler"
    return ctx.command_path


def _names_a_config(word: str) -> bool:
    return word.startswith("-") or word.endswith(".toml") or Path(word).exists()


class CrawlerGroup(DefaultGroup):
    """The commands, with the crawl as the default one. A first word that is neither a command nor
    a config (a file, or a name ending in .toml) is refused with the closest command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they are defined, the crawl first

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        word = args[1] if args[0] == self.default_cmd_name and len(args) > 1 else args[0]
        if word not in self.commands and not _names_a_config(word):
            close = difflib.get_close_matches(word, list(self.commands), n=1)
            others = [name for name in self.commands if name != self.default_cmd_name]
            hint = f"did you mean '{close[0]}'?" if close else f"commands: {', '.join(others)}"
            raise UsageError(f"unknown command or config file '{word}' ({hint})")
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The crawl's usage and options first (it is what `crawler CONFIG` runs), then every
        command with its arguments and a line on what it does, then examples."""
        crawl_command = self.commands[self.default_cmd_name]
        formatter.write(f"usage: {ctx.command_path} [{self.default_cmd_name}] CONFIG [OPTIONS]\n"
                        f"       {ctx.command_path} COMMAND [ARGS] [OPTIONS]\n")
        self.format_help_text(ctx, formatter)
        options = [p for p in [*crawl_command.params, *self.get_params(ctx)] if isinstance(p, click.Option)]
        with formatter.section("Options of the crawl"):
            formatter.write_dl([record for record in (p.get_help_record(ctx) for p in options) if record])
        rows = []
        for name, command in self.commands.items():
            pieces = [piece for piece in command.collect_usage_pieces(ctx) if piece != command.options_metavar]
            rows.append((" ".join([name, *pieces]), command.short_help or ""))
        with formatter.section("Commands (each has --help; those that read the database take --db PATH)"):
            formatter.write_dl(rows)
        self.format_epilog(ctx, formatter)

    def main(self, args: list[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> int:
        """Run the command line and return its exit code (exit with it when standalone, as click does);
        a mistake is one line, in argparse's words, and exit code 2."""
        try:
            code = super().main(args, prog_name or self.name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            code = _error(_prog(exc.ctx), f"{_in_argparse_words(exc)} (see --help)")
        except UsageError as exc:
            code = _error("crawler", str(exc))
        if standalone_mode:
            sys.exit(code)
        return code


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    try:
        installed = version("crawler")
    except PackageNotFoundError:  # run from a checkout that was never installed
        installed = "unknown (not installed)"
    print(f"crawler {installed}")
    ctx.exit()


@click.group(cls=CrawlerGroup, name="crawler", default=DEFAULT_COMMAND, default_if_no_args=True,
             context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nexamples:\n  crawler crawl.toml --offline\n  crawler top top100 --limit 10\n"
                    "  crawler history 霸王别姬 --plot bawang.png")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="print the installed version and exit")
def cli() -> None:
    """Crawl ranked movie boards (Maoyan, Douban) into SQLite; every run is kept."""


def main(argv: list[str] | None = None) -> int:
    """`crawler` and `python -m crawler`: the exit code, for the caller to exit with."""
    return cli.main(argv, standalone_mode=False)


# -- crawling ------------------------------------------------------------------------------

def stats_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """One run's stats as a one-row table, shared by the crawl's summary and `stats`."""
    return [{"run": stats.get("id") or stats.get("run_id"), "status": stats["status"],
             "pages ok": stats["pages_ok"], "retried": stats["pages_retried"], "failed": stats["pages_failed"],
             "blocked": stats["pages_blocked"], "records": stats["records"], "new entries": stats["new_entries"],
             "elapsed s": stats["elapsed"], "pages/s": stats["pages_per_second"]}]


def summary(result: CrawlResult, db_path: str) -> str:
    """What a crawl did, in the words a user acts on: counts, the pages not stored, the sites blocking."""
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


@cli.command(DEFAULT_COMMAND, cls=Command, short_help="crawl the boards CONFIG names (the default command)",
             epilog="\b\nexamples:\n  crawler crawl.toml --offline\n  crawler crawl crawl.toml --resume")
@click.argument("config")
@click.option("--db", metavar="PATH", help="SQLite database to write (default: 'database' in the config)")
@click.option("--offline", is_flag=True,
              help="serve every page from the bundled fixtures/ instead of the sites (no network)")
@click.option("--fixtures", metavar="DIR",
              help="serve every page from this fixture folder (implies --offline), e.g. one made by --record")
@click.option("--record", metavar="DIR",
              help="also write every page fetched into DIR in the fixtures format, to replay offline")
@click.option("--workers", type=Whole(MAX_WORKERS), metavar="N",
              help=f"downloads at once: processes, threads or Dask threads, 1 to {MAX_WORKERS} "
                   f"(default: crawl.workers)")
@click.option("--pool", type=OneOf(POOL_KINDS),
              help="where downloads run: process (default), thread, or dask (see crawl.pool)")
@click.option("--dask-scheduler", metavar="ADDRESS",
              help="with --pool dask: a running scheduler, e.g. tcp://10.0.0.5:8786 "
                   "(default: crawl.dask_scheduler; empty starts a local cluster)")
@click.option("--resume", cls=OptionalValue, type=Whole(words=("latest",)), is_flag=False, flag_value="latest",
              metavar="[RUN_ID]",
              help="complete an unfinished run, fetching only the pages it lacks (default: the latest)")
@click.option("-q", "--quiet", is_flag=True, callback=_not_with("verbose"), help="no progress, only the summary")
@click.option("-v", "--verbose", is_flag=True, callback=_not_with("quiet"), help="a line for every page")
def crawl_command(config: str, db: str | None, offline: bool, fixtures: str | None, record: str | None,
                  workers: int | None, pool: str | None, dask_scheduler: str | None, resume: int | str | None,
                  quiet: bool, verbose: bool) -> int:
    """Crawl the boards CONFIG (e.g. crawl.toml) names into SQLite; every run is kept."""
    db_path = db
    try:
        settings = load_config(config)
        settings = replace(settings, pool=pool or settings.pool,
                           dask_scheduler=settings.dask_scheduler if dask_scheduler is None else dask_scheduler)
        db_path = db or settings.database
        result = crawl(settings, db_path=db_path, offline=offline, fixtures=fixtures, workers=workers,
                       resume=resume, record=record, progress=Progress(quiet=quiet, verbose=verbose))
    except (CrawlerError, OSError) as exc:
        return _error("crawler", str(exc))
    except Interrupted as stop:
        if stop.reason:
            print(f"crawler: error: {stop.reason}", file=sys.stderr)
        if stop.at_once:
            print("crawler: stopped at once; the pages that were still downloading were abandoned",
                  file=sys.stderr)
        print(summary(stop.result, db_path), file=sys.stderr)
        print(f"resume with: python -m crawler {config}{' --db ' + db if db else ''} "
              f"--resume {stop.result.run_id}", file=sys.stderr)
        return 128 + stop.signum if stop.signum else EXIT_INCOMPLETE
    except KeyboardInterrupt:  # before the crawl could set up its own handling: nothing started
        print("crawler: stopped", file=sys.stderr)
        return EXIT_SIGINT
    except Exception as exc:  # a fault of the crawler's own: the run is marked failed, not left running
        if verbose:
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


class DatabaseCommand(Command):
    """A command over the database, which it opens before the command runs and closes after:
    read-only (nothing is ever created, changed or converted), or for writing (`writes`) only when
    the file exists. A failure is one line naming the command."""

    def __init__(self, *args: Any, writes: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes = writes

    def _open(self, path: str) -> sqlite_utils.Database:
        if not self.writes:
            return open_readonly(path)
        if not Path(path).is_file():
            raise StoreError(f"no database at {path}: crawl first (python -m crawler crawl.toml) or pass --db PATH")
        return open_db(path)

    def invoke(self, ctx: click.Context) -> int:
        params = dict(ctx.params)
        path = params.pop("db")
        db = None
        try:
            path = path or _default_db()
            db = self._open(path)
            ctx.invoke(self.callback, db, **params)
        except CrawlerError as exc:
            return _error(ctx.command_path, str(exc))
        except sqlite3.Error as exc:
            return _error(ctx.command_path, str(database_error(path, exc)))
        except BrokenPipeError:  # `crawler export ... | head`: the reader has what it wanted
            _drop_stdout()
        finally:
            if db is not None and self.writes:
                close_db(db)
            elif db is not None:
                db.conn.close()
        return EXIT_OK


def database_command(name: str, summary: str, description: str, example: str,
                     formats: tuple[str, ...] = output.FORMATS, writes: bool = False
                     ) -> Callable[[Callable[..., None]], click.Command]:
    """Define a command over the database, called with the open database, then --format (when it
    prints rows) and its own parameters. `summary` is its line in `crawler --help`."""
    def define(function: Callable[..., None]) -> click.Command:
        if formats:
            function = click.option("--format", "fmt", type=OneOf(formats), default=formats[0],
                                    help=f"output format (default: {formats[0]})")(function)
        function = click.option("--db", metavar="PATH",
                                help="the database (default: the one named in ./crawl.toml, else movies.db)")(function)
        return cli.command(name, cls=DatabaseCommand, writes=writes, short_help=summary, help=description,
                           epilog=f"\b\nexample: {example}")(function)
    return define


RUN = click.argument("run", required=False, type=Whole())


@database_command("runs", "the runs, newest first", "List the runs, newest first, with status and counts.",
                  "crawler runs")
def _runs(db: sqlite_utils.Database, fmt: str) -> None:
    _print(query.runs(db), fmt)


@database_command("stats", "a run's stats (default: the latest)",
                  "Print a run's stats: pages ok/retried/failed/blocked, records, new entries, elapsed, "
                  "pages/s. RUN: the run's id (default: the latest).", "crawler stats 3")
@RUN
def _stats(db: sqlite_utils.Database, fmt: str, run: int | None) -> None:
    _print(stats_rows(query.run_stats(db, run)), fmt)


@database_command("top", "a board as it stood in a run",
                  f"Show a board as it stood in a run. BOARD: one of {', '.join(query.board_names())}.",
                  "crawler top top250 --limit 10")
@click.argument("board")
@click.option("--run", type=Whole(), metavar="RUN", help="run id (default: the latest run with this board)")
@click.option("--limit", type=Whole(), metavar="N", help="only the first N ranks")
def _top(db: sqlite_utils.Database, fmt: str, board: str, run: int | None, limit: int | None) -> None:
    _print(query.top(db, board, run, limit), fmt)


@database_command("history", "rank and score of one movie across runs (--plot FILE.png)",
                  "Show one movie's rank and score in every run: TITLE_OR_MOVIE_ID is its exact title, or "
                  "the site's movie id.", "crawler history 霸王别姬 --board top100 --plot bawang.png")
@click.argument("movie", metavar="TITLE_OR_MOVIE_ID")
@click.option("--board", help="only this board")
@click.option("--plot", metavar="FILE", help="also draw rank over time (rank 1 at the top), a line per board, "
              "as FILE.png, FILE.svg or FILE.pdf (needs the plot extra: matplotlib)")
def _history(db: sqlite_utils.Database, fmt: str, movie: str, board: str | None, plot: str | None) -> None:
    if plot:  # refused before any work: a name of another format, or no matplotlib
        check_plot_path(plot)
        require_matplotlib()
    rows = query.history(db, movie, board)
    if plot:
        try:
            plot_history(rows, plot)
        except OSError as exc:
            raise UsageError(f"cannot write {plot}: {exc.strerror or exc}") from None
        print(f"plot written to {plot}", file=sys.stderr)
    _print(rows, fmt)


@database_command("diff", "what entered, left, moved or changed score between two runs",
                  "What entered, left, moved up or down, or changed score between two runs. BOARD: only this "
                  "board (default: every board both runs have).", "crawler diff top100 --from 1 --to 3")
@click.argument("board", required=False)
@click.option("--from", "from_run", type=Whole(), metavar="RUN", help="older run (default: the one before --to)")
@click.option("--to", "to_run", type=Whole(), metavar="RUN", help="newer run (default: the latest)")
def _diff(db: sqlite_utils.Database, fmt: str, board: str | None, from_run: int | None, to_run: int | None) -> None:
    rows = query.diff(db, board, from_run, to_run)
    if not rows and fmt == "table":
        print("no changes", file=sys.stderr)
    _print(rows, fmt)


@database_command("search", "movies by title, other titles or actors",
                  "Find movies by title, other titles or actors (full-text; TEXT of three characters or "
                  "more uses the index).", "crawler search 张国荣")
@click.argument("text")
def _search(db: sqlite_utils.Database, fmt: str, text: str) -> None:
    _print(query.search(db, text), fmt)


@database_command("export", "every record of a run as csv, json or jsonl",
                  "Write every record of a run as csv, json or jsonl.",
                  "crawler export --format csv --out run3.csv --run 3", formats=("csv", "json", "jsonl"))
@click.option("--run", type=Whole(), metavar="RUN", help="run id (default: the latest)")
@click.option("--out", metavar="FILE", help="write to FILE instead of standard output")
def _export(db: sqlite_utils.Database, fmt: str, run: int | None, out: str | None) -> None:
    rows = query.export_rows(db, run)
    _print(rows, fmt, out)
    if out:
        print(f"{len(rows)} records written to {out}", file=sys.stderr)


@database_command("compare", "Maoyan TOP100 against Douban Top 250",
                  "Maoyan TOP100 against Douban Top 250, joined on title and year: films on both and how "
                  "their ranks differ.", "crawler compare --format csv")
def _compare(db: sqlite_utils.Database, fmt: str) -> None:
    rows = query.compare(db)
    _print(rows, fmt)
    if fmt == "table":
        print(f"{len(rows)} films on both boards", file=sys.stderr)


@database_command("pages", "the pages a run did not store, and why (--all: every page)",
                  "List the pages of a run that were not stored, with the reason (failed, blocked, or never "
                  "fetched). RUN: the run's id (default: the latest).", "crawler pages 3 --all")
@RUN
@click.option("--all", "every", is_flag=True, help="every page of the run, stored or not")
def _pages(db: sqlite_utils.Database, fmt: str, run: int | None, every: bool) -> None:
    rows = query.pages(db, run, every)
    if not rows and fmt == "table":
        print("every page of the run was stored", file=sys.stderr)
    _print(rows, fmt)


@database_command("reparse", "re-run today's parsers over a run's stored pages",
                  "Re-run today's parsers over a run's stored pages and replace its records; no site is "
                  "asked. RUN: the run's id (default: the latest).", "crawler reparse 3", formats=(), writes=True)
@RUN
def _reparse(db: sqlite_utils.Database, run: int | None) -> None:
    result = reparse(db, query.resolve_run(db, run))
    print(f"run {result.run_id}: {result.pages} stored pages parsed again, {result.pages_ok} ok; "
          f"records {result.records_before} -> {result.records_after}")
