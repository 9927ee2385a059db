"""The same crawl as the benchmark's, done by a minimal Scrapy spider, for comparison.

    python benchmarks/scrapy_spider.py --base-url URL --pages N --concurrency C --db PATH --out JSON

Same URLs (/board/4?offset=0,10,...), CONCURRENT_REQUESTS = C (per domain too), no delay,
no robots.txt, no autothrottle; the same fields as the crawler's Maoyan parser (rank, movie
id, title, url, poster, actors, release date and region, score) read with Scrapy's own CSS
selectors (parsel/lxml), and each page's rows plus a row for the page written to SQLite in
one transaction (WAL, synchronous=NORMAL), as the crawler does. Scrapy is optional: bench.py
runs this only when it is installed.

Writes a JSON report like run_crawler.py's: wall time and CPU time of the crawl, time to
the first stored page, and what the database holds.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import sqlite3
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

import scrapy
from scrapy.crawler import CrawlerProcess

_FILM_ID = re.compile(r"/films/(\d+)")
_LABEL = re.compile(r"^[^:：]*[:：]")
_RELEASE = re.compile(r"^(?P<date>.*?)\s*(?:[(（](?P<region>[^)）]*)[)）])?$")
_SPACES = re.compile(r"\s+")


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    return _SPACES.sub(" ", text.replace("\xa0", " ")).strip() or None


class BoardSpider(scrapy.Spider):
    name = "maoyan-bench"

    def __init__(self, base_url: str, pages: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        self.pages = pages

    async def start(self):
        for n in range(self.pages):
            yield scrapy.Request(f"{self.base_url}/board/4?offset={n * 10}", callback=self.parse_board,
                                 dont_filter=True)

    def parse_board(self, response):
        records = []
        for dd in response.css("dl.board-wrapper > dd"):
            link = dd.css("p.name a")
            href = link.attrib.get("href") or ""
            film = _FILM_ID.search(href)
            poster = dd.css("img.board-img::attr(data-src)").get() or dd.css("img.board-img::attr(src)").get()
            if poster and poster.startswith("//"):
                poster = "https:" + poster
            actors = _clean(_LABEL.sub("", dd.css("p.star::text").get() or ""))
            release = _clean(_LABEL.sub("", dd.css("p.releasetime::text").get() or ""))
            date = region = None
            if release:
                m = _RELEASE.match(release)
                date, region = _clean(m.group("date")), _clean(m.group("region"))
            score = "".join(dd.css("p.score i::text").getall())
            records.append({
                "rank": int(dd.css("i.board-index::text").get()),
                "movie_id": film.group(1) if film else None,
                "title": _clean(link.css("::text").get()) or link.attrib.get("title"),
                "url": urljoin(response.url, href) if href else None,
                "poster_url": poster,
                "actors": ",".join(a.strip() for a in re.split(r"[,，]", actors or "") if a.strip()) or None,
                "release_date": date,
                "release_region": region,
                "score": float(score) if score else None,
            })
        yield {"url": response.url, "status": response.status, "bytes": len(response.body), "records": records}


COLUMNS = ("rank", "movie_id", "title", "url", "poster_url", "actors", "release_date", "release_region", "score")


class SQLitePipeline:
    """Each page's records and its page row in one transaction."""

    first_stored: float | None = None
    last_stored: float | None = None

    def __init__(self, db: str) -> None:
        self.path = db
        self.conn: sqlite3.Connection | None = None

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler.settings.get("BENCH_DB"))

    def open_spider(self, spider=None) -> None:
        self.conn = sqlite3.connect(self.path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("create table if not exists records (rank integer primary key, movie_id text, title text, "
                          "url text, poster_url text, actors text, release_date text, release_region text, "
                          "score real)")
        self.conn.execute("create table if not exists pages (url text primary key, status integer, bytes integer, "
                          "records integer, outcome text)")
        self.conn.commit()
        self.insert = (f"insert or replace into records ({', '.join(COLUMNS)}) "
                       f"values ({', '.join('?' * len(COLUMNS))})")

    def close_spider(self, spider=None) -> None:
        self.conn.close()

    def process_item(self, item, spider=None):
        with self.conn:
            self.conn.executemany(self.insert, [tuple(r[c] for c in COLUMNS) for r in item["records"]])
            self.conn.execute("insert or replace into pages values (?, ?, ?, ?, ?)",
                              (item["url"], item["status"], item["bytes"], len(item["records"]),
                               "ok" if item["records"] else "error"))
        SQLitePipeline.last_stored = time.perf_counter()
        if SQLitePipeline.first_stored is None:
            SQLitePipeline.first_stored = SQLitePipeline.last_stored
        return item


def check(db: str, pages: int) -> dict[str, object]:
    conn = sqlite3.connect(db)
    try:
        pages_ok = conn.execute("select count(*) from pages where outcome = 'ok'").fetchone()[0]
        records, low, high = conn.execute("select count(*), min(rank), max(rank) from records").fetchone()
    finally:
        conn.close()
    return {"pages_ok": pages_ok, "records": records, "distinct_ranks": records,
            "complete": pages_ok == pages and records == pages * 10 and low == 1 and high == pages * 10}


def cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    settings = {
        "BENCH_DB": args.db,
        "CONCURRENT_REQUESTS": args.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
        "DOWNLOAD_DELAY": 0,
        "RANDOMIZE_DOWNLOAD_DELAY": False,
        "AUTOTHROTTLE_ENABLED": False,
        "ROBOTSTXT_OBEY": False,
        "TELNETCONSOLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "ITEM_PIPELINES": {SQLitePipeline: 300},
    }
    process = CrawlerProcess(settings, install_root_handler=True)
    self0, children0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process.crawl(BoardSpider, base_url=args.base_url, pages=args.pages)
    process.start()
    elapsed = time.perf_counter() - started
    self1, children1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "tool": "scrapy",
        "scrapy_version": scrapy.__version__,
        "pages": args.pages,
        "concurrency": args.concurrency,
        "elapsed": elapsed,
        "first_page": (SQLitePipeline.first_stored - started) if SQLitePipeline.first_stored else None,
        "last_page": (SQLitePipeline.last_stored - started) if SQLitePipeline.last_stored else None,
        "cpu_parent": cpu(self1) - cpu(self0),
        "cpu_workers": cpu(children1) - cpu(children0),
        "max_rss_parent_kb": self1.ru_maxrss,
        # Everything this process and its reaped children used, imports included.
        "cpu_process_total": cpu(self1) + cpu(children1),
        **check(args.db, args.pages),
    }
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
