"""Check a parsed spec against the schema and for meaning; collect every problem."""

from __future__ import annotations

import csv
import difflib
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

from ci_mlops import __version__
from ci_mlops.errors import Problem, SpecError
from ci_mlops.spec.load import JsonPath, Located, read_spec, schema
from ci_mlops.spec.model import JOB_IMAGE_PYTHONS, TASK_METRICS, Spec, build_spec
from ci_mlops.spec.sniff import is_number, sniff

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
    if _is_property_name_error(error):
        yield _property_name_problem(error, path, doc)
        return
    if validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted((_schema_of(error).get("properties") or {}).keys())
        extra = [k for k in error.instance if k not in allowed]
        for key in extra:
            yield doc.problem((*path, key), _unknown("key", key, allowed), key=True)
        if extra:
            return
    # A problem with a whole mapping or list points at its key: the value of a block
    # mapping starts on the line below, away from what the user has to look at.
    container = isinstance(error.instance, dict | list)
    if validator in ("oneOf", "anyOf") and error.context:
        if _is_dataset_choice(error):
            message = "give either 'path', or both 'features' and 'labels'"
            yield doc.problem(path, message, key=container)
            return
        best = jsonschema.exceptions.best_match(error.context)
        yield from _explain(best, doc)
        return
    yield doc.problem(path, _message(error), key=container)


def _is_property_name_error(error: jsonschema.ValidationError) -> bool:
    """jsonschema reports a bad key found by ``propertyNames`` as an error of the inner
    keyword (pattern, enum) whose instance is the key and whose path is the mapping."""
    schema_path = list(error.absolute_schema_path)
    return len(schema_path) >= 2 and schema_path[-2] == "propertyNames"


def _property_name_problem(
    error: jsonschema.ValidationError, path: JsonPath, doc: Located
) -> Problem:
    key = str(error.instance)
    where = (*path, key)
    sch = _schema_of(error)
    if error.validator == "enum":
        known = [str(k) for k in sch["enum"]]
        return doc.problem(where, _unknown("metric", key, known, label="known"), key=True)
    parent = path[-1] if path else ""
    if parent == "params":
        message = f"{key!r} is not a valid parameter name: use letters, digits and _, not starting with a digit"
    elif str(sch.get("pattern", "")).startswith("^expect_"):
        message = (
            f"{key!r} is not an expectation: expectation names start with expect_ and use "
            "lower-case letters, digits and _ (e.g. expect_column_values_to_not_be_null)"
        )
    else:
        message = f"{key!r} is not a valid name here: {_pattern_hint(sch)}"
    return doc.problem(where, message, key=True)


def _unknown(what: str, key: str, allowed: list[str], *, label: str = "allowed") -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    listed = f" ({guess}{label}: {', '.join(allowed)})" if allowed else ""
    return f"unknown {what} {key!r}{listed}"


def _schema_of(error: jsonschema.ValidationError) -> dict[str, Any]:
    """The subschema that failed (typed loosely by jsonschema's stubs)."""
    return dict(error.schema) if isinstance(error.schema, dict) else {}


def _is_dataset_choice(error: jsonschema.ValidationError) -> bool:
    branches = _schema_of(error).get(str(error.validator)) or []
    return any(b.get("required") == ["features", "labels"] for b in branches)


def _message(error: jsonschema.ValidationError) -> str:
    v, inst, sch = str(error.validator), error.instance, _schema_of(error)
    if v == "type":
        want = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]
        quote = want == ["string"] and isinstance(inst, int | float) and not isinstance(inst, bool)
        hint = " (write it in quotes)" if quote else ""
        return f"expected {_type_names(want)}, got {_describe(inst)}{hint}"
    if v == "required":
        missing = [k for k in sch["required"] if isinstance(inst, dict) and k not in inst]
        return f"missing required key {missing[0]!r}" if missing else error.message
    if v == "enum":
        options = [str(o) for o in sch["enum"]]
        close = difflib.get_close_matches(str(inst), options, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        return f"{inst!r} is not allowed ({guess}choose one of: {', '.join(options)})"
    if v == "const":
        return f"must be {sch['const']!r}, got {inst!r}"
    if v == "pattern":
        return f"{_short(inst)!r} is not allowed here: {_pattern_hint(sch)}"
    if v in _BOUNDS:
        return f"{inst!r} is out of range: {_BOUNDS[v]} {sch[v]!r}"
    if v in ("minItems", "minProperties"):
        return "must not be empty"
    if v == "maxProperties":
        return "name exactly one expectation per list item"
    if v in ("minLength", "maxLength"):
        bound = "at least" if v == "minLength" else "at most"
        return f"must be {bound} {sch[v]} character{'s' * (sch[v] != 1)} long, is {len(str(inst))}"
    return error.message


_BOUNDS = {
    "minimum": "the smallest allowed value is",
    "maximum": "the largest allowed value is",
    "exclusiveMinimum": "it must be greater than",
    "exclusiveMaximum": "it must be less than",
}

# What each pattern of the schema means, in words. A pattern not listed here is shown
# as it is.
_SAFE_TEXT = "^(?!!)[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029$`'\\\"\\\\]+$"
_PATTERN_HINTS = {
    _SAFE_TEXT: (
        "quotes, $, backquotes, backslashes and control characters are not allowed (nor line "
        "separators, nor a leading !, which GitHub path filters read as an exclusion)"
    ),
    "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029$`'\\\"\\\\;&|<>]+$": (
        "quotes, $, backquotes, backslashes, ;, &, |, <, > and control characters are not "
        "allowed (nor line separators)"
    ),
    "^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$": (
        "use lower-case letters, digits and dashes, starting with a letter and not ending "
        "with a dash, at most 40 characters"
    ),
    "^3\\.[0-9]{1,2}$": 'write the Python version as a quoted string such as "3.11"',
    "^[0-9]+\\.[0-9]+\\.[0-9]+$": "use a version such as 1.2.3",
    "^[0-9a-f]{40}$": "use a full 40-character commit SHA in lower-case hex",
    "^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$": "use module:Class, e.g. nets:Classifier",
}


def _pattern_hint(sch: dict[str, Any]) -> str:
    pattern = str(sch.get("pattern", ""))
    if pattern in _PATTERN_HINTS:
        return _PATTERN_HINTS[pattern]
    return f"it must match {pattern}"


def _type_names(types: list[str]) -> str:
    if len(types) == 1:
        return _TYPE_NAMES.get(types[0], types[0])
    # In a list, "true or false" would read as two choices.
    names = [_TYPE_NAMES_IN_LIST.get(t, _TYPE_NAMES.get(t, t)) for t in types]
    return ", ".join(names[:-1]) + " or " + names[-1]


_TYPE_NAMES_IN_LIST = {"boolean": "a boolean"}


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
                doc.problem(
                    (*here, "name"),
                    f"duplicate model name {name!r} (first at models[{seen[name]}])",
                )
            )
        seen.setdefault(name, i)
        problems += _metric_problems(doc, here, model)
        problems += _evaluation_problems(doc, here, model)
        problems += _environment_problems(doc, here, model)
        problems += _framework_problems(doc, here, model)
        schedule = (model.get("retrain") or {}).get("schedule")
        if schedule is not None:
            reason = cron_problem(schedule)
            if reason:
                problems.append(doc.problem((*here, "retrain", "schedule"), reason))
        problems += _watched_problems(doc, here, model)
        problems += _columns_problems(doc, here, model)
        signing = (model.get("deploy") or {}).get("signing") or {}
        if "public_key" in signing and "identity" in signing:
            problems.append(
                doc.problem(
                    (*here, "deploy", "signing", "identity"),
                    "give public_key (a key pair) or identity (keyless), not both",
                )
            )
        if check_files:
            problems += _file_problems(doc, here, model, root)
    problems += _branch_problems(doc)
    problems += _job_image_problems(doc)
    if check_files:
        runtime = doc.data.get("runtime") or {}
        for key in ("requirements", "lock"):
            name = runtime.get(key)
            if name and name.endswith("/") and key == "lock":
                # A folder of per-job locks; `ci-mlops lock --check` checks each file.
                if not (root / name).is_dir():
                    problems.append(
                        doc.problem(
                            ("runtime", key),
                            f"folder not found: {name} (write the locks with `ci-mlops lock`)",
                        )
                    )
            elif name and not (root / name).is_file():
                problems.append(doc.problem(("runtime", key), f"file not found: {name}"))
    return sorted(problems, key=lambda p: (p.line, p.column, p.path))


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
            out.append(
                doc.problem((*where, "min"), f"min {gate['min']} is above max {gate['max']}")
            )
    return out


def _evaluation_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    """Gates that need something evaluate would not compute: slice gates without
    slices, significance without resamples, importance of a metric not computed."""
    evaluation = model.get("evaluate") or {}
    samples = (evaluation.get("bootstrap") or {}).get("samples", 200)
    needs = {
        "worst_slice": (bool(evaluation.get("slices")), "needs evaluate.slices"),
        "max_slice_gap": (bool(evaluation.get("slices")), "needs evaluate.slices"),
        "significance": (samples > 0, "needs evaluate.bootstrap.samples above 0"),
    }
    out = []
    for metric, gate in model["metrics"].items():
        for key, (ok, why) in needs.items():
            if key in (gate or {}) and not ok:
                out.append(doc.problem((*here, "metrics", metric, key), f"{key} {why}"))
    chosen = (evaluation.get("importance") or {}).get("metric")
    if chosen is not None and chosen not in model["metrics"]:
        out.append(
            doc.problem(
                (*here, "evaluate", "importance", "metric"),
                f"{chosen!r} is not one of this model's metrics ({', '.join(model['metrics'])})",
            )
        )
    return out


def _environment_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    envs = (model.get("deploy") or {}).get("environments") or []
    seen: set[str] = set()
    out = []
    for j, env in enumerate(envs):
        if env["name"] in seen:
            out.append(
                doc.problem(
                    (*here, "deploy", "environments", j, "name"),
                    f"duplicate environment {env['name']!r}",
                )
            )
        seen.add(env["name"])
    return out


def _framework_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    if model["framework"] != "pytorch" and "model_class" in model:
        return [
            doc.problem((*here, "model_class"), "model_class is only used with framework: pytorch")
        ]
    return []


# Characters that GitLab's rules:changes (fnmatch) and GitHub's path filters read
# differently: on GitHub ? and + repeat the character before them, [ ] need a partner.
_GLOB_MISMATCH = {
    "?": "use * instead",
    "+": "GitHub reads it as 'one or more'",
    "[": "character classes differ between GitLab and GitHub",
    "]": "character classes differ between GitLab and GitHub",
}


def _watched_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    """Paths that decide when jobs run must mean the same on GitLab and GitHub."""
    out = []
    data = model.get("data") or {}
    where: list[tuple[JsonPath, Any]] = [
        ((*here, "paths", j), p) for j, p in enumerate(model.get("paths", ()))
    ]
    where += [
        ((*here, "data", role, key), ds[key])
        for role, ds in data.items()
        for key in ("path", "features", "labels")
        if isinstance(ds, dict) and key in ds
    ]
    on_change = (model.get("retrain") or {}).get("on_data_change", ())
    where += [((*here, "retrain", "on_data_change", j), p) for j, p in enumerate(on_change)]
    for path, value in where:
        reason = _glob_problem(str(value))
        if reason:
            out.append(doc.problem(path, reason))
    return out


def _columns_problems(doc: Located, here: JsonPath, model: dict[str, Any]) -> list[Problem]:
    """Named columns must hold the target of a single file, and must not hold the
    target of split files (the labels file brings it)."""
    out = []
    for role, ds in _datasets(model):
        columns, target = ds.get("columns"), ds.get("target")
        if not columns or not target:
            continue
        where = (*here, "data", role, "target")
        if "path" in ds and target not in columns:
            out.append(doc.problem(where, f"{target!r} is not one of the named columns"))
        if "labels" in ds and target in columns:
            message = f"{target!r} is named in columns, but the target comes from the labels file"
            out.append(doc.problem(where, message))
    return out


def data_warnings(path: Path) -> list[Problem]:
    """Data files that the spec's options probably read wrong: a delimiter that leaves
    one column where another splits every row, a first row of numbers read as column
    names. Warnings, not errors: numbers can be names, one column can be right."""
    doc = read_spec(path)
    out = []
    for i, model in enumerate(doc.data.get("models") or []):
        for role, ds in _datasets(model):
            if ds.get("format") == "parquet":
                continue
            for key in ("path", "features", "labels"):
                file = ds.get(key)
                if not isinstance(file, str) or file.lower().endswith((".parquet", ".pq")):
                    continue
                if (path.parent / file).is_dir():
                    continue  # a folder of parts: Spark reads it, nothing to sniff
                message = _data_warning(path.parent, file, ds, labels=key == "labels")
                if message:
                    out.append(doc.problem(("models", i, "data", role, key), message))
    return out


def _data_warning(root: Path, file: str, ds: dict[str, Any], *, labels: bool) -> str | None:
    delimiter = str(ds.get("delimiter", ","))
    first = _first_row(root / file, delimiter)
    if not first:
        return None
    shape = sniff(root / file)
    if (
        not labels
        and len(first) == 1
        and shape is not None
        and shape.regular
        and shape.width > 1
        and shape.delimiter != delimiter
    ):
        return (
            f"{file}: delimiter {delimiter!r} reads one column, {shape.delimiter!r} splits "
            f"every sampled row into {shape.width}: set delimiter: {json.dumps(shape.delimiter)}"
        )
    if ds.get("header") is False or ds.get("columns"):
        return None
    numbers = [cell for cell in first if all(is_number(t) for t in cell.split() or [""])]
    if not numbers:
        return None
    shown = ", ".join(repr(n) for n in numbers[:3])
    return (
        f"{file}: the column names look like data ({shown}); if the file has no header "
        "row, set header: false (and name the columns with columns: [...])"
    )


def _first_row(file: Path, delimiter: str) -> list[str]:
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle, delimiter=delimiter), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def _glob_problem(value: str) -> str | None:
    if value != value.strip():
        return f"{value!r}: no spaces at the start or end (GitHub path filters refuse them)"
    for char, why in _GLOB_MISMATCH.items():
        if char in value:
            return f"{value!r}: {char!r} means different things to GitLab and GitHub ({why})"
    return None


def _branch_problems(doc: Located) -> list[Problem]:
    """default_branch lands in GitHub's push filter, which takes only real branch names."""
    branch = (doc.data.get("runtime") or {}).get("default_branch")
    if not isinstance(branch, str):
        return []
    parts = branch.split("/")
    bad = (
        ".." in branch
        or branch.endswith((".lock", "."))
        or any(p == "" or p.startswith(".") for p in parts)
    )
    if not bad:
        return []
    message = f"{branch!r} is not a valid git branch name (see git check-ref-format)"
    return [doc.problem(("runtime", "default_branch"), message)]


# What a job image holds: ci-mlops of this release, which the install line must name.
RELEASE_INSTALL = f"ci-mlops[{{extras}}]=={__version__}"


def _job_image_problems(doc: Located) -> list[Problem]:
    """runtime.job_images fixes each job's image and the ci-mlops in it: a second image
    setting, another ci-mlops (a git URL, a folder) or a Python the release builds no
    image for cannot go with it."""
    runtime = doc.data.get("runtime") or {}
    if "job_images" not in runtime:
        if "job_image_digests" in runtime:
            message = "job_image_digests pins job images: set job_images too"
            return [doc.problem(("runtime", "job_image_digests"), message, key=True)]
        return []
    problems = []
    if "image" in runtime:
        message = "give image or job_images, not both: job_images chooses each job's image"
        problems.append(doc.problem(("runtime", "image"), message))
    install = runtime.get("install")
    if isinstance(install, str) and not _installs_release(install):
        message = (
            f"job images hold ci-mlops {__version__} as released: with job_images, install "
            f"names {RELEASE_INSTALL} (index options may come with it), not {install!r}"
        )
        problems.append(doc.problem(("runtime", "install"), message))
    python = runtime.get("python", "3.11")
    if python not in JOB_IMAGE_PYTHONS:
        message = (
            f"job images are built for Python {', '.join(JOB_IMAGE_PYTHONS)}, not {python}: "
            "choose one of them or drop job_images"
        )
        problems.append(doc.problem(("runtime", "python"), message))
    return problems


def _installs_release(install: str) -> bool:
    """Whether ``install`` names this release of ci-mlops and nothing else to install:
    every other word is an option or an option's value (an index URL)."""
    words = install.split()
    if RELEASE_INSTALL not in words:
        return False
    after_option = False
    for word in words:
        if word != RELEASE_INSTALL and not word.startswith("-") and not after_option:
            return False
        after_option = word.startswith("-") and "=" not in word
    return True


def _file_problems(
    doc: Located, here: JsonPath, model: dict[str, Any], root: Path
) -> list[Problem]:
    out = []
    for role, ds in _datasets(model):
        for key in ("path", "features", "labels"):
            if key in ds and not _readable(root / ds[key], folder=key == "path"):
                out.append(doc.problem((*here, "data", role, key), f"file not found: {ds[key]}"))
    for j, pattern in enumerate(model.get("paths", ())):
        if not glob.glob(str(root / pattern), recursive=True):
            out.append(doc.problem((*here, "paths", j), f"matches no file: {pattern}"))
    public_key = ((model.get("deploy") or {}).get("signing") or {}).get("public_key")
    if public_key and not (root / public_key).is_file():
        where = (*here, "deploy", "signing", "public_key")
        out.append(doc.problem(where, f"file not found: {public_key}"))
    drift = (model.get("retrain") or {}).get("drift") or {}
    if "reference" in drift and not _readable(root / drift["reference"], folder=True):
        where = (*here, "retrain", "drift", "reference")
        out.append(doc.problem(where, f"file not found: {drift['reference']}"))
    return out


def _datasets(model: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The data section's datasets by role, without its settings (engine, max_memory)."""
    data = model.get("data") or {}
    return [(role, ds) for role, ds in data.items() if isinstance(ds, dict)]


def _readable(path: Path, *, folder: bool) -> bool:
    """A data file, or (where ``folder``) a folder of parts, which Spark reads."""
    return path.is_file() or (folder and path.is_dir())


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
    if expr != " ".join(fields):
        # The cron text is compared verbatim with github.event.schedule, and a line
        # break would end the YAML value it is written into.
        return f"cron expression {expr!r}: separate the fields with single spaces"
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
