"""The parsers against real saved pages (../shared/realsite, described in its SOURCES.md).

These pages are not part of the project; the module is skipped where they are absent.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from parsers import douban, maoyan
from parsers.common import BoardPage, NotABoardPage, Tags, soup_of

REALSITE = Path(__file__).resolve().parents[1].parent / "shared" / "realsite"
if not REALSITE.is_dir():
    pytest.skip(f"no real saved pages at {REALSITE}", allow_module_level=True)

MAOYAN = "https://maoyan.com/board/4"
DOUBAN = "https://movie.douban.com/top250"

# file -> (URL it was fetched from, first rank shown, number of rows)
EXPECTED = {
    "maoyan/board4_top100_2017-12-22_offset00_hansonhex.html": (f"{MAOYAN}?offset=0", 1, 10),
    "maoyan/board4_top100_2017-12-22_offset10_hansonhex.html": (f"{MAOYAN}?offset=10", 11, 10),
    "maoyan/board4_top100_2017-12-22_offset60_hansonhex.html": (f"{MAOYAN}?offset=60", 61, 10),
    "maoyan/board4_top100_2017-12-22_offset90_hansonhex.html": (f"{MAOYAN}?offset=90", 91, 10),
    "maoyan/board4_top100_2019-05-31_makeupstories_uaquery.html": (MAOYAN, 1, 10),
    "maoyan/board4_top100_2025-05-27_vanslee.html": (MAOYAN, 1, 10),
    "maoyan/board4_top100_2025-08-26_liweil_crlf.html": (f"{MAOYAN}?offset=90", 91, 10),
    "maoyan/board7_praise_2019-04-08_zhangbaofu_from-py-string_crlf.html": ("https://maoyan.com/board/7", 1, 10),
    "douban/top250_start0_2017-04_helloxizhao.html": (DOUBAN, 1, 25),
    "douban/top250_start0_2019-09_sq2019060017.html": (DOUBAN, 1, 25),
    "douban/top250_start0_2025_king184_quote-markup.html": (DOUBAN, 1, 25),
    "douban/top250_start75_2019-09_sq2019060017_missing-inq.html": (f"{DOUBAN}?start=75", 76, 25),
    "douban/top250_start225_2019-09_sq2019060017_lastpage_missing-inq.html": (f"{DOUBAN}?start=225", 226, 25),
}
PAGES = sorted(str(p.relative_to(REALSITE)) for p in REALSITE.glob("*/*.html"))


def parse(name: str) -> BoardPage:
    url = EXPECTED[name][0] if name in EXPECTED else (MAOYAN if name.startswith("maoyan/") else DOUBAN)
    parser = maoyan if name.startswith("maoyan/") else douban
    return parser.parse_board((REALSITE / name).read_bytes().decode("utf-8"), url)


def outcome(name: str, html: str, whole_document: bool = False) -> object:
    """What the parser makes of `html` served as page `name`; with whole_document, reading
    a soup of the whole page instead of the fast path's soup of its board."""
    parser = maoyan if name.startswith("maoyan/") else douban
    url = EXPECTED[name][0] if name in EXPECTED else (MAOYAN if parser is maoyan else DOUBAN)
    with pytest.MonkeyPatch.context() as patch:
        if whole_document:
            patch.setattr(parser, "parse_parts", lambda html, *parts: Tags(soup_of(html)))
        try:
            page = parser.parse_board(html, url)
        except NotABoardPage as e:
            return ("not a board", e.reason, e.blocked)
    return (page.records, page.updated, page.page_urls)


def rank(name: str, n: int) -> dict:
    return next(r for r in parse(name).records if r["rank"] == n)


@pytest.mark.parametrize("name", PAGES)
def test_rows_and_consecutive_ranks(name: str) -> None:
    page = parse(name)
    ranks = [r["rank"] for r in page.records]
    if name in EXPECTED:
        _, first, count = EXPECTED[name]
        assert ranks == list(range(first, first + count))
    else:  # a page added later: at least a full, consecutive run
        assert ranks == list(range(ranks[0], ranks[0] + len(ranks))) and len(ranks) in (10, 25)
    for r in page.records:
        assert r["title"] and r["movie_id"].isdigit() and r["score"] is not None
        assert r["url"].startswith("https://") and r["poster_url"].startswith("http")


@pytest.mark.parametrize("name", PAGES)
def test_fast_path_reads_like_the_whole_document(name: str) -> None:
    """Also with CRLF, start tags wrapped over lines, no indentation, and cut short."""
    html = (REALSITE / name).read_bytes().decode("utf-8")
    variants = {
        "as saved": html,
        "crlf": re.sub(r"\r?\n", "\r\n", html),
        "wrapped start tags": re.sub(r"<(\w+) (class|href)=", r"<\1\n      \2=", html),
        "no whitespace between tags": re.sub(r">\s+<", "><", html),
        **{f"cut at {n}/6": html[: len(html) * n // 6] for n in range(1, 6)},
    }
    for variant, text in variants.items():
        assert outcome(name, text) == outcome(name, text, whole_document=True), variant


def test_every_listed_page_is_present() -> None:
    assert set(EXPECTED) <= set(PAGES)


# --- Maoyan ----------------------------------------------------------------------------

def test_year_only_release_date() -> None:
    for name, n in (("maoyan/board4_top100_2017-12-22_offset10_hansonhex.html", 13),
                    ("maoyan/board4_top100_2019-05-31_makeupstories_uaquery.html", 9)):
        r = rank(name, n)
        assert (r["title"], r["release_date"], r["release_region"]) == ("天空之城", "1992", None)


def test_festival_suffix_is_the_region() -> None:
    r = rank("maoyan/board4_top100_2017-12-22_offset60_hansonhex.html", 63)
    assert (r["title"], r["release_date"], r["release_region"]) == ("鬼子来了", "2000-05-12", "法国戛纳")
    assert rank("maoyan/board4_top100_2017-12-22_offset60_hansonhex.html", 67)["title"] == "蝙蝠侠：黑暗骑士崛起"
    assert rank("maoyan/board4_top100_2017-12-22_offset60_hansonhex.html", 70)["title"] == "哈利·波特与死亡圣器（下）"


def test_actor_lists() -> None:
    r = rank("maoyan/board4_top100_2025-05-27_vanslee.html", 3)
    assert r["actors"] == "蒂姆·罗斯,比尔·努恩,克兰伦斯·威廉姆斯三世"
    last = "maoyan/board4_top100_2017-12-22_offset90_hansonhex.html"
    assert rank(last, 99)["actors"] == "雅克·贝汉,菲利普·拉波洛,Philippe Labro"
    assert rank(last, 94)["actors"] == "凯文·科斯特纳,克林特·伊斯特伍德,T.J.劳瑟"


def test_maoyan_first_pages() -> None:
    page = parse("maoyan/board4_top100_2017-12-22_offset00_hansonhex.html")
    assert page.updated == "2017-12-22"
    first = page.records[0]
    assert (first["title"], first["movie_id"], first["score"]) == ("霸王别姬", "1203", 9.6)
    assert first["url"] == "https://maoyan.com/films/1203"
    assert first["poster_url"].startswith("http://p1.meituan.net/movie/")
    page = parse("maoyan/board4_top100_2025-05-27_vanslee.html")
    assert page.updated == "2025-05-27"
    first = page.records[0]
    assert (first["title"], first["release_date"], first["release_region"]) == ("我不是药神", "2018-07-05", None)
    assert first["poster_url"] == ("https://p0.pipi.cn/mmdb/54ecde9a2c9f2a51ba06d67d795a9434b8421.jpg"
                                   "?imageView2/1/w/160/h/220")
    assert rank("maoyan/board4_top100_2025-05-27_vanslee.html", 2)["release_region"] == "加拿大"


def test_pager_offsets_read_through_the_user_agent_query() -> None:
    page = parse("maoyan/board4_top100_2019-05-31_makeupstories_uaquery.html")
    assert page.updated == "2019-05-31"
    assert page.page_urls == [f"{MAOYAN}?offset={n}" for n in (10, 20, 30, 40, 90)]


def test_last_pages_have_no_next_offset() -> None:
    for name in ("maoyan/board4_top100_2017-12-22_offset90_hansonhex.html",
                 "maoyan/board4_top100_2025-08-26_liweil_crlf.html"):
        assert parse(name).page_urls == [f"{MAOYAN}?offset={n}" for n in (80, 0, 50, 60, 70)]


def test_crlf_page() -> None:
    name = "maoyan/board4_top100_2025-08-26_liweil_crlf.html"
    assert b"\r\n" in (REALSITE / name).read_bytes()
    page = parse(name)
    assert page.updated == "2025-08-26"
    r = rank(name, 92)
    assert (r["title"], r["release_region"], r["score"]) == ("蝙蝠侠：黑暗骑士", "阿根廷", 9.3)


def test_praise_board() -> None:
    page = parse("maoyan/board7_praise_2019-04-08_zhangbaofu_from-py-string_crlf.html")
    assert page.updated == "2019-04-08" and page.page_urls == []
    first = page.records[0]
    assert (first["title"], first["score"], first["release_date"]) == ("波西米亚狂想曲", 9.5, "2019-03-22")
    assert all(r["release_region"] is None and r["obfuscated"] == [] for r in page.records)


# --- Douban ----------------------------------------------------------------------------

def test_shawshank_2017_and_2025() -> None:
    old = parse("douban/top250_start0_2017-04_helloxizhao.html").records[0]
    assert (old["title"], old["score"], old["votes"], old["quote"]) == ("肖申克的救赎", 9.6, 808601, "希望让人自由。")
    new = parse("douban/top250_start0_2025_king184_quote-markup.html").records[0]
    assert (new["score"], new["votes"], new["quote"]) == (9.7, 3157752, "希望让人自由。")
    assert new["other_titles"] == "The Shawshank Redemption / 月黑高飞(港) / 刺激1995(台)"
    assert (new["directors"], new["actors"]) == ("弗兰克·德拉邦特 Frank Darabont", "蒂姆·罗宾斯 Tim Robbins")
    assert (new["year"], new["countries"], new["genres"]) == (1994, "美国", "犯罪 剧情")
    assert new["movie_id"] == "1292052" and new["playable"] is True


def test_2025_markup_without_star_and_inq_classes() -> None:
    records = parse("douban/top250_start0_2025_king184_quote-markup.html").records
    assert all(r["quote"] and r["votes"] and r["score"] for r in records)
    second = records[1]
    assert second["other_titles"] == "再见，我的妾 / Farewell My Concubine"
    assert second["countries"] == "中国大陆 中国香港"


def test_missing_quotes() -> None:
    r = rank("douban/top250_start75_2019-09_sq2019060017_missing-inq.html", 95)
    assert (r["title"], r["quote"], r["votes"]) == ("我不是药神", None, 1209099)
    r = rank("douban/top250_start225_2019-09_sq2019060017_lastpage_missing-inq.html", 240)
    assert (r["title"], r["quote"]) == ("哈利·波特与阿兹卡班的囚徒", None)
    assert r["other_titles"] == "Harry Potter and the Prisoner of Azkaban / 哈利波特3：阿兹卡班的逃犯(港 / 台)"


def test_old_country_names_and_two_directors() -> None:
    page = parse("douban/top250_start0_2017-04_helloxizhao.html")
    assert "中国大陆 香港" in {r["countries"] for r in page.records}
    r = rank("douban/top250_start0_2017-04_helloxizhao.html", 22)
    assert (r["title"], r["actors"]) == ("触不可及", None)
    assert r["directors"] == "奥利维·那卡什 Olivier Nakache / 艾力克·托兰达 Eric Toledano"


def test_douban_pager() -> None:
    first = parse("douban/top250_start0_2019-09_sq2019060017.html")
    assert first.page_urls == [f"{DOUBAN}?start={n}" for n in range(25, 250, 25)]
    last = parse("douban/top250_start225_2019-09_sq2019060017_lastpage_missing-inq.html")
    assert last.page_urls == [f"{DOUBAN}?start={n}" for n in (200, 0, 25, 50, 75, 100, 125, 150, 175)]
    assert last.updated is None
