"""The worker's download function, in-process, with `responses` standing in for the site."""
from __future__ import annotations

import gzip
import pickle
import zlib

import pytest
import requests
import responses

from crawler import fetch as fetch_module
from crawler.fetch import FetchError, FetchTask, SiteHTTP, WorkerSettings, fetch

BASE = "https://www.maoyan.com"


@pytest.fixture
def worker(monkeypatch):
    """Set this process up as a pool worker would be, without touching its signal handlers."""
    settings = WorkerSettings(user_agent="test-agent/1.0", request_timeout=5, page_deadline=10,
                              max_page_bytes=10_000,
                              sites={"maoyan": SiteHTTP(BASE, {"Referer": BASE + "/"}, {"uuid": "abc"})})
    monkeypatch.setattr(fetch_module, "_downloads", None)
    fetch_module.configure(settings)
    return settings


def task(path="/board/7"):
    return FetchTask("maoyan", "hot", BASE + path)


@responses.activate
def test_sends_the_configured_headers_and_cookies(worker):
    responses.get(BASE + "/board/7", body="<html>ok</html>", headers={"ETag": '"v1"', "X-Other": "dropped"})
    result = fetch(task())
    sent = responses.calls[0].request
    assert sent.headers["User-Agent"] == "test-agent/1.0"
    assert sent.headers["Referer"] == BASE + "/"
    assert sent.headers["Cookie"] == "uuid=abc"
    assert result.status == 200 and result.body == b"<html>ok</html>"
    assert zlib.decompress(result.compressed) == result.body  # as the database keeps it
    assert result.headers == {"content-type": "text/plain", "etag": '"v1"'}


@responses.activate
def test_follows_redirects_inside_the_site_only(worker):
    responses.get(BASE + "/board/7", status=302, headers={"Location": "/board/7?offset=0"})
    responses.get(BASE + "/board/7?offset=0", status=302, headers={"Location": "https://verify.maoyan.com/v"})
    result = fetch(task())
    assert result.status == 302 and result.headers["location"] == "https://verify.maoyan.com/v"
    assert result.final_url == BASE + "/board/7?offset=0"
    assert [c.request.url for c in responses.calls] == [BASE + "/board/7", BASE + "/board/7?offset=0"]


@responses.activate
def test_a_redirect_loop_ends(worker):
    responses.get(BASE + "/a", status=302, headers={"Location": "/b"})
    responses.get(BASE + "/b", status=302, headers={"Location": "/a"})
    with pytest.raises(FetchError, match="more than 5 redirects") as error:
        fetch(task("/a"))
    assert error.value.retryable is False
    assert len(responses.calls) == 6


@responses.activate
def test_an_oversized_page_is_cut_at_the_cap(worker):
    responses.get(BASE + "/board/7", body=b"x" * 50_000)
    result = fetch(task())
    assert result.truncated and len(result.body) == 10_000


@responses.activate
def test_a_gzip_bomb_is_cut_after_decompression(worker):
    bomb = gzip.compress(b"<" * 5_000_000)
    responses.get(BASE + "/board/7", body=bomb, headers={"Content-Encoding": "gzip"})
    result = fetch(task())
    assert len(bomb) < 10_000 and result.truncated and len(result.body) == 10_000


@responses.activate
def test_connection_errors_are_retryable_and_picklable(worker):
    responses.get(BASE + "/board/7", body=requests.ConnectionError("refused"))
    with pytest.raises(FetchError) as error:
        fetch(task())
    copy = pickle.loads(pickle.dumps(error.value))
    assert copy.retryable and copy.url == BASE + "/board/7" and "connection failed" in copy.reason
