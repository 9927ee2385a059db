"""The site parsers against the bundled fixture pages (what an offline crawl serves).

Each fixture imitates one real markup era (see ../shared/realsite/SOURCES.md); the
assertions pin the values written into them, quirks included.
"""
from __future__ import annotations

import gc
import json
import re
from pathlib import Path

import pytest

from parsers import douban, maoyan
from parsers.common import BoardPage, NotABoardPage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
ROBOTS = "/robots.txt"  # each site's robots.txt, served beside its board pages


def board_keys(site: str) -> list[str]:
    """The manifest's board pages: not robots.txt, nor the web fonts (keyed //HOST/PATH)."""
    return [key for key in MANIFEST[site] if key != ROBOTS and not key.startswith("//")]
MAOYAN = "https://www.maoyan.com"
DOUBAN = "https://movie.douban.com"


def read(site: str, key: str) -> str:
    return (FIXTURES / MANIFEST[site][key]["file"]).read_bytes().decode("utf-8")


def board(site: str, key: str, base: str | None = None) -> BoardPage:
    parser = maoyan if site == "maoyan" else douban
    return parser.parse_board(read(site, key), (base or (MAOYAN if site == "maoyan" else DOUBAN)) + key)


def by_rank(page: BoardPage) -> dict[int, dict]:
    return {r["rank"]: r for r in page.records}


def offsets(page: BoardPage, param: str = "offset") -> list[int]:
    return [int(re.search(rf"\?{param}=(\d+)$", u).group(1)) for u in page.page_urls]


# --- the manifest itself -------------------------------------------------------------

def test_manifest_lists_every_page_of_an_offline_crawl() -> None:
    expected_maoyan = {f"/board/4?offset={n}" for n in range(0, 100, 10)} | {
        "/board/7", "/board/6?offset=0", "/board/6?offset=10", "/board/6?offset=20", "/board/1", "/board/2"}
    assert set(board_keys("maoyan")) == expected_maoyan
    assert {key for key in MANIFEST["maoyan"] if key.startswith("//")} == {
        f"//vfile.meituan.net/colorstone/{name}.woff"
        for name in ("9d35690d", "7d472ad0", "71106919", "02aeb5c4", "39112686")}
    assert set(MANIFEST["douban"]) == {f"/top250?start={n}" for n in range(0, 250, 25)} | {ROBOTS}
    for site in ("maoyan", "douban"):
        assert MANIFEST[site][ROBOTS] == {"file": f"{site}/robots.txt", "status": 200, "content_type": "text/plain"}
        for key in board_keys(site):
            entry = MANIFEST[site][key]
            assert entry["status"] == 200 and entry["content_type"] == "text/html; charset=utf-8"
            path = FIXTURES / entry["file"]
            assert path.parent.name == site
            text = path.read_bytes().decode("utf-8")  # strict: the file is UTF-8
            charset = '<meta charset="utf-8">' if site == "maoyan" else 'content="text/html; charset=utf-8"'
            assert charset in text


@pytest.mark.parametrize("site,key", [(s, k) for s in ("maoyan", "douban") for k in board_keys(s)])
def test_every_fixture_parses_into_complete_records(site: str, key: str) -> None:
    page = board(site, key)
    assert page.records
    for record in page.records:
        assert isinstance(record["rank"], int) and record["title"] and record["movie_id"].isdigit()
        assert record["url"].startswith("https://") and record["poster_url"].startswith("http")
    titles = [r["title"] for r in page.records]
    assert len(set(titles)) == len(titles)


# --- Maoyan TOP100 ---------------------------------------------------------------------

def test_top100_fixtures_cover_ranks_1_to_100_exactly() -> None:
    records = [r for n in range(0, 100, 10) for r in board("maoyan", f"/board/4?offset={n}").records]
    assert [r["rank"] for r in records] == list(range(1, 101))
    assert len({r["title"] for r in records}) == 100
    assert all(isinstance(r["score"], float) and r["obfuscated"] == [] for r in records)


def test_top100_first_page_2025_markup() -> None:
    page = board("maoyan", "/board/4?offset=0")
    assert page.updated == "2025-11-20"
    assert page.page_urls == [f"{MAOYAN}/board/4?offset={n}" for n in (10, 20, 30, 40, 90)]
    first = page.records[0]
    assert first == {
        "rank": 1,
        "movie_id": "1200486",
        "title": "我不是药神",
        "url": "https://www.maoyan.com/films/1200486",
        "poster_url": first["poster_url"],
        "actors": "徐峥,王传君,周一围",
        "release_date": "2018-07-05",
        "release_region": None,
        "score": 9.6,
        "obfuscated": [],
    }
    assert re.fullmatch(r"https://p0\.pipi\.cn/(mmdb|mediaplus/friday_image_fe)/[0-9a-f]{37}\.jpg"
                        r"\?imageView2/1/w/160/h/220", first["poster_url"])
    rows = by_rank(page)
    assert rows[2]["release_date"] == "1994-09-10" and rows[2]["release_region"] == "加拿大"
    # "比尔·努恩 ,克兰伦斯": the space before the comma does not survive.
    assert rows[3]["title"] == "海上钢琴师"
    assert rows[3]["actors"] == "蒂姆·罗斯,比尔·努恩,克兰伦斯·威廉姆斯三世"
    assert rows[10]["title"] == "泰坦尼克号" and rows[10]["score"] == 9.6


def test_top100_page_in_2017_markup_with_year_only_date() -> None:
    page = board("maoyan", "/board/4?offset=10")
    assert "ms0.meituan.net/mywww/" in read("maoyan", "/board/4?offset=10")
    assert page.updated == "2017-12-22"
    assert page.page_urls == [f"{MAOYAN}/board/4?offset={n}" for n in (0, 20, 30, 40, 90)]
    rows = by_rank(page)
    assert rows[13]["title"] == "天空之城"
    assert rows[13]["release_date"] == "1992" and rows[13]["release_region"] is None
    assert rows[14]["release_date"] == "1965-12-31" and rows[14]["release_region"] is None
    assert rows[11]["release_region"] == "中国香港"
    assert all(r["poster_url"].startswith(("http://p0.meituan.net/movie/", "http://p1.meituan.net/movie/"))
               for r in page.records)
    assert all(r["poster_url"].endswith("@160w_220h_1e_1c") for r in page.records)


def test_top100_crlf_page_with_festival_suffix_and_full_width_titles() -> None:
    raw = (FIXTURES / MANIFEST["maoyan"]["/board/4?offset=60"]["file"]).read_bytes()
    assert raw.count(b"\r\n") > 100 and raw.count(b"\n") == raw.count(b"\r\n")
    rows = by_rank(board("maoyan", "/board/4?offset=60"))
    assert rows[62]["title"] == "鬼子来了"
    assert (rows[62]["release_date"], rows[62]["release_region"]) == ("2000-05-12", "法国戛纳")
    assert rows[63]["title"] == "蝙蝠侠：黑暗骑士崛起"
    assert rows[65]["title"] == "哈利·波特与死亡圣器（下）"
    assert rows[65]["url"] == "https://www.maoyan.com/films/916"
    assert rows[66]["release_region"] == "韩国"


def test_top100_latin_names_in_actor_lists() -> None:
    rows = by_rank(board("maoyan", "/board/4?offset=70"))
    assert rows[74]["actors"] == "凯文·科斯特纳,克林特·伊斯特伍德,T.J.劳瑟"
    assert rows[79]["actors"] == "雅克·贝汉,菲利普·拉波洛,Philippe Labro"
    assert by_rank(board("maoyan", "/board/4?offset=30"))[34]["actors"] == "Forest,理查·基尔,琼·艾伦"


def test_top100_last_page_has_no_next_link() -> None:
    page = board("maoyan", "/board/4?offset=90")
    assert offsets(page) == [80, 0, 50, 60, 70]
    assert "下一页" not in read("maoyan", "/board/4?offset=90")
    assert page.records[-1]["rank"] == 100 and page.records[-1]["title"] == "魔女宅急便"


def test_pager_urls_follow_the_page_url_host() -> None:
    page = board("maoyan", "/board/4?offset=0", base="http://127.0.0.1:8080")
    assert page.page_urls[0] == "http://127.0.0.1:8080/board/4?offset=10"
    assert page.records[0]["url"] == "http://127.0.0.1:8080/films/1200486"


# --- Maoyan 热映口碑榜 (board 7) -------------------------------------------------------

def test_hot_board_2019_markup() -> None:
    text = read("maoyan", "/board/7")
    assert "//s0.meituan.net/bs/?f=myfe/mywww:/" in text and "list-pager" not in text
    assert "榜单规则：将昨日国内热映的影片，按照评分从高到低排列取前10名" in text
    page = board("maoyan", "/board/7")
    assert page.updated == "2019-08-12" and page.page_urls == []
    assert [r["rank"] for r in page.records] == list(range(1, 11))
    first = page.records[0]
    assert (first["title"], first["score"], first["release_date"]) == ("哪吒之魔童降世", 9.6, "2019-07-26")
    assert first["poster_url"].startswith("https://p") and "@160w_220h_1e_1c" in first["poster_url"]
    assert all(r["score"] is not None and r["release_region"] is None for r in page.records)


# --- Maoyan 最受期待榜 (board 6) -------------------------------------------------------

def test_most_wanted_pager_and_ranks() -> None:
    pages = [board("maoyan", f"/board/6?offset={n}") for n in (0, 10, 20)]
    assert pages[0].page_urls == [f"{MAOYAN}/board/6?offset=10", f"{MAOYAN}/board/6?offset=20"]
    assert "下一页" in read("maoyan", "/board/6?offset=0")
    assert offsets(pages[1]) == [0, 20]  # 上一页, 1, 3 and 下一页, each URL once
    assert offsets(pages[2]) == [10, 0]
    assert [r["rank"] for p in pages for r in p.records] == list(range(1, 31))
    assert all(r["score"] is None for p in pages for r in p.records)


def test_most_wanted_font_digits_are_never_decoded() -> None:
    text = read("maoyan", "/board/6?offset=0")
    assert '<p class="month-wish">本月新增想看：<span><span class="stonefont">&#x' in text
    rows = by_rank(board("maoyan", "/board/6?offset=0"))
    first = rows[1]
    assert first["title"] == "阿凡达：火与烬"
    assert first["month_wish"] is None and first["total_wish"] is None
    assert first["obfuscated"] == ["month_wish", "total_wish"]
    hidden = [r for r in rows.values() if r["obfuscated"]]
    assert len(hidden) == 9


def test_most_wanted_plain_digits_are_parsed() -> None:
    rows = by_rank(board("maoyan", "/board/6?offset=0"))
    avengers = rows[4]
    assert avengers["title"] == "复仇者联盟5：末日"
    assert (avengers["month_wish"], avengers["total_wish"], avengers["obfuscated"]) == (87456, 2310458, [])
    assert (avengers["release_date"], avengers["release_region"]) == ("2026-12-18", "美国")
    nezha = by_rank(board("maoyan", "/board/6?offset=10"))[12]
    assert (nezha["title"], nezha["month_wish"], nezha["total_wish"]) == ("哪吒3", 47654, 1234567)
    assert nezha["release_date"] == "2026-12-31" and nezha["actors"] is None


def test_most_wanted_tolerates_vague_dates_and_missing_cast() -> None:
    rows = {**by_rank(board("maoyan", "/board/6?offset=0")), **by_rank(board("maoyan", "/board/6?offset=20"))}
    assert rows[3]["title"] == "熊出没·年年有熊" and rows[3]["actors"] is None
    assert rows[6]["release_date"] == "2027" and rows[7]["release_date"] == "待定"
    rows.update(by_rank(board("maoyan", "/board/6?offset=10")))
    assert rows[17]["release_date"] == "2026-12"
    assert rows[20]["release_date"] == "2026-02"
    assert (rows[29]["release_date"], rows[29]["release_region"]) == ("2027", "美国")
    assert (rows[30]["release_date"], rows[30]["release_region"]) == ("2027-07", "美国")


# --- Maoyan 国内票房榜 / 北美票房榜 (boards 1, 2) ---------------------------------------

def test_domestic_box_office_mixes_font_and_plain_digits() -> None:
    page = board("maoyan", "/board/1")
    assert page.updated == "2025-08-04" and page.page_urls == []
    rows = by_rank(page)
    assert rows[1]["title"] == "南京照相馆"
    assert rows[1]["realtime_box_office"] is None and rows[1]["total_box_office"] is None
    assert rows[1]["obfuscated"] == ["realtime_box_office", "total_box_office"]
    assert (rows[1]["realtime_box_office_unit"], rows[1]["total_box_office_unit"]) == ("万", "亿")
    assert rows[2]["realtime_box_office"] == 3987.12 and rows[2]["obfuscated"] == ["total_box_office"]
    assert rows[4]["title"] == "长安的荔枝"
    assert (rows[4]["realtime_box_office"], rows[4]["total_box_office"], rows[4]["obfuscated"]) == (1203.45, 5.87, [])
    assert rows[6]["realtime_box_office"] is None and rows[6]["total_box_office"] == 2.01
    assert rows[9]["total_box_office_unit"] == "万" and rows[9]["total_box_office"] is None
    assert (rows[10]["total_box_office"], rows[10]["total_box_office_unit"]) == (3215.09, "万")
    assert all(r["score"] is None for r in page.records)


def test_north_america_box_office_plain_digits() -> None:
    page = board("maoyan", "/board/2")
    assert page.updated == "2025-07-28" and len(page.records) == 10
    rows = by_rank(page)
    assert rows[1]["title"] == "神奇四侠：初露锋芒" and rows[1]["release_region"] == "美国"
    assert (rows[1]["realtime_box_office"], rows[1]["realtime_box_office_unit"]) == (11780.0, "万")
    assert rows[8]["title"] == "28年后" and rows[8]["realtime_box_office"] == 95.5
    assert all(r["obfuscated"] == [] and r["total_box_office_unit"] == "万" for r in page.records)


# --- Douban Top 250 ---------------------------------------------------------------------

def test_douban_fixtures_cover_ranks_1_to_250_exactly() -> None:
    records = [r for n in range(0, 250, 25) for r in board("douban", f"/top250?start={n}").records]
    assert [r["rank"] for r in records] == list(range(1, 251))
    assert len({r["title"] for r in records}) == 250
    assert sum(r["quote"] is None for r in records) >= 10
    assert any(not r["playable"] for r in records) and any(r["playable"] for r in records)


def test_douban_first_page_2025_markup() -> None:
    text = read("douban", "/top250?start=0")
    assert 'class="star"' not in text and 'class="inq"' not in text and "<title>\n豆瓣电影 Top 250\n</title>" in text
    page = board("douban", "/top250?start=0")
    assert page.updated is None
    assert page.page_urls == [f"{DOUBAN}/top250?start={n}" for n in range(25, 250, 25)]
    assert page.records[0] == {
        "rank": 1,
        "movie_id": "1292052",
        "title": "肖申克的救赎",
        "other_titles": "The Shawshank Redemption / 月黑高飞(港) / 刺激1995(台)",
        "url": "https://movie.douban.com/subject/1292052/",
        "poster_url": page.records[0]["poster_url"],
        "score": 9.7,
        "votes": 3663450,
        "quote": "希望让人自由。",
        "playable": True,
        "credits": "导演: 弗兰克·德拉邦特 Frank Darabont 主演: 蒂姆·罗宾斯 Tim Robbins /...",
        "directors": "弗兰克·德拉邦特 Frank Darabont",
        "actors": "蒂姆·罗宾斯 Tim Robbins",
        "year": 1994,
        "release_date": "1994",
        "countries": "美国",
        "genres": "犯罪 剧情",
    }
    assert page.records[0]["poster_url"].startswith("https://img")
    rows = by_rank(page)
    assert rows[2]["other_titles"] == "再见，我的妾 / Farewell My Concubine"  # no second span.title
    assert rows[2]["countries"] == "中国大陆 中国香港" and rows[2]["genres"] == "剧情 爱情 同性"
    assert rows[3]["quote"] == "失去的才是永恒的。"
    assert rows[18]["other_titles"] == "無間道 / Infernal Affairs / Mou gaan dou"
    assert rows[18]["directors"] == "刘伟强 / 麦兆辉"
    # Two directors push the actors out: "...Eric Toledano&nbsp;&nbsp;&nbsp;主..."
    assert rows[22]["directors"] == "奥利维·那卡什 Olivier Nakache / 艾力克·托兰达 Eric Toledano"
    assert rows[22]["actors"] is None


def test_douban_missing_quote_and_multi_year_line() -> None:
    rows = by_rank(board("douban", "/top250?start=25"))
    assert rows[33]["title"] == "我不是药神" and rows[33]["quote"] is None
    assert rows[33]["votes"] > 0 and rows[33]["score"] == 9.0
    rows = by_rank(board("douban", "/top250?start=50"))
    assert rows[54]["title"] == "大闹天宫"
    assert rows[54]["release_date"] == "1961(中国大陆) / 1964(中国大陆) / 1978(中国大陆) / 2004(中国大陆)"
    assert rows[54]["year"] == 1961 and rows[54]["countries"] == "中国大陆" and rows[54]["genres"] == "动画 奇幻"


def test_douban_2019_markup_pages() -> None:
    text = read("douban", "/top250?start=100")
    assert '<div class="star">' in text and '<span class="inq">' in text and '<em class="">101</em>' in text
    rows = by_rank(board("douban", "/top250?start=100"))
    assert rows[101]["quote"] == "沉醉在夏日的阳光里。"
    assert rows[109]["quote"] is None
    assert rows[109]["other_titles"] == "リトル・フォレスト 夏・秋 / 小森食光 夏秋篇(台) / Little Forest: Summer/Autumn"


def test_douban_last_page() -> None:
    text = read("douban", "/top250?start=225")
    assert '<span class="thispage">10</span>' in text and "后页&gt;\n" in text
    page = board("douban", "/top250?start=225")
    assert page.page_urls == [f"{DOUBAN}/top250?start={n}" for n in (200, 0, 25, 50, 75, 100, 125, 150, 175)]
    rows = by_rank(page)
    assert rows[250]["title"] == "唐山大地震" and rows[250]["quote"] is None
    assert rows[236]["actors"] == "伊万·拉班达 Ivan Labanda"
    assert rows[226]["score"] == 8.5 and rows[226]["votes"] == 734070


def test_douban_pager_urls_follow_the_page_url_host() -> None:
    page = board("douban", "/top250?start=0", base="http://localhost:9000")
    assert page.page_urls[0] == "http://localhost:9000/top250?start=25"


# --- pages that are not boards -----------------------------------------------------------

VERIFY_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>猫眼验证中心</title></head>
<body><div id="app"><p>请完成下方验证后继续访问</p><div class="yoda-slider"></div></div></body></html>"""


def test_maoyan_verification_page_is_blocked() -> None:
    with pytest.raises(NotABoardPage) as caught:
        maoyan.parse_board(VERIFY_PAGE, f"{MAOYAN}/board/4?offset=0")
    assert caught.value.blocked is True
    assert caught.value.reason == "Maoyan verification page (猫眼验证中心)"


def test_maoyan_empty_board_list() -> None:
    html = re.sub(r"<dd>.*?</dd>", "", read("maoyan", "/board/7"), flags=re.S)
    assert '<dl class="board-wrapper">' in html
    with pytest.raises(NotABoardPage) as caught:
        maoyan.parse_board(html, f"{MAOYAN}/board/7")
    assert caught.value.blocked is False and "热映口碑榜" in caught.value.reason


def test_maoyan_entry_without_title_is_rejected() -> None:
    html = read("maoyan", "/board/7")
    html = re.sub(r'<p class="name">.*?</p>', "", html, count=1)
    html = re.sub(r' title="哪吒之魔童降世"', "", html)
    with pytest.raises(NotABoardPage, match="without rank or title"):
        maoyan.parse_board(html, f"{MAOYAN}/board/7")


def test_maoyan_entry_without_rank_is_rejected() -> None:
    html = read("maoyan", "/board/7").replace('<i class="board-index board-index-3">3</i>', "", 1)
    with pytest.raises(NotABoardPage):
        maoyan.parse_board(html, f"{MAOYAN}/board/7")


def test_douban_page_without_items_says_what_it_is() -> None:
    html = ('<html lang="zh-CN"><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            "<title>\n    登录跳转页\n</title></head><body><p>请登录后继续</p></body></html>")
    with pytest.raises(NotABoardPage) as caught:
        douban.parse_board(html, f"{DOUBAN}/top250?start=0")
    assert "登录跳转页" in caught.value.reason and caught.value.blocked is False


def test_douban_empty_list() -> None:
    html = re.sub(r"<li>\s*<div class=\"item\">.*?</li>", "", read("douban", "/top250?start=0"), flags=re.S)
    with pytest.raises(NotABoardPage, match="豆瓣电影 Top 250"):
        douban.parse_board(html, f"{DOUBAN}/top250?start=0")


def test_douban_entry_without_title_is_rejected() -> None:
    html = read("douban", "/top250?start=0").replace('<span class="title">肖申克的救赎</span>', "", 1)
    with pytest.raises(NotABoardPage, match="without rank or title"):
        douban.parse_board(html, f"{DOUBAN}/top250?start=0")


def test_douban_entry_without_rank_is_rejected() -> None:
    html = read("douban", "/top250?start=0").replace("<em>7</em>", "<em></em>", 1)
    with pytest.raises(NotABoardPage):
        douban.parse_board(html, f"{DOUBAN}/top250?start=0")


@pytest.mark.parametrize("site,key", [("maoyan", "/board/4?offset=0"), ("douban", "/top250?start=0"),
                                      ("maoyan", "/board/6?offset=0")])
def test_a_parsed_page_leaves_no_garbage_for_the_cycle_collector(site: str, key: str) -> None:
    """A page's tree is freed as soon as it is parsed, without a collection (see Tags.dispose)."""
    board(site, key)  # first use: module-level caches
    gc.collect()
    gc.disable()
    try:
        page = board(site, key)
        found = gc.collect()
    finally:
        gc.enable()
    assert page.records and found == 0

