"""Edit a spec file in place without losing what the user wrote around the edit.

PyYAML keeps no comments, so a spec is never dumped back: the edit replaces the exact
characters of one value, found through the composed node's marks, and the result is
parsed again and compared with the original. Anything beyond the intended change, or a
value laid out so that replacing its characters could disturb its neighbours, is
refused with a message saying where and what to do instead.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ci_mlops import atomic
from ci_mlops.errors import UsageError

_COMMENT_AFTER = re.compile(r"^(\s*)(#.*)?$")


@dataclass(frozen=True)
class GateEdit:
    """The new gate of one metric, as flow YAML, and the comment that goes after it."""

    model: int  # index in models[]
    metric: str
    gate: dict[str, float]
    comment: str

    def flow(self) -> str:
        return "{" + ", ".join(f"{k}: {_number(v)}" for k, v in self.gate.items()) + "}"


def _number(value: float) -> str:
    return repr(round(value, 6)) if isinstance(value, float) else str(value)


def set_gates(path: Path, edits: list[GateEdit]) -> None:
    """Replace the gates of ``edits`` in the spec at ``path``, keeping every other
    character; atomic, and only if the file still holds what was read."""
    before = path.read_text("utf-8")
    after = gates_edited(before, edits, str(path))
    if path.read_text("utf-8") != before:
        raise UsageError(f"{path}: changed while it was being edited; run the command again")
    atomic.write_text(path, after)


def gates_edited(text: str, edits: list[GateEdit], name: str = "mlops.yaml") -> str:
    """``text`` with the gates of ``edits`` replaced (see :func:`set_gates`)."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    spans = sorted((_span(text, root, e, name), e) for e in edits)
    out = text
    for (start, end), edit in reversed(spans):
        out = out[:start] + f"{edit.flow()}   # {edit.comment}" + out[end:]
    _check_same_but_gates(text, out, edits, name)
    return out


def _span(text: str, root: yaml.Node | None, edit: GateEdit, name: str) -> tuple[int, int]:
    """Where the gate's value starts and where its line ends (a comment after it is
    replaced too)."""
    node = _child(
        _child(_item(_child(root, "models", name), edit.model, name), "metrics", name),
        edit.metric,
        name,
    )
    line = node.start_mark.line + 1
    where = f"{name}:{line}: models[{edit.model}].metrics.{edit.metric}"
    one_line = node.start_mark.line == node.end_mark.line
    flow = isinstance(node, yaml.MappingNode) and node.flow_style
    empty = isinstance(node, yaml.ScalarNode) and node.value == "" and node.tag.endswith(":null")
    if not one_line or not (flow or empty):
        raise UsageError(
            f"{where}: not a one-line {{...}} mapping, so it cannot be edited safely; "
            "write the suggested gate there by hand"
        )
    line_end = text.find("\n", node.end_mark.index)
    line_end = len(text) if line_end < 0 else line_end
    if not _COMMENT_AFTER.match(text[node.end_mark.index : line_end]):
        raise UsageError(
            f"{where}: more follows on its line, so it cannot be edited safely; "
            "write the suggested gate there by hand"
        )
    return node.start_mark.index, line_end


def _child(node: yaml.Node | None, key: str, name: str) -> yaml.Node:
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                return value
    raise UsageError(f"{name}: no {key!r} where the spec should have one")


def _item(node: yaml.Node, index: int, name: str) -> yaml.Node:
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        return node.value[index]
    raise UsageError(f"{name}: no model number {index + 1}")


def _check_same_but_gates(before: str, after: str, edits: list[GateEdit], name: str) -> None:
    """The edited text must read as the original with exactly the new gates."""
    expected: Any = copy.deepcopy(yaml.safe_load(before))
    for edit in edits:
        expected["models"][edit.model]["metrics"][edit.metric] = edit.gate
    try:
        actual = yaml.safe_load(after)
    except yaml.YAMLError as exc:
        raise UsageError(f"{name}: the edit would not parse ({exc}); nothing written") from None
    if actual != expected:
        raise UsageError(f"{name}: the edit would change more than the gates; nothing written")


def set_job_image_digests(path: Path, digests: dict[str, str]) -> None:
    """Make ``runtime.job_image_digests`` of the spec at ``path`` exactly ``digests``,
    keeping every other character; atomic, and only if the file still holds what was
    read."""
    before = path.read_text("utf-8")
    after = job_image_digests_edited(before, digests, str(path))
    if path.read_text("utf-8") != before:
        raise UsageError(f"{path}: changed while it was being edited; run the command again")
    atomic.write_text(path, after)


def job_image_digests_edited(text: str, digests: dict[str, str], name: str = "mlops.yaml") -> str:
    """``text`` with ``runtime.job_image_digests`` set to ``digests`` (see
    :func:`set_job_image_digests`): the old entry, key and value, is replaced, or a new
    one goes on the line after ``runtime.job_images``, as a block mapping at its indent."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    runtime = _child(root, "runtime", name)
    if not isinstance(runtime, yaml.MappingNode) or runtime.flow_style:
        line = runtime.start_mark.line + 1
        raise UsageError(
            f"{name}:{line}: runtime is not a block mapping, so it cannot be edited safely; "
            "write runtime.job_image_digests there by hand"
        )
    entries = {k.value: (k, v) for k, v in runtime.value if isinstance(k, yaml.ScalarNode)}
    replaced = entries.get("job_image_digests")
    if not (replaced or "job_images" in entries):
        raise UsageError(
            f"{name}: no runtime.job_images line to write runtime.job_image_digests after; "
            "write it there by hand"
        )
    key, value = replaced or entries["job_images"]
    indent = " " * key.start_mark.column
    block = f"{indent}job_image_digests:" + (
        "".join(f"\n{indent}  {image}: {digest}" for image, digest in sorted(digests.items()))
        if digests
        else " {}"
    )
    if replaced:
        # The old entry's lines go, up to the end of its last value's line.
        start, end = _line_start(text, key.start_mark.index), _line_end(text, _last_end(value))
        out = text[:start] + block + text[end:]
    else:
        end = _line_end(text, value.end_mark.index)
        out = text[:end] + "\n" + block + text[end:]
    _check_same_but_digests(text, out, digests, name)
    return out


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _last_end(node: yaml.Node) -> int:
    """Where the last character of ``node`` is: a block mapping's own end mark lies
    beyond the comments and blank lines after it, which must stay."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style and node.value:
        return _last_end(node.value[-1][1])
    return int(node.end_mark.index)


def _check_same_but_digests(before: str, after: str, digests: dict[str, str], name: str) -> None:
    expected: Any = copy.deepcopy(yaml.safe_load(before))
    expected["runtime"]["job_image_digests"] = digests
    try:
        actual = yaml.safe_load(after)
    except yaml.YAMLError as exc:
        raise UsageError(f"{name}: the edit would not parse ({exc}); nothing written") from None
    if actual != expected:
        raise UsageError(
            f"{name}: the edit would change more than runtime.job_image_digests; nothing written"
        )
