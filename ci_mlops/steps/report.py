"""The report step: one Markdown report per model, for people reviewing a change.

Reads what the other steps left in ``.ci-mlops/<model>/`` (gates.json, metrics.json,
data-test.json, export.json, slices.json, importance.json, plots/*.png) and renders,
verdict first: the metrics with interval, baseline, change and gate; then, folded in
``<details>``, Mermaid charts (curves, the deployed versions' history), slices and
feature importance; the data tests; the ONNX export; the plots. A step that did not
run is shown as "not run", never as an error.

The report starts with a hidden marker line, ``<!-- ci-mlops:report model=<name> -->``,
by which a platform finds its earlier comment and updates it instead of adding
another. Plots are linked as ``plots/<file>.png``, relative to the model's working
folder (where report.md is written); a platform that uploads them swaps those links
for the uploaded URLs, or passes ``images`` to :func:`render`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_mlops import __version__, atomic, log
from ci_mlops.errors import StepError
from ci_mlops.platforms.base import CheckReport
from ci_mlops.records import (
    DataTestRecord,
    ExportRecord,
    GatesRecord,
    MetricsRecord,
    Record,
    ReportRecord,
    TrackingRecord,
    TrainRecord,
    passed,
    require_recorded,
)
from ci_mlops.spec.model import HIGHER_IS_BETTER, Model, Spec
from ci_mlops.steps import mermaid
from ci_mlops.steps.markdown import code, text

MARKER = "<!-- ci-mlops:report model={name} -->"
# GitHub refuses comments over 65,536 characters; leave room for the platform's edits.
LIMIT = 65_000
MISSING = object()
# What a recorded plot may be called: one PNG file directly in plots/.
# A link target the report may print as it is: http(s), no spaces, quotes or brackets
# that would end the Markdown link early.
SAFE_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#@!$&*+,;=%-]+")
PLOT_NAME = re.compile(r"plots/[A-Za-z0-9][A-Za-z0-9_.-]*\.png")


@dataclass(frozen=True)
class Inputs:
    """The step files a report is made of; MISSING when the step did not run, a str
    (the reason) when the file is there but unreadable."""

    gates: Any
    metrics: Any
    data_test: Any
    export: Any
    plots: list[Path]
    model_sha256: str | None
    tracking: Any = MISSING  # tracking.json: the run this evaluation was logged as
    slices: Any = MISSING
    importance: Any = MISSING
    # Metrics of the versions deployed before, oldest first: (version, metrics).
    history: tuple[tuple[str, dict[str, float]], ...] = ()


def run(spec: Spec, model: Model, post: bool = True, echo: bool = True) -> dict[str, Any]:
    """Write report.md, print it (unless not ``echo``: ``ci-mlops run`` prints a summary
    instead), and with ``post`` hand it to the platform (a merge or pull request comment
    and the job summary in CI; nothing on a laptop)."""
    workdir = spec.workdir(model)
    check_artifacts(workdir, model)
    inputs = read_inputs(workdir, model, history=deployed_history(spec, model) if post else ())
    markdown = render(spec, model, inputs=inputs)
    path = workdir / "report.md"
    atomic.write_text(path, markdown)
    # Deploy publishes report.md only while it still has the bytes recorded here.
    ReportRecord(
        model=model.name, report_sha256=hashlib.sha256(markdown.encode()).hexdigest()
    ).write(workdir)
    if echo:
        print(markdown)
    posted = _publish(spec, model, markdown, inputs.plots) if post else None
    return {"model": model.name, "path": str(path), "posted": posted, "passed": _passed(inputs)}


def check_artifacts(workdir: Path, model: Model) -> None:
    """Refuse to report on files that are not the ones their steps recorded: the model
    against train.json, the ONNX file against export.json. A step that did not run is
    not an error; a file whose sha256 differs is (IntegrityError naming it and both
    hashes)."""
    hint = "the file changed after its step wrote it"
    if (workdir / model.model_file).is_file() and TrainRecord.exists(workdir):
        recorded = TrainRecord.read(workdir).model_sha256
        require_recorded(
            workdir, model.model_file, recorded, str(TrainRecord.at(workdir)), hint=hint
        )
    if (workdir / "model.onnx").is_file() and ExportRecord.exists(workdir):
        onnx = ExportRecord.read(workdir).onnx_sha256
        if onnx:
            require_recorded(workdir, "model.onnx", onnx, str(ExportRecord.at(workdir)), hint=hint)


def deployed_history(spec: Spec, model: Model) -> tuple[tuple[str, dict[str, float]], ...]:
    """The metrics of the last ``report.history`` versions deployed through the model's
    registry, for the history chart; none (with a warning) when it cannot say, since a
    chart is never worth a failed report."""
    from ci_mlops.errors import MlopsError
    from ci_mlops.platforms.detect import current_platform
    from ci_mlops.registries import registry_for

    if model.report.history <= 0:
        return ()
    try:
        registry = registry_for(spec, model, current_platform())
        return tuple(registry.metric_history(model, model.report.history))
    except (MlopsError, ImportError) as exc:  # ImportError: the target's extra is missing
        log.warn(f"{model.name}: no metric history for the report: {exc}")
        return ()


def check_report(spec: Spec, model: Model, gates: dict[str, Any], markdown: str) -> CheckReport:
    """The quality gates as a check: one annotation per failed or warned check, placed
    on the gate's line in the spec (the report job reads a copy of the spec from the
    model folder; the annotations name the file in the repository)."""
    from ci_mlops.platforms.base import Annotation
    from ci_mlops.spec.load import read_spec
    from ci_mlops.steps.records import spec_origin

    located = read_spec(spec.path)
    index = spec.models.index(model)
    notes = []
    levels = (
        ("failure", _failed_checks(gates)),
        ("warning", _warned_checks(gates) + _overridden_checks(gates)),
    )
    for level, checks in levels:
        for c in checks:
            metric, rule = str(c.get("metric", "?")), str(c.get("rule", "?"))
            where: tuple[str | int, ...] = ("models", index, "metrics", metric)
            if metric == "importance":
                where = ("models", index, "evaluate", "importance", rule)
            line, _ = located.where(where, key=True)
            notes.append(Annotation(line, level, f"{metric} {rule}", str(c.get("message", ""))))
    failed = len(_failed_checks(gates))
    total = len(gates.get("checks") or [])
    title = (
        f"{failed} of {total} quality gate checks failed"
        if failed
        else f"all {total} quality gate checks passed"
    )
    return CheckReport(not failed, title, markdown, tuple(notes), spec_origin(spec, model))


def _publish(spec: Spec, model: Model, markdown: str, images: list[Path]) -> str | None:
    """Post or update the report comment and add it to the job summary; returns where
    it was posted, or None when there is nothing to comment on."""
    from ci_mlops.platforms import detect

    platform = detect(spec)
    where = platform.post_report(model, markdown, images)
    platform.job_summary(markdown)
    gates = _read(GatesRecord.at(spec.workdir(model)), GatesRecord)
    if isinstance(gates, dict):
        platform.publish_check(model, check_report(spec, model, gates, markdown))
    if where:
        log.info(f"{model.name}: report posted to {where}")
    return where


def render(
    spec: Spec,
    model: Model,
    images: Mapping[str, str] | None = None,
    inputs: Inputs | None = None,
) -> str:
    """The report of ``model`` as Markdown. ``images`` maps a plot's relative link
    (``plots/roc_curve.png``) to the URL to show instead; ``inputs`` are the step files
    when the caller has read them already."""
    inputs = inputs or read_inputs(spec.workdir(model), model)
    head = [MARKER.format(name=model.name), _title(model, inputs), _verdict(inputs)]
    sections = {
        "failed checks": _failures_section(inputs),
        "metrics": _metrics_section(model, inputs),
        "charts": _charts_section(model, inputs),
        "slices": _slices_section(model, inputs.slices),
        "importance": _importance_section(inputs.importance),
        "data tests": _data_test_section(inputs.data_test),
        "ONNX export": _export_section(inputs.export),
        "plots": _plots_section(inputs.plots, images or {}),
    }
    footer = f"<sub>ci-mlops {__version__} · {_model_line(model, inputs)}</sub>"
    return _fit("\n\n".join(head), sections, footer)


# --- inputs -------------------------------------------------------------------------


def read_inputs(
    workdir: Path, model: Model, history: tuple[tuple[str, dict[str, float]], ...] = ()
) -> Inputs:
    """Whatever the earlier steps left behind."""
    model_path = workdir / model.model_file
    sha = atomic.artifact_sha256(workdir, model.model_file) if model_path.is_file() else None
    metrics = _read(MetricsRecord.at(workdir), MetricsRecord)
    return Inputs(
        gates=_read(GatesRecord.at(workdir), GatesRecord),
        metrics=metrics,
        data_test=_read(DataTestRecord.at(workdir), DataTestRecord),
        export=_read(ExportRecord.at(workdir), ExportRecord),
        plots=recorded_plots(workdir, metrics),
        model_sha256=sha,
        tracking=_read(TrackingRecord.at(workdir), TrackingRecord),
        slices=recorded_record(workdir, metrics, "slices.json"),
        importance=recorded_record(workdir, metrics, "importance.json"),
        history=history,
    )


def recorded_record(workdir: Path, metrics: Any, name: str) -> Any:
    """A record evaluate wrote beside metrics.json, read only while its bytes match the
    sha256 metrics.json recorded; MISSING when not recorded or changed (with a warning)."""
    records = metrics.get("records") if isinstance(metrics, dict) else None
    expected = records.get(name) if isinstance(records, dict) else None
    path = workdir / name
    if expected is None:
        if path.exists() or path.is_symlink():
            log.warn(f"{path}: not a record evaluate wrote; left out of the report")
        return MISSING
    if not (path.is_file() or path.is_symlink()):
        return f"{name} is missing"
    return _read(path) if _matches(workdir, name, expected) else f"{name} changed after evaluate"


def recorded_plots(workdir: Path, metrics: Any) -> list[Path]:
    """The plots evaluate recorded in metrics.json whose bytes still match their sha256,
    read without following links. Anything else in plots/ is left out with a warning:
    the report job holds a token, and whatever it links may be uploaded."""
    recorded = metrics.get("plots") if isinstance(metrics, dict) else None
    recorded = recorded if isinstance(recorded, dict) else {}
    plots = []
    for name, expected in sorted(recorded.items()):
        if not (isinstance(name, str) and PLOT_NAME.fullmatch(name)):
            log.warn(f"{workdir / 'metrics.json'}: plots: {name!r} is not a plot name; left out")
            continue
        if _matches(workdir, name, expected):
            plots.append(workdir / name)
    for path in sorted((workdir / "plots").glob("*.png")):
        if f"plots/{path.name}" not in recorded:
            log.warn(f"{path}: not a plot evaluate recorded; left out of the report")
    return plots


def _matches(workdir: Path, name: str, expected: Any) -> bool:
    try:
        actual = atomic.artifact_sha256(workdir, name)
    except StepError as exc:
        log.warn(f"{exc}; left out of the report")
        return False
    if actual != expected:
        log.warn(
            f"{workdir / name}: sha256 {actual[:12]}... is not the {str(expected)[:12]}... "
            "evaluate recorded; left out of the report"
        )
        return False
    return True


def _read(path: Path, kind: type[Record] | None = None) -> Any:
    """The JSON object in ``path`` (checked as the record ``kind`` when given); MISSING
    when there is none, the reason as text when it cannot be used."""
    if not path.is_file() and not path.is_symlink():
        return MISSING
    try:
        data = json.loads(atomic.read_artifact(path.parent, path.name))
    except StepError as exc:
        return f"{path.name} is unreadable ({str(exc).rsplit(': ', 1)[-1]})"
    except ValueError as exc:
        return f"{path.name} is unreadable ({type(exc).__name__})"
    if not isinstance(data, dict):
        return f"{path.name} is not a JSON object"
    if kind is None:
        return data
    try:
        return kind.from_json(data, where=path.name).to_json()
    except StepError as exc:
        return f"{path.name} is unreadable ({str(exc).removeprefix(path.name + ': ')})"


def _passed(inputs: Inputs) -> bool | None:
    """The overall verdict: None when nothing was judged yet."""
    judged = any(isinstance(x, dict) for x in (inputs.gates, inputs.data_test, inputs.export))
    return (_failure_count(inputs) == 0) if judged else None


def _failure_count(inputs: Inputs) -> int:
    """Failed checks of every kind: quality gates, data-test expectations, ONNX parity."""
    count = len(_failed_checks(inputs.gates)) if isinstance(inputs.gates, dict) else 0
    if isinstance(inputs.data_test, dict):
        count += len(_failed_expectations(inputs.data_test))
    if isinstance(inputs.export, dict) and inputs.export.get("passed") is False:
        count += 1
    return count


# --- verdict ------------------------------------------------------------------------


def _title(model: Model, inputs: Inputs) -> str:
    passed = _passed(inputs)
    if passed is None:
        icon, outcome = "⚪", "not evaluated yet"
    elif not passed:
        count = _failure_count(inputs)
        icon, outcome = "❌", f"failed ({count} check{'s' if count != 1 else ''} failed)"
    elif _integrity_warnings(inputs):
        icon, outcome = "⚠️", "passed, but for another model file: evaluate again"
    else:
        icon, outcome = "✅", "passed"
    return f"## {icon} {model.name} {model.version}: {outcome}"


def _verdict(inputs: Inputs) -> str:
    """One line per kind of check: quality gates, data tests, ONNX parity."""
    lines = [_gates_line(inputs.gates)]
    if isinstance(inputs.data_test, dict):
        lines.append(_data_test_line(inputs.data_test))
    export = inputs.export
    if isinstance(export, dict) and not export.get("skipped"):
        ok = bool(export.get("passed"))
        message = text(export.get("message") or ("passed" if ok else "failed"))
        lines.append(f"{_icon(ok)} ONNX parity: {message}")
    return "<br>\n".join(lines)


def _gates_line(gates: Any) -> str:
    if not isinstance(gates, dict):
        return f"⚪ quality gates: {'not run' if gates is MISSING else gates}"
    checks, failed = gates.get("checks") or [], _failed_checks(gates)
    warned = len(_warned_checks(gates))
    also = f" ({warned} warning{'s' if warned != 1 else ''}, mode warn)" if warned else ""
    overridden = len(_overridden_checks(gates))
    also += f" ({overridden} overridden by label)" if overridden else ""
    warned += overridden
    if failed:
        return f"❌ quality gates: {len(failed)} of {len(checks)} checks failed{also}"
    return f"{'⚠️' if warned else '✅'} quality gates: all {len(checks)} checks passed{also}"


def _data_test_line(data: dict[str, Any]) -> str:
    total = sum(len(_entries(r)) for r in (data.get("datasets") or {}).values())
    bad = len(_failed_expectations(data))
    if bad:
        return f"❌ data tests: {bad} of {total} expectations failed"
    return f"✅ data tests: all {total} expectations passed"


def _icon(ok: bool) -> str:
    return "✅" if ok else "❌"


def _failures_section(inputs: Inputs) -> str:
    """Every failed gate check, one line each, then anything that makes the verdict
    stale. (Failed expectations are listed under Data tests; parity is one line above.)"""
    gates = _failed_checks(inputs.gates) if isinstance(inputs.gates, dict) else []
    warned = _warned_checks(inputs.gates) if isinstance(inputs.gates, dict) else []
    items = [f"- ❌ {text(c.get('message', ''))}" for c in gates]
    items += [f"- ⚠️ {text(c.get('message', ''))}" for c in warned]
    if isinstance(inputs.gates, dict):
        items += [f"- 🏷️ {text(c.get('message', ''))}" for c in _overridden_checks(inputs.gates)]
    items += [f"- ⚠️ {line}" for line in _integrity_warnings(inputs)]
    return "\n".join(items)


def _failed_checks(gates: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in gates.get("checks") or [] if isinstance(c, dict) and not c.get("passed")]


def _warned_checks(gates: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks that did not hold in a gate of mode warn: reported, not failed."""
    return [c for c in gates.get("checks") or [] if isinstance(c, dict) and c.get("warned")]


def _overridden_checks(gates: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks that did not hold but passed because the request carries their gate's
    override label."""
    return [c for c in gates.get("checks") or [] if isinstance(c, dict) and c.get("overridden")]


def _integrity_warnings(inputs: Inputs) -> list[str]:
    """A verdict only speaks for the model file it judged."""
    judged = inputs.gates.get("model_sha256") if isinstance(inputs.gates, dict) else None
    scored = inputs.metrics.get("model_sha256") if isinstance(inputs.metrics, dict) else None
    out = []
    if judged and inputs.model_sha256 and judged != inputs.model_sha256:
        out.append(
            f"the verdict is for model sha256 {code(str(judged)[:12], table=False)}, but "
            f"the model file now has `{inputs.model_sha256[:12]}`: evaluate again"
        )
    if judged and scored and judged != scored:
        out.append("metrics.json and gates.json are from different models")
    return out


def _model_line(model: Model, inputs: Inputs) -> str:
    sha = inputs.model_sha256
    line = f"model `{model.model_file}`" + (f" sha256 `{sha[:12]}`" if sha else " (not found)")
    if isinstance(inputs.metrics, dict) and inputs.metrics.get("n_samples") is not None:
        line += f" · {text(inputs.metrics['n_samples'])} eval rows"
    return line


# --- metrics ------------------------------------------------------------------------


def _metrics_section(model: Model, inputs: Inputs) -> str:
    metrics = inputs.metrics
    if metrics is MISSING:
        return "### Metrics\n\nNot run (no metrics.json): run `ci-mlops evaluate`."
    if not isinstance(metrics, dict):
        return f"### Metrics\n\n⚠️ {metrics}"
    values: dict[str, Any] = metrics.get("metrics") or {}
    baseline_info = metrics.get("baseline") if isinstance(metrics.get("baseline"), dict) else None
    before: dict[str, Any] = (baseline_info or {}).get("metrics") or {}
    checks = inputs.gates.get("checks") or [] if isinstance(inputs.gates, dict) else []
    intervals = _mapping(metrics.get("intervals"))
    level = _number(intervals.get("level"))
    head = f"{level * 100:g}% interval" if level else "interval"
    bounds = _mapping(intervals.get("metrics"))
    rows = [
        f"| metric | baseline | this run | {head} | change | gate |",
        "|---|---:|---:|---|---|---|",
    ]
    for name in dict.fromkeys([*model.metrics, *values]):
        value, base = _number(values.get(name)), _number(before.get(name))
        mine = [c for c in checks if c.get("metric") == name]
        label = name if name in model.metrics else text(name)
        rows.append(
            f"| {label} | {_fmt(base)} | {_fmt(value)} | {_interval(bounds.get(name))} "
            f"| {_change(name, value, base)} | {_gate(mine)} |"
        )
    extra = [c for c in checks if c.get("metric") == "importance"]
    if extra:
        rows.append(f"| importance | | | | | {_gate(extra)} |")
    parts = ["### Metrics", "\n".join(rows), _baseline_line(baseline_info, metrics)]
    parts += _interval_note(intervals)
    parts += _metric_notes(metrics) + _tracking_line(inputs)
    return "\n\n".join(parts)


def _tracking_line(inputs: Inputs) -> list[str]:
    """Where this evaluation was logged, when tracking.json is about this very model."""
    record = inputs.tracking
    if not isinstance(record, dict) or not record.get("run_id"):
        return []
    if record.get("model_sha256") != inputs.model_sha256:
        return []
    run = code(record["run_id"], table=False)
    experiment = code(record.get("experiment", ""), table=False)
    url = record.get("url")
    # Only a plain http(s) URL becomes a link; anything else is shown as inert text.
    link = f"[{run}]({url})" if isinstance(url, str) and SAFE_URL.fullmatch(url) else run
    return [f"Logged as run {link} in experiment {experiment}."]


def _change(metric: str, value: float | None, base: float | None) -> str:
    """``+0.012 (+1.3%), better``: the sign, the percentage and what it means for a
    metric of this direction."""
    if value is None or base is None or math.isnan(value) or math.isnan(base):
        return "—"
    delta = value - base
    if delta == 0:
        return "0 (0%), unchanged"
    pct = f" ({delta / abs(base) * 100:+.1f}%)" if base != 0 else ""
    better = (delta > 0) == HIGHER_IS_BETTER.get(metric, True)
    return f"{delta:+.4g}{pct}, {'better' if better else 'worse'}"


def _gate(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return "—"
    failed = [c for c in checks if not c.get("passed")]
    warned = [c for c in checks if c.get("warned")]
    overridden = [c for c in checks if c.get("overridden")]
    shown = failed or overridden or warned or checks
    rules = ", ".join(_rule(c) for c in shown)
    if failed:
        return f"❌ {rules}"
    if overridden:
        labels = ", ".join(sorted({code(c["overridden"]) for c in overridden}))
        return f"🏷️ {rules} (overridden by label {labels})"
    return f"⚠️ {rules} (warn)" if warned else f"✅ {rules}"


def _interval(pair: Any) -> str:
    if not (isinstance(pair, list) and len(pair) == 2):
        return "—"
    low, high = _number(pair[0]), _number(pair[1])
    return "—" if low is None or high is None else f"{low:.4g} to {high:.4g}"


def _interval_note(intervals: dict[str, Any]) -> list[str]:
    samples = _number(intervals.get("samples"))
    if not samples:
        return []
    how = (
        "paired with the baseline model on the same rows"
        if intervals.get("paired")
        else "of this run's eval rows"
    )
    return [f"<sub>Intervals: {samples:g} bootstrap resamples {how}.</sub>"]


def _rule(check: dict[str, Any]) -> str:
    rule, threshold = str(check.get("rule", "?")), _number(check.get("threshold"))
    if threshold is None:
        limit = "?"
    elif rule == "max_relative_drop":
        limit = f"{threshold * 100:g}%"
    else:
        limit = f"{threshold:g}"
    shown = f"{text(rule)} {limit}" if rule != "stable_top_feature" else "stable_top_feature"
    if rule in ("max_drop", "max_relative_drop") and check.get("baseline") is None:
        shown += " (no baseline)"
    p_value = _number(check.get("p_value"))
    if p_value is not None:
        shown += f" (p={p_value:.2g})"
    return shown


def _baseline_line(baseline: dict[str, Any] | None, metrics: dict[str, Any]) -> str:
    missing = metrics.get("baseline_missing")
    if baseline is None and missing:
        return (
            f"⚠️ No baseline: {text(missing)}. Change gates fail: `baseline.if_missing` "
            "applies only to a model the default branch never evaluated."
        )
    if baseline is None:
        return "No baseline: first run (change gates follow `baseline.if_missing`)."
    return f"Baseline: {text(baseline.get('source', 'unknown'))}."


def _metric_notes(metrics: dict[str, Any]) -> list[str]:
    lines = []
    averaging = metrics.get("averaging") or {}
    groups: dict[str, list[str]] = {}
    for metric, how in averaging.items():
        groups.setdefault(str(how), []).append(metric)
    lines += [f"{text(', '.join(names))}: {text(how)}" for how, names in groups.items()]
    for metric, why in (metrics.get("notes") or {}).items():
        lines.append(f"{text(metric)} is undefined: {text(why)}")
    return ["<sub>" + "<br>".join(lines) + "</sub>"] if lines else []


# --- data tests ---------------------------------------------------------------------


def _data_test_section(data: Any) -> str:
    if data is MISSING:
        return "### Data tests\n\nNot run (no data-test.json)."
    if not isinstance(data, dict):
        return f"### Data tests\n\n⚠️ {data}"
    datasets = data.get("datasets") or {}
    rows = ["| dataset | rows | passed | failed |", "|---|---:|---:|---:|"]
    for role, report in datasets.items():
        entries = _entries(report)
        failed = sum(not _ok(e) for e in entries)
        rows.append(
            f"| {text(role)} | {text(report.get('rows', '—'))} | {len(entries) - failed} | {failed} |"
        )
    parts = ["### Data tests", "\n".join(rows)]
    failing = [
        f"- ❌ {code(role, table=False)}: {_expectation_line(e)}"
        for role, e in _failed_expectations(data)
    ]
    if failing:
        parts.append("\n".join(failing))
    parts += _data_docs_line(data.get("data_docs"))
    return "\n\n".join(parts)


def _data_docs_line(docs: Any) -> list[str]:
    """Where Great Expectations' Data Docs of these results are: a link to the
    data-test job's artifacts when it recorded one, else the file's place in them."""
    if not isinstance(docs, dict) or not isinstance(docs.get("path"), str):
        return []
    where = f"{code(docs['path'], table=False)} in the data-test job's artifacts"
    url = docs.get("url")
    if isinstance(url, str) and SAFE_URL.fullmatch(url):
        return [f"📄 [Data Docs]({url}): Great Expectations' pages of these results ({where})."]
    return [f"📄 Data Docs: Great Expectations' pages of these results, {where}."]


def _entries(report: Any) -> list[dict[str, Any]]:
    entries = report.get("expectations") if isinstance(report, dict) else None
    return [e for e in entries or [] if isinstance(e, dict)]


def _ok(entry: dict[str, Any]) -> bool:
    return passed(entry)


def _failed_expectations(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    datasets = data.get("datasets") or {}
    return [(str(role), e) for role, r in datasets.items() for e in _entries(r) if not _ok(e)]


def _expectation_line(entry: dict[str, Any]) -> str:
    """``expect_column_values_to_be_between`` on column `bmi`: 3 unexpected (...)."""
    kwargs = entry.get("kwargs") or {}
    line = code(entry.get("name", "expectation"), table=False)
    if "column" in kwargs:
        line += f" on column {code(kwargs['column'], table=False)}"
    message = str(entry.get("error") or entry.get("message") or "")
    count = entry.get("unexpected_count")
    if count is not None and "unexpected" not in message:
        line += f": {text(count)} unexpected"
        return line + (f" ({text(message)})" if message and message != "passed" else "")
    return line + (f": {text(message)}" if message and message != "passed" else "")


# --- ONNX ---------------------------------------------------------------------------


def _export_section(data: Any) -> str:
    if data is MISSING:
        return "### ONNX export\n\nNot run (no export.json)."
    if not isinstance(data, dict):
        return f"### ONNX export\n\n⚠️ {data}"
    if data.get("skipped"):
        return "### ONNX export\n\nNot run (export.onnx is off in the spec)."
    icon = "✅" if data.get("passed") else "❌"
    diff, tolerance = data.get("max_abs_diff"), data.get("tolerance")
    lines = [f"- {icon} parity: max abs diff {_sci(diff)} (tolerance {_sci(tolerance)})"]
    if data.get("label_mismatches") is not None:
        allowed = data.get("max_label_mismatches")
        lines.append(
            f"- label mismatches: {text(data['label_mismatches'])}"
            + (f" (allowed {text(allowed)})" if allowed is not None else "")
        )
    lines.append(f"- {_speed(data.get('latency') or {})}")
    if data.get("opset") is not None:
        lines.append(f"- opset {text(data['opset'])}")
    return "### ONNX export\n\n" + "\n".join(lines)


def _speed(latency: dict[str, Any]) -> str:
    native, onnx = latency.get("native_batch1_ms"), latency.get("onnx_batch1_ms")
    speedup = latency.get("batch1_speedup")
    line = f"batch-1 latency: native {_ms(native)}, onnxruntime {_ms(onnx)}"
    if isinstance(speedup, int | float):
        if speedup >= 1:
            line += f": onnxruntime is {speedup:.1f}x faster"
        elif speedup > 0:
            line += f": onnxruntime is {1 / speedup:.1f}x slower"
    return line


# --- plots --------------------------------------------------------------------------


def _plots_section(plots: list[Path], images: Mapping[str, str]) -> str:
    if not plots:
        return "### Plots\n\nNone (run `ci-mlops evaluate`)."
    links = []
    for path in plots:
        relative = f"plots/{path.name}"
        title = text(path.stem.replace("_", " "))
        links.append(f"![{title}]({images.get(relative, relative)})")
    return "### Plots\n\n" + "\n".join(links)


# --- size ---------------------------------------------------------------------------


def _fit(head: str, sections: dict[str, str], footer: str) -> str:
    """Join the parts; while too long, cut the longest section at a line boundary and
    say so, so the verdict and every section heading survive."""

    def joined() -> str:
        return "\n\n".join([head, *filter(None, sections.values()), footer]) + "\n"

    out = joined()
    while len(out) > LIMIT:
        name = max(sections, key=lambda key: len(sections[key]))
        trimmed = _trim(sections[name], len(out) - LIMIT, name)
        if len(trimmed) >= len(sections[name]):  # nothing left to cut
            return out[: LIMIT - 2] + "…\n"
        sections[name] = trimmed
        out = joined()
    return out


def _trim(section: str, over: int, name: str) -> str:
    note = f"\n\n_… {name} trimmed to fit the comment size limit; the full results are in the job's artifacts._"
    lines = section.splitlines()
    kept = len(section) - over - len(note) - len(_CLOSERS)
    while lines and len("\n".join(lines)) > max(kept, 0):
        lines.pop()
    return "\n".join(lines) + _closers(lines) + note


# What a cut section may need closed: a code block (a Mermaid chart) and a fold.
_CLOSERS = "\n```\n\n</details>"


def _closers(lines: list[str]) -> str:
    """Close a code block or ``<details>`` the cut left open, so that the rest of the
    comment is not swallowed by it."""
    out = ""
    if sum(line.startswith("```") for line in lines) % 2:
        out += "\n```"
    opened = sum(line.startswith("<details>") for line in lines)
    if opened > sum(line.startswith("</details>") for line in lines):
        out += "\n\n</details>"
    return out


# --- formatting ---------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _sci(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "n/a"


def _ms(value: Any) -> str:
    return f"{value:.3g} ms" if isinstance(value, int | float) else "n/a"


# --- insight: charts, slices, importance --------------------------------------------


def _details(summary: str, body: str) -> str:
    """A folded section: the blank lines let Markdown (and Mermaid) render inside."""
    return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"


def _charts_section(model: Model, inputs: Inputs) -> str:
    charts = []
    metrics = inputs.metrics if isinstance(inputs.metrics, dict) else {}
    curves = _mapping(metrics.get("curves"))
    charts += _roc_chart(curves.get("roc"))
    charts += _calibration_chart(curves.get("calibration"))
    charts += _history_chart(model, inputs)
    if not charts:
        return ""
    return _details("<b>Charts</b>", "\n\n".join(charts))


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when a record holds an object there, else an empty one."""
    return value if isinstance(value, dict) else {}


def _numbers(values: Any) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    out = [n for n in map(_number, values) if n is not None]
    return out if len(out) == len(values) else None


def _roc_chart(roc: Any) -> list[str]:
    roc = roc if isinstance(roc, dict) else {}
    fpr, tpr = _numbers(roc.get("fpr")), _numbers(roc.get("tpr"))
    if fpr is None or tpr is None or len(fpr) != len(tpr):
        return []
    chart = mermaid.line_chart(
        "ROC curve (eval data)", [f"{x:g}" for x in fpr], [tpr, fpr], "true positive rate", (0, 1)
    )
    table = "| false positive rate | " + " | ".join(f"{x:g}" for x in fpr) + " |"
    table += "\n|---|" + "---:|" * len(fpr)
    table += "\n| true positive rate | " + " | ".join(f"{y:.3g}" for y in tpr) + " |"
    return [chart + "\n\n<sub>The diagonal is a model that guesses.</sub>", table]


def _calibration_chart(calibration: Any) -> list[str]:
    calibration = calibration if isinstance(calibration, dict) else {}
    actual = _numbers(calibration.get("actual"))
    predicted = _numbers(calibration.get("predicted"))
    if actual is None or predicted is None or len(actual) != len(predicted):
        return []
    labels = [f"{i + 1}" for i in range(len(actual))]
    chart = mermaid.line_chart(
        "Mean actual and predicted per decile", labels, [actual, predicted], "value"
    )
    return [
        chart
        + "\n\n<sub>Deciles of the actual value; the lines are the mean actual and the mean predicted value. Apart means biased.</sub>"
    ]


def _history_chart(model: Model, inputs: Inputs) -> list[str]:
    """The first metric over the versions deployed before, then this run."""
    if not inputs.history or not model.metrics:
        return []
    metric = model.metrics[0]
    values = _mapping(inputs.metrics).get("metrics")
    pairs = [
        *((v, m.get(metric)) for v, m in inputs.history),
        ("this run", _mapping(values).get(metric)),
    ]
    points = [(v, n) for v, n in ((v, _number(x)) for v, x in pairs) if n is not None]
    if len(points) < 2:
        return []
    chart = mermaid.line_chart(
        f"{metric} over the deployed versions",
        [v for v, _ in points],
        [[x for _, x in points]],
        metric,
    )
    rows = ["| version | " + text(metric) + " |", "|---|---:|"]
    rows += [f"| {code(v)} | {x:.4g} |" for v, x in points]
    return [chart, "\n".join(rows)]


def _slices_section(model: Model, data: Any) -> str:
    if data is MISSING:
        return ""
    if not isinstance(data, dict):
        return f"### Slices\n\n⚠️ {text(data)}"
    slices = [s for s in data.get("slices") or [] if isinstance(s, dict)]
    if not slices:
        return ""
    metrics = list(model.metrics)
    rows = ["| slice | rows | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for item in slices:
        values = _mapping(item.get("metrics"))
        name = f"{code(item.get('column', '?'))} = {code(item.get('slice', '?'))}"
        if not item.get("gated"):
            name += " (too few rows to gate)"
        cells = " | ".join(_fmt(_number(values.get(m))) for m in metrics)
        rows.append(f"| {name} | {text(item.get('rows', '—'))} | {cells} |")
    summary = _slice_summary(model, slices)
    body = "\n\n".join(filter(None, [summary, _slice_chart(model, slices), "\n".join(rows)]))
    # The summary line is raw HTML, where Markdown escapes do not apply: numbers only.
    gap = _slice_gap(model, slices)
    return _details(f"<b>Slices</b> ({len(slices)}){gap}", body)


def _slice_gap(model: Model, slices: list[dict[str, Any]]) -> str:
    values = [v for _, v in _slice_values(model, slices)]
    if len(values) < 2:
        return ""
    return f": {model.metrics[0]} from {min(values):.4g} to {max(values):.4g}"


def _slice_values(model: Model, slices: list[dict[str, Any]]) -> list[tuple[str, float]]:
    metric = model.metrics[0] if model.metrics else None
    out = []
    for item in slices:
        values = _mapping(item.get("metrics"))
        value = _number(values.get(metric)) if metric else None
        if item.get("gated") and value is not None and math.isfinite(value):
            out.append((f"{item.get('column')}={item.get('slice')}", value))
    return out


# Beyond this many bars a chart is unreadable (and its one x-axis line very long).
MAX_BARS = 24


def _slice_summary(model: Model, slices: list[dict[str, Any]]) -> str:
    """The worst and best judged slice of the first metric and the gap between them."""
    values = _slice_values(model, slices)
    if not values:
        return ""
    metric = model.metrics[0]
    higher = HIGHER_IS_BETTER.get(metric, True)
    ordered = sorted(values, key=lambda pair: pair[1], reverse=higher)
    (best, high), (worst, low) = ordered[0], ordered[-1]
    return (
        f"{text(metric)} worst {code(worst, table=False)} {low:.4g}, best {code(best, table=False)} "
        f"{high:.4g}, gap {abs(high - low):.4g}"
    )


def _slice_chart(model: Model, slices: list[dict[str, Any]]) -> str:
    values = _slice_values(model, slices)
    if len(values) < 2:
        return ""
    if len(values) > MAX_BARS:
        return f"<sub>{len(values)} slices: too many bars to chart; see the table.</sub>"
    return mermaid.bar_chart(
        f"{model.metrics[0]} per slice",
        [n for n, _ in values],
        [v for _, v in values],
        model.metrics[0],
    )


def _importance_section(data: Any) -> str:
    if data is MISSING:
        return ""
    if not isinstance(data, dict):
        return f"### Feature importance\n\n⚠️ {text(data)}"
    parts = [_permutation_section(data), _shap_section(data.get("shap"), data.get("top_k"))]
    return "\n\n".join(p for p in parts if p)


def _shap_section(data: Any, top_k: Any) -> str:
    """Mean |SHAP| per feature, collapsed: the top features with their baseline rank,
    or the note saying why the model has none."""
    if not isinstance(data, dict):
        return ""
    if "note" in data:
        return f"<sub>SHAP: {text(data['note'])}</sub>"
    features = [f for f in data.get("features") or [] if isinstance(f, dict)]
    top = features[: top_k if isinstance(top_k, int) else 5]
    if not top:
        return ""
    comparison = _mapping(data.get("comparison"))
    rows = ["| rank | feature | mean \\|SHAP\\| | baseline rank |", "|---:|---|---:|---:|"]
    for index, feature in enumerate(top, 1):
        shown = _baseline_rank(comparison, feature)
        value = _fmt(_number(feature.get("mean_abs")))
        rows.append(f"| {index} | {code(feature.get('name', '?'))} | {value} | {shown} |")
    method = f"{text(data.get('method', 'TreeSHAP'))} on {text(data.get('rows', '?'))} rows"
    parts = ["\n".join(rows), *_importance_moves(comparison), f"<sub>{method}</sub>"]
    # The summary line is raw HTML, where Markdown escapes do not apply: no names.
    return _details(f"<b>Mean |SHAP| per feature</b> (top {len(top)})", "\n\n".join(parts))


def _baseline_rank(comparison: Mapping[str, Any], feature: Mapping[str, Any]) -> str:
    """A feature's rank in the baseline's run: "—" without a baseline, "new" when the
    baseline did not rank it."""
    if not comparison.get("baseline"):
        return "—"
    ranks = _mapping(comparison.get("ranks"))
    before = _mapping(ranks.get(str(feature.get("name")))).get("baseline_rank")
    return "new" if before is None else text(before)


def _permutation_section(data: dict[str, Any]) -> str:
    features = [f for f in data.get("features") or [] if isinstance(f, dict)]
    top_k = data.get("top_k") if isinstance(data.get("top_k"), int) else 5
    top = features[:top_k]
    if not top:
        return ""
    metric = str(data.get("metric", "metric"))
    comparison = _mapping(data.get("comparison"))
    rows = ["| rank | feature | importance | baseline rank |", "|---:|---|---:|---:|"]
    for index, feature in enumerate(top, 1):
        shown = _baseline_rank(comparison, feature)
        mean, std = _number(feature.get("mean")), _number(feature.get("std"))
        spread = f" ± {std:.2g}" if std else ""
        rows.append(
            f"| {index} | {code(feature.get('name', '?'))} | {_fmt(mean)}{spread} | {shown} |"
        )
    chart = mermaid.bar_chart(
        f"Permutation importance ({metric} worsening)",
        [f.get("name", "?") for f in top],
        [_number(f.get("mean")) or 0.0 for f in top],
        f"{metric} worsening",
        horizontal=True,
    )
    parts = [chart, "\n".join(rows), *_importance_moves(comparison)]
    skipped = data.get("not_measured") or []
    if skipped:
        parts.append(f"⚠️ {len(skipped)} features not measured within the time budget.")
    # The summary line is raw HTML, where Markdown escapes do not apply: no names.
    return _details(f"<b>Feature importance</b> (top {len(top)})", "\n\n".join(parts))


def _importance_moves(comparison: dict[str, Any]) -> list[str]:
    if not comparison.get("baseline"):
        return ["No baseline ranking to compare with."]
    entered = [code(n, table=False) for n in comparison.get("entered") or []]
    left = [code(n, table=False) for n in comparison.get("left") or []]
    if not entered and not left:
        return ["The top features are the baseline's."]
    lines = []
    if entered:
        lines.append(f"Entered the top: {', '.join(entered)}.")
    if left:
        lines.append(f"Left the top: {', '.join(left)}.")
    return [" ".join(lines)]


def run_local(spec: Spec, model: Model, *, environment: str | None, force: bool) -> None:
    """What ``ci-mlops run`` calls for this step's job. Write the report; a laptop has no
    merge request to post it to, and the run ends with a summary rather than the report."""
    run(spec, model, post=False, echo=False)
