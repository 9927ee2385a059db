"""A site is one module: the built-in ones declare themselves, and an installed package adds one."""
from __future__ import annotations

import json
import shutil
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from crawler.fetch import FetchResult, FetchTask
from crawler.pipeline import process
from crawler.site import CORE_FIELDS
from crawler.sites import SITES
from parsers import maoyan
from tests.helpers import FIXTURES, OFFLINE, REPO, rows, run_cli

EXAMPLE = REPO / "examples" / "example-site"
PAGE = (FIXTURES / "maoyan" / "board7.html").read_bytes()


def test_the_built_in_sites_declare_themselves():
    assert list(SITES) == ["maoyan", "douban"]
    for site in SITES.values():
        assert site.boards and site.block_statuses and site.headers["Accept-Language"]
        assert not set(site.columns) & set(CORE_FIELDS)


def test_a_field_no_column_declares_is_an_error_not_a_silent_drop():
    def adds_a_field(html: str, url: str):
        page = maoyan.parse_board(html, url)
        page.records[0]["budget"] = 1
        return page

    task = FetchTask("maoyan", "hot", "https://www.maoyan.com/board/7")
    result = FetchResult(task.url, task.url, 200, {"content-type": "text/html; charset=utf-8"}, PAGE, 0.1)
    outcome = process(task, result, replace(maoyan.SITE, parse=adds_a_field))
    assert outcome.outcome == "error"
    assert outcome.error == "parser failed: ValueError: fields the site 'maoyan' does not declare: ['budget']"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package installed into a folder of its own, laid out as an installer lays
    out a wheel (the module, and a .dist-info with METADATA and entry_points.txt taken from
    its pyproject.toml), so the crawler finds it the only way it can: by its entry point."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    target = tmp_path_factory.mktemp("site-packages")
    shutil.copy(EXAMPLE / "example_site.py", target)
    info = target / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\n"
                                   f"Version: {project['version']}\n", encoding="utf-8")
    points = project["entry-points"]["crawler.sites"]
    (info / "entry_points.txt").write_text("[crawler.sites]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()),
                                           encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def crawled(installed, tmp_path_factory) -> tuple[Path, Path]:
    """An offline crawl of the example site and Douban (both have a board called top250)."""
    folder = tmp_path_factory.mktemp("plugin")
    fixtures = folder / "fixtures"
    shutil.copytree(EXAMPLE / "fixtures", fixtures)
    shutil.copytree(FIXTURES / "douban", fixtures / "douban")
    manifest = json.loads((fixtures / "manifest.json").read_text(encoding="utf-8"))
    manifest["douban"] = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))["douban"]
    (fixtures / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    config = folder / "crawl.toml"
    config.write_text('[sites.imdb]\nboards = ["top250"]\n[sites.douban]\n', encoding="utf-8")
    db = folder / "movies.db"
    result = run_cli(str(config), "--fixtures", str(fixtures), "--db", str(db), "-q", env=plugin_path(installed))
    assert result.returncode == 0, result.stderr
    return db, installed


def plugin_path(installed: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{installed}:{REPO}"}


def test_an_installed_package_adds_a_site_that_crawls(crawled):
    db, _ = crawled
    assert rows(db, "select site, rank, title, movie_id, year, imdb_votes, score from records "
                    "where site = 'imdb' order by rank")[:2] == [
        {"site": "imdb", "rank": 1, "title": "The Shawshank Redemption", "movie_id": "tt0111161", "year": 1994,
         "imdb_votes": 3000123, "score": 9.3},
        {"site": "imdb", "rank": 2, "title": "The Godfather", "movie_id": "tt0068646", "year": 1972,
         "imdb_votes": 2100456, "score": 9.2}]
    assert rows(db, "select count(*) n from records where site = 'douban'") == [{"n": OFFLINE.records_of("douban")}]


def test_boards_are_keyed_by_site_where_two_sites_share_a_name(crawled):
    db, installed = crawled
    ambiguous = run_cli("top", "top250", "--db", str(db), env=plugin_path(installed))
    assert ambiguous.returncode == 2
    assert "board 'top250' is on douban and imdb: say which, e.g. douban/top250" in ambiguous.stderr
    imdb = run_cli("top", "imdb/top250", "--db", str(db), "--format", "json", env=plugin_path(installed))
    assert [(r["rank"], r["year"], r["imdb_votes"]) for r in json.loads(imdb.stdout)] == [
        (1, 1994, 3000123), (2, 1972, 2100456), (3, 2008, 2980789)]
    douban = run_cli("top", "douban/top250", "--limit", "1", "--db", str(db), "--format", "json",
                     env=plugin_path(installed))
    assert json.loads(douban.stdout)[0]["title"] == "肖申克的救赎"


def test_without_the_package_the_site_is_unknown(tmp_path):
    config = tmp_path / "crawl.toml"
    config.write_text('[sites.imdb]\nboards = ["top250"]\n', encoding="utf-8")
    result = run_cli(str(config), "--offline", "--db", str(tmp_path / "m.db"))
    assert result.returncode == 2 and "unknown site 'sites.imdb' (known: maoyan, douban)" in result.stderr
