"""Rebuild fontdigits_reference.json: the outlines of the digits 0-9 of freely licensed fonts.

    python parsers/make_fontdigits_reference.py \\
        /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \\
        /usr/share/texmf/fonts/opentype/public/tex-gyre/texgyreheros-regular.otf

(Debian: fonts-dejavu-core, fonts-texgyre.) The decoder compares Maoyan's glyphs with
these shapes, so the project needs neither the font files nor matplotlib at run time.
Each digit is kept as an SVG path in the font's units (y up, as in the font), with the
font's own copyright and licence records (name IDs 0, 13, 14) beside it.
Runs offline; writes the JSON next to this script unless -o says otherwise.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fontTools.pens.svgPathPen import SVGPathPen
from fontTools.ttLib import TTFont

OUTPUT = Path(__file__).with_name("fontdigits_reference.json")
_WHOLE = re.compile(r"(\d)\.0(?![\d.])")
_NAME_IDS = {"copyright": 0, "family": 1, "version": 5, "licence": 13, "licence_url": 14}


def font_entry(path: Path) -> dict:
    """One font's digits as SVG paths, with its name, version and licence records."""
    font = TTFont(path)
    cmap, glyph_set, names = font.getBestCmap(), font.getGlyphSet(), font["name"]
    entry: dict = {"file": path.name}
    for key, name_id in _NAME_IDS.items():
        record = names.getName(name_id, 3, 1, 0x409) or names.getName(name_id, 1, 0, 0)  # Windows, else Mac
        if record:
            entry[key] = record.toUnicode()
    entry["units_per_em"] = font["head"].unitsPerEm
    entry["advance"] = font["hmtx"][cmap[ord("0")]][0]  # digits share one width (tabular)
    entry["digits"] = {}
    for digit in range(10):
        glyph_name = cmap[ord(str(digit))]
        pen = SVGPathPen(glyph_set)
        glyph_set[glyph_name].draw(pen)
        entry["digits"][str(digit)] = _WHOLE.sub(r"\1", pen.getCommands())  # "632.0" -> "632"
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fonts", nargs="+", type=Path, help="TrueType/OpenType files to take 0-9 from")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    data = {
        "about": "Digits 0-9 of freely licensed fonts, as SVG paths in each font's units "
                 "(y up), for parsers/fontdigits.py. Made by parsers/make_fontdigits_reference.py; "
                 "each font's copyright and licence are its own name records, copied below.",
        "fonts": [font_entry(path) for path in args.fonts],
    }
    args.output.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{args.output}: digits of {', '.join(f['family'] for f in data['fonts'])}")


if __name__ == "__main__":
    main()
