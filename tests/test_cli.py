"""The command line in process (click's CliRunner): what each command prints in each format, its
one-line errors and exit codes, --help, --version, the suggestion for an unknown word, and the
crawl as the default command. Signals, the console script and output to closed pipes or full
devices need a real process: those tests are in test_user_input.py, test_crawl.py and
test_faults.py."""
from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from crawler import cli as cli_module
from crawler.cli import cli
from crawler.config import ConfigError, load_config
from crawler.scheduler import CrawlResult, Interrupted, crawl
from tests.helpers import OFFLINE, REPO, rows

# The read commands that print rows from one crawl (diff's, with one run, has none: see below).
READ_COMMANDS = [("runs",), ("stats",), ("top", "top100"), ("history", "霸王别姬"), ("search", "张国荣"), ("export",),
                 ("compare",), ("pages", "--all")]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database made by one offline crawl of crawl.toml, never written by the tests that use it."""
    path = tmp_path_factory.mktemp("cli") / "movies.db"
    result = crawl(load_config(REPO / "crawl.toml"), str(path), offline=True)
    assert (result.status, result.records) == ("ok", OFFLINE.records)
    return path


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def read(db: Path, *args: str | Path) -> Result:
    result = invoke(*args, "--db", db)
    assert result.exit_code == 0, result.stderr
    return result


def as_rows(result: Result, fmt: str) -> list[dict]:
    text = result.stdout
    if fmt == "json":
        return json.loads(text)
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text)))


def error_line(result: Result, code: int = 2) -> str:
    """The one line a mistake prints on stderr (nothing on stdout)."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    return result.stderr.rstrip("\n")


# -- what every command prints ---------------------------------------------------------------

@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_every_format_holds_the_same_rows(db, command):
    formats = ("csv", "json", "jsonl") if command[0] == "export" else ("table", "csv", "json", "jsonl")
    parsed = {fmt: as_rows(read(db, *command, "--format", fmt), fmt) for fmt in formats if fmt != "table"}
    assert len(parsed["json"]) > 0
    assert parsed["json"] == parsed["jsonl"]
    assert [list(row) for row in parsed["csv"]] == [list(row) for row in parsed["json"]]  # same columns, in order
    assert [row for row in parsed["csv"]] == [{k: "" if v is None else str(v) for k, v in row.items()}
                                              for row in parsed["json"]]
    if "table" in formats:
        header, rule, *lines = read(db, *command).stdout.splitlines()
        assert header.split()[0] == next(iter(parsed["json"][0])).split()[0] and set(rule) <= {"-", " "}
        assert len(lines) == len(parsed["json"])


def test_export_writes_csv_by_default(db):
    result = read(db, "export")
    assert result.stdout.splitlines()[0].startswith("run_id,site,board,rank,")
    assert len(result.stdout.splitlines()) == 1 + OFFLINE.records


def test_read_commands_show_the_run_they_read(db):
    offline = (OFFLINE.pages, OFFLINE.records)
    [run] = as_rows(read(db, "runs", "--format", "json"), "json")
    assert (run["id"], run["status"], run["pages_ok"], run["records"]) == (1, "ok", *offline)
    [stats] = as_rows(read(db, "stats", "1", "--format", "json"), "json")
    assert (stats["run"], stats["pages ok"], stats["records"], stats["new entries"]) == (1, *offline, 0)
    top = as_rows(read(db, "top", "top250", "--limit", "3", "--format", "json"), "json")
    assert [(r["rank"], r["title"]) for r in top] == [(1, "肖申克的救赎"), (2, "霸王别姬"), (3, "泰坦尼克号")]
    history = as_rows(read(db, "history", "霸王别姬", "--board", "top100", "--format", "json"), "json")
    assert [(h["run_id"], h["board"], h["rank"]) for h in history] == [(1, "top100", 5)]
    found = as_rows(read(db, "search", "张国荣", "--format", "json"), "json")
    assert {"霸王别姬", "阿飞正传"} <= {r["title"] for r in found}


def test_what_is_said_beside_the_rows_goes_to_stderr(db):
    compare = read(db, "compare")
    films = len(as_rows(read(db, "compare", "--format", "json"), "json"))
    assert compare.stderr == f"{films} films on both boards\n"
    assert read(db, "pages").stderr == "every page of the run was stored\n"
    assert read(db, "diff", "--from", "1", "--to", "1").stderr == "no changes\n"
    assert read(db, "diff", "--from", "1", "--to", "1", "--format", "csv").stdout.startswith("from_run,to_run,change,")


def test_export_to_a_file_says_how_many(db, tmp_path):
    out = tmp_path / "run1.jsonl"
    result = read(db, "export", "--format", "jsonl", "--run", "1", "--out", out)
    assert result.stdout == "" and result.stderr == f"{OFFLINE.records} records written to {out}\n"
    assert len(out.read_text(encoding="utf-8").splitlines()) == OFFLINE.records


def test_reparse_writes_and_says_what_it_did(db, tmp_path):
    copy = tmp_path / "movies.db"
    shutil.copyfile(db, copy)
    result = read(copy, "reparse")
    pages, records = OFFLINE.pages, OFFLINE.records
    assert result.stdout == f"run 1: {pages} stored pages parsed again, {pages} ok; records {records} -> {records}\n"
    assert rows(copy, "select count(*) n from records") == [{"n": records}]


def test_the_database_defaults_to_the_one_in_this_folders_crawl_toml(db, tmp_path, monkeypatch):
    (tmp_path / "crawl.toml").write_text(f'database = "{db}"\n[sites.douban]\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = invoke("runs", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [run["id"] for run in json.loads(result.stdout)] == [1]


# -- history --plot ---------------------------------------------------------------------------

def test_history_plot_draws_the_file_and_prints_the_rows(db, tmp_path):
    png = tmp_path / "rank.png"
    result = read(db, "history", "霸王别姬", "--plot", png)
    assert png.read_bytes().startswith(b"\x89PNG") and result.stderr == f"plot written to {png}\n"
    assert "霸王别姬" in result.stdout


def test_history_plot_without_matplotlib_says_how_to_install_it(db, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails, as when it is absent
    png = tmp_path / "rank.png"
    line = error_line(invoke("history", "霸王别姬", "--plot", png, "--db", db))
    assert line == ("crawler history: error: --plot needs matplotlib: pip install 'crawler[plot]' "
                    "(from a checkout: pip install -e '.[plot]')")
    assert list(tmp_path.iterdir()) == []


def test_history_plot_refuses_a_name_of_another_format_first(db, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    line = error_line(invoke("history", "霸王别姬", "--plot", tmp_path / "rank.gif", "--db", db))
    assert line.startswith("crawler history: error: cannot draw ") and line.endswith(".png, .svg or .pdf")


# -- mistakes: one line, the command's name, exit code 2 ------------------------------------

@pytest.mark.parametrize("args, line", [
    (("top", "nope"), "crawler top: error: unknown board 'nope'"),
    (("stats", "7"), "crawler stats: error: no run 7 in this database"),
    (("top", "hot", "--run", "9"), "crawler top: error: no run 9 in this database"),
    (("history", "no such film"), "crawler history: error: no movie titled or with id 'no such film'"),
    (("diff", "--to", "1"), "crawler diff: error: nothing to compare run 1 with"),
    (("export", "--out", "/no/such/folder/x.csv"), "crawler export: error: cannot write /no/such/folder/x.csv"),
    (("reparse", "9"), "crawler reparse: error: no run 9 in this database"),
])
def test_a_request_the_database_cannot_answer(db, args, line):
    assert error_line(invoke(*args, "--db", db)).startswith(line)


@pytest.mark.parametrize("command", ["runs", "reparse"])
def test_a_missing_database_is_named_and_not_made(tmp_path, command):
    missing = tmp_path / "none.db"
    line = error_line(invoke(command, "--db", missing))
    assert line.startswith(f"crawler {command}: error: no database at {missing}")
    assert not missing.exists()


def test_a_file_of_another_program_is_refused(tmp_path):
    other = tmp_path / "other.db"
    other.write_bytes(b"")
    assert error_line(invoke("runs", "--db", other)) == f"crawler runs: error: {other} is not a crawler database"


@pytest.fixture
def no_crawl(monkeypatch):
    """The crawl must not start: a mistake on the command line is refused before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the crawl started")
    monkeypatch.setattr(cli_module, "crawl", refuse)


@pytest.mark.parametrize("args, line", [
    ((), "crawler: error: the following arguments are required: config (see --help)"),
    (("crawl.toml", "--workers", "0"), "crawler: error: argument --workers: must be at least 1, not 0 (see --help)"),
    (("crawl.toml", "--workers", "129"), "crawler: error: argument --workers: must be at most 128, not 129 (see --help)"),
    (("crawl.toml", "--workers", "four"), "crawler: error: argument --workers: must be a whole number, not 'four' "
                                          "(see --help)"),
    (("crawl.toml", "--pool", "fibers"), "crawler: error: argument --pool: invalid choice: 'fibers' "
                                         "(choose from 'process', 'thread', 'dask') (see --help)"),
    (("crawl.toml", "-q", "-v"), "crawler: error: argument -v/--verbose: not allowed with argument -q/--quiet "
                                 "(see --help)"),
    (("crawl.toml", "-v", "-q"), "crawler: error: argument -q/--quiet: not allowed with argument -v/--verbose "
                                 "(see --help)"),
    (("crawl.toml", "--bogus", "x"), "crawler: error: unrecognized arguments: --bogus x (see --help)"),
    (("crawl.toml", "--record", "--offline"), "crawler: error: argument --record: expected one argument (see --help)"),
    (("crawl.toml", "--db"), "crawler: error: argument --db: expected one argument (see --help)"),
    (("crawl.toml", "--offline=yes"), "crawler: error: argument --offline: ignored explicit argument 'yes' "
                                      "(see --help)"),
    (("crawl.toml", "--re"), "crawler: error: ambiguous option: --re could match --record, --resume (see --help)"),
    (("crawl.toml", "--resume", "9223372036854775808"), "crawler: error: argument --resume: must be at most "
                                                        "9223372036854775807, not 9223372036854775808 (see --help)"),
    (("crawl",), "crawler: error: the following arguments are required: config (see --help)"),
    (("top",), "crawler top: error: the following arguments are required: board (see --help)"),
    (("history",), "crawler history: error: the following arguments are required: TITLE_OR_MOVIE_ID (see --help)"),
    (("top", "hot", "--format", "xml"), "crawler top: error: argument --format: invalid choice: 'xml' "
                                        "(choose from 'table', 'csv', 'json', 'jsonl') (see --help)"),
    (("export", "--format", "table"), "crawler export: error: argument --format: invalid choice: 'table' "
                                      "(choose from 'csv', 'json', 'jsonl') (see --help)"),
    (("stats", "-5"), "crawler stats: error: argument run: must be at least 1, not -5 (see --help)"),
    (("top", "hot", "--limit", "0"), "crawler top: error: argument --limit: must be at least 1, not 0 (see --help)"),
    (("stats", "1", "2"), "crawler: error: unrecognized arguments: 2 (see --help)"),
    (("runs", "--bogus"), "crawler: error: unrecognized arguments: --bogus (see --help)"),
])
def test_a_mistake_on_the_command_line_is_one_line(no_crawl, args, line):
    assert error_line(invoke(*args)) == line


@pytest.mark.parametrize("word, hint", [
    ("stat", "did you mean 'stats'?"), ("seach", "did you mean 'search'?"), ("crawll", "did you mean 'crawl'?"),
    ("xyzzy", "commands: runs, stats, top, history, diff, search, export, compare, pages, reparse"),
])
def test_an_unknown_word_gets_the_closest_command(no_crawl, tmp_path, monkeypatch, word, hint):
    monkeypatch.chdir(tmp_path)
    expected = f"crawler: error: unknown command or config file '{word}' ({hint})"
    assert error_line(invoke(word)) == expected
    assert error_line(invoke("crawl", word, "--offline")) == expected


def test_a_name_ending_in_toml_or_an_existing_file_is_a_config(no_crawl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert error_line(invoke("stat.toml")) == "crawler: error: config file not found: stat.toml"
    (tmp_path / "stat").write_text("[crawl]\nworkers = 'four'\n[sites.douban]\n", encoding="utf-8")
    assert error_line(invoke("stat")) == "crawler: error: crawl.workers must be a whole number, not 'four'"


# -- the crawl is the default command -------------------------------------------------------

@pytest.fixture
def crawls(monkeypatch):
    """Stand in for the library's crawl: note each call and answer what the test sets (a result, or
    an exception to raise), so that the CLI's part, arguments in and exit code out, is what runs."""
    calls: list[dict] = []
    answer: dict[str, object] = {"with": CrawlResult(7, "ok", 26, 0, 0, 410, 1.5)}

    def fake(config, **kwargs):
        calls.append({"config": config.path, "pool": config.pool, **kwargs})
        if isinstance(answer["with"], BaseException):
            raise answer["with"]
        return answer["with"]
    monkeypatch.setattr(cli_module, "crawl", fake)
    return calls, answer


@pytest.mark.parametrize("words", [
    ("crawl.toml",), ("crawl", "crawl.toml"), ("--offline", "crawl.toml"), ("crawl", "--offline", "crawl.toml"),
])
def test_crawler_config_and_crawler_crawl_config_are_one_command(crawls, tmp_path, monkeypatch, words):
    calls, _ = crawls
    monkeypatch.chdir(REPO)
    db = tmp_path / "m.db"
    result = invoke(*words, "--offline", "--db", db, "--workers", "2", "--pool", "thread", "--resume", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"run 7 ok: 26 pages ok, 0 failed, 0 blocked; 410 records stored in {db}")
    [call] = calls
    assert (call["config"], call["pool"], call["db_path"], call["offline"], call["workers"], call["resume"]) == (
        "crawl.toml", "thread", str(db), True, 2, "latest")
    assert (call["fixtures"], call["record"], call["progress"].quiet) == (None, None, True)


def test_long_options_may_be_shortened_as_argparse_allowed(crawls, monkeypatch):
    calls, _ = crawls
    monkeypatch.chdir(REPO)
    assert invoke("crawl.toml", "--off", "--wor", "3", "--res", "5", "--qu").exit_code == 0
    [call] = calls
    assert (call["offline"], call["workers"], call["resume"], call["progress"].quiet) == (True, 3, 5, True)


@pytest.mark.parametrize("answer, code, said", [
    (CrawlResult(7, "ok", 26, 0, 0, 410, 1.5), 0, "run 7 ok"),
    (CrawlResult(7, "partial", 25, 1, 0, 400, 1.5, failures=[("https://x.test/1", "HTTP 404")]), 1,
     "  not stored: https://x.test/1: HTTP 404"),
    (CrawlResult(7, "partial", 12, 0, 14, 160, 1.5, blocked_sites=["maoyan"], blocks={"maoyan": 14}), 3,
     "maoyan is blocking the crawler (14 pages blocked)"),
    (ConfigError("--record: cannot write to notes.txt: File exists"), 2,
     "crawler: error: --record: cannot write to notes.txt: File exists"),
    (Interrupted(CrawlResult(7, "interrupted", 8, 0, 0, 80, 1.5), signal.SIGINT), 130,
     "resume with: python -m crawler crawl.toml --resume 7"),
    (Interrupted(CrawlResult(7, "interrupted", 8, 0, 0, 80, 1.5), signal.SIGTERM, at_once=True), 143,
     "crawler: stopped at once; the pages that were still downloading were abandoned"),
    (KeyboardInterrupt(), 130, "crawler: stopped"),
    (RuntimeError("a bug"), 1, "crawler: internal error: RuntimeError('a bug')"),
])
def test_each_ending_of_a_crawl_has_its_exit_code(crawls, monkeypatch, answer, code, said):
    _, setting = crawls
    setting["with"] = answer
    monkeypatch.chdir(REPO)
    result = invoke("crawl.toml", "--offline")
    assert result.exit_code == code, result.stderr
    assert any(line.startswith(said) for line in result.stderr.splitlines()), result.stderr


# -- help and version -------------------------------------------------------------------------

def test_help_lists_every_command_with_a_line_and_examples():
    result = invoke("--help")
    assert result.exit_code == 0 and result.stdout == invoke("-h").stdout
    assert result.stdout.startswith("usage: crawler [crawl] CONFIG [OPTIONS]\n")
    lines = result.stdout.splitlines()
    for name, command in cli.commands.items():
        [row] = [line for line in lines if line.startswith(f"  {name} ") or line == f"  {name}"]
        assert command.short_help and command.short_help.split()[0] in row, row
    for option in ("--offline", "--fixtures DIR", "--resume [RUN_ID]", "--version"):
        assert option in result.stdout
    assert "examples:" in result.stdout and "crawler crawl.toml --offline" in result.stdout


@pytest.mark.parametrize("name", list(cli.commands))
def test_every_command_explains_itself(name):
    result = invoke(name, "--help")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"usage: crawler {name} ") and "example" in result.stdout


def test_version():
    try:
        installed = version("crawler")
    except PackageNotFoundError:
        installed = "unknown (not installed)"
    result = invoke("--version")
    assert (result.exit_code, result.stdout) == (0, f"crawler {installed}\n")
