"""metrics.txt in the OpenMetrics text format, which GitLab's metrics report
(``artifacts:reports:metrics``) reads to show each value's change against the target
branch in the merge request widget.

One gauge family per metric, labelled with the model, plus its bootstrap interval and
its worst slice when evaluate measured them, and whether the gates passed. GitLab
compares the lines as strings, so every number is written with the same precision.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def family(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    """The lines of one gauge family: TYPE, HELP, then one sample per label set."""
    lines = [f"# TYPE {name} gauge", f"# HELP {name} {_escape_help(help_text)}"]
    for labels, value in samples:
        inside = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{inside}}} {_value(value)}")
    return lines


def document(families: list[list[str]]) -> str:
    """Families joined, ending with the ``# EOF`` line OpenMetrics requires."""
    return "\n".join([line for lines in families for line in lines] + ["# EOF"]) + "\n"


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")
