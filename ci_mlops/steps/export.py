"""ONNX export: convert the trained model, check the result, and prove that it predicts
what the native model predicts.

The model's framework (``ci_mlops.frameworks``) loads it from the bytes whose sha256
train.json recorded, exactly as evaluate does, says which inputs its ONNX graph takes
and converts it; an ONNX model is checked as it is. ``onnx.checker`` only checks
structure, so the graph then runs in onnxruntime on the eval data and its outputs are
compared with the native model's: for classifiers the largest probability difference
and the number of differing labels (trees compare float32 thresholds, so a label can
flip near a boundary while probabilities stay close), for regressors the largest
difference of values. Latency of both runtimes is measured one row at a time and on
the whole eval set.

Writes ``model.onnx`` (only once conversion and checks succeed) and ``export.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ci_mlops import frameworks, log
from ci_mlops.atomic import read_artifact, write_bytes
from ci_mlops.errors import CheckFailed, StepError
from ci_mlops.frameworks import Input, Outputs, Source, Trained
from ci_mlops.frameworks import onnx as graphs
from ci_mlops.frameworks.base import first_line
from ci_mlops.records import ExportRecord, TrainRecord, require_sha256
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps.datasets import load_dataset

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import pandas as pd

MIN_OPSET = 7
BATCH1_RUNS = 200
BATCH1_BUDGET_S = 0.5  # per runtime: both together stay near one second
FULL_RUNS = 5
# Eval rows whose inputs and ONNX outputs export.json keeps, so that the pre-deploy check
# can replay them through the prediction service without the data or pandas; bounded by
# values so that a wide model's record stays small.
REPLAY_ROWS = 64
REPLAY_VALUES = 20_000
FULL_BUDGET_S = 1.0
WARMUP_RUNS = 3


def run(spec: Spec, model: Model) -> ExportRecord:
    """Export ``model`` to ONNX and check parity with the native model.

    Raises StepError for input the step cannot use (no model, a model its framework
    cannot convert, an opset onnxruntime cannot run) and CheckFailed, after writing
    export.json with ``passed: false``, when the outputs differ beyond the spec's
    tolerance."""
    workdir = spec.workdir(model)
    if not model.export.onnx:
        skipped = ExportRecord(skipped=True)
        skipped.write(workdir)
        log.info(f"{model.name}: ONNX export is off in the spec (export.onnx: false)")
        return skipped
    model_path = workdir / model.model_file
    data, model_sha = _trained_model(workdir, model_path)
    _check_opset(spec, model.export.opset)
    features = _eval_features(spec, model)
    source = Source(model_path, data, model.task, spec.root, model.model_class)
    trained = frameworks.load(model.framework, source)
    inputs = _inputs(spec, model, trained, features)
    opset = model.export.opset
    with log.timed(f"{model.name}: converting {model_path.name} to ONNX (opset {opset})"):
        onnx_bytes = trained.to_onnx(features, opset)
    _check_graph(onnx_bytes, model_path)
    session = graphs.session(onnx_bytes, model_path)
    result = _evaluate(model, trained, onnx_bytes, session, inputs, features)
    result = dataclasses.replace(
        result, model_sha256=model_sha, converter=trained.converter, exported_at=_now()
    )
    onnx_path = workdir / "model.onnx"
    if model_path != onnx_path:
        write_bytes(onnx_path, onnx_bytes)
    result.write(workdir)
    print(_summary(model, result))
    if not result.passed:
        raise CheckFailed(f"{model.name}: ONNX parity failed: {result.message}")
    return result


# --- inputs -------------------------------------------------------------------------


def _trained_model(workdir: Path, model_path: Path) -> tuple[bytes, str]:
    """The trained model's bytes and sha256; they must be the file train.json recorded.
    The framework loads these bytes, so what is converted is what was checked."""
    if not model_path.is_file():
        raise StepError(f"{model_path}: no trained model; run `ci-mlops train` first")
    data = read_artifact(model_path.parent, model_path.name)
    actual = hashlib.sha256(data).hexdigest()
    if TrainRecord.exists(workdir):
        recorded = TrainRecord.read(workdir).model_sha256
        hint = "the model changed after training (run `ci-mlops train` again)"
        require_sha256(model_path, actual, recorded, str(TrainRecord.at(workdir)), hint=hint)
    return data, actual


def _check_opset(spec: Spec, opset: int) -> None:
    """Refuse an opset the installed onnxruntime cannot run, before converting."""
    import onnxruntime

    if opset >= MIN_OPSET and _runtime_loads(opset):
        return
    newest = max(
        (v for v in range(MIN_OPSET, max(opset, MIN_OPSET)) if _runtime_loads(v)), default=None
    )
    supported = f"opsets {MIN_OPSET} to {newest}" if newest else "no opset tried"
    raise StepError(
        f"{spec.path}: export.opset {opset} is not supported by the installed onnxruntime "
        f"{onnxruntime.__version__} (it runs {supported}); pin one of those or upgrade onnxruntime"
    )


def _runtime_loads(opset: int) -> bool:
    """Whether onnxruntime loads a one-node model stamped with ``opset``: the only
    reliable answer, since onnxruntime publishes no list of the opsets it runs."""
    import onnxruntime
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [value], [out])
    stamp = helper.make_opsetid("", opset)
    probe = helper.make_model(graph, opset_imports=[stamp])
    try:
        probe.ir_version = helper.find_min_ir_version_for([stamp])
        onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime's own error types are not importable portably
        return False
    return True


def _eval_file(spec: Spec, model: Model) -> Path:
    return spec.root / str(model.eval_data.path or model.eval_data.features)


def _eval_features(spec: Spec, model: Model) -> pd.DataFrame:
    features = load_dataset(spec.root, model.eval_data).features
    if features.empty:
        raise StepError(f"{_eval_file(spec, model)}: no rows")
    return features


def _inputs(
    spec: Spec, model: Model, trained: Trained, features: pd.DataFrame
) -> tuple[Input, ...]:
    """The ONNX graph's inputs; a column the framework cannot take is the eval data's
    problem, so the error names that file."""
    try:
        return trained.inputs(features)
    except StepError as exc:
        raise StepError(f"{_eval_file(spec, model)}: {exc}") from None


# --- checks -------------------------------------------------------------------------


def _check_graph(onnx_bytes: bytes, model_path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(onnx_bytes), full_check=True)
    except Exception as exc:  # ValidationError, and shape-inference errors with full_check
        raise CheckFailed(
            f"{model_path}: the ONNX model fails onnx.checker: {first_line(exc)[:300]}"
        ) from None


def _evaluate(
    model: Model,
    trained: Trained,
    onnx_bytes: bytes,
    session: onnxruntime.InferenceSession,
    inputs: tuple[Input, ...],
    features: pd.DataFrame,
) -> ExportRecord:
    """Compare outputs, measure latency, and build export.json."""
    ort_out = graphs.run_outputs(session, graphs.feed(inputs, features), model.task)
    native = trained if trained.native else None
    diff, mismatches = (
        _compare(trained.outputs(trained.prepare(features)), ort_out) if native else (0.0, 0)
    )
    passed, message = _verdict(model, diff, mismatches)
    return ExportRecord(
        skipped=False,
        passed=passed,
        message=message,
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        opset=model.export.opset,
        framework=model.framework,
        task=model.task,
        inputs=[i.describe() for i in inputs],
        outputs=[o.name for o in session.get_outputs()],
        compared=trained.compared,
        n_samples=len(features),
        max_abs_diff=diff,
        tolerance=model.export.tolerance,
        label_mismatches=mismatches,
        max_label_mismatches=model.export.max_label_mismatches,
        latency=_latency(native, session, inputs, features),
        onnxruntime=_ort_version(),
        replay=_replay(session, inputs, features, model.task),
    )


def _replay(
    session: onnxruntime.InferenceSession,
    inputs: tuple[Input, ...],
    features: pd.DataFrame,
    task: str,
) -> dict[str, Any]:
    """The first eval rows and what onnxruntime predicts for them: what the served model
    must answer (see :mod:`ci_mlops.serve.check`). A model with one numeric input keeps
    each row as a list of numbers; a model with one input per column keeps each row as
    ``{input: values}``. JSON has no NaN, so rows with a missing number are left out:
    no client could send them over the protocol either."""
    import numpy as np

    width = max(sum(len(i.columns) for i in inputs), 1)
    wanted = max(1, min(REPLAY_ROWS, REPLAY_VALUES // width))
    numeric = [c for i in inputs if i.dtype != "object" for c in i.columns]
    complete = features[features[numeric].notna().all(axis=1)] if numeric else features
    frame = complete.iloc[:wanted]
    if frame.empty:
        return {"inputs": [], "labels": None, "values": []}
    fed = graphs.feed(inputs, frame)
    outputs = graphs.run_outputs(session, fed, task)
    rows: list[Any]
    if len(inputs) == 1 and inputs[0].dtype != "object":
        rows = np.asarray(fed[inputs[0].name], dtype=float).tolist()
    else:
        rows = [{name: array[i].tolist() for name, array in fed.items()} for i in range(len(frame))]
    labels = None if outputs.labels is None else outputs.labels.tolist()
    return {
        "inputs": rows,
        "labels": labels,
        "values": np.asarray(outputs.values, dtype=float).tolist(),
    }


def _compare(native: Outputs, onnx: Outputs) -> tuple[float | None, int | None]:
    """Largest absolute difference (None when one side has NaN/inf where the other has
    not) and the number of differing labels (None without labels on both sides)."""
    import numpy as np

    a, b = _aligned(native.values, onnx.values)
    gap = np.abs(a - b)
    same_nan = np.isnan(a) & np.isnan(b)
    gap[same_nan] = 0.0
    diff = float(gap.max()) if gap.size else 0.0
    mismatches = None
    if native.labels is not None and onnx.labels is not None:
        mismatches = int(np.count_nonzero(~_same_labels(native.labels, onnx.labels)))
    return (diff if np.isfinite(diff) else None), mismatches


def _aligned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both 2-D float64 arrays of one shape. A binary decision function is one column
    natively but two (negated, plain) in ONNX: compare with the plain one."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[1] == 1 and b.shape[1] == 2:
        b = b[:, 1:]
    if a.shape != b.shape:
        raise StepError(f"native outputs have shape {a.shape} but ONNX outputs have {b.shape}")
    return a, b


def _same_labels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import numpy as np

    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if a.dtype.kind in "iufb" and b.dtype.kind in "iufb":
        return np.asarray(a.astype(np.float64) == b.astype(np.float64))
    return np.asarray(a.astype(str) == b.astype(str))


def _verdict(model: Model, diff: float | None, mismatches: int | None) -> tuple[bool, str]:
    tolerance, allowed = model.export.tolerance, model.export.max_label_mismatches
    problems = []
    if diff is None:
        problems.append("outputs are NaN or infinite where the native model's are not")
    elif diff > tolerance:
        problems.append(f"max |diff| {diff:.3g} exceeds the tolerance {tolerance:.3g}")
    if mismatches is not None and mismatches > allowed:
        problems.append(f"{mismatches} labels differ (allowed: {allowed})")
    return (not problems), "; ".join(problems) or "within tolerance"


# --- latency ------------------------------------------------------------------------


def _latency(
    native: Trained | None,
    session: onnxruntime.InferenceSession,
    inputs: tuple[Input, ...],
    features: pd.DataFrame,
) -> dict[str, float | None]:
    """Median milliseconds per call, one row at a time and on the whole eval set."""

    def onnx_call(fed: dict[str, Any]) -> object:
        return session.run(None, fed)

    # Rows are sliced and fed before timing, so that pandas indexing is not latency.
    count = min(len(features), BATCH1_RUNS)
    rows = [features.iloc[[i]] for i in range(count)]
    onnx_b1 = _median_ms(
        onnx_call, [graphs.feed(inputs, r) for r in rows], BATCH1_RUNS, BATCH1_BUDGET_S
    )
    onnx_full = _median_ms(onnx_call, [graphs.feed(inputs, features)], FULL_RUNS, FULL_BUDGET_S)
    native_b1 = native_full = None
    if native is not None:
        prepared = [native.prepare(r) for r in rows]
        native_b1 = _median_ms(native.call, prepared, BATCH1_RUNS, BATCH1_BUDGET_S)
        whole = [native.prepare(features)]
        native_full = _median_ms(native.call, whole, FULL_RUNS, FULL_BUDGET_S)
    return {
        "native_batch1_ms": _round(native_b1),
        "onnx_batch1_ms": _round(onnx_b1),
        "native_full_ms": _round(native_full),
        "onnx_full_ms": _round(onnx_full),
        "batch1_speedup": round(native_b1 / onnx_b1, 2) if native_b1 and onnx_b1 else None,
    }


def _median_ms(
    call: Callable[[Any], object], inputs: Sequence[Any], runs: int, budget_s: float
) -> float:
    """Median time of ``call`` over up to ``runs`` calls after a warm-up, stopping early
    once ``budget_s`` has passed so that a slow model cannot stall the step."""
    for _ in range(WARMUP_RUNS if len(inputs) > 1 else 1):
        call(inputs[0])
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in range(runs):
        start = time.perf_counter()
        call(inputs[i % len(inputs)])
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return statistics.median(times) * 1000.0


# --- helpers ------------------------------------------------------------------------


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 5)


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _summary(model: Model, result: ExportRecord) -> str:
    lat = result.latency or {}
    diff = result.max_abs_diff
    parity = "ok" if result.passed else "FAILED"
    labels = "" if result.label_mismatches is None else f", {result.label_mismatches} labels differ"
    shown = "nan/inf" if diff is None else f"{diff:.2g}"
    speed = ""
    if lat.get("batch1_speedup") is not None:
        speed = (
            f"; batch-1 {lat['onnx_batch1_ms']:.3f} ms onnxruntime vs {lat['native_batch1_ms']:.3f} ms "
            f"native ({lat['batch1_speedup']:.1f}x)"
        )
    return (
        f"{model.name}: model.onnx (opset {result.opset}) parity {parity}: max |diff| {shown} "
        f"(tolerance {result.tolerance or 0:.2g}) on {result.n_samples} rows{labels}{speed}"
    )


def run_local(spec: Spec, model: Model, *, environment: str | None, force: bool) -> None:
    """What ``ci-mlops run`` calls for this step's job. Export to ONNX."""
    run(spec, model)
