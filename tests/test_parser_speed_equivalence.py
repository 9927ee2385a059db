"""The fast parse path gives exactly what parsing the whole page with BeautifulSoup gave.

The parsers used to build a BeautifulSoup of the whole page and query it with CSS
selectors; now lxml parses the page and bs4 objects are made only for its board, pager
and title (parsers.common.parse_parts), queried through an index (parsers.common.Tags).
Three checks that no record moved: full records per board and a digest of every fixture
page's whole output, both taken from the parsers before the change; and the fast path
against the whole-document soup, on the fixtures and on variants of them.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import pytest

from parsers import common, douban, maoyan
from parsers.common import BoardPage, NotABoardPage, Tags, soup_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
BASE = {"maoyan": "https://www.maoyan.com", "douban": "https://movie.douban.com"}
PARSER = {"maoyan": maoyan, "douban": douban}
PAGES = [(site, key) for site in ("maoyan", "douban") for key in MANIFEST[site]
         if key != "/robots.txt" and not key.startswith("//")]  # board pages: no robots.txt, no font

# sha256 (first 16 hex digits) of each page's records, updated and page_urls as sorted-key
# JSON (see `digest`), from the parsers before the speed-up. A deliberate change to what
# a parser extracts changes these: re-take them from the changed parser's output.
DIGESTS = {
    "/board/4?offset=0": "6108b9a91f6e4ad0",
    "/board/4?offset=10": "7a706fe5c283ae35",
    "/board/4?offset=20": "8fe1f9d385f4ee89",
    "/board/4?offset=30": "15f0934c35224aa3",
    "/board/4?offset=40": "511a0a504274785c",
    "/board/4?offset=50": "8dbef6b1bff6a287",
    "/board/4?offset=60": "03b57efce7da1943",
    "/board/4?offset=70": "5ee00454399e2803",
    "/board/4?offset=80": "e3ab62205a995b6c",
    "/board/4?offset=90": "3bd1b074e7dca8de",
    "/board/7": "98848ebb22163c58",
    "/board/6?offset=0": "6adb9dfcc7f8ee5d",
    "/board/6?offset=10": "d907a0f36ac981e8",
    "/board/6?offset=20": "837cf9f6933746ab",
    "/board/1": "8ef102de229694ff",
    "/board/2": "f0409b76d55dd2fc",
    "/top250?start=0": "130165273aca23ca",
    "/top250?start=25": "0046f7fc1cf71090",
    "/top250?start=50": "b734903795fb4f9f",
    "/top250?start=75": "e9e3b32097da006c",
    "/top250?start=100": "c25e82ec33440c25",
    "/top250?start=125": "13b72bf989b0dca9",
    "/top250?start=150": "364fc9925a504f81",
    "/top250?start=175": "f021daa17e073a56",
    "/top250?start=200": "b02bd38d21fe146b",
    "/top250?start=225": "52454f33c5a1a943",
}

# Whole records as the parsers made them before the speed-up, a few per board.
SNAPSHOT = {
    ("maoyan", "/board/4?offset=10", 13): {
        "rank": 13, "movie_id": "1228", "title": "天空之城", "url": "https://www.maoyan.com/films/1228",
        "poster_url": "http://p0.meituan.net/movie/a061cff3b91eaf3304876a941b4c4472989569.jpg@160w_220h_1e_1c",
        "actors": "寺田农,鹫尾真知子,龟山助清", "release_date": "1992", "release_region": None, "score": 9.1,
        "obfuscated": [],
    },
    ("maoyan", "/board/4?offset=60", 65): {
        "rank": 65, "movie_id": "916", "title": "哈利·波特与死亡圣器（下）", "url": "https://www.maoyan.com/films/916",
        "poster_url": "https://p0.pipi.cn/mmdb/7faa11d5cdfe5f56333b4911a45cefb391be4.jpg?imageView2/1/w/160/h/220",
        "actors": "丹尼尔·雷德克里夫,鲁伯特·格林特,艾玛·沃森", "release_date": "2011-08-04", "release_region": None,
        "score": 9.0, "obfuscated": [],
    },
    ("maoyan", "/board/7", 1): {
        "rank": 1, "movie_id": "1211270", "title": "哪吒之魔童降世", "url": "https://www.maoyan.com/films/1211270",
        "poster_url": "https://p0.meituan.net/movie/d10df5cf1db3a0cbf673eced12812fc5378306.jpg@160w_220h_1e_1c",
        "actors": "吕艳婷,囧森瑟夫,瀚墨", "release_date": "2019-07-26", "release_region": None, "score": 9.6,
        "obfuscated": [],
    },
    ("maoyan", "/board/6?offset=0", 1): {
        "rank": 1, "movie_id": "1413252", "title": "阿凡达：火与烬", "url": "https://www.maoyan.com/films/1413252",
        "poster_url": "https://p0.pipi.cn/mmdb/eba791c14978c73574ea908d38ad05463a6ee.jpg?imageView2/1/w/160/h/220",
        "actors": "萨姆·沃辛顿,佐伊·索尔达娜,西格妮·韦弗", "release_date": "2025-12-19", "release_region": None,
        "score": None, "month_wish": None, "total_wish": None, "obfuscated": ["month_wish", "total_wish"],
    },
    ("maoyan", "/board/6?offset=0", 4): {
        "rank": 4, "movie_id": "1322807", "title": "复仇者联盟5：末日", "url": "https://www.maoyan.com/films/1322807",
        "poster_url": "https://p0.pipi.cn/mmdb/1b98a0bc62f7a0dc903e59f62a5a7fc61e6c0.jpg?imageView2/1/w/160/h/220",
        "actors": "小罗伯特·唐尼,佩德罗·帕斯卡,凡妮莎·柯比", "release_date": "2026-12-18", "release_region": "美国",
        "score": None, "month_wish": 87456, "total_wish": 2310458, "obfuscated": [],
    },
    ("maoyan", "/board/1", 2): {
        "rank": 2, "movie_id": "1482215", "title": "浪浪山小妖怪", "url": "https://www.maoyan.com/films/1482215",
        "poster_url": "https://p0.pipi.cn/mmdb/ddd10ecfe51efe148b4db8cc17b3ed3822c24.jpg?imageView2/1/w/160/h/220",
        "actors": "杨天翔,马泽,宋颖", "release_date": "2025-08-02", "release_region": None, "score": None,
        "realtime_box_office": 3987.12, "realtime_box_office_unit": "万",
        "total_box_office": None, "total_box_office_unit": "亿", "obfuscated": ["total_box_office"],
    },
    ("maoyan", "/board/2", 1): {
        "rank": 1, "movie_id": "1367210", "title": "神奇四侠：初露锋芒", "url": "https://www.maoyan.com/films/1367210",
        "poster_url": "https://p0.pipi.cn/mmdb/ff1f747b47755f3b123b9aa015fc47ca1c7d7.jpg?imageView2/1/w/160/h/220",
        "actors": "佩德罗·帕斯卡,凡妮莎·柯比,约瑟夫·奎恩", "release_date": "2025-07-25", "release_region": "美国",
        "score": None, "realtime_box_office": 11780.0, "realtime_box_office_unit": "万",
        "total_box_office": 11780.0, "total_box_office_unit": "万", "obfuscated": [],
    },
    ("douban", "/top250?start=0", 23): {
        "rank": 23, "movie_id": "1291841", "title": "教父", "other_titles": "The Godfather / Mario Puzo's The Godfather",
        "url": "https://movie.douban.com/subject/1291841/",
        "poster_url": "https://img9.doubanio.com/view/photo/s_ratio_poster/public/p1051107947.jpg",
        "score": 9.3, "votes": 2534309, "quote": "千万不要记恨你的对手，这样会让你失去理智。", "playable": True,
        "credits": "导演: 弗朗西斯·福特·科波拉 Francis Ford Coppola 主演: 马龙·白兰度 M...",
        "directors": "弗朗西斯·福特·科波拉 Francis Ford Coppola", "actors": "马龙·白兰度 M",
        "year": 1972, "release_date": "1972", "countries": "美国", "genres": "剧情 犯罪",
    },
    ("douban", "/top250?start=100", 109): {
        "rank": 109, "movie_id": "6044684", "title": "小森林 夏秋篇",
        "other_titles": "リトル・フォレスト 夏・秋 / 小森食光 夏秋篇(台) / Little Forest: Summer/Autumn",
        "url": "https://movie.douban.com/subject/6044684/",
        "poster_url": "https://img2.doubanio.com/view/photo/s_ratio_poster/public/p1943369216.jpg",
        "score": 9.0, "votes": 1236156, "quote": None, "playable": True,
        "credits": "导演: 森淳一 Junichi Mori 主演: 桥本爱 Ai Hashimoto / 三浦贵大 ...",
        "directors": "森淳一 Junichi Mori", "actors": "桥本爱 Ai Hashimoto / 三浦贵大",
        "year": 2014, "release_date": "2014", "countries": "日本", "genres": "剧情",
    },
    ("douban", "/top250?start=225", 250): {
        "rank": 250, "movie_id": "8695703", "title": "唐山大地震", "other_titles": "Aftershock",
        "url": "https://movie.douban.com/subject/8695703/",
        "poster_url": "https://img3.doubanio.com/view/photo/s_ratio_poster/public/p1343759395.jpg",
        "score": 8.3, "votes": 559917, "quote": None, "playable": True,
        "credits": "导演: 冯小刚 Xiaogang Feng 主演: 徐帆 Fan Xu / 张静初 Jingchu Zhang / 李晨 ...",
        "directors": "冯小刚 Xiaogang Feng", "actors": "徐帆 Fan Xu / 张静初 Jingchu Zhang / 李晨",
        "year": 2010, "release_date": "2010", "countries": "中国大陆", "genres": "剧情 家庭 历史 灾难",
    },
}


def read(site: str, key: str) -> str:
    return (FIXTURES / MANIFEST[site][key]["file"]).read_bytes().decode("utf-8")


def outcome(site: str, html: str, url: str) -> object:
    """What a parser makes of a page: its BoardPage fields, or why it is not a board."""
    try:
        page = PARSER[site].parse_board(html, url)
    except NotABoardPage as e:
        return ("not a board", e.reason, e.blocked)
    return {"records": page.records, "updated": page.updated, "page_urls": page.page_urls}


def whole_document(site: str, html: str, url: str) -> object:
    """The same, with the parser reading a soup of the whole page (the old way to the tree)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PARSER[site], "parse_parts", lambda html, *parts: Tags(soup_of(html)))
        return outcome(site, html, url)


def digest(page: BoardPage) -> str:
    whole = {"records": page.records, "updated": page.updated, "page_urls": page.page_urls}
    return hashlib.sha256(json.dumps(whole, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


@pytest.mark.parametrize("site,key", PAGES)
def test_every_fixture_page_parses_as_before(site: str, key: str) -> None:
    assert digest(PARSER[site].parse_board(read(site, key), BASE[site] + key)) == DIGESTS[key]


@pytest.mark.parametrize("site,key,rank", list(SNAPSHOT))
def test_snapshot_records(site: str, key: str, rank: int) -> None:
    records = PARSER[site].parse_board(read(site, key), BASE[site] + key).records
    assert next(r for r in records if r["rank"] == rank) == SNAPSHOT[site, key, rank]


@pytest.mark.parametrize("site,key", PAGES)
def test_fast_path_reads_like_the_whole_document(site: str, key: str) -> None:
    html, url = read(site, key), BASE[site] + key
    assert outcome(site, html, url) == whole_document(site, html, url)


def variants(html: str, seed: int) -> dict[str, str]:
    """The page reformatted, cut short and with stray markup dropped in."""
    rnd = random.Random(seed)
    found = {
        "crlf": re.sub(r"\r?\n", "\r\n", html),
        "wrapped start tags": re.sub(r"<(\w+) (class|href)=", r"<\1\n      \2=", html),
        "no whitespace between tags": re.sub(r">\s+<", "><", html),
    }
    for n in range(1, 12):
        found[f"cut at {n}/12"] = html[: len(html) * n // 12]
    stray = ["<!---->", "<!-- 123人评价 -->", "<template><p>t</p></template>", "<br>", "</p>", "</a>",
             "</div>", "<span>A</span> <span>B</span>", "</body></html>", "<pre>  </pre>", "\u3000",
             "<template>", "<pre>", '<p class="name">', '<div class="hd">']
    tags = [m.start() for m in re.finditer("<", html)]
    for n in range(12):
        at = sorted(rnd.sample(tags, 3))
        mutated = html
        for pos in reversed(at):
            mutated = mutated[:pos] + rnd.choice(stray) + mutated[pos:]
        found[f"stray markup {n}"] = mutated
    return found


@pytest.mark.parametrize("site,key", [("maoyan", "/board/4?offset=0"), ("maoyan", "/board/4?offset=60"),
                                      ("maoyan", "/board/6?offset=0"), ("maoyan", "/board/1"),
                                      ("douban", "/top250?start=0"), ("douban", "/top250?start=100")])
def test_fast_path_on_odd_variants(site: str, key: str) -> None:
    url = BASE[site] + key
    for name, html in variants(read(site, key), seed=len(key)).items():
        assert outcome(site, html, url) == whole_document(site, html, url), name


def test_pages_that_are_not_boards() -> None:
    verify = '<html><head><title>猫眼验证中心</title></head><body><div class="yoda"></div></body></html>'
    for site, html in (("maoyan", verify), ("maoyan", ""), ("douban", ""), ("douban", "<p>x"),
                       ("douban", '<html><head><title>\n 登录跳转页\n</title></head><body></body></html>')):
        assert outcome(site, html, BASE[site]) == whole_document(site, html, BASE[site])
        assert outcome(site, html, BASE[site])[0] == "not a board"


@pytest.mark.parametrize("site,key,board", [("maoyan", "/board/6?offset=0", ("dl", "board-wrapper")),
                                            ("douban", "/top250?start=0", ("div", "item"))])
def test_the_board_soup_is_the_whole_soup_cut_down(site: str, key: str, board: tuple[str, str]) -> None:
    """Same tags, attributes and text as in the whole soup; only indentation is left out."""
    html = read(site, key)
    fast = common.parse_parts(html, board).root
    whole = soup_of(html)
    fast_boards, whole_boards = fast.find_all(board[0], class_=board[1]), whole.find_all(board[0], class_=board[1])
    assert len(fast_boards) == len(whole_boards) > 0
    assert fast.title == whole.title
    for a, b in zip(fast_boards, whole_boards):
        assert [(t.name, t.attrs) for t in a.find_all(True)] == [(t.name, t.attrs) for t in b.find_all(True)]
        assert [(type(s), s) for s in a.strings if s.strip()] == [(type(s), s) for s in b.strings if s.strip()]
        assert [s.parent.name for s in a.strings if not s.strip()] == [
            s.parent.name for s in b.strings if not s.strip() and not only_containers_above(s, b)]


def only_containers_above(string: object, board: object) -> bool:
    """Whitespace the fast path leaves out: no parser reads the text of these containers."""
    above = []
    for tag in string.parents:
        above.append(tag.name)
        if tag is board:
            break
    return all(name in common._CONTAINERS for name in above)


def test_the_inside_of_a_template_is_not_read() -> None:
    """As with the CSS selectors and get_text() the parsers used: a <template> is no content."""
    html = read("maoyan", "/board/7").replace('<i class="board-index board-index-3">3</i>',
                                              '<template><i class="board-index board-index-3">3</i></template>')
    with pytest.raises(NotABoardPage, match="rank=None, title='银河补习班'"):
        maoyan.parse_board(html, BASE["maoyan"] + "/board/7")
    html = read("douban", "/top250?start=0").replace("<em>7</em>", "<template><em>7</em></template>")
    with pytest.raises(NotABoardPage, match="rank=None, title='这个杀手不太冷'"):
        douban.parse_board(html, BASE["douban"] + "/top250?start=0")
