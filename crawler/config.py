"""Read and check crawl.toml, so that every mistake in it is one clear line before any work starts."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pools import POOL_KINDS
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
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    obey_robots: bool = True
    # Hosts its web fonts may come from; None: those the site declares.
    font_hosts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Config:
    path: str
    database: str
    workers: int
    pool: str
    dask_scheduler: str
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


# key: (type or types, default); a default of None means the key is required.
_CRAWL_KEYS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "workers": (int, 4),
    "pool": (str, "process"),
    "dask_scheduler": (str, ""),
    "start_method": (str, "default"),
    "request_timeout": ((int, float), 10.0),
    "page_deadline": ((int, float), 60.0),
    "max_attempts": (int, 3),
    "retry_backoff": ((int, float), 1.0),
    "delay_per_host": ((int, float), 1.0),
    "max_in_flight_per_host": (int, 2),
    "max_page_bytes": (int, 5_000_000),
    "user_agent": (str, DEFAULT_USER_AGENT),
}
_SITE_KEYS = {"base_url": str, "boards": list, "headers": dict, "cookies": dict, "obey_robots": bool,
              "font_hosts": list}


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


def _site(name: str, raw: Any) -> SiteConfig:
    where = f"sites.{name}"
    if name in BROKEN:
        raise ConfigError(f"site {name!r} is installed but cannot be used: {BROKEN[name]}")
    if name not in SITES:
        raise ConfigError(f"unknown site {where!r} (known: {', '.join(SITES)})")
    _check_type(where, raw, dict)
    _unknown(f"[{where}]", raw, _SITE_KEYS)
    for key, kind in _SITE_KEYS.items():
        if key in raw:
            _check_type(f"{where}.{key}", raw[key], kind)
    site = SITES[name]
    boards = raw.get("boards", list(site.boards))
    for board in boards:
        _check_type(f"{where}.boards entry", board, str)
        if board not in site.boards:
            raise ConfigError(f"unknown board {board!r} in {where}.boards (known: {', '.join(site.boards)})")
    base_url = raw.get("base_url", site.base_url).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url must start with http:// or https://, not {base_url!r}")
    return SiteConfig(
        name=name,
        base_url=base_url,
        boards=tuple(dict.fromkeys(boards)),
        headers=_string_table(f"{where}.headers", raw.get("headers", {})),
        cookies=_string_table(f"{where}.cookies", raw.get("cookies", {})),
        obey_robots=raw.get("obey_robots", True),
        font_hosts=tuple(_string_list(f"{where}.font_hosts", raw["font_hosts"])) if "font_hosts" in raw else None,
    )


def parse_config(text: str, path: str = "crawl.toml") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    _unknown(path, raw, ("database", "crawl", "sites"))
    database = raw.get("database", "movies.db")
    _check_type("database", database, str)
    crawl = raw.get("crawl", {})
    _check_type("[crawl]", crawl, dict)
    _unknown("[crawl]", crawl, _CRAWL_KEYS)
    settings: dict[str, Any] = {}
    for key, (kind, default) in _CRAWL_KEYS.items():
        value = crawl.get(key, default)
        _check_type(f"crawl.{key}", value, kind)
        settings[key] = value
    for key in ("workers", "max_attempts", "max_in_flight_per_host", "max_page_bytes"):
        if settings[key] < 1:
            raise ConfigError(f"crawl.{key} must be at least 1, not {settings[key]}")
    if settings["workers"] > MAX_WORKERS:
        raise ConfigError(f"crawl.workers must be at most {MAX_WORKERS}, not {settings['workers']}")
    for key in ("request_timeout", "page_deadline"):
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
    return Config(path=path, database=database, sites=sites, text=text, **{
        key: float(value) if isinstance(_CRAWL_KEYS[key][1], float) else value
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
