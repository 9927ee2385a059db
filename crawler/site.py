"""What a site declares about itself: its boards, its parser, what a block looks like, its columns.

A site is one module that makes a `Site` (the built-in ones are parsers/maoyan.py and
parsers/douban.py) and names it in the `crawler.sites` entry-point group, so that an
installed package adds a site without any change to the crawler.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# The fields every site's records have; a site declares its own beyond these.
CORE_FIELDS: dict[str, type] = {
    "rank": int, "movie_id": str, "title": str, "url": str, "poster_url": str, "actors": str,
    "release_date": str, "release_region": str, "score": float,
}
# Fields of a record that describe the movie rather than its place on a board.
CORE_MOVIE_FIELDS = ("title", "url", "poster_url", "actors", "release_date", "release_region")
# Python types a declared column may have, as SQLite stores them.
COLUMN_TYPES = (int, float, str, bytes)


@dataclass(frozen=True)
class Board:
    name: str
    label: str
    # Pages known before the crawl starts, as path + query below the site's base URL.
    pages: tuple[str, ...]
    # True when the number of pages is only known from the first page's pager.
    follow_pager: bool = False
    # What `crawler top` shows of each entry besides rank, title and score.
    shows: tuple[str, ...] = ("release_date", "release_region")


@dataclass(frozen=True)
class Site:
    """One site: where its boards are, how to read them, and how it refuses a crawler."""

    name: str
    base_url: str
    boards: dict[str, Board]
    # parse(html, url) -> parsers.common.BoardPage, or raises parsers.common.NotABoardPage.
    parse: Callable[[str, str], Any]
    # Its records' fields beyond CORE_FIELDS, with their types (columns of `records`).
    columns: dict[str, type] = field(default_factory=dict)
    # Those of its own fields that describe the movie (kept in `movies`, searched there).
    movie_fields: tuple[str, ...] = ()
    # A block: a redirect to one of these hosts, one of these statuses, or (for the parser
    # to raise NotABoardPage(blocked=True)) a page with one of these titles.
    block_hosts: tuple[str, ...] = ()
    block_statuses: frozenset[int] = frozenset({403, 418})
    block_titles: tuple[str, ...] = ()
    # Sent with every request to the site unless the config says otherwise.
    headers: dict[str, str] = field(default_factory=dict)
    # Hosts (and their subdomains) a page's web font may come from: a page that draws digits
    # with a font from there has it fetched with the page, and its digits read by shape.
    font_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"site name {self.name!r} must be a plain word (letters, digits, _)")
        for name, kind in self.columns.items():
            if name in CORE_FIELDS or kind not in COLUMN_TYPES:
                raise ValueError(f"site {self.name}: column {name!r} must be new and one of int, float, str, bytes")
        unknown = set(self.movie_fields) - set(self.columns)
        if unknown:
            raise ValueError(f"site {self.name}: movie_fields {sorted(unknown)} are not among its columns")
