"""The sites the crawler knows: the built-in ones, and those installed packages declare.

Each site is a `crawler.site.Site` that a module makes and names in the entry-point group
`crawler.sites` (in its package's pyproject.toml:
`[project.entry-points."crawler.sites"] mysite = "mysite:SITE"`). The built-in sites are
loaded directly as well, so a checkout that was never installed still has them.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from .site import Board, Site

ENTRY_POINT_GROUP = "crawler.sites"
BUILT_IN = ("parsers.maoyan:SITE", "parsers.douban:SITE")

__all__ = ["BROKEN", "Board", "ENTRY_POINT_GROUP", "SITES", "Site", "discover"]


def _load(spec: str) -> object:
    module, _, name = spec.partition(":")
    return getattr(import_module(module), name)


def discover() -> tuple[dict[str, Site], dict[str, str]]:
    """(sites by name, why each site that could not be loaded was not)."""
    sites: dict[str, Site] = {}
    broken: dict[str, str] = {}
    for spec in BUILT_IN:
        site = _load(spec)
        sites[site.name] = site
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.value in BUILT_IN:
            continue
        try:
            site = point.load()
        except Exception as exc:  # noqa: BLE001 - a broken package must not stop the other sites
            broken[point.name] = f"its entry point {point.value} cannot be loaded ({type(exc).__name__}: {exc})"
            continue
        if not isinstance(site, Site):
            broken[point.name] = f"its entry point {point.value} is not a crawler.site.Site"
        elif site.name in sites:
            broken[point.name] = f"its entry point {point.value} names site {site.name!r}, which is already known"
        else:
            sites[site.name] = site
    return sites, broken


SITES, BROKEN = discover()
