"""The sites and boards the crawler knows: where their pages are and which parser reads them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from parsers import douban, maoyan
from parsers.common import BoardPage


@dataclass(frozen=True)
class Board:
    name: str
    label: str
    # Pages known before the crawl starts, as path + query below the site's base URL.
    pages: tuple[str, ...]
    # True when the number of pages is only known from the first page's pager.
    follow_pager: bool = False


@dataclass(frozen=True)
class Site:
    name: str
    base_url: str
    parse: Callable[[str, str], BoardPage]
    boards: dict[str, Board]


def _maoyan_board(name: str, label: str, board_id: int, pages: int = 1, follow_pager: bool = False) -> Board:
    if pages == 1 and not follow_pager:
        return Board(name, label, (f"/board/{board_id}",))
    return Board(name, label, tuple(f"/board/{board_id}?offset={n * 10}" for n in range(pages)), follow_pager)


SITES: dict[str, Site] = {
    "maoyan": Site(
        name="maoyan",
        base_url="https://www.maoyan.com",
        parse=maoyan.parse_board,
        boards={
            board.name: board
            for board in (
                _maoyan_board("top100", "TOP100榜", 4, pages=10),
                _maoyan_board("hot", "热映口碑榜", 7),
                _maoyan_board("most-wanted", "最受期待榜", 6, follow_pager=True),
                _maoyan_board("cn-box-office", "国内票房榜", 1),
                _maoyan_board("na-box-office", "北美票房榜", 2),
            )
        },
    ),
    "douban": Site(
        name="douban",
        base_url="https://movie.douban.com",
        parse=douban.parse_board,
        boards={"top250": Board("top250", "豆瓣电影 Top 250", tuple(f"/top250?start={n * 25}" for n in range(10)))},
    ),
}
