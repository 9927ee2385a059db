"""The crawl's decisions, as pure functions: whether and when to retry, when to stop asking a site.

The scheduler asks these and acts; nothing here waits, sends or stores, so each rule is
tested on its own.
"""
from __future__ import annotations

import random
from typing import Callable

# After this many blocked pages from one site, stop asking it: more requests only
# make the block last longer.
BLOCKS_BEFORE_GIVING_UP = 3
# No wait between two tries of a page is longer, whatever the backoff or the site asks.
MAX_BACKOFF = 60.0


def should_retry(retryable: bool, attempt: int, max_attempts: int) -> bool:
    """A failed try is tried again when its error is worth it and tries are left."""
    return retryable and attempt < max_attempts


def retry_delay(attempt: int, backoff: float, retry_after: float | None = None,
                jitter: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait before try `attempt + 1`.

    The site's Retry-After comes first. Otherwise the backoff doubles with each try, with
    jitter (x0.5 to x1.5) so that pages that failed together are not retried together.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), MAX_BACKOFF)
    return min(MAX_BACKOFF, backoff * 2 ** (attempt - 1)) * jitter(0.5, 1.5)


def stop_asking(blocked_pages: int) -> bool:
    """Whether a site that has answered this many pages with a block should be left alone."""
    return blocked_pages >= BLOCKS_BEFORE_GIVING_UP
