"""parsers.fontdigits: Maoyan's per-request digit fonts read by shape, or refused, never misread."""
from __future__ import annotations

import html
import io
import itertools
import json
import random
import re
from pathlib import Path

import matplotlib
import pytest
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.svgLib.path import parse_path
from fontTools.ttLib import TTFont

from parsers.fontdigits import FontNotDecoded, _assign, _second_best, decode_digits, decode_text

REPO = Path(__file__).resolve().parents[1]
REAL_FONTS = Path(__file__).resolve().parents[2] / "shared" / "realsite" / "maoyan" / "fonts"
FIXTURE_PAGES = REPO / "fixtures" / "maoyan"
FIXTURE_FONTS = FIXTURE_PAGES / "fonts"
EXPECTED = json.loads((FIXTURE_FONTS / "expected.json").read_text(encoding="utf-8"))["pages"]
REFERENCE = json.loads((REPO / "parsers" / "fontdigits_reference.json").read_text(encoding="utf-8"))
DEJAVU_DIGITS = next(f for f in REFERENCE["fonts"] if f["family"] == "DejaVu Sans")["digits"]
# The DejaVu Sans that matplotlib bundles: letters for the not-digits font (test only).
DEJAVU_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"

SPAN = re.compile(r'<span class="stonefont">(.*?)</span>')
WOFF_URL = re.compile(r'url\("//vfile\.meituan\.net/colorstone/([0-9a-f]{8})\.woff"\)')


def build_font(glyphs: dict[int, str | None], flavor: str | None = "woff") -> bytes:
    """A font drawing, at each code point, a DejaVu digit ("7"), a DejaVu letter ("L:g"), or nothing (None)."""
    letters = TTFont(DEJAVU_FILE)
    letter_set, letter_cmap = letters.getGlyphSet(), letters.getBestCmap()
    outlines = {".notdef": TTGlyphPen(None).glyph()}
    for cp, what in glyphs.items():
        pen = TTGlyphPen(None)
        if what is None:
            pass
        elif what.startswith("L:"):
            letter_set[letter_cmap[ord(what[2:])]].draw(pen)
        else:
            parse_path(DEJAVU_DIGITS[what], pen)
        outlines[f"uni{cp:04X}"] = pen.glyph()
    builder = FontBuilder(2048, isTTF=True)
    builder.setupGlyphOrder(list(outlines))
    builder.setupCharacterMap({cp: f"uni{cp:04X}" for cp in glyphs})
    builder.setupGlyf(outlines)
    builder.setupHorizontalMetrics({name: (1303, 0) for name in outlines})
    builder.setupHorizontalHeader(ascent=1901, descent=-483)
    builder.setupOS2()
    builder.setupPost()
    builder.font.flavor = flavor
    out = io.BytesIO()
    builder.save(out)
    return out.getvalue()


CODE_POINTS = [0xE064, 0xE083, 0xE40C, 0xE60B, 0xEB37, 0xF1E9, 0xF352, 0xF521, 0xF5A1, 0xF6CA]
SHUFFLED = "4071852963"  # the digit drawn at each of CODE_POINTS


def digits_font(**changes: str | None) -> tuple[bytes, dict[str, str]]:
    """Ten DejaVu digits at CODE_POINTS, and what they draw.

    `changes` maps a hex code point to other content: a digit, "L:<letter>", None (an
    empty glyph) or "gone" (no such code point in the font).
    """
    glyphs: dict[int, str | None] = dict(zip(CODE_POINTS, SHUFFLED))
    for cp, what in changes.items():
        glyphs[int(cp, 16)] = what
    glyphs = {cp: what for cp, what in glyphs.items() if what != "gone"}
    truth = {chr(cp): what for cp, what in glyphs.items() if what is not None and what.isdigit()}
    return build_font(glyphs), truth


# --- the real fonts ----------------------------------------------------------------------


def test_the_five_real_maoyan_fonts_decode_as_labelled_by_hand():
    if not REAL_FONTS.is_dir():
        pytest.skip(f"no real Maoyan fonts at {REAL_FONTS}")
    labels = json.loads((REAL_FONTS / "labels.json").read_text(encoding="utf-8"))
    assert len(labels) == 5
    for name, glyph_digits in labels.items():
        expected = {chr(int(glyph[3:], 16)): str(digit) for glyph, digit in glyph_digits.items()}
        assert decode_digits((REAL_FONTS / name).read_bytes()) == expected, name


# --- the project's fixture pages and fonts -----------------------------------------------


@pytest.mark.parametrize("page", sorted(EXPECTED))
def test_fixture_page_numbers_decode_with_the_font_its_font_face_names(page):
    text = (FIXTURE_PAGES / page).read_text(encoding="utf-8")
    font_hash = WOFF_URL.search(text).group(1)
    assert f"{font_hash}.woff" == EXPECTED[page]["font"]
    digits = decode_digits((FIXTURE_FONTS / f"{font_hash}.woff").read_bytes())
    assert digits == {chr(int(cp, 16)): digit for cp, digit in EXPECTED[page]["digits"].items()}
    numbers = [decode_text(html.unescape(span), digits) for span in SPAN.findall(text)]
    assert numbers == EXPECTED[page]["numbers"]
    assert all(re.fullmatch(r"\d+(\.\d+)?", number) for number in numbers)


def test_fixture_pages_with_numbers_have_them_and_board2_has_none():
    counts = {page: len(entry["numbers"]) for page, entry in EXPECTED.items()}
    assert counts == {"board1.html": 12, "board2.html": 0, "board6_offset0.html": 18,
                      "board6_offset10.html": 18, "board6_offset20.html": 20}


# --- fonts built here --------------------------------------------------------------------


def test_ten_digit_glyphs_at_private_use_code_points_decode():
    font, truth = digits_font()
    assert decode_digits(font) == truth
    assert decode_digits(build_font(dict(zip(CODE_POINTS, SHUFFLED)), flavor=None)) == truth  # plain TTF


def test_an_empty_private_use_glyph_is_no_digit_and_does_not_decode_in_text():
    font, truth = digits_font(f8e0=None)
    digits = decode_digits(font)
    assert digits == truth
    with pytest.raises(FontNotDecoded, match="U\\+F8E0 is not one of the font's digits"):
        decode_text("\ue064\uf8e0", digits)


def test_nine_digit_glyphs_are_refused():
    font, _ = digits_font(e064="gone")
    with pytest.raises(FontNotDecoded, match="^9 digit glyphs, expected 10$"):
        decode_digits(font)


def test_eleven_digit_glyphs_are_refused():
    font, _ = digits_font(f8e0="5")
    with pytest.raises(FontNotDecoded, match="^11 digit glyphs, expected 10$"):
        decode_digits(font)


def test_a_digit_drawn_twice_and_one_missing_is_refused():
    # 0-9 without 9, and 8 twice: whatever reading is chosen, two glyphs could swap.
    font, _ = digits_font(**{f"{CODE_POINTS[SHUFFLED.index('9')]:x}": "8"})
    with pytest.raises(FontNotDecoded, match="ambiguous digits|matches no digit well"):
        decode_digits(font)


def test_letters_at_private_use_code_points_are_refused():
    # Letters that look like no digit. Look-alikes do exist (g~9 at 0.28, B~8 and S~5 at
    # 0.31, I/l~1 at 0.36): ten glyphs are read as digits only if all ten look like digits.
    letters = build_font({cp: f"L:{ch}" for cp, ch in zip(CODE_POINTS, "HKMNWXknwx")})
    with pytest.raises(FontNotDecoded, match=r"^glyph uni[0-9A-F]{4} matches no digit well \(best 0\.\d\d"):
        decode_digits(letters)


def test_one_letter_among_nine_digits_is_refused():
    font, _ = digits_font(**{f"{CODE_POINTS[SHUFFLED.index('4')]:x}": "L:M"})
    with pytest.raises(FontNotDecoded, match="^glyph uniE064 matches no digit well"):
        decode_digits(font)


@pytest.mark.parametrize("data", [b"", b"\x00", b"wOFF", b"wOFF" + bytes(200), b"<html>not a font</html>",
                                  random.Random(7).randbytes(3000)])
def test_bytes_that_are_no_font_are_refused(data):
    with pytest.raises(FontNotDecoded, match="^not a font: "):
        decode_digits(data)


def test_woff_cut_short_of_its_glyphs_is_refused():
    font, _ = digits_font()
    for length in (12, 44, 100, len(font) // 2):  # in the header, the table directory, the glyphs
        with pytest.raises(FontNotDecoded, match="^not a font: "):
            decode_digits(font[:length])


def test_corrupted_woff_decodes_right_or_is_refused_never_misread():
    font, truth = digits_font()
    rng = random.Random(2019)
    outcomes = {"right": 0, "refused": 0}
    for _ in range(150):
        damaged = bytearray(font)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            assert decode_digits(bytes(damaged)) == truth
            outcomes["right"] += 1
        except FontNotDecoded:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["right"] > 0  # both paths taken


def test_woff2_without_brotli_is_refused_and_says_why(monkeypatch):
    monkeypatch.setattr("fontTools.ttLib.woff2.haveBrotli", False)
    with pytest.raises(FontNotDecoded, match="^font needs a missing module: .*brotli"):
        decode_digits(b"wOF2" + bytes(100))


def test_woff2_decodes_when_brotli_is_there():
    pytest.importorskip("brotli")
    font = build_font(dict(zip(CODE_POINTS, SHUFFLED)), flavor="woff2")
    assert decode_digits(font) == digits_font()[1]


# --- decode_text and the assignment -------------------------------------------------------


def test_decode_text_replaces_private_use_characters_and_keeps_the_rest():
    digits = {"\ue25c": "1", "\ued76": "2", "\ue454": "0"}
    assert decode_text(html.unescape("&#xe25c;&#xed76;.&#xe454;"), digits) == "12.0"
    assert decode_text("3987.12万", digits) == "3987.12万"
    assert decode_text("", digits) == ""
    with pytest.raises(FontNotDecoded, match="U\\+E000"):
        decode_text("\ue25c\ue000", digits)


def test_assignment_and_runner_up_match_brute_force():
    rng = random.Random(5)
    for size in (1, 2, 3, 5, 7):
        for _ in range(30):
            cost = [[round(rng.random(), 2) for _ in range(size)] for _ in range(size)]
            totals = sorted((sum(cost[i][p[i]] for i in range(size)), p)
                            for p in itertools.permutations(range(size)))
            reading, total = _assign(cost)
            assert total == pytest.approx(totals[0][0])
            assert sum(cost[i][reading[i]] for i in range(size)) == pytest.approx(total)
            assert sorted(reading) == list(range(size))
            if size > 1:
                other, second = _second_best(cost, reading)
                assert other != reading
                assert second == pytest.approx(min(t for t, p in totals if list(p) != reading))
