"""Guess how a data file is written (delimiter, header row, width) and what its target
column holds, from a sample of its first lines. Standard library only: ``init`` and
``validate`` stay fast."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# Tried in this order; the first that splits every sampled row into the same number
# (more than one) of fields wins. Comma first: it is the default and the most common.
DELIMITERS = (",", "\t", ";", "|", " ")
_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe", " ": "space"}
SAMPLE_LINES = 1000
_SAMPLE_BYTES = 1 << 20
# At most this many distinct whole-number values make a target look like classes.
MAX_CLASSES = 20


@dataclass(frozen=True)
class Shape:
    """What a sample of a CSV file says about it."""

    delimiter: str
    header: bool
    regular: bool  # every sampled row has the same number of fields
    names: tuple[str, ...]  # the header row's names; empty without one
    rows: tuple[tuple[str, ...], ...]  # the sampled data rows
    why: str  # one line: how the delimiter and header were decided

    @property
    def width(self) -> int:
        return len(self.rows[0]) if self.rows else len(self.names)


def sniff(file: Path) -> Shape | None:
    """The shape of a CSV file, or None when it is not a readable text table."""
    lines = _sample(file)
    if not lines:
        return None
    delimiter, rows = _split(lines)
    first = rows[0]
    numbers = [cell for cell in first if is_number(cell)]
    widths = sorted({len(r) for r in rows})
    if len(widths) > 1:
        split = f"rows of {', '.join(map(str, widths))} columns: no delimiter splits them alike"
    elif len(first) > 1:
        split = f"{_NAMES[delimiter]}-delimited ({len(first)} columns in every sampled row)"
    else:
        split = "one column"
    if numbers:
        shown = ", ".join(repr(c) for c in numbers[:2])
        why = f"{split}; no header row (the first row holds numbers: {shown})"
        return Shape(delimiter, False, len(widths) == 1, (), tuple(rows), why)
    why = f"{split}; a header row ({', '.join(first[:4])}{', ...' if len(first) > 4 else ''})"
    names = tuple(c.strip() for c in first)
    return Shape(delimiter, True, len(widths) == 1, names, tuple(rows[1:]), why)


def _sample(file: Path) -> list[str]:
    try:
        with file.open("rb") as handle:
            raw = handle.read(_SAMPLE_BYTES)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    lines = text.splitlines()
    if len(raw) == _SAMPLE_BYTES and lines:
        lines.pop()  # cut in the middle
    return [line for line in lines if line.strip()][:SAMPLE_LINES]


def _split(lines: list[str]) -> tuple[str, list[tuple[str, ...]]]:
    for delimiter in DELIMITERS:
        rows = [tuple(r) for r in csv.reader(lines, delimiter=delimiter)]
        widths = {len(r) for r in rows}
        if len(widths) == 1 and widths.pop() > 1:
            return delimiter, rows
    return ",", [tuple(r) for r in csv.reader(lines)]


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a finite number (``3``, ``-0.5``, ``1e-3``)."""
    try:
        value = float(text)
    except ValueError:
        return False
    return value == value and abs(value) != float("inf")


def guess_task(values: list[str]) -> tuple[str, str]:
    """``classification`` or ``regression`` for a target column's sampled values, and why."""
    present = [v.strip() for v in values if v.strip()]
    if not present:
        return "classification", "no values sampled; classification is the default"
    if not all(is_number(v) for v in present):
        return "classification", "the target holds text values"
    distinct = {float(v) for v in present}
    whole = all(v.is_integer() for v in distinct)
    if whole and len(distinct) <= MAX_CLASSES:
        return "classification", f"the target holds {len(distinct)} distinct whole numbers"
    kind = "fractional" if not whole else "many distinct"
    return "regression", f"the target holds {kind} numbers ({len(distinct)} distinct)"
