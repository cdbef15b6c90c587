"""Read ``mlops.yaml`` into plain Python data while remembering where every value stands.

Every problem found later (schema or meaning) is reported as ``file:line:col: $.path:
message``; the :class:`Located` document returned here is what makes that possible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ci_mlops.errors import Problem, SpecError

Key = str | int
JsonPath = tuple[Key, ...]

MAX_SPEC_BYTES = 2_000_000


@dataclass
class Located:
    """A parsed spec plus the line and column (1-based) of each JSON path in it."""

    file: str
    data: Any
    marks: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    nodes: int = 0

    def where(self, path: JsonPath, *, key: bool = False) -> tuple[int, int]:
        """The position of ``path``, or of its closest ancestor that has one."""
        table = self.key_marks if key else self.marks
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.marks:
                return self.marks[probe]
            probe = probe[:-1]
        return self.marks.get((), (1, 1))

    def problem(self, path: JsonPath, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(path, key=key)
        return Problem(self.file, line, col, json_path(path), message)


def json_path(path: JsonPath) -> str:
    """``('models', 0, 'name')`` → ``$.models[0].name``."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


@cache
def schema() -> dict[str, Any]:
    """The published JSON Schema of the spec."""
    text = resources.files("ci_mlops.spec").joinpath("schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def read_spec(path: Path) -> Located:
    """Parse ``path`` as YAML, keeping positions; raise :class:`SpecError` on failure."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(
            [Problem(name, 1, 1, "$", "file not found (create one with `ci-mlops init`)")]
        ) from None
    except OSError as exc:
        raise SpecError([Problem(name, 1, 1, "$", f"cannot read file: {exc.strerror}")]) from None
    return parse_spec(raw, name)


def _compose(text: str) -> yaml.Node | None:
    """Parse with libyaml; on an error parse again in Python, whose messages and
    positions say more, so the user reads those."""
    try:
        return yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        if _LOADER is yaml.SafeLoader:
            raise
    return yaml.compose(text, Loader=yaml.SafeLoader)


def parse_spec(raw: bytes, name: str) -> Located:
    """Parse spec bytes; ``name`` is used in messages."""
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([Problem(name, 1, 1, "$", f"file is larger than {MAX_SPEC_BYTES} bytes")])
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError([Problem(name, 1, 1, "$", "the file is UTF-16 text: save it as UTF-8")])
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise SpecError([Problem(name, line, 1, "$", "not a text file (contains NUL bytes)")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line_start = before.rfind(b"\n") + 1
        # Columns count characters, as YAML positions do.
        col = len(before[line_start:].decode("utf-8", "replace")) + 1
        line = before.count(b"\n") + 1
        message = f"not valid UTF-8 text (byte 0x{raw[exc.start]:02x}): save the file as UTF-8"
        raise SpecError([Problem(name, line, col, "$", message)]) from None
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = _syntax_reason(exc)
        raise SpecError([Problem(name, line, col, "$", f"YAML syntax error: {reason}")]) from None
    except yaml.reader.ReaderError as exc:
        # A control character: PyYAML reports a character offset, not a line.
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"YAML error: control character U+{char:04X} is not allowed"
        raise SpecError([Problem(name, line, col, "$", message)]) from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError([Problem(name, 1, 1, "$", f"YAML error: {first}")]) from None
    if node is None:
        raise SpecError(
            [Problem(name, 1, 1, "$", "the file is empty (create one with `ci-mlops init`)")]
        )
    located = Located(name, None)
    located.data = _convert(node, (), located, depth=0)
    return located


def _syntax_reason(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's problem, with its context when that says where the trouble began."""
    problem, context = exc.problem or "", exc.context or ""
    if "'\\t'" in problem or "\t" in problem:
        return "a tab character where YAML expects indentation or a value: indent with spaces"
    if not problem:
        return context or "invalid YAML"
    if context and problem.startswith("but "):
        # "expected a single document in the stream, but found another document"
        return f"{context}, {problem}"
    start, end = exc.context_mark, exc.problem_mark
    if context and start and end and start.line != end.line:
        # An unclosed bracket or quote is noticed lines later: name where it opened.
        return f"{problem} ({context} started on line {start.line + 1})"
    return problem


_MAX_DEPTH = 64
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_MAX_NODES = 200_000


def _convert(node: yaml.Node, path: JsonPath, loc: Located, depth: int) -> Any:
    loc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    loc.nodes += 1
    # Both limits point at the top-level key whose value broke them: a path 64 levels
    # deep, or inside an alias expansion, tells the reader nothing.
    if depth > _MAX_DEPTH:
        message = f"nested more than {_MAX_DEPTH} levels deep"
        raise SpecError([loc.problem(path[:1], message, key=True)])
    if loc.nodes > _MAX_NODES:
        # Aliases can expand a small file into a huge document ("billion laughs").
        message = (
            f"the document expands to more than {_MAX_NODES:,} values "
            "(YAML aliases repeated inside aliases?)"
        )
        raise SpecError([loc.problem(path[:1], message, key=True)])
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
        # Scalars are checked by their constructor; lists and mappings would silently
        # drop a tag such as !!python/object/apply, hiding what the author meant.
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        raise SpecError([loc.problem(path, f"cannot read value: unsupported YAML tag {tag}")])
    if isinstance(node, yaml.MappingNode):
        return _convert_mapping(node, path, loc, depth)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(child, (*path, i), loc, depth + 1) for i, child in enumerate(node.value)]
    return _scalar(node, path, loc)


# libyaml's parser where PyYAML has it: several times faster, same marks.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# One constructor for every scalar: making a loader per value cost more than parsing.
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _scalar(node: yaml.Node, path: JsonPath, loc: Located) -> Any:
    _CONSTRUCTOR.constructed_objects.clear()
    _CONSTRUCTOR.recursive_objects.clear()
    try:
        return _CONSTRUCTOR.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        # e.g. an unknown tag (!custom, !!python/name:...): never constructed, only named.
        reason = exc.problem or "invalid value"
        if "constructor for the tag" in reason:
            reason = f"unsupported YAML tag {str(node.tag).replace('tag:yaml.org,2002:', '!!')}"
        raise SpecError([loc.problem(path, f"cannot read value: {reason}")]) from None
    except (yaml.YAMLError, ValueError, TypeError, ArithmeticError):
        _CONSTRUCTOR.recursive_objects.clear()
        # An explicit tag that does not fit its value, e.g. `!!int x`.
        tag = str(node.tag).rsplit(":", 1)[-1]
        value = str(node.value)[:60]
        raise SpecError([loc.problem(path, f"cannot read {value!r} as {tag}")]) from None


def _convert_mapping(node: yaml.MappingNode, path: JsonPath, loc: Located, depth: int) -> Any:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecError([loc.problem(path, "YAML merge keys (<<) are not supported")])
        if not isinstance(key_node, yaml.ScalarNode):
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            message = "keys must be plain strings, not lists or mappings"
            raise SpecError([Problem(loc.file, line, col, json_path(path), message)])
        key = str(key_node.value)
        child = (*path, key)
        if key in out:
            loc.key_marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            raise SpecError([loc.problem(child, f"duplicate key {key!r}", key=True)])
        loc.key_marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        out[key] = _convert(value_node, child, loc, depth + 1)
    return out
