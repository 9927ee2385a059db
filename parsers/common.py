"""What every site parser returns, and the one way it says a page is not a board."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

from bs4 import BeautifulSoup


class NotABoardPage(Exception):
    """The page is not a ranked list (a verification page, an error page, an empty list).

    Such a page must never be stored as "0 records": the crawler records it as an
    error for that page, with this reason.
    """

    def __init__(self, reason: str, blocked: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # True when the site is refusing us (captcha, verification), not merely odd.
        self.blocked = blocked


@dataclass
class BoardPage:
    records: list[dict[str, Any]]
    # The board's own update time as the page prints it (e.g. "2025-05-27"), if shown.
    updated: str | None = None
    # Absolute URLs of the other pages of this board that the page's pager links to,
    # reduced to the one query parameter that selects the page.
    page_urls: list[str] = field(default_factory=list)


_SPACES = re.compile(r"\s+")


def clean(text: str | None) -> str | None:
    """Collapse runs of white space (including &nbsp; and CRLF) and strip; '' becomes None."""
    if text is None:
        return None
    text = _SPACES.sub(" ", text.replace("\xa0", " ")).strip()
    return text or None


# --- small helpers shared by the site parsers -------------------------------------

# Code points an obfuscating web font (Maoyan's "stonefont"/"mtsi-font") draws as digits.
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")


def soup_of(html: str) -> BeautifulSoup:
    """Parse with lxml, which copes with the sites' conditional comments and CRLF."""
    return BeautifulSoup(html, "lxml")


def page_title(soup: BeautifulSoup) -> str | None:
    """The page's <title>, cleaned (Douban wraps it in newlines)."""
    return clean(soup.title.get_text()) if soup.title else None


def is_obfuscated(text: str | None) -> bool:
    """True when the text holds private-use characters, i.e. glyphs of a font cipher."""
    return bool(text and _PRIVATE_USE.search(text))


def to_int(text: str | None) -> int | None:
    """The first run of digits as an int (commas allowed), else None."""
    m = re.search(r"\d[\d,]*", text or "")
    return int(m.group().replace(",", "")) if m else None


def to_float(text: str | None) -> float | None:
    """The first decimal number as a float, else None."""
    m = re.search(r"\d[\d,]*(?:\.\d+)?", text or "")
    return float(m.group().replace(",", "")) if m else None


def pager_urls(hrefs: Iterable[str | None], page_url: str, param: str) -> list[str]:
    """Canonical `scheme://host/path?param=N` for every pager link that carries `param`.

    The value is read from the link's query string, so extra parameters (Maoyan pages
    saved with `?User-Agent=...&offset=10`, Douban's `&filter=`) are dropped. The
    scheme, host and path come from `page_url`, so a local mirror stays local.
    """
    base = urlsplit(page_url)
    prefix = f"{base.scheme}://{base.netloc}{base.path}"
    urls: list[str] = []
    for href in hrefs:
        values = parse_qs(urlsplit(href or "").query).get(param)
        if values and values[0].strip().isdigit():
            url = f"{prefix}?{param}={int(values[0])}"
            if url not in urls:
                urls.append(url)
    return urls
