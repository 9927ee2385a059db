"""The root of every error the crawler reports, so that one `except CrawlerError` catches them all."""
from __future__ import annotations


class CrawlerError(Exception):
    """A failure the crawler explains in one line a user can act on."""
