"""Douban (豆瓣) /top250?start=N pages.

Covers the 2017, 2019 and 2024/25 markups: the newest drops `div.star` and `span.inq`
(the quote is `p.quote > span`), so nothing here is keyed on those classes alone.
The text is full of `&nbsp;`; fields are split on the raw separators first and only
then cleaned.
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
    has_class,
    is_tag,
    page_title,
    parse_parts,
    pager_urls,
    to_float,
    to_int,
)

_SUBJECT_ID = re.compile(r"/subject/(\d+)")
_VOTES = re.compile(r"(\d[\d,]*)\s*人评价")
_CREDIT = re.compile(r"(导演|主演)\s*[:：]\s*(.*)")


def parse_board(html: str, url: str) -> BoardPage:
    """Parse one Top 250 page; raise NotABoardPage for anything that is not one."""
    with parse_parts(html, ("div", "item"), ("div", "paginator")) as tags:
        items = tags.all("div", "item")
        if not items:
            raise NotABoardPage(f"no div.item entries on Douban page (title: {page_title(tags.root)!r})")
        hrefs = [a.get("href") for a in tags.all("a", within=("div", "paginator"), attr="href")]
        return BoardPage(
            records=[_record(Tags(item), url) for item in items],
            updated=None,
            page_urls=pager_urls(hrefs, url, "start"),
        )


def _record(tags: Tags, page_url: str) -> dict[str, Any]:
    """One `div.item` (the index of its tags) as a record dict; rank and title are mandatory."""
    rank = to_int(_text(tags.first("em", within=("div", "pic")) or tags.first("em", in_template=True)))
    titles = tags.all("span", "title", within=("div", "hd")) or tags.all("span", "title")
    title = clean(titles[0].get_text()) if titles else None
    if rank is None or not title or title.startswith("/"):  # "/ Original title" is never the main one
        raise NotABoardPage(f"Douban entry without rank or title (rank={rank}, title={title!r})")
    link = (tags.first("a", within=("div", "hd"), attr="href")
            or tags.first("a", within=("div", "pic"), attr="href"))
    href = link.get("href") if link else None
    subject = _SUBJECT_ID.search(href or "")
    img = tags.first("img", within=("div", "pic"))
    others = [_strip_slash(t.get_text()) for t in titles[1:] + tags.all("span", "other")]
    quote = tags.first("span", within=("p", "quote")) or tags.first("span", "inq")
    votes = next((s for s in tags.strings if _VOTES.search(s)), None)
    record: dict[str, Any] = {
        "rank": rank,
        "movie_id": subject.group(1) if subject else None,
        "title": title,
        "other_titles": " / ".join(o for o in others if o) or None,
        "url": urljoin(page_url, href) if href else None,
        "poster_url": img.get("src") if img else None,
        "score": to_float(_text(tags.first("span", "rating_num"))),
        "votes": to_int(_VOTES.search(votes).group(1)) if votes else None,
        "quote": _text(quote),
        "playable": tags.first("span", "playable") is not None,
    }
    # div.bd > p:not(.quote)
    details = (p for p in tags.all("p") if is_tag(p.parent, "div", "bd") and not has_class(p, "quote"))
    record.update(_details(next(details, None)))
    return record


def _text(tag: Any) -> str | None:
    return clean(tag.get_text()) if tag else None


def _strip_slash(text: str) -> str | None:
    """`&nbsp;/&nbsp;月黑高飞(港)  /  刺激1995(台)` -> `月黑高飞(港) / 刺激1995(台)`."""
    return clean(re.sub(r"^\s*/", "", clean(text) or ""))


def _details(p: Any) -> dict[str, Any]:
    """The two lines of `div.bd > p`: credits before the <br>, year / countries / genres after."""
    lines: list[str] = [""]
    for node in (p.children if p else []):
        if getattr(node, "name", None) == "br":
            lines.append("")
        else:
            lines[-1] += node.get_text() if getattr(node, "name", None) else str(node)
    credits_raw, rest = lines[0], " ".join(lines[1:])
    directors = actors = None
    # "导演: A / B&nbsp;&nbsp;&nbsp;主演: C / D..." -- the run of &nbsp; separates the two;
    # a long director list may push the actors out entirely ("...&nbsp;&nbsp;&nbsp;主...").
    for part in re.split(r"\xa0{2,}|\s(?=主演\s*[:：])", credits_raw):
        m = _CREDIT.match(clean(part) or "")
        if m and m.group(1) == "导演":
            directors = clean(m.group(2))
        elif m:
            actors = clean(re.sub(r"[\s/]*(\.\.\.|…)?[\s/]*$", "", m.group(2)))
    # "1994&nbsp;/&nbsp;美国&nbsp;/&nbsp;犯罪 剧情"; the year part may itself hold " / ".
    parts = [clean(x) or "" for x in (clean(rest) or "").split("/")]
    if len(parts) < 3:
        parts += [""] * (3 - len(parts))
    release = " / ".join(parts[:-2])
    year = re.search(r"\d{4}", release)
    return {
        "credits": clean(credits_raw),
        "directors": directors,
        "actors": actors,
        "year": int(year.group()) if year else None,
        "release_date": release or None,
        "countries": parts[-2] or None,
        "genres": parts[-1] or None,
    }


SITE = Site(
    name="douban",
    base_url="https://movie.douban.com",
    boards={"top250": Board("top250", "豆瓣电影 Top 250", tuple(f"/top250?start={n * 25}" for n in range(10)),
                            shows=("year", "votes"))},
    parse=parse_board,
    columns={"other_titles": str, "credits": str, "directors": str, "year": int, "countries": str,
             "genres": str, "votes": int, "quote": str, "playable": int},
    movie_fields=("other_titles", "directors", "year", "countries", "genres"),
    block_hosts=("sec.douban.com",),
    block_statuses=frozenset({403, 418}),
    headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8", "Referer": "https://movie.douban.com/"},
)
