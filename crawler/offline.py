"""Serve the bundled fixtures through requests, so an offline crawl runs the real fetch path.

The adapter is mounted on each worker's Session by the pool initializer, so it works the
same under every start method (nothing is patched in the parent and inherited).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.response import HTTPResponse

from .errors import CrawlerError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


class FixtureError(CrawlerError):
    """A fixture folder that cannot be served or written to; the message names the folder."""


def load_manifest(folder: str | Path) -> dict[str, dict[str, dict]]:
    """{site: {path+query: {"file", "status", "content_type"}}} from the folder's manifest.json."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FixtureError(f"{folder} is not a fixture folder: it has no manifest.json") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FixtureError(f"{path} is not valid JSON: {exc}") from None
    shape = "{site: {path: {\"file\": ...}}}"
    if not isinstance(manifest, dict):
        raise FixtureError(f"{path} must map sites to their pages, {shape}")
    for site, pages in manifest.items():
        if not isinstance(pages, dict) or not all(
                isinstance(entry, dict) and isinstance(entry.get("file"), str) for entry in pages.values()):
            raise FixtureError(f"{path}: the entry of site {site!r} must be {shape}")
    return manifest


def check_fixtures(folder: str | Path) -> None:
    """A folder to serve from: its manifest well formed and every file it names there."""
    if not Path(folder).is_dir():
        raise FixtureError(f"{folder} is not a folder")
    for pages in load_manifest(folder).values():
        for entry in pages.values():
            if not (Path(folder) / entry["file"]).is_file():
                raise FixtureError(f"{folder}: manifest.json names {entry['file']}, which is not there")


class FixtureAdapter(HTTPAdapter):
    """Answers every request from the fixture folder; anything not in it is a 404, never the network."""

    def __init__(self, folder: str | Path, base_urls: dict[str, str]) -> None:
        super().__init__()
        self.folder = Path(folder)
        manifest = load_manifest(self.folder)
        self.pages: dict[str, dict] = {}
        for site, base_url in base_urls.items():
            for path, entry in manifest.get(site, {}).items():
                if path.startswith("//"):  # on another host (a page's web font): //HOST/PATH
                    self.pages["https:" + path] = self.pages["http:" + path] = entry
                else:
                    self.pages[base_url.rstrip("/") + path] = entry

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        parts = urlsplit(request.url)
        key = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        entry = self.pages.get(key)
        if entry is None:
            status, headers, body = 404, {"Content-Type": "text/plain"}, b"no fixture for this URL"
        else:
            body = (self.folder / entry["file"]).read_bytes()
            status = entry.get("status", 200)
            headers = {"Content-Type": entry.get("content_type", "text/html; charset=utf-8")}
        headers["Content-Length"] = str(len(body))
        raw = HTTPResponse(body=io.BytesIO(body), headers=headers, status=status,
                           preload_content=False, decode_content=False)
        return self.build_response(request, raw)
