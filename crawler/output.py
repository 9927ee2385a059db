"""Rows to text: an aligned table for people, CSV / JSON / JSON lines for other tools."""
from __future__ import annotations

import csv
import io
import json
import unicodedata
from typing import Any, Iterable, Sequence

FORMATS = ("table", "csv", "json", "jsonl")


def width(text: str) -> int:
    """Columns a string takes in a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return str(value)
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """An aligned text table; numbers are right-aligned, text left-aligned."""
    columns = list(columns or (rows[0].keys() if rows else []))
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([width(c)] + [width(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row.get(c), (int, float)) or row.get(c) is None for row in rows) and
               any(row.get(c) is not None for row in rows) for c in columns]

    def line(values: Iterable[str]) -> str:
        parts = []
        for value, w, right in zip(values, widths, numeric):
            pad = " " * (w - width(value))
            parts.append(pad + value if right else value + pad)
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def render(rows: Sequence[dict[str, Any]], fmt: str = "table", columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "table":
        return table(rows, columns)
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in rows], ensure_ascii=False, indent=2)
    if fmt == "jsonl":
        return "\n".join(json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False) for r in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    raise ValueError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
