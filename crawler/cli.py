"""Command line: parse arguments, call the library, print what happened. Nothing else."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config
from .scheduler import CrawlResult, Interrupted, crawl
from .store import StoreError

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # some pages were not stored
EXIT_USAGE = 2  # bad arguments, config or database path
EXIT_BLOCKED = 3  # a site refused the crawler
EXIT_SIGINT = 130  # stopped with Ctrl-C (128 + the signal's number, as shells report it)
SHOWN_FAILURES = 10


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crawler",
        description="Crawl ranked movie boards (Maoyan, Douban) into SQLite; every run is kept.",
        epilog="example: crawler crawl.toml --offline --db /tmp/movies.db",
    )
    parser.add_argument("config", help="the crawl's TOML config, e.g. crawl.toml")
    parser.add_argument("--db", metavar="PATH", help="SQLite database to write (default: 'database' in the config)")
    parser.add_argument("--offline", action="store_true",
                        help="serve every page from the bundled fixtures/ instead of the sites (no network)")
    parser.add_argument("--workers", type=_positive, metavar="N",
                        help="download processes (default: crawl.workers in the config)")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                        help="complete an interrupted run, fetching only the pages it lacks "
                             "(default: the latest interrupted run)")
    return parser


def _run_id(text: str | None) -> int | str | None:
    if text is None or text == "latest":
        return text
    if not text.isdigit():
        raise ValueError(f"--resume takes a run id (a whole number), not {text!r}")
    return int(text)


def summary(result: CrawlResult, db_path: str) -> str:
    lines = [
        f"run {result.run_id} {result.status}: {result.pages_ok} pages ok, {result.pages_failed} failed, "
        f"{result.pages_blocked} blocked; {result.records} records stored in {db_path} "
        f"in {result.elapsed:.1f} s",
    ]
    for url, error in result.failures[:SHOWN_FAILURES]:
        lines.append(f"  not stored: {url}: {error}")
    if len(result.failures) > SHOWN_FAILURES:
        lines.append(f"  ... and {len(result.failures) - SHOWN_FAILURES} more (see the pages table)")
    for site in result.blocked_sites:
        seen = result.blocked_pages.get(site)
        lines.append(f"{site} is blocking the crawler{' (its page: ' + seen + ')' if seen else ''}: "
                     f"wait before the next run, raise crawl.delay_per_host, or put your browser's "
                     f"cookies in [sites.{site}.cookies]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resume = _run_id(args.resume)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        config = load_config(args.config)
        db_path = args.db or config.database
        result = crawl(config, db_path=db_path, offline=args.offline, workers=args.workers, resume=resume)
    except (ConfigError, StoreError) as exc:
        print(f"crawler: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as stop:
        print(summary(stop.result, db_path), file=sys.stderr)
        print(f"resume with: python -m crawler {args.config}{' --db ' + args.db if args.db else ''} "
              f"--resume {stop.result.run_id}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("crawler: stopped at once; the run is marked interrupted and can be resumed with --resume",
              file=sys.stderr)
        return EXIT_SIGINT
    print(summary(result, db_path), file=sys.stderr)
    if result.blocked_sites:
        return EXIT_BLOCKED
    return EXIT_OK if result.status == "ok" else EXIT_INCOMPLETE
