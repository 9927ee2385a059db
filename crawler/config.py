"""Read and check crawl.toml, so that every mistake in it is one clear line before any work starts."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pools import DASK_CONNECT_TIMEOUT, POOL_KINDS
from .sites import BROKEN, SITES
from .errors import CrawlerError

DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
START_METHODS = ("default", "fork", "forkserver", "spawn")
# Downloads at once. Beyond this, more processes or threads only cost memory and start-up:
# the limits per host, not the workers, bound a polite crawl.
MAX_WORKERS = 128


class ConfigError(CrawlerError):
    """A config that cannot be used; the message names the file or the key."""


@dataclass(frozen=True)
class SiteConfig:
    name: str
    base_url: str
    boards: tuple[str, ...]
    headers: dict[str, str]
    cookies: dict[str, str]
    obey_robots: bool
    font_hosts: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    path: str
    database: str
    workers: int
    pool: str
    dask_scheduler: str
    dask_timeout: float
    start_method: str
    request_timeout: float
    page_deadline: float
    max_attempts: int
    retry_backoff: float
    delay_per_host: float
    max_in_flight_per_host: int
    max_page_bytes: int
    user_agent: str
    sites: tuple[SiteConfig, ...]
    text: str  # the file as read, kept with each run


@dataclass(frozen=True)
class Key:
    """One key of the config: the types it takes, its default, and what it sets. The defaults live
    here and nowhere else; crawl.toml and the README's table show them (tests/test_config.py)."""
    kind: type | tuple[type, ...]
    default: Any
    about: str


# The Referer a browser sends when it comes from the site's own pages.

TOP_KEYS: dict[str, Key] = {
    "database": Key(str, "movies.db", "the SQLite file every run is kept in (`--db` overrides it)"),
}
CRAWL_KEYS: dict[str, Key] = {
    "workers": Key(int, 4, f"downloads at once, 1 to {MAX_WORKERS}: processes, threads or Dask threads (`--workers`)"),
    "pool": Key(str, "process", f"where downloads run: {', '.join(POOL_KINDS)} (`--pool`)"),
    "dask_scheduler": Key(str, "", "with the dask pool, a running scheduler's address; empty starts a local cluster "
                                   "(`--dask-scheduler`)"),
    "dask_timeout": Key((int, float), DASK_CONNECT_TIMEOUT, "with the dask pool, seconds the scheduler has to answer; "
                                                            "one silent for longer mid-crawl counts as lost"),
    "start_method": Key(str, "default", f"how the process pool starts processes: {', '.join(START_METHODS)}"),
    "request_timeout": Key((int, float), 10.0, "seconds to wait for a connection or the next bytes"),
    "page_deadline": Key((int, float), 60.0, "seconds one page's download may take in all"),
    "max_attempts": Key(int, 3, "tries per page for errors worth retrying"),
    "retry_backoff": Key((int, float), 1.0, "seconds before the first retry, doubled for each further one"),
    "delay_per_host": Key((int, float), 1.0, "seconds between two requests to one host"),
    "max_in_flight_per_host": Key(int, 2, "requests to one host at once"),
    "max_page_bytes": Key(int, 5_000_000, "a larger page is cut off and reported, never parsed"),
    "user_agent": Key(str, DEFAULT_USER_AGENT, "the browser the crawler says it is; robots.txt's rules are read for it"),
}


def site_keys(site: str) -> dict[str, Key]:
    """The keys of a site's table; its address and boards default to the site's own (crawler/sites.py)."""
    return {
        "base_url": Key(str, SITES[site].base_url, "where the site's pages are asked for"),
        "boards": Key(list, list(SITES[site].boards), "the boards to crawl"),
        "headers": Key(dict, {}, "sent with every request to the site, besides the site's own (its Referer, "
                                 "Accept-Language) and the User-Agent"),
        "cookies": Key(dict, {}, "sent with every request to the site (a browser's, when it asks to verify)"),
        "obey_robots": Key(bool, True, "read the site's robots.txt first and fetch nothing it disallows"),
        "font_hosts": Key(list, list(SITES[site].font_hosts), "hosts its pages' digit fonts may be fetched from"),
    }


def defaults() -> dict[str, Any]:
    """Every key with its default, shaped as the parsed TOML is. A site is crawled only when the config
    has its table; these fill what that table leaves out."""
    return {
        **{name: key.default for name, key in TOP_KEYS.items()},
        "crawl": {name: key.default for name, key in CRAWL_KEYS.items()},
        "sites": {site: {name: key.default for name, key in site_keys(site).items()} for site in SITES},
    }


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "a whole number", float: "a number", str: "a string", list: "a list", dict: "a table",
             bool: "true or false"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def _check_type(where: str, value: Any, kind: type | tuple[type, ...]) -> None:
    # bool is an int to Python, never to a user writing `workers = true`.
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise ConfigError(f"{where} must be {_type_name(kind)}, not {value!r}")


def _unknown(section: str, given: dict, known) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise ConfigError(f"unknown key {extra[0]!r} in {section} (known: {', '.join(sorted(known))})")


def _string_table(where: str, table: dict) -> dict[str, str]:
    for key, value in table.items():
        _check_type(f"{where}.{key}", value, str)
    return dict(table)


def _string_list(where: str, items: list) -> list[str]:
    for item in items:
        _check_type(f"{where} entry", item, str)
    return items


def _values(prefix: str, given: dict, keys: dict[str, Key]) -> dict[str, Any]:
    """Each key's value as given, else its default, checked against the key's types."""
    values = {name: given.get(name, key.default) for name, key in keys.items()}
    for name, key in keys.items():
        _check_type(f"{prefix}{name}", values[name], key.kind)
    return values


def _site(name: str, raw: Any) -> SiteConfig:
    where = f"sites.{name}"
    if name in BROKEN:
        raise ConfigError(f"site {name!r} is installed but cannot be used: {BROKEN[name]}")
    if name not in SITES:
        raise ConfigError(f"unknown site {where!r} (known: {', '.join(SITES)})")
    _check_type(where, raw, dict)
    keys = site_keys(name)
    _unknown(f"[{where}]", raw, keys)
    values = _values(f"{where}.", raw, keys)
    known = SITES[name].boards
    for board in values["boards"]:
        _check_type(f"{where}.boards entry", board, str)
        if board not in known:
            raise ConfigError(f"unknown board {board!r} in {where}.boards (known: {', '.join(known)})")
    base_url = values["base_url"].rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must start with http:// or https://, not {base_url!r}")
    return SiteConfig(
        name=name,
        base_url=base_url,
        boards=tuple(dict.fromkeys(values["boards"])),
        headers=_string_table(f"{where}.headers", values["headers"]),
        cookies=_string_table(f"{where}.cookies", values["cookies"]),
        obey_robots=values["obey_robots"],
        font_hosts=tuple(_string_list(f"{where}.font_hosts", values["font_hosts"])),
    )


def parse_config(text: str, path: str = "crawl.toml") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    _unknown(path, raw, (*TOP_KEYS, "crawl", "sites"))
    top = _values("", raw, TOP_KEYS)
    crawl = raw.get("crawl", {})
    _check_type("[crawl]", crawl, dict)
    _unknown("[crawl]", crawl, CRAWL_KEYS)
    settings = _values("crawl.", crawl, CRAWL_KEYS)
    for key in ("workers", "max_attempts", "max_in_flight_per_host", "max_page_bytes"):
        if settings[key] < 1:
            raise ConfigError(f"crawl.{key} must be at least 1, not {settings[key]}")
    if settings["workers"] > MAX_WORKERS:
        raise ConfigError(f"crawl.workers must be at most {MAX_WORKERS}, not {settings['workers']}")
    for key in ("request_timeout", "page_deadline", "dask_timeout"):
        if settings[key] <= 0:
            raise ConfigError(f"crawl.{key} must be more than 0, not {settings[key]}")
    for key in ("delay_per_host", "retry_backoff"):
        if settings[key] < 0:
            raise ConfigError(f"crawl.{key} cannot be negative, not {settings[key]}")
    if settings["pool"] not in POOL_KINDS:
        raise ConfigError(f"crawl.pool must be one of {', '.join(POOL_KINDS)}, not {settings['pool']!r}")
    if settings["start_method"] not in START_METHODS:
        raise ConfigError(f"crawl.start_method must be one of {', '.join(START_METHODS)}, not {settings['start_method']!r}")
    sites_raw = raw.get("sites", {})
    _check_type("[sites]", sites_raw, dict)
    sites = tuple(_site(name, value) for name, value in sites_raw.items())
    if not any(site.boards for site in sites):
        tables = " or ".join(f"[sites.{name}]" for name in SITES)
        raise ConfigError(f"{path} names no board to crawl: add a {tables} table")
    return Config(path=path, sites=sites, text=text, **top, **{
        key: float(value) if isinstance(CRAWL_KEYS[key].default, float) else value
        for key, value in settings.items()
    })


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return parse_config(text, str(path))
