"""Text from data made inert in Markdown comments.

Everything a report or drift table shows that came from data or from a step's files
(labels, column names, values, expectation details, server-side names) passes through
here before it reaches a merge-request note or a pull-request comment, where GitLab and
GitHub would otherwise render it: an eval label ``![x](https://evil.example/p.png)``
would make every reader's browser fetch that URL, and ``@all`` would notify a whole
group.

- :func:`code` puts a value in a code span (nothing inside one is rendered: no links,
  images, HTML, emphasis or mentions); backticks inside get a longer fence.
- :func:`text` escapes prose that mixes our words with data: every character that can
  open a Markdown construct is backslash-escaped, HTML is entity-encoded and ``@`` is
  followed by a zero-width space, which no mention or reference parser accepts.
"""

from __future__ import annotations

import re

# Characters that open emphasis, links, images, code, tables, strikethrough or escapes.
# ``(``/``)`` need no escape once ``[``/``]`` are; ``_`` is escaped unless inside a word.
_ESCAPED = set("\\`*[]|~")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_ZERO_WIDTH_SPACE = "\u200b"
_BACKTICKS = re.compile(r"`+")


def text(value: object) -> str:
    """``value`` as inert Markdown prose on one line (a table cell or a list item)."""
    line = _one_line(value)
    out = []
    for index, char in enumerate(line):
        if char in _ESCAPED or (char == "_" and not _inside_word(line, index)):
            out.append("\\" + char)
        elif char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char == "@":
            out.append("@" + _ZERO_WIDTH_SPACE)
        else:
            out.append(char)
    return "".join(out)


def code(value: object, *, table: bool = True) -> str:
    """``value`` as one inline code span. ``table``: the span sits in a table cell,
    where GitHub and GitLab split cells at ``|`` even inside code, so it is escaped
    (the table parser removes that backslash again)."""
    content = _one_line(value)
    if not content:
        return "(empty)"
    longest = max((len(run) for run in _BACKTICKS.findall(content)), default=0)
    fence = "`" * (longest + 1)
    # A space on both sides keeps a leading or trailing backtick out of the fence;
    # CommonMark strips exactly one space from each side again.
    if content[0] in "` " or content[-1] in "` ":
        content = f" {content} "
    if table:
        content = content.replace("|", "\\|")
    return f"{fence}{content}{fence}"


def _inside_word(line: str, index: int) -> bool:
    """An underscore between two letters or digits cannot open or close emphasis, so
    ``log_loss`` stays readable in the raw text."""
    return 0 < index < len(line) - 1 and line[index - 1].isalnum() and line[index + 1].isalnum()


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
