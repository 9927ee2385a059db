"""An example site for crawler: a top-250 chart whose entries are <li class="chart-item">.

Everything the crawler needs to know about the site is in SITE below; installing this
package (its entry point in the `crawler.sites` group) is all it takes.
"""
from __future__ import annotations

import re
from typing import Any

from crawler.site import Board, Site
from parsers.common import BoardPage, NotABoardPage, clean, soup_of

_RANKED = re.compile(r"^(\d+)\.\s*(.+)$")
_TITLE_ID = re.compile(r"/title/(tt\d+)")


def parse(html: str, url: str) -> BoardPage:
    """One chart page: rank, title, id, year, rating and votes of each entry."""
    soup = soup_of(html)
    items = soup.select("li.chart-item")
    if not items:
        raise NotABoardPage(f"no chart entries (title: {clean(soup.title.string if soup.title else None)!r})")
    return BoardPage(records=[_record(item) for item in items])


def _record(item: Any) -> dict[str, Any]:
    ranked = _RANKED.match(clean(item.select_one("h3").get_text()) or "")
    link = item.select_one("a[href]")
    year = clean(item.select_one(".year").get_text())
    votes = clean(item.select_one(".votes").get_text())
    return {
        "rank": int(ranked.group(1)),
        "title": ranked.group(2),
        "movie_id": _TITLE_ID.search(link["href"]).group(1),
        "url": "https://www.imdb.com" + link["href"],
        "year": int(year),
        "score": float(clean(item.select_one(".rating").get_text())),
        "imdb_votes": int(votes.replace(",", "")),
    }


SITE = Site(
    name="imdb",
    base_url="https://www.imdb.com",
    boards={"top250": Board("top250", "IMDb Top 250", ("/chart/top/",), shows=("year", "imdb_votes"))},
    parse=parse,
    columns={"year": int, "imdb_votes": int},
    movie_fields=("year",),
    block_statuses=frozenset({403}),
    headers={"Accept-Language": "en-US,en;q=0.9"},
)
