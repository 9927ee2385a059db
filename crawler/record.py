"""Write responses into a fixture folder (--record DIR), the format --fixtures and fixtures/ use."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from .offline import FixtureError, load_manifest


class Recorder:
    """Keeps every 200 response of a crawl as a file, with manifest.json mapping URL to file.

    Keys are the URL's path and query below the site's base URL, so the folder replays
    against any base URL (`--fixtures DIR`).
    """

    def __init__(self, folder: str | Path, base_urls: dict[str, str]) -> None:
        self.folder = Path(folder)
        self.base_urls = base_urls
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.manifest = load_manifest(self.folder) if (self.folder / "manifest.json").exists() else {}
            # Written now, so a folder that cannot take files says so before the crawl starts.
            self._write_manifest()
        except OSError as exc:
            raise FixtureError(f"cannot write to {folder}: {exc.strerror or exc}") from None

    def save(self, site: str, url: str, body: bytes, content_type: str | None) -> None:
        """Keep one response; a URL on another host (a page's font) is keyed //HOST/PATH."""
        base = self.base_urls[site]
        if url.startswith(base):
            key = url[len(base):] or "/"
        else:
            parts = urlsplit(url)
            key = f"//{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        name = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_") or "index"
        relative = f"{site}/{name}{'.woff' if key.endswith('.woff') else '.html'}"
        (self.folder / site).mkdir(exist_ok=True)
        (self.folder / relative).write_bytes(body)
        self.manifest.setdefault(site, {})[key] = {
            "file": relative, "status": 200, "content_type": content_type or "text/html"}
        self._write_manifest()

    def _write_manifest(self) -> None:
        # Rewritten whole each time (small), via a rename so a crash never leaves half a file.
        temporary = self.folder / "manifest.json.tmp"
        temporary.write_text(json.dumps(self.manifest, ensure_ascii=False, indent=1, sort_keys=True),
                             encoding="utf-8")
        os.replace(temporary, self.folder / "manifest.json")
