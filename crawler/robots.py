"""robots.txt: asked for once per site and run, through the pool like a page, obeyed before each request.

What an answer means follows RFC 9309: rules on 200; no rules at all (everything
allowed) on another 4xx or a redirect off the site; on 429, 5xx or no answer, try again as
for a page, and if it never comes, treat the whole site as disallowed for this run.
`Crawl-delay` raises the site's delay between requests (never lowers it).
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.robotparser import RobotFileParser

from .fetch import FetchResult, FetchTask
from .pipeline import RETRYABLE_STATUS, PageOutcome, retry_after_seconds

ROBOTS_PATH = "/robots.txt"
# The board a robots.txt task carries, so the scheduler tells it from a board page.
ROBOTS_BOARD = "robots.txt"
# RFC 9309: a crawler must read at least the first 500 KiB; what follows may be ignored.
MAX_ROBOTS_BYTES = 500 * 1024


def robots_task(site: str, base_url: str) -> FetchTask:
    return FetchTask(site, ROBOTS_BOARD, base_url.rstrip("/") + ROBOTS_PATH)


def is_robots(task: FetchTask) -> bool:
    return task.board == ROBOTS_BOARD


@dataclass
class Rules:
    """One site's robots.txt as read in this run."""

    parser: RobotFileParser | None = None  # None: no rules, everything allowed
    user_agent: str = "*"
    disallow_all: bool = False  # robots.txt could not be had: RFC 9309 says stay out
    why: str | None = None  # what the user should be told, if anything

    def allows(self, url: str) -> bool:
        if self.disallow_all:
            return False
        return self.parser is None or self.parser.can_fetch(self.user_agent, url)

    def reason(self) -> str:
        """Why a page this robots.txt keeps the crawler from was not fetched."""
        if self.disallow_all:
            return "not fetched: the site's robots.txt could not be read, so nothing of it is fetched"
        return "not fetched: disallowed by the site's robots.txt"

    def crawl_delay(self) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(self.user_agent)
        return float(delay) if delay is not None else None


def answer(task: FetchTask, result: FetchResult) -> PageOutcome:
    """The robots.txt download as an outcome: "ok" (rules or none) or an error worth retrying."""
    outcome = PageOutcome(task, "ok", result=result)
    if result.status in RETRYABLE_STATUS:
        outcome.outcome, outcome.error, outcome.retryable = "error", f"HTTP {result.status}", True
        outcome.retry_after = retry_after_seconds(result.headers.get("retry-after"))
    return outcome


def rules(outcome: PageOutcome, user_agent: str) -> Rules:
    """What a site's final robots.txt outcome allows."""
    if outcome.outcome != "ok":
        return Rules(disallow_all=True,
                     why=f"robots.txt could not be read ({outcome.error}, after {outcome.task.attempt} tries): "
                         f"every page of {outcome.task.site} is treated as disallowed for this run")
    if outcome.status != 200:
        return Rules(user_agent=user_agent)
    parser = RobotFileParser()
    parser.parse(outcome.result.body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace").splitlines())
    return Rules(parser=parser, user_agent=user_agent)



class RobotsGate:
    """Which sites still wait for their robots.txt, and what each site's rules allow."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.rules: dict[str, Rules] = {}

    def asked(self, site: str) -> bool:
        return site in self.pending or site in self.rules

    def ask(self, site: str) -> None:
        self.pending.add(site)

    def settle(self, site: str, rules: Rules) -> None:
        self.rules[site] = rules
        self.pending.discard(site)

    def waits(self, task: FetchTask) -> bool:
        """A page waits while its site's robots.txt is on its way."""
        return task.site in self.pending and not is_robots(task)

    def allows(self, task: FetchTask) -> bool:
        rules = self.rules.get(task.site)
        return rules is None or is_robots(task) or rules.allows(task.url)
