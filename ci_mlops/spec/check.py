"""Check a parsed spec against the schema and for meaning; collect every problem."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from ci_mlops.errors import Problem, SpecError
from ci_mlops.spec.load import JsonPath, Located, read_spec, schema
from ci_mlops.spec.model import TASK_METRICS, Spec, build_spec

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "empty",
}


def load_spec(path: Path | str, *, check_files: bool = True) -> Spec:
    """Read, validate and build the spec at ``path``; raise :class:`SpecError` listing
    every problem found."""
    path = Path(path)
    located = read_spec(path)
    problems = schema_problems(located)
    if problems:
        raise SpecError(problems)
    problems = meaning_problems(located, path.parent, check_files=check_files)
    if problems:
        raise SpecError(problems)
    return build_spec(located.data, path)


def schema_problems(doc: Located) -> list[Problem]:
    """Every schema violation, each located at the offending key or value."""
    validator = jsonschema.Draft202012Validator(schema())
    found = [p for error in validator.iter_errors(doc.data) for p in _explain(error, doc)]
    unique = {(p.line, p.column, p.path, p.message): p for p in found}
    return sorted(unique.values(), key=lambda p: (p.line, p.column, p.path))


def _explain(error: jsonschema.ValidationError, doc: Located) -> Iterator[Problem]:
    path: JsonPath = tuple(error.absolute_path)
    validator = error.validator
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted((error.schema.get("properties") or {}).keys())
        extra = [k for k in error.instance if k not in allowed]
        for key in extra:
            hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
            yield doc.problem((*path, key), f"unknown key {key!r}{hint}", key=True)
        if extra:
            return
    if validator in ("oneOf", "anyOf") and error.context:
        if _is_dataset_choice(error):
            yield doc.problem(path, "give either 'path', or both 'features' and 'labels'")
            return
        best = jsonschema.exceptions.best_match(error.context)
        yield from _explain(best, doc)
        return
    if validator == "propertyNames":
        yield from _explain_property_names(error, path, doc)
        return
    yield doc.problem(path, _message(error))


def _is_dataset_choice(error: jsonschema.ValidationError) -> bool:
    branches = error.schema.get(error.validator) or []
    return any(b.get("required") == ["features", "labels"] for b in branches)


def _explain_property_names(
    error: jsonschema.ValidationError, path: JsonPath, doc: Located
) -> Iterator[Problem]:
    rule = error.schema.get("propertyNames") or {}
    for key in error.instance if isinstance(error.instance, dict) else ():
        if "enum" in rule and key not in rule["enum"]:
            options = ", ".join(rule["enum"])
            yield doc.problem((*path, key), f"unknown metric {key!r} (known: {options})", key=True)
        elif "pattern" in rule and not jsonschema.Draft202012Validator(rule).is_valid(key):
            yield doc.problem((*path, key), f"{key!r} is not a valid name here", key=True)


def _message(error: jsonschema.ValidationError) -> str:
    v, inst, sch = error.validator, error.instance, error.schema
    if v == "type":
        want = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]
        names = " or ".join(_TYPE_NAMES.get(t, t) for t in want)
        return f"expected {names}, got {_describe(inst)}"
    if v == "required":
        missing = [k for k in sch["required"] if isinstance(inst, dict) and k not in inst]
        return f"missing required key {missing[0]!r}" if missing else error.message
    if v == "enum":
        return f"{inst!r} is not allowed (choose one of: {', '.join(map(str, sch['enum']))})"
    if v == "const":
        return f"must be {sch['const']!r}, got {inst!r}"
    if v == "pattern":
        return f"{_short(inst)!r} is not allowed here: {_pattern_hint(sch)}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{inst!r} is out of range ({error.message.split(' is ', 1)[-1]})"
    if v in ("minItems", "minProperties"):
        return "must not be empty"
    if v == "maxProperties":
        return "name exactly one expectation per list item"
    if v in ("minLength", "maxLength"):
        return f"length {len(inst)} is out of range ({v.replace('Length', '')} {sch[v]})"
    return error.message


def _pattern_hint(sch: dict[str, Any]) -> str:
    desc = sch.get("description")
    if desc and "letters" in desc:
        return desc
    return "it contains characters that are not allowed (quotes, $, backslashes, control characters)"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_short(value)!r}"


def meaning_problems(doc: Located, root: Path, *, check_files: bool = True) -> list[Problem]:
    """What the schema cannot say: unique names, metrics that fit the task, files
    that exist, valid cron expressions."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, model in enumerate(doc.data["models"]):
        here: JsonPath = ("models", i)
        name = model["name"]
        if name in seen:
            problems.append(
                doc.problem((*here, "name"), f"duplicate model name {name!r} (first at models[{seen[name]}])")
            )
        seen.setdefault(name, i)
        problems += _metric_problems(doc, here, model)
        problems += _environment_problems(doc, here, model)
        problems += _framework_problems(doc, here, model)
        schedule = (model.get("retrain") or {}).get("schedule")
        if schedule is not None:
            reason = cron_problem(schedule)
            if reason:
                problems.append(doc.problem((*here, "retrain", "schedule"), reason))
        if check_files:
            problems += _file_problems(doc, here, model, root)
    if check_files:
        req = (doc.data.get("runtime") or {}).get("requirements")
        if req and not (root / req).is_file():
            problems.append(doc.problem(("runtime", "requirements"), f"file not found: {req}"))
    return problems


def _metric_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    out = []
    allowed = TASK_METRICS[model["task"]]
    for metric, gate in model["metrics"].items():
        where = (*here, "metrics", metric)
        if metric not in allowed:
            out.append(
                doc.problem(
                    where,
                    f"{metric!r} is not a {model['task']} metric (use: {', '.join(allowed)})",
                    key=True,
                )
            )
        gate = gate or {}
        if "min" in gate and "max" in gate and gate["min"] > gate["max"]:
            out.append(doc.problem((*where, "min"), f"min {gate['min']} is above max {gate['max']}"))
    return out


def _environment_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    envs = (model.get("deploy") or {}).get("environments") or []
    seen: set[str] = set()
    out = []
    for j, env in enumerate(envs):
        if env["name"] in seen:
            out.append(
                doc.problem((*here, "deploy", "environments", j, "name"), f"duplicate environment {env['name']!r}")
            )
        seen.add(env["name"])
    return out


def _framework_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    if model["framework"] != "pytorch" and "model_class" in model:
        return [doc.problem((*here, "model_class"), "model_class is only used with framework: pytorch")]
    return []


def _file_problems(doc: Located, here: JsonPath, model: dict[str, Any], root: Path) -> list[Problem]:
    out = []
    for role, ds in (model.get("data") or {}).items():
        for key in ("path", "features", "labels"):
            if key in ds and not (root / ds[key]).is_file():
                out.append(doc.problem((*here, "data", role, key), f"file not found: {ds[key]}"))
    for j, pattern in enumerate(model.get("paths", ())):
        if not glob.glob(str(root / pattern), recursive=True):
            out.append(doc.problem((*here, "paths", j), f"matches no file: {pattern}"))
    drift = (model.get("retrain") or {}).get("drift") or {}
    if "reference" in drift and not (root / drift["reference"]).is_file():
        where = (*here, "retrain", "drift", "reference")
        out.append(doc.problem(where, f"file not found: {drift['reference']}"))
    return out


_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a 5-field cron expression both GitLab and GitHub accept,
    or None when it is one."""
    fields = expr.split()
    if len(fields) != 5:
        return f"cron expression {expr!r} must have 5 fields (minute hour day month weekday), has {len(fields)}"
    for text, (label, low, high) in zip(fields, _CRON_FIELDS, strict=True):
        for part in text.split(","):
            reason = _cron_part(part, label, low, high)
            if reason:
                return f"cron expression {expr!r}: {reason}"
    return None


def _cron_part(part: str, label: str, low: int, high: int) -> str | None:
    body, _, step = part.partition("/")
    if step and (not step.isdigit() or int(step) == 0):
        return f"bad step {step!r} in the {label} field"
    if body == "*":
        return None
    for bound in body.split("-", 1):
        value = _cron_value(bound, label)
        if value is None or not low <= value <= high:
            return f"{bound!r} is not a valid {label} ({low}-{high})"
    return None


def _cron_value(text: str, label: str) -> int | None:
    if text.isdigit():
        return int(text)
    names = _NAMES.get(label, [])
    if text.lower() in names:
        return names.index(text.lower()) + (1 if label == "month" else 0)
    return None
