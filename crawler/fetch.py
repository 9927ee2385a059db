"""Downloading, in the pool's worker processes.

Everything here crosses a process boundary, so it is small and picklable: a FetchTask
goes in, a FetchResult or a FetchError comes out. Parsing never happens here.
"""
from __future__ import annotations

import heapq
import itertools
import multiprocessing
import os
import re
import signal
import socket
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit

import requests

from .errors import CrawlerError

# Headers the main process needs to classify and store a page; the rest stay behind.
KEPT_HEADERS = ("content-type", "content-encoding", "retry-after", "location", "etag", "last-modified")
MAX_REDIRECTS = 5
CHUNK = 64 * 1024
PAGE_COMPRESSION = 6  # zlib level of the pages kept in the database
# The web font a page draws some of its digits with is fetched with the page: this big at most,
# in this many tries.
MAX_FONT_BYTES = 1_000_000
FONT_TRIES = 2
_FONT_URL = re.compile(rb"""url\(\s*["']?([^"')\s]+?\.woff2?)(?:[?#][^"')]*)?["']?\s*\)""", re.I)
# Private-use code points (U+E000-U+F8FF), as entities or as UTF-8: what such a font draws.
_PRIVATE_USE = re.compile(rb"&#x[ef][0-9a-f]{3};|\xee[\x80-\xbf][\x80-\xbf]|\xef[\x80-\xa3][\x80-\xbf]", re.I)


@dataclass(frozen=True)
class SiteHTTP:
    """What a worker sends to one site."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    # Hosts its pages' web fonts may be fetched from (none: fonts are not fetched).
    font_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkerSettings:
    user_agent: str
    request_timeout: float
    page_deadline: float
    max_page_bytes: int
    sites: dict[str, SiteHTTP]
    # Folder of fixtures to serve instead of the network (the --offline crawl).
    offline_fixtures: str | None = None


@dataclass(frozen=True)
class FetchTask:
    site: str
    board: str
    url: str
    attempt: int = 1
    # Validators of the last stored copy, for a conditional request (304 when unchanged).
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class FetchResult:
    url: str
    final_url: str
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float
    # True when the body was cut at max_page_bytes.
    truncated: bool = False
    # The web font the page draws some digits with: its bytes, its URL, or why it is missing.
    font: bytes | None = None
    font_url: str | None = None
    font_error: str | None = None
    # A page's body zlib-compressed as the database keeps it, made here where there is CPU
    # to spare rather than in the main process, which handles every page.
    compressed: bytes = b""


class FetchError(CrawlerError):
    """A download that produced no HTTP response worth reading."""

    def __init__(self, url: str, reason: str, retryable: bool) -> None:
        super().__init__(url, reason, retryable)
        self.url = url
        self.reason = reason
        self.retryable = retryable

    def __str__(self) -> str:
        return self.reason


# Why the crawl sends nothing more to a site.
BLOCKED, STOPPING = 1, 2


def not_fetched(site: str, why: int) -> str:
    """The reason given for a page a worker dropped instead of asking its site."""
    return (f"not fetched: {site} is blocking the crawler" if why == BLOCKED
            else "not fetched: the crawl is stopping")


class SiteStops:
    """The sites the crawl has stopped asking, as the workers of a process or thread pool see them.

    A byte per site in shared memory: the main process sets it when it gives up on a site
    (BLOCKED) or is told to stop (STOPPING), and a worker reads it just before each request,
    so that tasks already handed to the pool send nothing more.
    """

    def __init__(self, sites: Iterable[str], context: Any = multiprocessing) -> None:
        self.sites = tuple(sites)
        self.flags = context.RawArray("b", max(1, len(self.sites)))

    def stop(self, site: str, why: int = BLOCKED) -> None:
        self.flags[self.sites.index(site)] = why

    def why(self, site: str) -> int:
        """0 while the site may be asked, else BLOCKED or STOPPING."""
        return self.flags[self.sites.index(site)] if site in self.sites else 0


def init_worker(settings: WorkerSettings, stops: SiteStops | None = None) -> None:
    """Process-pool initializer: set up downloads, and leave signals to the main process."""
    # The main process decides what Ctrl-C means; workers must not print tracebacks for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker forked after the main process set its own SIGTERM handler would inherit it
    # and then ignore Pool.terminate(); a worker must die when told to.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure(settings, stops)


def configure(settings: WorkerSettings, stops: SiteStops | None = None) -> None:
    """Set up this process's downloads, which fetch() uses; each thread makes its Session on first use."""
    global _downloads
    _downloads = Downloads(settings, stops)


def _environment_for(base_url: str) -> dict:
    """What requests would take from the environment for this site on each request.

    requests reads the proxy variables (scanning all of os.environ) and ~/.netrc anew for
    every request, which was a fifth of a download's CPU here. Sessions here do not trust
    the environment; its settings are read once per site instead, with the same meaning.
    """
    return {"proxies": requests.utils.get_environ_proxies(base_url),
            "auth": requests.utils.get_netrc_auth(base_url)}


def make_session(settings: WorkerSettings) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # read once per site instead: see _environment_for
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.headers["User-Agent"] = settings.user_agent
    for site in settings.sites.values():
        host = urlsplit(site.base_url).hostname
        for name, value in site.cookies.items():
            session.cookies.set(name, value, domain=host)
    if settings.offline_fixtures:
        from .offline import FixtureAdapter

        adapter = FixtureAdapter(settings.offline_fixtures, {name: s.base_url for name, s in settings.sites.items()})
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


class Downloads:
    """One crawl's downloads in this process: its settings, the sites' stop flags, the proxies
    and logins the environment gives each site, and a Session per downloading thread.

    A process or thread pool's workers share one (configure); a Dask worker has one for each
    crawl it serves. requests.Session is not safe to share between threads.
    """

    def __init__(self, settings: WorkerSettings, stops: SiteStops | None = None) -> None:
        self.settings, self.stops = settings, stops
        self._environment = {name: _environment_for(site.base_url) for name, site in settings.sites.items()}
        self._local = threading.local()

    def session(self) -> requests.Session:
        """This thread's Session, kept for its next page (keep-alive)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = make_session(self.settings)
        return session

    def stop(self, site: str, why: int) -> None:
        """Set a site's stop flag for these downloads (Dask's driver calls it on every worker)."""
        if self.stops is not None:
            self.stops.stop(site, why)

    def fetch(self, task: FetchTask) -> FetchResult:
        """Download one page within the page deadline, following redirects only inside the site."""
        settings, session = self.settings, self.session()
        site = settings.sites[task.site]
        site_host = urlsplit(site.base_url).hostname
        environment = self._environment.get(task.site, {})
        started = time.monotonic()
        deadline = started + settings.page_deadline
        url = task.url
        with _hard_deadline(task.url, settings.page_deadline):
            for _ in range(MAX_REDIRECTS + 1):
                why = self.stops.why(task.site) if self.stops is not None else 0
                if why:
                    raise FetchError(task.url, not_fetched(task.site, why), retryable=False)
                response = _get(session, url, {**site.headers, **_conditions(task)}, deadline,
                                settings.request_timeout, environment)
                with response, _watchdog.watch(response, deadline):
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        target = urljoin(url, location)
                        if urlsplit(target).hostname != site_host:
                            # Left for the main process to judge (a verification host is a block).
                            return _result(task.url, url, response, b"", started, False)
                        url = target
                        continue
                    body, truncated = _read(url, response, deadline, settings.max_page_bytes)
                    result = _result(task.url, url, response, body, started, truncated)
                if site.font_hosts and result.status == 200 and not truncated:
                    result.font, result.font_url, result.font_error = _fetch_font(
                        session, site, url, body, deadline, settings.request_timeout, environment)
                return result
        raise FetchError(task.url, f"more than {MAX_REDIRECTS} redirects", retryable=False)


# This process's downloads, for the pools that call fetch() by name (process and thread).
_downloads: Downloads | None = None


def fetch(task: FetchTask) -> FetchResult:
    """Download one page with this process's downloads."""
    assert _downloads is not None, "fetch() runs in a worker set up by init_worker or configure"
    return _downloads.fetch(task)


def font_url(body: bytes, page_url: str) -> str | None:
    """The web font a page draws private-use characters with, if it has one (.woff before .woff2)."""
    if b"@font-face" not in body or not _PRIVATE_USE.search(body):
        return None
    urls = [match.group(1).decode("ascii", "replace") for match in _FONT_URL.finditer(body)]
    if not urls:
        return None
    return urljoin(page_url, next((u for u in urls if u.lower().endswith(".woff")), urls[0]))


def _fetch_font(session: requests.Session, site: SiteHTTP, page_url: str, body: bytes, deadline: float,
                timeout: float, environment: dict) -> tuple[bytes | None, str | None, str | None]:
    """(font, its URL, why it is missing): the page's web font, from an allowed host, within the deadline."""
    url = font_url(body, page_url)
    if url is None:
        return None, None, None
    host = urlsplit(url).hostname or ""
    if not any(host == allowed or host.endswith("." + allowed) for allowed in site.font_hosts):
        return None, url, f"its host {host} is not among the site's font_hosts"
    why = "no try"
    for _ in range(FONT_TRIES):
        try:
            response = _get(session, url, site.headers, deadline, timeout, environment)
            with response, _watchdog.watch(response, deadline):
                if response.status_code != 200:
                    why = f"HTTP {response.status_code}"
                    continue
                font, truncated = _read(url, response, deadline, MAX_FONT_BYTES)
                if truncated:
                    return None, url, f"larger than {MAX_FONT_BYTES} bytes"
                return font, url, None
        except FetchError as exc:
            why = exc.reason
            if not exc.retryable:
                break
    return None, url, f"not downloaded ({why})"


def _conditions(task: FetchTask) -> dict[str, str]:
    headers = {}
    if task.etag:
        headers["If-None-Match"] = task.etag
    if task.last_modified:
        headers["If-Modified-Since"] = task.last_modified
    return headers


class _DeadlinePassed(BaseException):
    """Raised by the alarm inside a blocking read; BaseException so no library swallows it."""


class _Watchdog:
    """Cuts downloads still running at their deadline, where no alarm can (worker threads).

    A socket timeout bounds each wait for a byte, not the whole body, and only a process's
    main thread can take an alarm signal. One thread here watches every download of the
    process: at the deadline it shuts the response's socket down, so the blocked read
    fails at once, the worker thread is free, and the connection is closed, not kept.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, socket.socket]] = []  # heap of (deadline, order, socket)
        self._watched: set[int] = set()  # orders of the downloads still running
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, response: requests.Response, deadline: float):
        sock = _socket_of(response)
        if sock is None or threading.current_thread() is threading.main_thread():
            yield  # the alarm of _hard_deadline covers a process worker's main thread
            return
        order = next(self._order)
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._due, (deadline, order, sock))
            self._watched.add(order)
            self._wake.notify()
        try:
            yield
        finally:
            with self._wake:
                self._watched.discard(order)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._due and self._due[0][1] not in self._watched:
                    heapq.heappop(self._due)  # finished in time
                if not self._due:
                    self._wake.wait()
                    continue
                deadline, order, sock = self._due[0]
                if time.monotonic() < deadline:
                    self._wake.wait(deadline - time.monotonic())
                    continue
                heapq.heappop(self._due)
                self._watched.discard(order)
                try:  # under the lock: the download cannot end and hand its connection on meanwhile
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # closed meanwhile


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket a streamed response reads from (urllib3 -> http.client -> socket file)."""
    reader = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(reader, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


_watchdog = _Watchdog()


@contextmanager
def _hard_deadline(url: str, seconds: float):
    """Interrupt a read that blocks past the page deadline.

    A socket timeout bounds each wait for a byte, not the whole body: a server that
    trickles one byte at a time would hold a worker forever. In a process worker the
    task runs on the main thread, where an alarm signal can cut the read; elsewhere
    (a thread pool) the per-chunk check in _read is the bound.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise _DeadlinePassed()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _DeadlinePassed:
        raise FetchError(url, f"no complete response within the page deadline ({seconds:g} s)",
                         retryable=True) from None
    finally:
        signal.signal(signal.SIGALRM, previous)


def _get(session: requests.Session, url: str, headers: dict[str, str], deadline: float, timeout: float,
         environment: dict) -> requests.Response:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(url, "page deadline passed before the response started", retryable=True)
    timeout = min(timeout, remaining)
    try:
        return session.get(url, headers=headers, stream=True, allow_redirects=False, timeout=timeout, **environment)
    except requests.Timeout:
        raise FetchError(url, f"timed out: no answer within {timeout:g} s", retryable=True) from None
    except requests.RequestException as exc:
        raise FetchError(url, f"connection failed ({_why(exc)})", retryable=True) from None


def _read(url: str, response: requests.Response, deadline: float, cap: int) -> tuple[bytes, bool]:
    """Read the body chunk by chunk, so a trickling server or a gzip bomb is cut off."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(chunks)[:cap], True
            if time.monotonic() > deadline:
                raise FetchError(url, f"body still arriving after the page deadline ({size} bytes read)",
                                 retryable=True)
    except requests.RequestException as exc:
        if time.monotonic() > deadline:  # cut by the watchdog
            raise FetchError(url, f"body still arriving after the page deadline ({size} bytes read)",
                             retryable=True) from None
        raise FetchError(url, f"body cut short after {size} bytes ({_why(exc)})", retryable=True) from None
    return b"".join(chunks), False


def _why(exc: BaseException) -> str:
    """The root cause of a requests error, without the layers of wrapping around it."""
    seen = exc
    while True:
        inner = seen.__cause__ or seen.__context__ or next(
            (a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None or inner is seen:
            break
        seen = inner
    if isinstance(seen, OSError) and seen.strerror:
        return seen.strerror.lower()
    text = str(seen)
    return text.split(": ", 1)[-1] if "Errno" in text or "object at 0x" in text else text


def _result(url: str, final_url: str, response: requests.Response, body: bytes, started: float,
            truncated: bool) -> FetchResult:
    headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
    kept = zlib.compress(body, PAGE_COMPRESSION) if response.status_code == 200 and body else b""
    return FetchResult(url=url, final_url=final_url, status=response.status_code, headers=headers,
                       body=body, elapsed=time.monotonic() - started, truncated=truncated, compressed=kept)
