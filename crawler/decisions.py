"""What each outcome means for the crawl: store it, retry it, follow its pager, stop asking its site.

The rules themselves are pure functions (crawler.policy, crawler.robots); this is where
they are applied to the run: the frontier gets retries and new pages, the run writer the
pages, the pool the sites it must stop asking.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import policy, robots
from .config import Config
from .fetch import BLOCKED, STOPPING, FetchTask, not_fetched
from .frontier import Frontier, host_of, planned
from .pipeline import PageOutcome
from .progress import Progress
from .runwriter import RunWriter
from .sites import SITES
from .supervisor import PoolSupervisor


class Decisions:
    """Applies the crawl's policies to each task before it is sent and to each outcome after."""

    def __init__(self, config: Config, writer: RunWriter, supervisor: PoolSupervisor, progress: Progress,
                 offline: bool, blocked_dir: Path) -> None:
        self.config, self.writer, self.supervisor, self.progress = config, writer, supervisor, progress
        self.offline, self.blocked_dir = offline, blocked_dir
        self.frontier: Frontier  # set by the crawl once made: the two refer to each other
        # URL -> the newest earlier stored copy and its validators, for conditional requests.
        self.copies: dict[str, dict[str, Any]] = writer.stored_copies()
        self.known: set[str] = set()  # pages of boards that follow their pager, asked for once each
        self.robots = robots.RobotsGate()
        self.blocks: dict[str, int] = {}
        self.given_up: set[str] = set()
        self.blocked_pages: dict[str, str] = {}  # site -> the first page it blocked us with, saved
        self.failures: list[tuple[str, str]] = []
        self.notices: list[str] = []  # what the user should be told besides the pages
        self.stopping = False

    def task(self, site: str, board: str, url: str, attempt: int = 1) -> FetchTask:
        copy = self.copies.get(url, {})
        return FetchTask(site, board, url, attempt, copy.get("etag"), copy.get("last_modified"))

    def plan(self, skip: set[str], owed: list[dict[str, str]]) -> None:
        """Every page of the configured boards but those in `skip`, after each site's robots.txt;
        then the pages a resumed run noted but never stored that no board plans."""
        total, planned_urls = 0, set()
        for site_config in self.config.sites:
            site, base = SITES[site_config.name], site_config.base_url
            if site_config.obey_robots and not self.robots.asked(site.name):
                self.robots.ask(site.name)
                self.frontier.add(robots.robots_task(site.name, base))
            for board_name in site_config.boards:
                board = site.boards[board_name]
                planned_urls.update(base + path for path in board.pages)
                count = sum(base + path not in skip for path in board.pages)
                if count:
                    total += count
                    if board.follow_pager:
                        self.known.update(base + path for path in board.pages)
                    self.frontier.plan(urlsplit(base).netloc, planned(site.name, board_name, base, board.pages, skip))
        extra = [p for p in owed if p["url"] not in self.known and p["url"] not in planned_urls]
        for page in extra:
            self.known.add(page["url"])
            self.frontier.add(self.task(page["site"], page["board"], page["url"]))
        self.progress.add_pages(total + len(extra))

    def verdict(self, task: FetchTask) -> str:
        """"go", "wait" (for robots.txt), or why the task is dropped unsent ("blocked", "disallowed")."""
        if self.robots.waits(task):
            return "wait"
        if task.site in self.given_up:
            return "blocked"
        return "go" if self.robots.allows(task) else "disallowed"

    def drop(self, task: FetchTask, why: str) -> None:
        error = not_fetched(task.site, BLOCKED) if why == "blocked" else self.robots.rules[task.site].reason()
        self._final(task, PageOutcome(task, "error" if why == "blocked" else "disallowed", error=error))

    def stop_all(self) -> None:
        """On the way out: what waits in the pool is dropped, not sent."""
        for site in self.config.sites:
            self.supervisor.stop_site(site.name, STOPPING)
        self.progress.note("stopping: finishing the pages already downloading (press Ctrl-C again to stop at once)")

    def handle(self, task: FetchTask, outcome: PageOutcome) -> None:
        if outcome.error == not_fetched(task.site, STOPPING):
            return  # dropped on the way out: still noted pending, for --resume
        retry = policy.should_retry(outcome.retryable, task.attempt, self.config.max_attempts) and not self.stopping
        if robots.is_robots(task) and retry:
            self._retry(task, outcome)
        elif robots.is_robots(task):
            self._settle_robots(task, outcome)
        elif outcome.not_modified and task.url not in self.copies:
            outcome.outcome, outcome.error = "error", "HTTP 304 to a request that was not conditional"
            self._final(task, outcome)
        elif outcome.outcome == "ok":
            self._stored(task, outcome)
        elif outcome.outcome == "blocked":
            self._blocked(task, outcome)
        elif retry:
            self.writer.write(task, outcome, final=False)
            self.progress.page(task, outcome, False)
            self._retry(task, outcome)
        else:
            self._final(task, outcome)

    def _stored(self, task: FetchTask, outcome: PageOutcome) -> None:
        if outcome.not_modified:
            page_urls = self.writer.reuse(task, outcome, self.copies[task.url]["run_id"])
            self.progress.page(task, outcome, True)
        else:
            page_urls = outcome.page_urls
            self.writer.write(task, outcome)
            self.progress.page(task, outcome, True)
        if SITES[task.site].boards[task.board].follow_pager:
            new = [url for url in dict.fromkeys(page_urls) if url not in self.known]
            self.known.update(new)
            self.writer.note_pending([(task.site, task.board, url) for url in new])
            for url in new:
                self.frontier.add(self.task(task.site, task.board, url))
            self.progress.add_pages(len(new))

    def _blocked(self, task: FetchTask, outcome: PageOutcome) -> None:
        self.blocks[task.site] = self.blocks.get(task.site, 0) + 1
        if task.site not in self.blocked_pages:
            self._keep_blocked_page(task, outcome)
        if policy.stop_asking(self.blocks[task.site]) and task.site not in self.given_up:
            self.given_up.add(task.site)
            self.supervisor.stop_site(task.site, BLOCKED)  # tasks already in the pool must not send either
        self._final(task, outcome)

    def _final(self, task: FetchTask, outcome: PageOutcome) -> None:
        """A page that will not be stored: its row says why, and the summary names it."""
        self.writer.write(task, outcome)
        self.progress.page(task, outcome, True)
        self.failures.append((task.url, outcome.error or outcome.outcome))

    def _settle_robots(self, task: FetchTask, outcome: PageOutcome) -> None:
        """Once a site's robots.txt is settled, its pages may go (those it allows)."""
        rules = robots.rules(outcome, self.config.user_agent)
        self.robots.settle(task.site, rules)
        delay = rules.crawl_delay()
        if delay and not self.offline:  # a floor under delay_per_host, never lower
            self.frontier.slow_down(host_of(task), delay)
        if rules.why:
            self.notices.append(f"{task.site}: {rules.why}")
            self.progress.note(self.notices[-1])
        self.writer.record(task, outcome)

    def _keep_blocked_page(self, task: FetchTask, outcome: PageOutcome) -> None:
        path = self.blocked_dir / f"blocked-{task.site}-run{self.writer.run_id}.html"
        try:
            path.write_text(outcome.html or f"<!-- {task.url}: {outcome.error} -->", encoding="utf-8")
        except OSError:
            return  # the page row still says what happened
        self.blocked_pages[task.site] = str(path)

    def _retry(self, task: FetchTask, outcome: PageOutcome) -> None:
        now = time.monotonic()
        wait = policy.retry_delay(task.attempt, self.config.retry_backoff, outcome.retry_after)
        self.frontier.add(self.task(task.site, task.board, task.url, task.attempt + 1), now + wait, now)
