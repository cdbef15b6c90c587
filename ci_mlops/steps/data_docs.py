"""Great Expectations Data Docs for a data-test run: GX's own site builder renders the
results as a static HTML site in ``.ci-mlops/<model>/data-docs/`` (``index.html``, one
page per expectation suite and per validation), which travels with the model folder as
a job artifact and which GitLab links from the merge request (``artifacts:expose_as``).

The pages are built from the results data-test recorded, not from GX's raw results: a
dataset checked in chunks has one result per chunk, and only the merged one is the
dataset's. One suite per dataset, named ``<model>.<role>``. Static files no page shows
(GX's tutorial animations, 3.4 MB) are left out of the artifact. Pages load their
scripts and styles from public CDNs, as GX writes them; the data they show (counts and
a few unexpected values) is what data-test.json holds already.
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from ci_mlops import log

FOLDER = "data-docs"
INDEX = f"{FOLDER}/index.html"
SITE = "ci-mlops"
# What the pages show of an expectation's result, as GX's renderers read it.
RESULT_KEYS = (
    "observed_value",
    "element_count",
    "unexpected_count",
    "unexpected_percent",
    "missing_count",
    "partial_unexpected_list",
    "details",
)


def suite_name(model: str, role: str) -> str:
    return f"{model}.{role}"


def build(gx: ModuleType, workdir: Path, model: str, reports: dict[str, dict[str, Any]]) -> Path:
    """Build the site for ``reports`` (data-test's per-dataset results) into
    ``workdir/data-docs``, replacing an earlier one only once the new one is complete;
    returns its index.html."""
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=workdir))
    try:
        context = _context(gx, staging)
        run_id = _run_id()
        for role, report in reports.items():
            _add(gx, context, run_id, suite_name(model, role), role, report)
        context.build_data_docs(site_names=[SITE])
        for unused in (staging / "static" / "images").glob("*.gif"):
            unused.unlink()
        _swap(staging, workdir / FOLDER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return workdir / INDEX


def _context(gx: ModuleType, folder: Path) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        SITE,
        {
            "class_name": "SiteBuilder",
            # GX's "how to" buttons and tutorials are about GX, not about this data.
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                # GX reads a relative folder against its context's root, which an
                # ephemeral context does not have.
                "base_directory": str(folder.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def _run_id() -> Any:
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name="data-test", run_time=datetime.datetime.now(datetime.UTC))


def _add(
    gx: ModuleType, context: Any, run_id: Any, suite: str, role: str, report: dict[str, Any]
) -> None:
    """One dataset: its suite (the expectations page) and its validation result."""
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    entries = report.get("expectations") or []
    configs = [_configuration(e) for e in entries]
    expectations = gx.ExpectationSuite(name=suite)
    for config in configs:
        expectations.add_expectation_configuration(config)
    context.suites.add(expectations)
    result = ExpectationSuiteValidationResult(
        success=bool(report.get("passed")),
        results=[_result(e, c) for e, c in zip(entries, configs, strict=True)],
        suite_name=suite,
        statistics=report.get("statistics") or {},
        meta={
            "run_id": run_id,
            "great_expectations_version": gx.__version__,
            # The index and the page name the data asset from here.
            "batch_spec": {
                "data_asset_name": role,
                "files": ", ".join(report.get("files") or []),
                "rows": report.get("rows"),
                "engine": report.get("engine"),
            },
        },
    )
    key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=suite), run_id, role)
    context.validation_results_store.set(key, result)


def _configuration(entry: dict[str, Any]) -> Any:
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    return ExpectationConfiguration(type=entry["name"], kwargs=dict(entry.get("kwargs") or {}))


def _result(entry: dict[str, Any], config: Any) -> Any:
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

    error = entry.get("error")
    return ExpectationValidationResult(
        success=bool(entry.get("passed")),
        expectation_config=config,
        result={k: entry[k] for k in RESULT_KEYS if entry.get(k) is not None},
        exception_info={
            "raised_exception": bool(error),
            "exception_message": error,
            "exception_traceback": None,
        },
    )


def _swap(new: Path, target: Path) -> None:
    """Put the finished site in place; an earlier one is removed only after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def try_build(
    gx: ModuleType, workdir: Path, model: str, reports: dict[str, dict[str, Any]]
) -> Path | None:
    """:func:`build`, or None with a warning: the pages are for reading, and a GX
    rendering problem must not hide the verdict the results already hold."""
    try:
        return build(gx, workdir, model, reports)
    except Exception as exc:  # any GX rendering error: the results stand
        log.warn(f"data-test {model}: Data Docs not built: {type(exc).__name__}: {exc}")
        return None
