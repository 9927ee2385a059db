"""Config errors are one clear line and exit 2, through the real CLI."""
from __future__ import annotations

import pytest

from crawler.config import ConfigError, load_config, parse_config
from tests.conftest import REPO, run_cli, write_config


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
