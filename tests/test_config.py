"""Config errors are one clear line and exit 2, through the real CLI; the defaults are defined
once (crawler/config.py), and crawl.toml and the README's table show the same."""
from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest

from crawler.config import CRAWL_KEYS, TOP_KEYS, ConfigError, defaults, load_config, parse_config, site_keys
from crawler.sites import SITES
from tests.helpers import REPO, run_cli, write_config


def toml_value(value: Any) -> str:
    """A value as it is written in TOML (inline tables on one line), as crawl.toml and the README show it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }" if value else "{}"
    return repr(value)


def config_table() -> str:
    """The README's table of every key and its default, made from crawler/config.py."""
    rows = [(name, f"`{toml_value(key.default)}`", key.about) for name, key in TOP_KEYS.items()]
    rows += [(f"crawl.{name}", f"`{toml_value(key.default)}`", key.about) for name, key in CRAWL_KEYS.items()]
    per_site = {site: site_keys(site) for site in SITES}
    for name, key in site_keys(next(iter(SITES))).items():
        shown = {site: toml_value(keys[name].default) for site, keys in per_site.items()}
        default = (f"`{next(iter(shown.values()))}`" if len(set(shown.values())) == 1
                   else "; ".join(f"{site}: `{value}`" for site, value in shown.items()))
        rows.append((f"sites.NAME.{name}", default, key.about))
    return "\n".join(["| key | default | what it sets |", "|---|---|---|",
                      *(f"| `{name}` | {default} | {about} |" for name, default, about in rows)])


def dotted(config: dict[str, Any]) -> dict[str, Any]:
    """A parsed config as `database`, `crawl.KEY` and `sites.SITE.KEY` -> value."""
    flat = {name: value for name, value in config.items() if name not in ("crawl", "sites")}
    flat.update({f"crawl.{name}": value for name, value in config.get("crawl", {}).items()})
    flat.update({f"sites.{site}.{name}": value for site, table in config.get("sites", {}).items()
                 for name, value in table.items()})
    return flat


def test_crawl_toml_shows_every_key_at_its_default():
    text = (REPO / "crawl.toml").read_text(encoding="utf-8")
    given, wanted = dotted(tomllib.loads(text)), dotted(defaults())
    assert given.keys() <= wanted.keys(), f"crawl.toml sets keys the config does not know: {given.keys() - wanted.keys()}"
    assert given == {name: wanted[name] for name in given}
    for name in wanted.keys() - given.keys():  # left commented out, as a line a user can uncomment
        assert re.search(rf"^# {re.escape(name.rsplit('.', 1)[-1])} = ", text, re.M), f"crawl.toml does not show {name}"


def test_a_table_left_empty_means_the_defaults():
    config = parse_config("".join(f"[sites.{site}]\n" for site in SITES), "empty.toml")
    wanted = defaults()
    assert config.database == wanted["database"]
    assert {name: getattr(config, name) for name in CRAWL_KEYS} == wanted["crawl"]
    assert {site.name: {"base_url": site.base_url, "boards": list(site.boards), "headers": site.headers,
                        "cookies": site.cookies, "obey_robots": site.obey_robots,
                        "font_hosts": list(site.font_hosts)}
            for site in config.sites} == wanted["sites"]


def test_readme_lists_every_key_with_its_default():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = config_table()
    assert table in readme, f"README.md's config table is not crawler/config.py's; it should read:\n\n{table}\n"


def test_default_config_crawls_every_board():
    config = load_config(REPO / "crawl.toml")
    boards = {site.name: site.boards for site in config.sites}
    assert boards == {"maoyan": ("top100", "hot", "most-wanted", "cn-box-office", "na-box-office"),
                      "douban": ("top250",)}
    assert config.database == "movies.db"
    assert "Mozilla/5.0" in config.user_agent
    assert config.request_timeout == 10.0 and config.delay_per_host == 1.0


def test_defaults_fill_what_is_left_out():
    config = parse_config('[sites.douban]\n')
    assert config.sites[0].boards == ("top250",)
    assert config.sites[0].base_url == "https://movie.douban.com"
    assert config.workers == 4 and config.max_attempts == 3 and isinstance(config.page_deadline, float)


def test_board_can_be_switched_off_and_base_url_moved():
    config = parse_config('[sites.maoyan]\nbase_url = "http://127.0.0.1:8000/"\nboards = ["hot"]\n')
    assert config.sites[0].boards == ("hot",)
    assert config.sites[0].base_url == "http://127.0.0.1:8000"


@pytest.mark.parametrize("text, message", [
    ('databse = "x.db"\n[sites.douban]\n', "unknown key 'databse'"),
    ('[crawl]\nworkers = "four"\n[sites.douban]\n', "crawl.workers must be a whole number"),
    ('[crawl]\nworkers = true\n[sites.douban]\n', "crawl.workers must be a whole number"),
    ('[crawl]\nworkers = 0\n[sites.douban]\n', "crawl.workers must be at least 1"),
    ('[crawl]\ndelay = 1\n[sites.douban]\n', "unknown key 'delay' in [crawl]"),
    ('[crawl]\nstart_method = "thread"\n[sites.douban]\n', "crawl.start_method must be one of"),
    ('[crawl]\npool = "fibers"\n[sites.douban]\n', "crawl.pool must be one of process, thread, dask, not 'fibers'"),
    ('[sites.imdb]\n', "unknown site 'sites.imdb'"),
    ('[sites.maoyan]\nboards = ["top250"]\n', "unknown board 'top250' in sites.maoyan.boards"),
    ('[sites.maoyan]\nheaders = { Referer = 3 }\n', "sites.maoyan.headers.Referer must be a string"),
    ('[sites.maoyan]\nbase_url = "ftp://x"\n', "sites.maoyan.base_url must start with http"),
    ('[sites.maoyan\n', "is not valid TOML"),
    ('database = "x.db"\n', "names no board to crawl"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, text, message):
    config = write_config(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=None) as error:
        load_config(config)
    assert message in str(error.value)
    result = run_cli(str(config), "--db", str(tmp_path / "m.db"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.db").exists()


def test_missing_config_file(tmp_path):
    result = run_cli(str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr == f"crawler: error: config file not found: {tmp_path / 'nope.toml'}\n"


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers: must be at least 1"),
    (["--workers", "x"], "--workers: must be a whole number"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    result = run_cli("crawl.toml", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_no_arguments_says_what_is_missing():
    result = run_cli()
    assert result.returncode == 2
    assert "the following arguments are required: config" in result.stderr
