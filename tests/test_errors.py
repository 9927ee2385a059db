"""Every error the crawler reports shares one root, so a caller can catch them all at once."""
from __future__ import annotations

from crawler.cli import UsageError
from crawler.config import ConfigError
from crawler.errors import CrawlerError
from crawler.fetch import FetchError
from crawler.offline import FixtureError
from crawler.plot import PlotError
from crawler.pools import PoolUnavailable
from crawler.query import QueryError
from crawler.store import StoreError


def test_every_error_class_has_the_one_root():
    for error in (UsageError, ConfigError, FetchError, FixtureError, PlotError, PoolUnavailable, QueryError,
                  StoreError):
        assert issubclass(error, CrawlerError), error


def test_a_fetch_error_survives_the_trip_between_processes():
    import pickle

    error = pickle.loads(pickle.dumps(FetchError("https://example.test/", "timed out", True)))
    assert isinstance(error, CrawlerError) and (error.url, error.reason, error.retryable) == (
        "https://example.test/", "timed out", True)
