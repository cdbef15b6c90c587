"""Charts as Mermaid blocks, which GitLab and GitHub both draw inside a comment: no
image host, no upload, no token.

Every chart is an ``xychart-beta`` (bars and lines). Labels come from data (feature
names, slice values, versions), so they are reduced to a safe alphabet before they
reach the diagram: Mermaid parses quotes, brackets and ``%%`` itself, and a label must
not be able to end the code block. Charts are beta in Mermaid, and a platform may ship
an older Mermaid: the report keeps a table beside each chart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# What a label may contain; everything else becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:=+\-()/\[\]]")
MAX_LABEL = 28
MAX_TITLE = 60


def label(value: object, limit: int = MAX_LABEL) -> str:
    """``value`` as a quoted Mermaid label: safe characters only, at most ``limit``."""
    text = _UNSAFE.sub("_", " ".join(str(value).split()))
    text = text.replace("[", "(").replace("]", ")")
    if len(text) > limit:
        text = text[: limit - 1] + "~"
    return f'"{text or "_"}"'


def number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "0"


def bar_chart(
    title: str,
    labels: Sequence[object],
    values: Sequence[float],
    axis: str,
    horizontal: bool = False,
) -> str:
    """A bar chart of ``values``, one bar per label."""
    low = min(0.0, *(v for v in values if math.isfinite(v)))
    high = max(0.0, *(v for v in values if math.isfinite(v)))
    if high == low:
        high = low + 1
    lines = [
        "xychart-beta" + (" horizontal" if horizontal else ""),
        f"    title {label(title, MAX_TITLE)}",
        f"    x-axis [{', '.join(label(x) for x in labels)}]",
        f"    y-axis {label(axis)} {number(low)} --> {number(high)}",
        f"    bar [{', '.join(number(v) for v in values)}]",
    ]
    return block(lines)


def line_chart(
    title: str,
    x: Sequence[object],
    series: Sequence[Sequence[float]],
    axis: str,
    y_range: tuple[float, float] | None = None,
) -> str:
    """One or more lines over the same x values (drawn in Mermaid's palette order)."""
    finite = [v for s in series for v in s if math.isfinite(v)] or [0.0]
    low, high = y_range or (min(finite), max(finite))
    if high == low:
        high = low + 1
    lines = [
        "xychart-beta",
        f"    title {label(title, MAX_TITLE)}",
        f"    x-axis [{', '.join(label(v) for v in x)}]",
        f"    y-axis {label(axis)} {number(low)} --> {number(high)}",
        *(f"    line [{', '.join(number(v) for v in s)}]" for s in series),
    ]
    return block(lines)


def block(lines: list[str]) -> str:
    return "```mermaid\n" + "\n".join(lines) + "\n```"
