"""Downloading, in the pool's worker processes.

Everything here crosses a process boundary, so it is small and picklable: a FetchTask
goes in, a FetchResult or a FetchError comes out. Parsing never happens here.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urljoin, urlsplit

import requests

# Headers the main process needs to classify and store a page; the rest stay behind.
KEPT_HEADERS = ("content-type", "content-encoding", "retry-after", "location", "etag", "last-modified")
MAX_REDIRECTS = 5
CHUNK = 64 * 1024
PAGE_COMPRESSION = 6  # zlib level of the pages kept in the database


@dataclass(frozen=True)
class SiteHTTP:
    """What a worker sends to one site."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


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
    # A page's body zlib-compressed as the database keeps it, made here where there is CPU
    # to spare rather than in the main process, which handles every page.
    compressed: bytes = b""


class FetchError(Exception):
    """A download that produced no HTTP response worth reading."""

    def __init__(self, url: str, reason: str, retryable: bool) -> None:
        super().__init__(url, reason, retryable)
        self.url = url
        self.reason = reason
        self.retryable = retryable

    def __str__(self) -> str:
        return self.reason


class SiteStops:
    """The sites the crawl has stopped asking, as the workers of a process or thread pool see them.

    A byte per site in shared memory: the main process sets it when it gives up on a site,
    and a worker reads it just before each request, so that tasks already handed to the
    pool send nothing more to a site that is blocking the crawler.
    """

    def __init__(self, sites: Iterable[str], context: Any = multiprocessing) -> None:
        self.sites = tuple(sites)
        self.flags = context.RawArray("b", max(1, len(self.sites)))

    def stop(self, site: str) -> None:
        self.flags[self.sites.index(site)] = 1

    def stopped(self, site: str) -> bool:
        return site in self.sites and bool(self.flags[self.sites.index(site)])


_settings: WorkerSettings | None = None
_stops: SiteStops | None = None
# One Session per downloading thread: a process worker has one thread, a thread or Dask
# worker several, and requests.Session is not safe to share between threads.
_local = threading.local()


def init_worker(settings: WorkerSettings, stops: SiteStops | None = None) -> None:
    """Process-pool initializer: set up downloads, and leave signals to the main process."""
    # The main process decides what Ctrl-C means; workers must not print tracebacks for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker forked after the main process set its own SIGTERM handler would inherit it
    # and then ignore Pool.terminate(); a worker must die when told to.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    configure(settings, stops)


def configure(settings: WorkerSettings, stops: SiteStops | None = None) -> None:
    """Set up downloads in this process; each thread makes its Session on first use."""
    global _settings, _from_environment, _stops
    _from_environment = {name: _environment_for(site.base_url) for name, site in settings.sites.items()}
    _settings, _stops = settings, stops


# Per site: the proxies and ~/.netrc login the environment gives its base URL.
_from_environment: dict[str, dict] = {}


def _environment_for(base_url: str) -> dict:
    """What requests would take from the environment for this site on each request.

    requests reads the proxy variables (scanning all of os.environ) and ~/.netrc anew for
    every request, which was a fifth of a download's CPU here. Sessions here do not trust
    the environment; its settings are read once per site instead, with the same meaning.
    """
    return {"proxies": requests.utils.get_environ_proxies(base_url),
            "auth": requests.utils.get_netrc_auth(base_url)}


def thread_session() -> requests.Session:
    """This thread's Session, made anew when the settings changed, reused (keep-alive) otherwise."""
    if getattr(_local, "settings", None) is not _settings:
        _local.session, _local.settings = make_session(_settings), _settings
    return _local.session


def make_session(settings: WorkerSettings) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # read once in configure() instead: see _environment_for
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.headers["User-Agent"] = settings.user_agent
    session.headers["Accept-Language"] = "zh-CN,zh;q=0.9,en;q=0.8"
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


def fetch(task: FetchTask) -> FetchResult:
    """Download one page within the page deadline, following redirects only inside the site."""
    assert _settings is not None, "fetch() runs in a worker set up by init_worker or configure"
    settings = _settings
    site = settings.sites[task.site]
    site_host = urlsplit(site.base_url).hostname
    started = time.monotonic()
    deadline = started + settings.page_deadline
    url = task.url
    with _hard_deadline(task.url, settings.page_deadline):
        for _ in range(MAX_REDIRECTS + 1):
            if _stops is not None and _stops.stopped(task.site):
                raise FetchError(task.url, stopped_asking(task.site), retryable=False)
            response = _get(url, {**site.headers, **_conditions(task)}, deadline, settings.request_timeout,
                            _from_environment.get(task.site, {}))
            with response:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    target = urljoin(url, location)
                    if urlsplit(target).hostname != site_host:
                        # Left for the main process to judge (a verification host is a block).
                        return _result(task.url, url, response, b"", started, False)
                    url = target
                    continue
                body, truncated = _read(url, response, deadline, settings.max_page_bytes)
                return _result(task.url, url, response, body, started, truncated)
    raise FetchError(task.url, f"more than {MAX_REDIRECTS} redirects", retryable=False)


def stopped_asking(site: str) -> str:
    """Why a page of a site the crawl gave up on was not fetched."""
    return f"not fetched: {site} is blocking the crawler"


def _conditions(task: FetchTask) -> dict[str, str]:
    headers = {}
    if task.etag:
        headers["If-None-Match"] = task.etag
    if task.last_modified:
        headers["If-Modified-Since"] = task.last_modified
    return headers


class _DeadlinePassed(BaseException):
    """Raised by the alarm inside a blocking read; BaseException so no library swallows it."""


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


def _get(url: str, headers: dict[str, str], deadline: float, timeout: float, environment: dict) -> requests.Response:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError(url, "page deadline passed before the response started", retryable=True)
    timeout = min(timeout, remaining)
    try:
        return thread_session().get(url, headers=headers, stream=True, allow_redirects=False, timeout=timeout,
                                    **environment)
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
