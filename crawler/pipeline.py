"""From a downloaded page to records or a reason: classify, decode, parse.

Runs in the main process inside the pool's callbacks, so `process` never raises: every
failure becomes a PageOutcome that says what happened to that page.
"""
from __future__ import annotations

import codecs
import re
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from parsers.common import BoardPage, NotABoardPage

from . import fonts
from .fetch import FetchError, FetchResult, FetchTask
from .site import CORE_FIELDS, Site

RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
# Fields of a record the crawler itself fills or reads, whatever the site.
CRAWLER_FIELDS = {"obfuscated", "updated"}

CUT_SHORT = "page cut short (no closing </html>)"
_ENDS = re.compile(r"</html\s*>", re.I)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-]+)""", re.I)
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9_\-]+)", re.I)
# Declared names of the Chinese encodings all decode correctly as their superset.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030"}


@dataclass
class PageOutcome:
    """What became of one page: records to store, or the reason there are none."""

    task: FetchTask
    outcome: str  # "ok", "error", "blocked" or "disallowed" (by robots.txt, never fetched)
    records: list[dict[str, Any]] = field(default_factory=list)
    updated: str | None = None
    page_urls: list[str] = field(default_factory=list)
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    # The download as the worker returned it (None when nothing came back): the page goes
    # one way, from the worker to the database and --record, inside the outcome.
    result: FetchResult | None = None
    # The page as decoded, kept only when the user should look at it (a block).
    html: str | None = None
    # A 304 answer to a conditional request: the stored copy still holds.
    not_modified: bool = False

    @property
    def status(self) -> int | None:
        return self.result.status if self.result else None

    @property
    def final_url(self) -> str | None:
        return self.result.final_url if self.result else None

    @property
    def bytes(self) -> int:
        return len(self.result.body) if self.result else 0

    @property
    def elapsed(self) -> float:
        return self.result.elapsed if self.result else 0.0

    @property
    def headers(self) -> dict[str, str]:
        return self.result.headers if self.result else {}


def failed(task: FetchTask, error: BaseException) -> PageOutcome:
    """The outcome of a download that raised instead of returning a response."""
    if isinstance(error, FetchError):
        return PageOutcome(task, "error", error=error.reason, retryable=error.retryable)
    return PageOutcome(task, "error", error=f"download failed: {type(error).__name__}: {error}", retryable=True)


def process(task: FetchTask, result: FetchResult, site: Site) -> PageOutcome:
    outcome = PageOutcome(task, "error", result=result)
    try:
        _classify(outcome, result, site)
    except Exception as exc:  # a parser bug must cost one page, never the crawl
        outcome.outcome, outcome.records = "error", []
        outcome.error = f"parser failed: {type(exc).__name__}: {exc}"
    return outcome


def _classify(outcome: PageOutcome, result: FetchResult, site: Site) -> None:
    status = result.status
    location = result.headers.get("location")
    if status == 304:
        # Unchanged since the stored copy: the scheduler reuses that copy's records.
        outcome.outcome, outcome.not_modified = "ok", True
        return
    if 300 <= status < 400:
        host = urlsplit(location or "").hostname or ""
        if site.block_hosts and host.endswith(site.block_hosts):
            outcome.outcome, outcome.error = "blocked", f"redirected to the verification page {location}"
        else:
            outcome.error = f"redirected off the site to {location}; not followed"
        return
    if status in site.block_statuses:
        outcome.outcome, outcome.error = "blocked", f"HTTP {status}: the site refused the request"
        outcome.html = decode(result.body, result.headers.get("content-type"))[0]
        return
    if status != 200:
        outcome.error = f"HTTP {status}"
        outcome.retryable = status in RETRYABLE_STATUS
        outcome.retry_after = retry_after_seconds(result.headers.get("retry-after"))
        return
    if result.truncated:
        outcome.error = f"page larger than max_page_bytes ({len(result.body)} bytes kept); not parsed"
        return
    html, problem = decode(result.body, result.headers.get("content-type"))
    if html is None:
        outcome.error = problem
        return
    html, unread = _read_font(html, result)
    # A page cut short still parses, into fewer records than the board has.
    complete = bool(_ENDS.search(html[-4096:]))
    try:
        page = site.parse(html, result.final_url)
    except NotABoardPage as exc:
        if exc.blocked:
            outcome.outcome, outcome.html, outcome.error = "blocked", html, f"not a board page: {exc.reason}"
        elif complete:
            outcome.error = f"not a board page: {exc.reason}"
        else:
            outcome.error, outcome.retryable = CUT_SHORT, True
        return
    if not isinstance(page, BoardPage) or not page.records:
        raise ValueError(f"parser returned {page!r:.80} instead of a BoardPage with records")
    if not complete:
        outcome.error, outcome.retryable = CUT_SHORT, True
        return
    declared = CORE_FIELDS.keys() | site.columns.keys() | CRAWLER_FIELDS
    for record in page.records:
        if not isinstance(record.get("rank"), int) or not record.get("title"):
            raise ValueError(f"record without a rank or title: {record!r:.120}")
        if record.keys() - declared:  # it would have no column: an error, never a silent drop
            raise ValueError(f"fields the site {site.name!r} does not declare: {sorted(record.keys() - declared)}")
    for record in page.records:
        record.setdefault("updated", page.updated)
    outcome.outcome, outcome.records = "ok", page.records
    outcome.updated, outcome.page_urls = page.updated, page.page_urls
    outcome.error = unread  # an ok page whose font-drawn numbers stay NULL says why


def _read_font(html: str, result: FetchResult) -> tuple[str, str | None]:
    """The page with its font-drawn digits written as digits, and why they were not, if they were not."""
    if result.font is not None:
        digits, why = fonts.digits_for(result.font)
        if digits:
            return fonts.reveal(html, digits), None
        return html, f"font-drawn numbers not read: the font {result.font_url} was not decoded ({why})"
    if result.font_error:
        return html, f"font-drawn numbers not read: the font {result.font_url} {result.font_error}"
    return html, None


def decode(body: bytes, content_type: str | None) -> tuple[str | None, str | None]:
    """Bytes to text without ever guessing into garbage.

    Valid UTF-8 is taken as UTF-8 whatever the page declares (a GBK page is almost never
    valid UTF-8, and a mis-declared UTF-8 page is common); otherwise the charset the header
    or a meta tag declares, then GB18030. Returns (text, None) or (None, reason).
    """
    if not body.strip():
        return None, "empty body"
    try:
        return body.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":  # cut inside the last character
            return body[:exc.start].decode("utf-8-sig"), None
    declared = [m.group(1) for m in (_HEADER_CHARSET.search(content_type or ""),) if m]
    declared += [m.group(1).decode("ascii") for m in (_META_CHARSET.search(body[:4096]),) if m]
    tried = ["utf-8"]
    for name in [*declared, "gb18030"]:
        try:
            codec = codecs.lookup(_SUPERSETS.get(name.lower(), name)).name
        except LookupError:
            continue
        if codec in tried:
            continue
        tried.append(codec)
        try:
            return body.decode(codec), None
        except UnicodeDecodeError:
            continue
    return None, f"cannot decode the page (tried {', '.join(tried)})"


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header as seconds from now: it may be a number or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
