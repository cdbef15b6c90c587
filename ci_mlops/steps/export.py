"""ONNX export: convert the trained model, check the result, and prove that it predicts
what the native model predicts.

scikit-learn models go through skl2onnx, PyTorch models through ``torch.onnx.export``;
an ONNX model is checked as it is. The ONNX graph takes one float32 tensor named
``input``. ``onnx.checker`` only checks structure, so the model then runs in onnxruntime
on the eval data and its outputs are compared with the native model's: for classifiers
the largest probability difference and the number of differing labels (trees compare
float32 thresholds, so a label can flip near a boundary while probabilities stay close),
for regressors the largest difference of values. Latency of both runtimes is measured
one row at a time and on the whole eval set.

Writes ``model.onnx`` (only once conversion and checks succeed) and ``export.json``.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ci_mlops import log
from ci_mlops.atomic import artifact_sha256, read_artifact, write_bytes, write_json
from ci_mlops.errors import CheckFailed, StepError
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps.datasets import load_dataset
from ci_mlops.steps.records import read_record

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    import pandas as pd

INPUT_NAME = "input"
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


@dataclass(frozen=True)
class Outputs:
    """What a model predicted for every row: class probabilities (or scores) or
    regression values as a 2-D array, and labels for classifiers."""

    values: np.ndarray
    labels: np.ndarray | None


@dataclass(frozen=True)
class Native:
    """The trained model in its own runtime. ``predict`` returns full outputs; ``call``
    is the single call whose latency is measured; ``inputs`` is how the model takes the
    eval data (a DataFrame for scikit-learn, a float32 array otherwise); ``compared``
    says what the outputs are (probabilities, scores, values)."""

    predict: Callable[[Any], Outputs]
    call: Callable[[Any], object]
    inputs: Any
    rows: list[Any]
    compared: str


@dataclass(frozen=True)
class Converted:
    """The ONNX bytes and, when there is one, the native model they came from."""

    onnx: bytes
    native: Native | None
    converter: str


def run(spec: Spec, model: Model) -> dict[str, Any]:
    """Export ``model`` to ONNX and check parity with the native model.

    Raises StepError for input the step cannot use (no model, an estimator skl2onnx
    cannot convert, an opset onnxruntime cannot run) and CheckFailed, after writing
    export.json with ``passed: false``, when the outputs differ beyond the spec's
    tolerance."""
    workdir = spec.workdir(model)
    if not model.export.onnx:
        write_json(workdir / "export.json", {"skipped": True})
        log.info(f"{model.name}: ONNX export is off in the spec (export.onnx: false)")
        return {"skipped": True}
    model_path = workdir / model.model_file
    model_sha = _trained_model_sha(workdir, model_path)
    _check_opset(spec, model.export.opset)
    features = _eval_features(spec, model)
    converted = _convert(spec, model, model_path, features)
    _check_graph(converted.onnx, model_path)
    session = _session(converted.onnx, model_path)
    result = _evaluate(model, converted, session, features)
    result.update(model_sha256=model_sha, converter=converted.converter, exported_at=_now())
    onnx_path = workdir / "model.onnx"
    if model_path != onnx_path:
        write_bytes(onnx_path, converted.onnx)
    write_json(workdir / "export.json", result)
    print(_summary(model, result))
    if not result["passed"]:
        raise CheckFailed(f"{model.name}: ONNX parity failed: {result['message']}")
    return result


# --- inputs -------------------------------------------------------------------------


def _trained_model_sha(workdir: Path, model_path: Path) -> str:
    """sha256 of the trained model; it must be the file train.json recorded."""
    if not model_path.is_file():
        raise StepError(f"{model_path}: no trained model; run `ci-mlops train` first")
    actual = artifact_sha256(model_path.parent, model_path.name)
    record = workdir / "train.json"
    if record.is_file():
        recorded = read_record(record).get("model_sha256")
        if recorded and recorded != actual:
            raise StepError(
                f"{model_path}: sha256 {actual} does not match {recorded} recorded in "
                f"{record}; the model changed after training (run `ci-mlops train` again)"
            )
    return actual


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


def _eval_features(spec: Spec, model: Model) -> pd.DataFrame:
    """The eval features; all numeric, because the ONNX graph takes one float tensor."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    features = load_dataset(spec.root, model.eval_data).features
    bad = [
        c
        for c in features.columns
        if not (is_numeric_dtype(features[c]) or is_bool_dtype(features[c]))
    ]
    if bad:
        where = spec.root / str(model.eval_data.path or model.eval_data.features)
        shown = ", ".join(repr(c) for c in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise StepError(
            f"{where}: column(s) {shown} are not numeric; the ONNX export takes one float "
            "tensor, so encode these columns before they reach the model"
        )
    if features.empty:
        raise StepError(
            f"{spec.root / str(model.eval_data.path or model.eval_data.features)}: no rows"
        )
    return features


# --- conversion ---------------------------------------------------------------------


def _convert(spec: Spec, model: Model, model_path: Path, features: pd.DataFrame) -> Converted:
    opset = model.export.opset
    with log.timed(f"{model.name}: converting {model_path.name} to ONNX (opset {opset})"):
        if model.framework == "sklearn":
            return _from_sklearn(model, model_path, features, opset)
        if model.framework == "pytorch":
            return _from_torch(spec, model, model_path, features, opset)
        return Converted(
            read_artifact(model_path.parent, model_path.name),
            None,
            "none (the model is ONNX already)",
        )


def _from_sklearn(model: Model, path: Path, features: pd.DataFrame, opset: int) -> Converted:
    import skl2onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    estimator = _load_joblib(path)
    sample = _float32(features)
    try:
        with warnings.catch_warnings():
            # skl2onnx warns about opsets newer than it was tested with; onnxruntime
            # and the parity check below are the real test.
            warnings.simplefilter("ignore")
            onx = to_onnx(
                estimator,
                initial_types=[(INPUT_NAME, FloatTensorType([None, sample.shape[1]]))],
                target_opset=opset,
                options=_no_zipmap(estimator),
            )
    except Exception as exc:  # converters raise many types; all mean "cannot convert"
        culprit, reason = _conversion_failure(exc, estimator, skl2onnx.__version__)
        raise StepError(f"{path}: skl2onnx cannot convert {culprit}: {reason}") from None
    return Converted(
        onx.SerializeToString(),
        _sklearn_native(estimator, model, features),
        f"skl2onnx {skl2onnx.__version__}",
    )


def _load_joblib(path: Path) -> Any:
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # unpickling can raise anything the pickled code raises
        raise StepError(f"{path}: cannot load with joblib: {_first_line(exc)}") from None


def _no_zipmap(estimator: Any) -> dict[int, dict[str, bool]] | None:
    """Ask for probabilities as a plain tensor instead of a list of maps. The option
    belongs to the classifier itself, which in a pipeline is the last step."""
    from sklearn.base import is_classifier

    final = estimator
    while hasattr(final, "steps"):
        final = final.steps[-1][1]
    return {id(final): {"zipmap": False}} if is_classifier(final) else None


def _conversion_failure(exc: Exception, estimator: Any, version: str) -> tuple[str, str]:
    """Which estimator failed (skl2onnx names its class) and a short reason."""
    text = str(exc)
    found = re.search(r"<class '(?:[\w.]+\.)?(\w+)'>", text)
    culprit = found.group(1) if found else type(estimator).__name__
    if type(exc).__name__ in ("MissingShapeCalculator", "MissingConverter"):
        return culprit, f"skl2onnx {version} has no converter for it"
    return culprit, _first_line(exc)[:200]


def _sklearn_native(estimator: Any, model: Model, features: pd.DataFrame) -> Native:
    import numpy as np

    compared = "values"
    if model.task == "classification":
        has_proba = hasattr(estimator, "predict_proba")
        scores = estimator.predict_proba if has_proba else estimator.decision_function
        compared = "probabilities" if has_proba else "scores"

        def predict(x: Any) -> Outputs:
            return Outputs(_2d(scores(x)), np.asarray(estimator.predict(x)))

        call: Callable[[Any], object] = scores
    else:

        def predict(x: Any) -> Outputs:
            return Outputs(_2d(estimator.predict(x)), None)

        call = estimator.predict
    # Rows are sliced before timing so that pandas indexing is not counted as latency.
    rows = [features.iloc[[i]] for i in range(min(len(features), BATCH1_RUNS))]
    return Native(predict, call, features, rows, compared)


def _from_torch(
    spec: Spec, model: Model, path: Path, features: pd.DataFrame, opset: int
) -> Converted:
    try:
        import torch
    except ImportError:
        raise StepError(
            f"{path}: exporting a PyTorch model needs torch; install ci-mlops[torch]"
        ) from None
    net = _load_torch(spec, model, path)
    sample = _float32(features)
    buffer = io.BytesIO()
    kwargs: dict[str, Any] = {
        "input_names": [INPUT_NAME],
        "output_names": ["output"],
        "opset_version": opset,
        "dynamic_axes": {INPUT_NAME: {0: "batch"}, "output": {0: "batch"}},
    }
    # torch 2.9 made the dynamo exporter the default; it needs onnxscript and spells
    # dynamic batch sizes differently, so keep the TorchScript exporter.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    try:
        with torch.no_grad():
            torch.onnx.export(net, (torch.from_numpy(sample[:1]),), buffer, **kwargs)
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise StepError(
            f"{path}: torch.onnx cannot export {type(net).__name__}: {_first_line(exc)[:200]}"
        ) from None
    return Converted(
        buffer.getvalue(), _torch_native(net, model, sample), f"torch {torch.__version__}"
    )


def _load_torch(spec: Spec, model: Model, path: Path) -> Any:
    import torch

    try:
        if model.model_class:
            net = _import_class(spec, model.model_class)()
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        else:
            try:
                net = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError:  # not TorchScript: a whole pickled module
                net = torch.load(path, map_location="cpu", weights_only=False)
    except StepError:
        raise
    except Exception as exc:
        raise StepError(f"{path}: cannot load the PyTorch model: {_first_line(exc)}") from None
    net.eval()
    return net


def _import_class(spec: Spec, dotted: str) -> Any:
    import importlib

    module_name, _, class_name = dotted.partition(":")
    sys.path.insert(0, str(spec.root.resolve()))
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise StepError(f"{spec.path}: model_class {dotted!r} cannot be imported: {exc}") from None
    finally:
        sys.path.pop(0)


def _torch_native(net: Any, model: Model, sample: np.ndarray) -> Native:
    import torch

    def forward(x: np.ndarray) -> Any:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    def predict(x: np.ndarray) -> Outputs:
        values = _2d(forward(x))
        return Outputs(values, _argmax_labels(values) if model.task == "classification" else None)

    rows = [sample[i : i + 1] for i in range(min(len(sample), BATCH1_RUNS))]
    compared = "scores" if model.task == "classification" else "values"
    return Native(predict, forward, sample, rows, compared)


# --- checks -------------------------------------------------------------------------


def _check_graph(onnx_bytes: bytes, model_path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(onnx_bytes), full_check=True)
    except Exception as exc:  # ValidationError, and shape-inference errors with full_check
        raise CheckFailed(
            f"{model_path}: the ONNX model fails onnx.checker: {_first_line(exc)[:300]}"
        ) from None


def _session(onnx_bytes: bytes, model_path: Path) -> onnxruntime.InferenceSession:
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's error types are not importable portably
        raise StepError(
            f"{model_path}: onnxruntime cannot load the ONNX model: {_first_line(exc)[:300]}"
        ) from None


def _evaluate(
    model: Model,
    converted: Converted,
    session: onnxruntime.InferenceSession,
    features: pd.DataFrame,
) -> dict[str, Any]:
    """Compare outputs, measure latency, and build export.json."""
    sample = _float32(features)
    ort_out = _onnx_outputs(session, sample, model.task)
    native = converted.native
    diff, mismatches = _compare(native.predict(native.inputs), ort_out) if native else (0.0, 0)
    passed, message = _verdict(model, diff, mismatches)
    return {
        "skipped": False,
        "passed": passed,
        "message": message,
        "onnx_sha256": hashlib.sha256(converted.onnx).hexdigest(),
        "opset": model.export.opset,
        "framework": model.framework,
        "task": model.task,
        "input": INPUT_NAME,
        "outputs": [o.name for o in session.get_outputs()],
        "compared": native.compared if native else "nothing (the model is ONNX already)",
        "n_samples": len(sample),
        "max_abs_diff": diff,
        "tolerance": model.export.tolerance,
        "label_mismatches": mismatches,
        "max_label_mismatches": model.export.max_label_mismatches,
        "latency": _latency(native, session, sample),
        "onnxruntime": _ort_version(),
        "replay": _replay(session, sample, model.task),
    }


def _replay(session: onnxruntime.InferenceSession, sample: np.ndarray, task: str) -> dict[str, Any]:
    """The first eval rows and what onnxruntime predicts for them: what the served model
    must answer (see :mod:`ci_mlops.serve.check`)."""
    width = max(sample.shape[1], 1)
    rows = sample[: max(1, min(REPLAY_ROWS, REPLAY_VALUES // width))]
    outputs = _onnx_outputs(session, rows, task)
    labels = None if outputs.labels is None else outputs.labels.tolist()
    return {
        "inputs": rows.astype(float).tolist(),
        "labels": labels,
        "values": outputs.values.astype(float).tolist(),
    }


def _onnx_outputs(session: onnxruntime.InferenceSession, sample: np.ndarray, task: str) -> Outputs:
    """skl2onnx classifiers give (label, probabilities); other graphs one value tensor."""
    import numpy as np

    results = session.run(None, {INPUT_NAME: sample})
    if task == "classification" and len(results) >= 2:
        return Outputs(_2d(results[1]), np.asarray(results[0]).ravel())
    values = _2d(results[0])
    return Outputs(values, _argmax_labels(values) if task == "classification" else None)


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
    native: Native | None, session: onnxruntime.InferenceSession, sample: np.ndarray
) -> dict[str, float | None]:
    """Median milliseconds per call, one row at a time and on the whole eval set."""

    def onnx_call(x: np.ndarray) -> object:
        return session.run(None, {INPUT_NAME: x})

    rows = [sample[i : i + 1] for i in range(min(len(sample), BATCH1_RUNS))]
    onnx_b1 = _median_ms(onnx_call, rows, BATCH1_RUNS, BATCH1_BUDGET_S)
    onnx_full = _median_ms(onnx_call, [sample], FULL_RUNS, FULL_BUDGET_S)
    native_b1 = (
        _median_ms(native.call, native.rows, BATCH1_RUNS, BATCH1_BUDGET_S) if native else None
    )
    native_full = (
        _median_ms(native.call, [native.inputs], FULL_RUNS, FULL_BUDGET_S) if native else None
    )
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


def _float32(features: pd.DataFrame) -> np.ndarray:
    import numpy as np

    return np.ascontiguousarray(features.to_numpy(dtype=np.float32))


def _2d(values: Any) -> np.ndarray:
    import numpy as np

    array = np.asarray(values)
    return array.reshape(len(array), -1)


def _argmax_labels(values: np.ndarray) -> np.ndarray | None:
    """Labels from raw scores: the largest column; none for a single output column."""
    return values.argmax(axis=1) if values.shape[1] > 1 else None


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 5)


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _summary(model: Model, result: dict[str, Any]) -> str:
    lat = result["latency"]
    diff = result["max_abs_diff"]
    parity = "ok" if result["passed"] else "FAILED"
    labels = (
        ""
        if result["label_mismatches"] is None
        else f", {result['label_mismatches']} labels differ"
    )
    shown = "nan/inf" if diff is None else f"{diff:.2g}"
    speed = ""
    if lat["batch1_speedup"] is not None:
        speed = (
            f"; batch-1 {lat['onnx_batch1_ms']:.3f} ms onnxruntime vs {lat['native_batch1_ms']:.3f} ms "
            f"native ({lat['batch1_speedup']:.1f}x)"
        )
    return (
        f"{model.name}: model.onnx (opset {result['opset']}) parity {parity}: max |diff| {shown} "
        f"(tolerance {result['tolerance']:.2g}) on {result['n_samples']} rows{labels}{speed}"
    )
