"""The data-test step: check every dataset of a model with its Great Expectations.

Each spec expectation becomes one GX expectation object, built one by one so that an
unknown name or bad arguments stop the step with a located error (exit 2) instead of
being dropped silently. Each dataset is loaded once and validated in memory through an
ephemeral GX context: whole in pandas; in chunks when it would not fit in memory and its
expectations add up row by row (else the step refuses it, exit 2); or as a Spark
DataFrame through GX's Spark datasource (``engine: spark``, folders of parts). Results go to ``data-test.json`` and ``data-test.junit.xml`` in
the model's working folder, and GX renders them as Data Docs in ``data-docs/``
(:mod:`ci_mlops.steps.data_docs`); any failed expectation then fails the step (exit 1).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from ci_mlops import atomic, log
from ci_mlops.errors import CheckFailed, SpecError, StepError
from ci_mlops.records import DataTestRecord
from ci_mlops.spec.model import Dataset, Expectation, Model, Spec
from ci_mlops.steps import spark
from ci_mlops.steps.datasets import MemoryFit, iter_chunks, load_dataset, memory_fit
from ci_mlops.steps.records import snapshot_spec

if TYPE_CHECKING:
    import pandas as pd

RESULT_JSON = DataTestRecord.FILE
RESULT_JUNIT = "data-test.junit.xml"
# SUMMARY keeps GX from collecting every unexpected value of a large table; a handful
# of examples is enough to see what is wrong.
EXAMPLES = 5
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": EXAMPLES}


@dataclass(frozen=True)
class Check:
    """A spec expectation and the GX expectation object built from it."""

    spec: Expectation
    gx: Any


def run(spec: Spec, model: Model) -> dict[str, Any]:
    """Validate each dataset of ``model``; write the JSON and JUnit results.

    Raises StepError (exit 2) for an unknown expectation, bad expectation arguments or
    an unreadable data file, before anything is written; CheckFailed (exit 1) after
    writing the results when any expectation fails.
    """
    gx = _import_gx()
    checks = {role: _build_checks(spec, model, role, ds) for role, ds in model.datasets.items()}
    reports = {
        role: _test_dataset(gx, spec, model, role, ds, checks[role])
        for role, ds in model.datasets.items()
    }
    workdir = spec.workdir(model)
    record = replace(
        _summary(model, reports, gx.__version__), data_docs=_data_docs(gx, workdir, model, reports)
    )
    snapshot_spec(spec, model)
    record.write(workdir)
    atomic.write_text(workdir / RESULT_JUNIT, junit_xml(model, reports))
    if not record.passed:
        stats = record.statistics
        raise CheckFailed(
            f"data-test {model.name}: {stats['unsuccessful_expectations']} of "
            f"{stats['evaluated_expectations']} expectations failed "
            f"(details: {workdir / RESULT_JSON})"
        )
    return record.to_json()


def _data_docs(
    gx: ModuleType, workdir: Path, model: Model, reports: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """Build the Data Docs; where they are, for data-test.json and the report."""
    from ci_mlops.platforms.detect import artifact_page
    from ci_mlops.steps import data_docs

    workdir.mkdir(parents=True, exist_ok=True)
    with log.timed(f"data-test {model.name}: building Data Docs"):
        index = data_docs.try_build(gx, workdir, model.name, reports)
    if index is None:
        return None
    url = artifact_page(index)
    log.info(f"data-test {model.name}: Data Docs: {url or index}")
    return {"path": data_docs.INDEX, "url": url}


def _import_gx() -> ModuleType:
    # Analytics must be off before the import, or GX tries to phone home and can stall
    # on closed CI networks.
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    with log.timed("data-test: loading Great Expectations"):
        import great_expectations as gx

    # GX logs warnings through the root logger's last-resort handler; they repeat what
    # the results already say.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    return gx


# --- building expectations -------------------------------------------------------------


def _build_checks(spec: Spec, model: Model, role: str, ds: Dataset) -> list[Check]:
    return [
        Check(exp, _build_one(spec, model, role, index, exp))
        for index, exp in enumerate(ds.expectations)
    ]


def _build_one(spec: Spec, model: Model, role: str, index: int, exp: Expectation) -> Any:
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        cls = get_expectation_impl(exp.name)
    except ExpectationNotFoundError:
        raise StepError(_located(spec, model, role, index, _unknown(exp.name))) from None
    try:
        return cls(**exp.kwargs)
    except (ValueError, TypeError) as exc:
        reason = f"{exp.name}: bad arguments: {_pydantic_reason(exc)}"
        raise StepError(_located(spec, model, role, index, reason)) from None


def _unknown(name: str) -> str:
    from great_expectations.expectations.registry import (
        list_registered_expectation_implementations,
    )

    known = list_registered_expectation_implementations()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else " (see the GX expectation gallery)"
    return f"unknown expectation {name!r}{hint}"


def _pydantic_reason(exc: Exception) -> str:
    """One line out of a (pydantic) validation error: the first message per field."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return _first_line(exc)
    by_field: dict[str, str] = {}
    for err in errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        by_field.setdefault(where, str(err.get("msg", "invalid")))
    return "; ".join(f"{k}: {v}" if k else v for k, v in by_field.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _located(spec: Spec, model: Model, role: str, index: int, message: str) -> str:
    """``file:line:col: $.path: model ..., <role> data: message`` for one expectation."""
    from ci_mlops.spec.load import read_spec

    text = f"model {model.name!r}, {role} data: {message}"
    mi = next(i for i, m in enumerate(spec.models) if m.name == model.name)
    where = ("models", mi, "data", role, "expectations", index)
    try:
        doc = read_spec(spec.path)
    except SpecError:
        # The spec changed or vanished since it was loaded: name it without a position.
        return f"{spec.path}: {text}"
    name = model.datasets[role].expectations[index].name
    return str(doc.problem((*where, name), text, key=True))


# --- validating ------------------------------------------------------------------------


def _test_dataset(
    gx: ModuleType, spec: Spec, model: Model, role: str, ds: Dataset, checks: list[Check]
) -> dict[str, Any]:
    start = time.perf_counter()
    if spark.uses_spark(spec.root, ds):
        report = _test_on_spark(gx, spec, role, ds, checks)
    else:
        report = _test_on_pandas(gx, spec, role, ds, checks)
    entries = report["expectations"]
    report["passed"] = all(e["passed"] for e in entries)
    report["statistics"] = _statistics(entries)
    report["duration_seconds"] = round(time.perf_counter() - start, 3)
    _print_dataset(model, role, report)
    return report


def _test_on_pandas(
    gx: ModuleType, spec: Spec, role: str, ds: Dataset, checks: list[Check]
) -> dict[str, Any]:
    too_large = _too_large(spec, ds)
    if too_large is not None:
        return _test_in_chunks(gx, spec, role, ds, checks, too_large)
    frame = load_dataset(spec.root, ds, need_target=False).frame
    columns = {str(c) for c in frame.columns}
    raw = _validate(gx, "pandas", role, [frame], checks) if checks else []
    return {
        "files": list(ds.files),
        "engine": "pandas",
        "rows": len(frame),
        "columns": len(frame.columns),
        "expectations": [_entry(c, r, columns) for c, r in zip(checks, raw, strict=True)],
    }


def _test_on_spark(
    gx: ModuleType, spec: Spec, role: str, ds: Dataset, checks: list[Check]
) -> dict[str, Any]:
    # GX computes its metrics in several Spark jobs: parse the files once (what does
    # not fit in the executors' memory spills to their disks), then free it.
    frame = spark.read_dataset(spec.root, ds).cache()
    try:
        rows = frame.count()
        raw = _validate(gx, "spark", role, [frame], checks) if checks else []
    finally:
        frame.unpersist()
    columns = set(frame.columns)
    return {
        "files": list(ds.files),
        "engine": "spark",
        "rows": rows,
        "columns": len(frame.columns),
        "expectations": [_entry(c, r, columns) for c, r in zip(checks, raw, strict=True)],
    }


def _too_large(spec: Spec, ds: Dataset) -> MemoryFit | None:
    """The first of the dataset's files too large to check in one piece, if any."""
    for file in ds.files:
        path = spec.root / file
        if path.is_file():
            fit = memory_fit(path, ds)
            if not fit.fits:
                return fit
    return None


# Expectations about the columns alone: any chunk answers them for the whole table.
SCHEMA_EXPECTATIONS = frozenset(
    {
        "expect_column_to_exist",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_columns_to_match_set",
        "expect_table_column_count_to_equal",
        "expect_table_column_count_to_be_between",
    }
)


def _chunkable(check: Check) -> bool:
    """Row-by-row (map) expectations add up over chunks; schema ones hold per chunk.
    Aggregates (means, uniqueness, row counts) need the whole table."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    maps = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    return isinstance(check.gx, maps) or check.spec.name in SCHEMA_EXPECTATIONS


def _test_in_chunks(
    gx: ModuleType, spec: Spec, role: str, ds: Dataset, checks: list[Check], fit: MemoryFit
) -> dict[str, Any]:
    whole = sorted({c.spec.name for c in checks if not _chunkable(c)})
    if whole:
        raise StepError(fit.refusal(f"; {', '.join(whole)} need the whole table at once"))
    rows = fit.chunk_rows()
    log.info(
        f"data-test {role}: {fit.path} takes about {fit.estimate:,} bytes in memory, "
        f"more than fits at once: checking it in chunks of {rows:,} rows"
    )
    counted = {"rows": 0, "chunks": 0, "columns": 0}
    names: set[str] = set()

    def chunks() -> Iterator[pd.DataFrame]:
        for frame in iter_chunks(spec.root, ds, rows):
            counted["rows"] += len(frame)
            counted["chunks"] += 1
            counted["columns"] = len(frame.columns)
            names.update(str(c) for c in frame.columns)
            yield frame

    raw: list[dict[str, Any]] = []
    if checks:
        raw = _validate(gx, "pandas", role, chunks(), checks)
    else:
        for _ in chunks():
            pass  # no checks: the rows are still counted for the report
    return {
        "files": list(ds.files),
        "engine": "pandas",
        "chunks": counted["chunks"],
        "rows": counted["rows"],
        "columns": counted["columns"],
        "expectations": [_entry(c, r, names) for c, r in zip(checks, raw, strict=True)],
    }


def _validate(
    gx: ModuleType, engine: str, role: str, frames: Iterable[Any], checks: list[Check]
) -> list[dict[str, Any]]:
    """GX's raw result per check; over several frames (chunks), the results merged."""
    # A fresh context per dataset: nothing keeps the previous frame alive.
    context = _quiet_context(gx)
    source = context.data_sources
    datasource = (
        source.add_spark("ci-mlops") if engine == "spark" else source.add_pandas("ci-mlops")
    )
    batch = datasource.add_dataframe_asset(role).add_batch_definition_whole_dataframe(role)
    suite = context.suites.add(gx.ExpectationSuite(name=role))
    ids = _add_to_suite(suite, checks)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=role, data=batch, suite=suite)
    )
    merged: list[dict[str, Any]] | None = None
    for frame in frames:
        with _quiet():
            result = definition.run(
                batch_parameters={"dataframe": frame}, result_format=RESULT_FORMAT
            )
        by_id = {r.expectation_config.id: r.to_json_dict() for r in result.results}
        raw = [by_id[i] for i in ids]
        merged = (
            raw
            if merged is None
            else [_merge(a, b, c) for a, b, c in zip(merged, raw, checks, strict=True)]
        )
    return merged if merged is not None else [{"success": True, "result": {}} for _ in checks]


def _merge(total: dict[str, Any], part: dict[str, Any], check: Check) -> dict[str, Any]:
    """Two chunks' results of one row-by-row expectation as one: counts add up, and
    success is decided again from the totals with the expectation's ``mostly``. The
    first chunk answers a schema expectation; an error in any chunk stands."""
    if check.spec.name in SCHEMA_EXPECTATIONS or _raised(total):
        return total
    if _raised(part):
        return part
    a, b = total.get("result") or {}, part.get("result") or {}
    result = dict(a)
    for key in ("element_count", "missing_count", "unexpected_count"):
        # None stays None: GX leaves out counts an expectation does not use.
        if a.get(key) is not None or b.get(key) is not None:
            result[key] = int(a.get(key) or 0) + int(b.get(key) or 0)
    considered = result["element_count"] - (result.get("missing_count") or 0)
    unexpected = result["unexpected_count"]
    result["unexpected_percent"] = 100.0 * unexpected / considered if considered else None
    examples = [
        *(a.get("partial_unexpected_list") or []),
        *(b.get("partial_unexpected_list") or []),
    ]
    result["partial_unexpected_list"] = examples[:EXAMPLES]
    mostly = float(check.spec.kwargs.get("mostly", 1.0))
    success = considered == 0 or (considered - unexpected) / considered >= mostly
    return {**total, "result": result, "success": success}


def _raised(raw: dict[str, Any]) -> bool:
    info = raw.get("exception_info") or {}
    if "raised_exception" in info:
        return bool(info["raised_exception"])
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def _quiet_context(gx: ModuleType) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # GX ignores TQDM_DISABLE (it passes tqdm's `disable` explicitly); this setting is
    # the switch it reads.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _add_to_suite(suite: Any, checks: list[Check]) -> list[str]:
    """Add each check once; return the GX id answering each check, in order."""
    # GX drops an expectation equal to one already in the suite, so a repeated spec
    # entry shares the id of its first occurrence.
    seen: dict[str, str] = {}
    ids = []
    for check in checks:
        key = json.dumps([check.spec.name, check.spec.kwargs], sort_keys=True, default=str)
        if key not in seen:
            seen[key] = suite.add_expectation(check.gx).id
        ids.append(seen[key])
    return ids


@contextmanager
def _quiet() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        # GX and pandas deprecation chatter is about GX's code, not the user's data.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        yield


def _entry(check: Check, raw: dict[str, Any], columns: set[str]) -> dict[str, Any]:
    result = raw.get("result") or {}
    entry: dict[str, Any] = {
        "name": check.spec.name,
        "kwargs": check.spec.kwargs,
        "passed": bool(raw.get("success")),
        "observed_value": result.get("observed_value"),
        "element_count": result.get("element_count"),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_percent": result.get("unexpected_percent"),
        "missing_count": result.get("missing_count"),
        "partial_unexpected_list": (result.get("partial_unexpected_list") or [])[:EXAMPLES],
    }
    if result.get("details"):
        entry["details"] = result["details"]
    error = _error(raw, check.spec.kwargs, columns)
    if error:
        entry["error"] = error
    entry["message"] = "passed" if entry["passed"] else failure_message(entry)
    return entry


def _error(raw: dict[str, Any], kwargs: dict[str, Any], columns: set[str]) -> str | None:
    info = raw.get("exception_info") or {}
    if "raised_exception" not in info:
        # Keyed by metric when a metric failed to compute; the first one tells why.
        info = next(iter(info.values()), {}) if info else {}
    if not info.get("raised_exception"):
        return None
    missing = [
        str(kwargs[k])
        for k in ("column", "column_A", "column_B")
        if k in kwargs and str(kwargs[k]) not in columns
    ]
    for k in ("column_list",):
        missing += [str(c) for c in kwargs.get(k) or () if str(c) not in columns]
    if missing:
        return f"no column named {', '.join(repr(m) for m in missing)} in the data"
    message = str(info.get("exception_message") or "GX could not evaluate it")
    return message.removeprefix("Error: ").strip().splitlines()[0]


def _statistics(entries: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sum(1 for e in entries if e["passed"])
    return {
        "evaluated_expectations": len(entries),
        "successful_expectations": ok,
        "unsuccessful_expectations": len(entries) - ok,
        "success_percent": round(100.0 * ok / len(entries), 2) if entries else None,
    }


# --- messages ----------------------------------------------------------------------------


def label(name: str, kwargs: dict[str, Any]) -> str:
    """``expect_x(column=bmi, min_value=10)``: an expectation as users read it."""
    ordered = sorted(kwargs.items(), key=lambda kv: (kv[0] != "column", kv[0]))
    return f"{name}({', '.join(f'{k}={_short(v)}' for k, v in ordered)})"


def _short(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) > 4:
        return f"[{len(value)} values]"
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


def failure_message(entry: dict[str, Any]) -> str:
    """Why one expectation failed, in one line with the counts that matter."""
    if entry.get("error"):
        return str(entry["error"])
    count = entry.get("unexpected_count")
    if count is not None:
        return _unexpected(entry, int(count))
    mismatched = (entry.get("details") or {}).get("mismatched")
    if isinstance(mismatched, dict):
        return _mismatched(mismatched)
    if entry.get("observed_value") is not None:
        return f"observed {_short(entry['observed_value'])}"
    return "failed"


def _unexpected(entry: dict[str, Any], count: int) -> str:
    total = int(entry.get("element_count") or 0)
    missing = int(entry.get("missing_count") or 0)
    # GX's percentage leaves out nulls when the expectation ignores them; say so.
    base = f"{total - missing} non-null values" if missing else f"{total} rows"
    pct = entry.get("unexpected_percent")
    text = f"{count} unexpected of {base}" + (f" ({pct:.1f}%)" if pct is not None else "")
    examples = [v for v in entry.get("partial_unexpected_list") or [] if v is not None]
    if examples:
        text += f", e.g. {', '.join(_short(v) for v in dict.fromkeys(map(str, examples)))}"
    return text


def _mismatched(mismatched: dict[str, Any]) -> str:
    parts = []
    for key in ("missing", "unexpected"):
        names = [str(n) for n in mismatched.get(key) or ()]
        if names:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            parts.append(f"{key} {_count(len(names), 'column')}: {shown}")
    return "; ".join(parts) or "the columns do not match"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _print_dataset(model: Model, role: str, report: dict[str, Any]) -> None:
    entries = report["expectations"]
    where = f"data-test {model.name}/{role}: {report['rows']} rows"
    if not entries:
        log.info(f"{where}, no expectations")
        return
    failed = [e for e in entries if not e["passed"]]
    verdict = f"{len(failed)} of {len(entries)} failed" if failed else "all passed"
    log.info(f"{where}, {_count(len(entries), 'expectation')}: {verdict}")
    for entry in failed:
        log.info(f"  FAILED {role}: {label(entry['name'], entry['kwargs'])}: {entry['message']}")


# --- results ---------------------------------------------------------------------------


def _summary(model: Model, reports: dict[str, dict[str, Any]], version: str) -> DataTestRecord:
    entries = [e for r in reports.values() for e in r["expectations"]]
    return DataTestRecord(
        model=model.name,
        passed=all(e["passed"] for e in entries),
        statistics={"datasets": len(reports), **_statistics(entries)},
        datasets=reports,
        great_expectations_version=version,
    )


def junit_xml(model: Model, reports: dict[str, dict[str, Any]]) -> str:
    """One testsuite per dataset, one testcase per expectation."""
    root = ET.Element("testsuites", name=f"ci-mlops data-test {model.name}")
    totals = [0, 0]
    for role, report in reports.items():
        suite = _junit_suite(model, role, report)
        root.append(suite)
        totals[0] += int(suite.get("tests", "0"))
        totals[1] += int(suite.get("failures", "0"))
    root.set("tests", str(totals[0]))
    root.set("failures", str(totals[1]))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _junit_suite(model: Model, role: str, report: dict[str, Any]) -> ET.Element:
    entries = report["expectations"]
    failures = sum(1 for e in entries if not e["passed"])
    suite = ET.Element(
        "testsuite",
        name=f"{model.name}.{role}",
        tests=str(len(entries)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{report['duration_seconds']:.3f}",
    )
    for entry in entries:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{model.name}.{role}",
            name=label(entry["name"], entry["kwargs"]),
        )
        if not entry["passed"]:
            failure = ET.SubElement(case, "failure", message=entry["message"], type="expectation")
            failure.text = json.dumps(entry, indent=2, sort_keys=True, default=str)
    out = ET.SubElement(suite, "system-out")
    out.text = f"{report['rows']} rows from {', '.join(report['files'])}" + (
        "" if entries else "; no expectations"
    )
    return suite


def run_local(spec: Spec, model: Model, *, environment: str | None, force: bool) -> None:
    """What ``ci-mlops run`` calls for this step's job. Run the data tests."""
    run(spec, model)
