"""What every site parser returns, the one way it says a page is not a board, and the
helpers they share: among them a fast way to a BeautifulSoup of just the board."""
from __future__ import annotations

import copy
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple
from urllib.parse import parse_qs, urlsplit

from bs4 import BeautifulSoup, Comment, NavigableString, Tag
from lxml import etree


class NotABoardPage(Exception):
    """The page is not a ranked list (a verification page, an error page, an empty list).

    Such a page must never be stored as "0 records": the crawler records it as an
    error for that page, with this reason.
    """

    def __init__(self, reason: str, blocked: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # True when the site is refusing us (captcha, verification), not merely odd.
        self.blocked = blocked


@dataclass
class BoardPage:
    records: list[dict[str, Any]]
    # The board's own update time as the page prints it (e.g. "2025-05-27"), if shown.
    updated: str | None = None
    # Absolute URLs of the other pages of this board that the page's pager links to,
    # reduced to the one query parameter that selects the page.
    page_urls: list[str] = field(default_factory=list)


def clean(text: str | None) -> str | None:
    """Collapse runs of white space (including &nbsp; and CRLF) and strip; '' becomes None.

    str.split() splits on exactly the characters the regex class \\s matches, &nbsp;
    included, and is several times faster; this runs a dozen times per entry.
    """
    if text is None:
        return None
    return " ".join(text.split()) or None


# --- small helpers shared by the site parsers -------------------------------------

# Code points an obfuscating web font (Maoyan's "stonefont"/"mtsi-font") draws as digits.
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")


def soup_of(html: str) -> BeautifulSoup:
    """Parse with lxml, which copes with the sites' conditional comments and CRLF."""
    return BeautifulSoup(html, "lxml")


def page_title(soup: BeautifulSoup) -> str | None:
    """The page's <title>, cleaned (Douban wraps it in newlines)."""
    return clean(soup.title.get_text()) if soup.title else None


def is_obfuscated(text: str | None) -> bool:
    """True when the text holds private-use characters, i.e. glyphs of a font cipher."""
    return bool(text and _PRIVATE_USE.search(text))


_INT = re.compile(r"\d[\d,]*")
_FLOAT = re.compile(r"\d[\d,]*(?:\.\d+)?")


def to_int(text: str | None) -> int | None:
    """The first run of digits as an int (commas allowed), else None."""
    m = _INT.search(text or "")
    return int(m.group().replace(",", "")) if m else None


def to_float(text: str | None) -> float | None:
    """The first decimal number as a float, else None."""
    m = _FLOAT.search(text or "")
    return float(m.group().replace(",", "")) if m else None


def pager_urls(hrefs: Iterable[str | None], page_url: str, param: str) -> list[str]:
    """Canonical `scheme://host/path?param=N` for every pager link that carries `param`.

    The value is read from the link's query string, so extra parameters (Maoyan pages
    saved with `?User-Agent=...&offset=10`, Douban's `&filter=`) are dropped. The
    scheme, host and path come from `page_url`, so a local mirror stays local.
    """
    base = urlsplit(page_url)
    prefix = f"{base.scheme}://{base.netloc}{base.path}"
    urls: list[str] = []
    for href in hrefs:
        values = parse_qs(urlsplit(href or "").query).get(param)
        if values and values[0].strip().isdigit():
            url = f"{prefix}?{param}={int(values[0])}"
            if url not in urls:
                urls.append(url)
    return urls


# --- a soup of only the parts a parser reads ---------------------------------------

# bs4 turns a string of nothing but these into "\n" or " ".
_ASCII_SPACES = " \t\n\r\f"
# Containers whose own text no parser reads, only that of the p, span, a... inside them.
_CONTAINERS = frozenset("html head body div dl dt dd ul ol li table thead tbody tfoot tr".split())


def parse_parts(html: str, board: tuple[str, str], *parts: tuple[str, str]) -> Tags:
    """The tags of a soup of the page's <title>, its `board` and other (tag, class) `parts`.

    Parsing runs for every page in the crawler's main process, and most of its time went
    to bs4 making a Python object for every node of the page. Here lxml parses the whole
    page in C (the parser bs4's lxml builder drives, so the parts come out the same) and
    bs4 objects are made for the parts alone, in document order, each under bare copies
    of its ancestors so that CSS-like look-ups (`div.hd a`) see what they saw in the whole
    page; `Tags.root` is the soup. A page without the board gets the whole-document soup,
    so odd pages parse exactly as before.
    """
    try:
        root = _lxml_root(html)
    except (etree.LxmlError, ValueError):
        root = None
    if root is None:
        return Tags(soup_of(html))
    kept: list[Any] = []
    title = board_found = False
    names = ("title", *{name for name, _ in (board, *parts)})
    # Markup after a stray </html> ends up in a second root element; bs4 keeps it too.
    for el in (el for top in (root, *root.itersiblings()) for el in top.iter(*names)):
        if el.tag == "title" and not title:  # soup.title is the first one
            title = True
        elif _lxml_is(el, *board):
            board_found = True
        elif not any(_lxml_is(el, *part) for part in parts):
            continue
        if not any(a in kept for a in el.iterancestors()):  # else it is in a kept part
            kept.append(el)
    if not board_found:
        return Tags(soup_of(html))
    builder = _Builder()
    try:
        for el in kept:
            builder.element(el, builder.ancestor(el.getparent()), builder.context_above(el))
    except RecursionError:
        return Tags(soup_of(html))
    return builder.tags


def _lxml_root(html: str) -> Any:
    """Parse as bs4's lxml builder does: one feed to a recovering HTMLParser, BOM dropped."""
    parser = etree.HTMLParser(recover=True)
    parser.feed(html[1:] if html.startswith("\ufeff") else html)
    return parser.close()


def _lxml_is(el: Any, name: str, cls: str) -> bool:
    """An lxml element's match for `name.cls`, class split as bs4 splits it."""
    return el.tag == name and cls in (el.get("class") or "").split()


# The builder and settings that every page's soup shares, as soups made by bs4 share theirs.
_BLANK = BeautifulSoup("", "lxml")
_SHARED = {id(value) for value in vars(_BLANK.builder).values()}


def _blank_soup() -> BeautifulSoup:
    """A new soup as BeautifulSoup("", "lxml") makes it, without running lxml.

    That costs a tenth as much, and leaves behind no lxml parser, whose reference cycle
    the cycle collector would otherwise have to find after every page.
    """
    soup = BeautifulSoup.__new__(BeautifulSoup)
    for name, value in vars(_BLANK).items():
        if value is _BLANK:  # the soup's own current tag
            value = soup
        elif isinstance(value, (list, dict, set)) and id(value) not in _SHARED:
            value = copy.copy(value)
        soup.__dict__[name] = value
    return soup


class _Context(NamedTuple):
    """What bs4 knows of a tag's ancestors when it makes the strings inside it."""

    in_text: bool = False  # an ancestor in the part is not a container: its text may be read
    string_class: type[NavigableString] = NavigableString  # Script, Stylesheet... under such tags
    preserve: bool = False  # under <pre> or <textarea>, whitespace is kept as it is


class _Builder:
    """Makes lxml elements into bs4 objects, as bs4's lxml builder would have made them.

    Two shortcuts, both for speed: multi-valued attributes (class...) are split here, at a
    fifth of what Tag() takes to do it; and whitespace-only strings with only containers
    above them (the page's indentation, a third of its nodes) are left out, as no parser
    reads a container's text (see `_CONTAINERS`). Each tag is indexed as it is made.
    """

    def __init__(self) -> None:
        self.tags = Tags(_blank_soup())
        self._soup = self.tags.root
        self._bs4 = self._soup.builder
        self._last: Any = self._soup  # the object made last: the next one's previous_element
        self._ancestors: dict[Any, Tag] = {}  # lxml element -> its bare copy
        multi = self._bs4.cdata_list_attributes
        self._multi = {name: multi["*"] | multi.get(name, set()) for name in multi}
        self._special = {*self._bs4.string_containers, *self._bs4.preserve_whitespace_tags}
        self._value_list = getattr(self._bs4, "attribute_value_list_class", list)  # bs4 < 4.13: list

    def ancestor(self, el: Any) -> Tag:
        """The bare copy (no other content) of lxml's `el`, made with its own ancestors if new."""
        if el is None:
            return self._soup
        if el not in self._ancestors:
            self._ancestors[el] = self._tag(el, self.ancestor(el.getparent()))
        return self._ancestors[el]

    def context_above(self, el: Any) -> _Context:
        """The context a part starts in: a <pre> or <template> around it counts, text does not."""
        above = [a.tag for a in el.iterancestors()]  # innermost first
        containers = self._bs4.string_containers
        string_class = next((containers[name] for name in above if name in containers), NavigableString)
        preserve = any(name in self._bs4.preserve_whitespace_tags for name in above)
        return _Context(False, string_class, preserve)

    def element(self, el: Any, parent: Tag, context: _Context) -> None:
        name, text = el.tag, el.text  # each read of an lxml property makes a new str
        if not isinstance(name, str):  # a comment (lxml reads <?...> as one too)
            self.string(text or "", parent, context, Comment)
            return
        tag = self._tag(el, parent)
        if name in self._special or (not context.in_text and name not in _CONTAINERS):
            context = _Context(  # else this tag leaves its parent's context as it is
                context.in_text or name not in _CONTAINERS,
                self._bs4.string_containers.get(name, context.string_class),
                context.preserve or name in self._bs4.preserve_whitespace_tags,
            )
        if text:
            self.string(text, tag, context)
        for child in el:
            self.element(child, tag, context)
            tail = child.tail
            if tail:
                self.string(tail, tag, context)

    def _tag(self, el: Any, parent: Tag) -> Tag:
        name = el.tag
        attrs = dict(el.items())
        for key in self._multi.get(name, self._multi["*"]).intersection(attrs):
            attrs[key] = self._value_list(attrs[key].split())
        tag = Tag(self._soup, self._bs4, name, parent=parent, previous=self._last)
        tag.attrs.update(attrs)
        parent.contents.append(tag)
        self._last = tag
        self.tags.add(tag)
        return tag

    def string(self, text: str, parent: Tag, context: _Context, cls: type | None = None) -> None:
        if not context.preserve and not text.strip(_ASCII_SPACES):
            if not (context.in_text or cls):
                return
            text = "\n" if "\n" in text else " "
        obj = (cls or context.string_class)(text)
        obj.setup(parent, self._last)
        parent.contents.append(obj)
        self._last = obj
        self.tags.strings.append(obj)


# --- looking tags up ----------------------------------------------------------------

def has_class(tag: Any, cls: str) -> bool:
    return cls in tag.get("class", ())


def is_tag(tag: Any, name: str, cls: str | None = None) -> bool:
    """True for a `name.cls` tag (any class when cls is None)."""
    return tag is not None and tag.name == name and (cls is None or has_class(tag, cls))


class Tags:
    """The tags under `root`, by name and by name.class, in document order.

    Stands in for soupsieve's select (~80 µs a call here) and bs4's find (~20 µs): the
    tags are indexed once, and each field then looks only at the few tags of its key.
    As with CSS selectors, the inside of a <template> is left out unless `in_template`
    (as bs4's find() sees it) is asked for.
    """

    def __init__(self, root: Tag) -> None:
        self.root = root
        self.strings: list[NavigableString] = []  # comments too, as find(string=...) sees them
        self._by_key: dict[tuple[str, str | None], list[Tag]] = defaultdict(list)
        self._in_template: set[int] = set()  # ids of the tags inside a <template> under root
        self._under: dict[tuple[str, str], set[int]] = {}
        for el in root.descendants:
            if isinstance(el, Tag):
                self.add(el)
            else:
                self.strings.append(el)

    def __enter__(self) -> Tags:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def dispose(self) -> None:
        """Break the tree's reference cycles (parent <-> contents, next <-> previous).

        Each page's tree is garbage once its records are made; left to the cycle collector,
        freeing it took about 8% of the main process's CPU. Emptied, it is freed at once.
        The tree must not be used afterwards: records hold only plain values.
        """
        for (_, cls), tags in self._by_key.items():
            if cls is None:
                for tag in tags:
                    tag.__dict__.clear()
        for string in self.strings:
            string.__dict__.clear()
        self.root.__dict__.clear()
        self._by_key.clear()
        self.strings.clear()

    def add(self, tag: Tag) -> None:
        """Index `tag`; its parent is indexed already, or is the root."""
        parent = tag.parent
        if parent is not self.root and (parent.name == "template" or id(parent) in self._in_template):
            self._in_template.add(id(tag))
        self._by_key[tag.name, None].append(tag)
        for cls in set(tag.get("class", ())):
            self._by_key[tag.name, cls].append(tag)

    def all(self, name: str, cls: str | None = None, within: tuple[str, str] | None = None,
            attr: str | None = None, in_template: bool = False) -> list[Tag]:
        """What CSS `{within} {name}.{cls}[{attr}]` selects, `within` being (name, class)."""
        return list(self._matching(name, cls, within, attr, in_template))

    def first(self, name: str, cls: str | None = None, within: tuple[str, str] | None = None,
              attr: str | None = None, in_template: bool = False) -> Tag | None:
        return next(self._matching(name, cls, within, attr, in_template), None)

    def _matching(self, name: str, cls: str | None, within: tuple[str, str] | None,
                  attr: str | None, in_template: bool) -> Iterator[Tag]:
        under = self._under_one(within) if within else None
        for tag in self._by_key.get((name, cls), ()):
            if ((in_template or id(tag) not in self._in_template) and (attr is None or attr in tag.attrs)
                    and (under is None or id(tag) in under)):
                yield tag

    def _under_one(self, within: tuple[str, str]) -> set[int]:
        """ids of the tags with a `within` ancestor (which, as in CSS, may be above the root)."""
        if within not in self._under:
            if any(is_tag(el, *within) for el in self._root_and_ancestors()):
                outer = [self.root]
            else:
                outer = self.all(*within)
            self._under[within] = {id(el) for tag in outer for el in tag.descendants}
        return self._under[within]

    def _root_and_ancestors(self) -> Iterator[Tag]:
        """The root and its ancestors as CSS sees them: up to a <template>, not beyond."""
        el = self.root
        while el is not None and el.name != "template":
            yield el
            el = el.parent
