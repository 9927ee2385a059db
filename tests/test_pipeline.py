"""Decoding and classification of downloaded pages (in-process: no pool needed)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from crawler.fetch import FetchResult, FetchTask
from crawler.pipeline import decode, process, retry_after_seconds
from parsers import maoyan

TEXT = "<html><head><title>霸王别姬</title></head><body>主演：张国荣</body></html>"
TASK = FetchTask("maoyan", "hot", "https://www.maoyan.com/board/7")


@pytest.mark.parametrize("body, content_type", [
    (TEXT.encode("utf-8"), "text/html; charset=utf-8"),
    (TEXT.encode("utf-8"), "text/html; charset=gbk"),  # mis-declared: the bytes are UTF-8
    (TEXT.encode("gbk"), "text/html; charset=GBK"),
    (TEXT.encode("gb18030"), "text/html"),  # declared nowhere
    (TEXT.replace("<head>", '<head><meta charset="gb2312">').encode("gbk"), None),
    (TEXT.encode("gbk"), "text/html; charset=utf-8"),  # mis-declared the other way
])
def test_decode_never_garbles(body, content_type):
    text, problem = decode(body, content_type)
    assert problem is None
    assert "霸王别姬" in text and "张国荣" in text


def test_decode_reports_what_it_cannot_read():
    assert decode(b"   \r\n", "text/html") == (None, "empty body")
    text, problem = decode(bytes(range(0x80, 0x100)) * 4, "text/html; charset=ascii")
    assert text is None and problem.startswith("cannot decode the page")


def test_retry_after_in_seconds_and_as_http_date():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def _result(status=200, body=b"", headers=None):
    return FetchResult(TASK.url, TASK.url, status, headers or {"content-type": "text/html; charset=utf-8"},
                       body, 0.1)


def test_a_verification_page_is_blocked_not_zero_records():
    page = "<html><head><title>猫眼验证中心</title></head><body><div>请完成验证</div></body></html>"
    outcome = process(TASK, _result(body=page.encode()), maoyan.SITE)
    assert outcome.outcome == "blocked" and outcome.records == []
    assert "猫眼验证中心" in outcome.error and outcome.html == page


def test_redirect_to_the_verify_host_is_blocked():
    outcome = process(TASK, _result(302, headers={"location": "https://verify.maoyan.com/x"}), maoyan.SITE)
    assert outcome.outcome == "blocked"


@pytest.mark.parametrize("status, retryable", [(503, True), (429, True), (500, True), (404, False), (410, False)])
def test_status_errors(status, retryable):
    outcome = process(TASK, _result(status, b"x"), maoyan.SITE)
    assert outcome.outcome == "error" and outcome.retryable is retryable and outcome.error == f"HTTP {status}"


def test_douban_refusal_is_blocked():
    outcome = process(TASK, _result(418, b"<html>no</html>"), maoyan.SITE)
    assert outcome.outcome == "blocked"


def test_a_parser_that_raises_costs_the_page_not_the_crawl():
    def broken(html, url):
        raise KeyError("board-index")

    outcome = process(TASK, _result(body=TEXT.encode()), replace(maoyan.SITE, parse=broken))
    assert outcome.outcome == "error" and "parser failed: KeyError" in outcome.error


def test_a_parser_that_returns_rubbish_is_an_error():
    outcome = process(TASK, _result(body=TEXT.encode()), replace(maoyan.SITE, parse=lambda html, url: ["not", "a", "page"]))
    assert outcome.outcome == "error" and "instead of a BoardPage" in outcome.error


def test_an_oversized_page_is_not_parsed():
    result = _result(body=b"x" * 100)
    result.truncated = True
    outcome = process(TASK, result, maoyan.SITE)
    assert outcome.outcome == "error" and "larger than max_page_bytes" in outcome.error


def test_a_board_page_cut_short_is_retried_not_stored_short():
    from tests.helpers import fixture_pages

    body = fixture_pages("maoyan")["/board/7"][2]
    whole = process(TASK, _result(body=body), maoyan.SITE)
    assert whole.outcome == "ok" and len(whole.records) == 10
    cut = process(TASK, _result(body=body[: len(body) // 2]), maoyan.SITE)
    assert cut.outcome == "error" and cut.retryable and cut.records == []
    assert cut.error == "page cut short (no closing </html>)"
