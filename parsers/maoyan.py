"""Maoyan (猫眼电影) /board/<id> pages: TOP100, 热映口碑榜, 最受期待榜, 国内/北美票房榜.

All boards share one `dl.board-wrapper > dd` entry layout; they differ only in the
`div.movie-item-number` block (score, wish counts or box office). Numbers drawn with
the per-request web font (private-use code points) are never decoded: the field is
set to None and named in the record's `obfuscated` list.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin

from crawler.site import Board, Site

from .common import (
    BoardPage,
    NotABoardPage,
    Tags,
    clean,
    is_obfuscated,
    is_tag,
    page_title,
    parse_parts,
    pager_urls,
    to_float,
    to_int,
)

_VERIFY_TITLE = "猫眼验证中心"
_VERIFY_HOST = "verify.maoyan.com"
_FILM_ID = re.compile(r"/films/(\d+)")
_FULL_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
# "2000-05-12(法国戛纳)", "1992", "2019-03", full-width parentheses tolerated.
_RELEASE = re.compile(r"^(?P<date>.*?)\s*(?:[(（](?P<region>[^)）]*)[)）])?$")
# p class -> (value field, unit field or None, parse as int?)
_NUMBERS = {
    "realtime": ("realtime_box_office", "realtime_box_office_unit", False),
    "total-boxoffice": ("total_box_office", "total_box_office_unit", False),
    "month-wish": ("month_wish", None, True),
    "total-wish": ("total_wish", None, True),
}


def parse_board(html: str, url: str) -> BoardPage:
    """Parse one Maoyan board page; raise NotABoardPage for anything that is not one."""
    with parse_parts(html, ("dl", "board-wrapper"), ("p", "update-time"), ("ul", "list-pager")) as tags:
        title = page_title(tags.root)
        if (title and _VERIFY_TITLE in title) or _VERIFY_HOST in url:
            raise NotABoardPage(f"Maoyan verification page ({_VERIFY_TITLE})", blocked=True)
        entries = [dd for dd in tags.all("dd") if is_tag(dd.parent, "dl", "board-wrapper")]
        if not entries:
            raise NotABoardPage(f"no board entries on Maoyan page (title: {title!r})")
        update = tags.first("p", "update-time")
        updated = clean("".join(update.find_all(string=True, recursive=False))) if update else None
        hrefs = [a.get("href") for a in tags.all("a", within=("ul", "list-pager"), attr="href")]
        return BoardPage(
            records=[_record(Tags(dd), url) for dd in entries],
            updated=updated,
            page_urls=pager_urls(hrefs, url, "offset"),
        )


def _record(tags: Tags, page_url: str) -> dict[str, Any]:
    """One `dd` entry (the index of its tags) as a record dict; rank and title are mandatory."""
    rank = to_int(_text(tags.first("i", "board-index")))
    link = tags.first("a", within=("p", "name")) or tags.first("a", "image-link")
    title = (clean(link.get_text()) or clean(link.get("title"))) if link else None
    if rank is None or not title:
        raise NotABoardPage(f"Maoyan entry without rank or title (rank={rank}, title={title!r})")
    href = link.get("href") or ""
    film = _FILM_ID.search(href)
    img = tags.first("img", "board-img")
    poster = (img.get("data-src") or img.get("src")) if img else None
    if poster and poster.startswith("//"):
        poster = "https:" + poster
    record: dict[str, Any] = {
        "rank": rank,
        "movie_id": film.group(1) if film else None,
        "title": title,
        "url": urljoin(page_url, href) if href else None,
        "poster_url": poster,
        "actors": _actors(_text(tags.first("p", "star"))),
    }
    record.update(_release(_text(tags.first("p", "releasetime"))))
    hidden: list[str] = []
    record["score"] = _score(tags.first("p", "score"), hidden)
    for p in tags.all("p", within=("div", "movie-item-number")):
        for cls in p.get("class", []):
            if cls in _NUMBERS:
                record.update(_number(p, *_NUMBERS[cls], hidden))
    record["obfuscated"] = hidden
    return record


def _text(tag: Any) -> str | None:
    return clean(tag.get_text()) if tag else None


def _after_label(text: str | None) -> str | None:
    """Drop a leading label such as `主演：` / `上映时间:` (full- or half-width colon)."""
    return clean(re.sub(r"^[^:：]*[:：]", "", text)) if text else None


def _actors(text: str | None) -> str | None:
    """`主演：比尔·努恩 ,克兰伦斯` -> `比尔·努恩,克兰伦斯`."""
    names = [clean(n) for n in re.split(r"[,，]", _after_label(text) or "")]
    return ",".join(n for n in names if n) or None


def _release(text: str | None) -> dict[str, Any]:
    """Split `上映时间：1994-09-10(加拿大)` into an ISO date (or the text given) and region."""
    value = _after_label(text)
    if not value:
        return {"release_date": None, "release_region": None}
    m = _RELEASE.match(value)
    date, region = clean(m.group("date")), clean(m.group("region"))
    full = _FULL_DATE.fullmatch(date or "")
    if full:
        date = "{}-{:02d}-{:02d}".format(*map(int, full.groups()))
    return {"release_date": date, "release_region": region}


def _score(p: Any, hidden: list[str]) -> float | None:
    """`<i class="integer">9.</i><i class="fraction">5</i>` -> 9.5."""
    text = "".join(p.stripped_strings) if p else ""
    if is_obfuscated(text):
        hidden.append("score")
        return None
    return to_float(text)


def _number(p: Any, field: str, unit_field: str | None, as_int: bool, hidden: list[str]) -> dict[str, Any]:
    """`实时票房: <span><span class="stonefont">…</span></span>万` -> value and unit.

    The unit is whatever follows the number (万, 亿, 人); it is kept even when the
    digits themselves are hidden by the font.
    """
    text = _after_label(p.get_text()) or ""
    m = re.fullmatch(r"([\d,.\ue000-\uf8ff]*)\s*(.*)", text)
    number, unit = m.group(1), (clean(m.group(2)) if m.group(1) else None)
    if is_obfuscated(text):
        hidden.append(field)
        value = None
    else:
        value = to_int(number) if as_int else to_float(number)
    return {field: value, unit_field: unit} if unit_field else {field: value}


_BOX_OFFICE = ("realtime_box_office", "realtime_box_office_unit", "total_box_office", "total_box_office_unit")


def _board(name: str, label: str, board_id: int, pages: int = 1, follow_pager: bool = False,
           shows: tuple[str, ...] = ("release_date", "release_region")) -> Board:
    if pages == 1 and not follow_pager:
        return Board(name, label, (f"/board/{board_id}",), shows=shows)
    return Board(name, label, tuple(f"/board/{board_id}?offset={n * 10}" for n in range(pages)), follow_pager,
                 shows)


SITE = Site(
    name="maoyan",
    base_url="https://www.maoyan.com",
    boards={board.name: board for board in (
        _board("top100", "TOP100榜", 4, pages=10),
        _board("hot", "热映口碑榜", 7),
        _board("most-wanted", "最受期待榜", 6, follow_pager=True, shows=("month_wish", "total_wish")),
        _board("cn-box-office", "国内票房榜", 1, shows=_BOX_OFFICE),
        _board("na-box-office", "北美票房榜", 2, shows=_BOX_OFFICE),
    )},
    parse=parse_board,
    # The boards that show something else than a score.
    columns={"month_wish": int, "total_wish": int,
             "realtime_box_office": float, "realtime_box_office_unit": str,
             "total_box_office": float, "total_box_office_unit": str},
    block_hosts=(_VERIFY_HOST,),
    block_titles=(_VERIFY_TITLE,),
    headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8", "Referer": "https://www.maoyan.com/board"},
    # The digit fonts: //vfile.meituan.net/colorstone/<hash>.woff (2019), mtsi-font on s3plus later.
    font_hosts=("vfile.meituan.net", "s3plus.meituan.net"),
)
