"""Font-drawn digits, read in the main process like the rest of the page.

A page that draws some digits with a web font (Maoyan) comes with that font; each font is
decoded once (by its hash) and the page's private-use characters are written as the digits
they draw before the parser reads it. A font that cannot be decoded with certainty leaves
them as they are, so the parser stores those numbers NULL and names them in `obfuscated`.
"""
from __future__ import annotations

import hashlib
import re

# Decoded fonts of this process, by hash: the digits each private-use character draws, or
# why the font was not decoded. Maoyan makes a font per request, so this stays small.
_decoded: dict[str, dict[str, str] | str] = {}
MAX_CACHED = 4096
_ENTITY = re.compile(r"&#x([0-9a-fA-F]{4,5});")


def font_hash(font: bytes) -> str:
    return hashlib.sha1(font).hexdigest()


def digits_for(font: bytes) -> tuple[dict[str, str] | None, str | None]:
    """(character -> digit, None), or (None, why the font could not be read with certainty)."""
    from parsers.fontdigits import FontNotDecoded, decode_digits  # fontTools and numpy, when first needed

    key = font_hash(font)
    if key not in _decoded:
        if len(_decoded) >= MAX_CACHED:
            _decoded.pop(next(iter(_decoded)))
        try:
            _decoded[key] = decode_digits(font)
        except FontNotDecoded as exc:
            _decoded[key] = str(exc)
    value = _decoded[key]
    return (value, None) if isinstance(value, dict) else (None, value)


def reveal(html: str, digits: dict[str, str]) -> str:
    """The page with each character the font draws as a digit written as that digit (entities too)."""
    html = _ENTITY.sub(lambda match: digits.get(chr(int(match.group(1), 16)), match.group(0)), html)
    return html.translate(str.maketrans(digits))
