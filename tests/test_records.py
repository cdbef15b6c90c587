"""The typed records under .ci-mlops/<model>/ (each round-trips through its file, and a
missing or mistyped field is one line naming the file and the field), and the one
integrity check: a file still matches the sha256 recorded for it, else one
IntegrityError naming every file that changed, used by steps and registries alike."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from pathlib import Path

import pytest

from ci_mlops.errors import CheckFailed, IntegrityError, StepError
from ci_mlops.records import (
    DataTestRecord,
    ExportRecord,
    GatesRecord,
    MetricsRecord,
    Record,
    ReportRecord,
    SpecOriginRecord,
    TrackingRecord,
    TrainRecord,
    changed,
    changed_files,
    passed,
    require_unchanged,
)
from ci_mlops.registries.local import LocalRegistry
from ci_mlops.serve import container
from ci_mlops.spec.check import load_spec
from ci_mlops.steps import evaluate, report
from tests.helpers import copy_example
from tests.steps.trained import invoke, workdir


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_unchanged_files_pass(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    require_unchanged(tmp_path, {"a": sha(b"a")}, "manifest.json")
    assert changed_files(tmp_path, {"a": sha(b"a")}, "manifest.json") == []


def test_every_changed_or_missing_file_is_one_structured_error(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"edited")
    (tmp_path / "c").write_bytes(b"c")
    recorded = {"a": sha(b"a"), "b": sha(b"b"), "c": sha(b"c")}

    with pytest.raises(IntegrityError) as raised:
        require_unchanged(tmp_path, recorded, "model.sig", where="m 1.0.0")

    error = raised.value
    assert isinstance(error, CheckFailed) and error.exit_code == 1
    assert [(c.path, c.expected, c.actual) for c in error.changes] == [
        (str(tmp_path / "a"), sha(b"a"), sha(b"edited")),
        (str(tmp_path / "b"), sha(b"b"), None),
    ]
    assert (error.path, error.expected, error.actual) == (tmp_path / "a", sha(b"a"), sha(b"edited"))
    assert str(error) == (
        f"m 1.0.0: {tmp_path / 'a'}: sha256 {sha(b'edited')} does not match {sha(b'a')} in "
        f"model.sig; {tmp_path / 'b'}: missing (model.sig records sha256 {sha(b'b')})"
    )


def test_bytes_in_hand_are_checked_the_same_way() -> None:
    assert changed("model.onnx", b"x", sha(b"x"), "SHA256SUMS") is None
    change = changed("model.onnx", b"y", sha(b"x"), "SHA256SUMS")
    assert change is not None and change.actual == sha(b"y")
    assert str(change) == f"model.onnx: sha256 {sha(b'y')} does not match {sha(b'x')} in SHA256SUMS"
    gone = changed("model.onnx", None, sha(b"x"), "SHA256SUMS")
    assert gone is not None and gone.actual is None


def test_the_local_registry_raises_it_for_a_stored_file_that_changed(tmp_path: Path) -> None:
    spec = load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")
    model = spec.models[0]
    build = tmp_path / "build"
    build.mkdir()
    (build / "model.joblib").write_bytes(b"model")
    (build / "metrics.json").write_text(json.dumps({"metrics": {}}))
    registry = LocalRegistry(spec)
    published = registry.publish(model, "1.0.0", {p.name: p for p in build.iterdir()})
    stored = Path(published.location) / "model.joblib"
    stored.chmod(0o644)
    stored.write_bytes(b"swapped")

    with pytest.raises(IntegrityError) as raised:
        registry.verify(model, published.version)

    assert raised.value.path == stored
    assert raised.value.expected == sha(b"model")
    assert raised.value.actual == sha(b"swapped")
    assert [c.recorded_in for c in raised.value.changes] == ["manifest.json"]


OLD_DATA_TEST = {
    "model": "m",
    "success": False,
    "statistics": {"datasets": 1, "evaluated_expectations": 2},
    "datasets": {
        "train": {
            "rows": 3,
            "success": False,
            "expectations": [
                {"name": "expect_a", "success": True},
                {"name": "expect_b", "success": False},
            ],
        }
    },
    "great_expectations_version": "1.0",
}


def test_an_old_data_test_file_reads_as_passed_at_every_level(tmp_path: Path) -> None:
    (tmp_path / "data-test.json").write_text(json.dumps(OLD_DATA_TEST))

    record = DataTestRecord.read(tmp_path)

    assert record.passed is False
    train = record.datasets["train"]
    assert train["passed"] is False and "success" not in train
    assert [(e["name"], e["passed"]) for e in train["expectations"]] == [
        ("expect_a", True),
        ("expect_b", False),
    ]


def test_a_data_test_record_round_trips_with_passed(tmp_path: Path) -> None:
    record = DataTestRecord.from_json(OLD_DATA_TEST)

    path = record.write(tmp_path)

    written = json.loads(path.read_text())
    assert written["passed"] is False and "success" not in written
    assert DataTestRecord.read(tmp_path) == record
    assert passed({"passed": True}) and passed({"success": True}) and not passed({})


# --- the typed records ----------------------------------------------------------------

SHA_A, SHA_B = "a" * 64, "b" * 64

RECORDS: list[Record] = [
    TrainRecord(
        model_sha256=SHA_A,
        input_hash=SHA_B,
        duration_seconds=1.5,
        command="python train.py",
        params={"C": 1.0},
        trained_at="2026-01-01T00:00:00+00:00",
        skipped=False,
    ),
    MetricsRecord(
        model="m",
        task="classification",
        model_sha256=SHA_A,
        metrics={"accuracy": 0.9, "f1": None},
        n_samples=10,
        baseline={"source": "file old.json", "metrics": {"accuracy": 0.8}},
        baseline_missing=None,
        averaging={"f1": "binary"},
        notes={},
        classes=[0, 1],
        plots={"plots/roc_curve.png": SHA_B},
        intervals={"level": 0.95, "metrics": {}},
        importance={"metric": "accuracy", "ranking": ["x"]},
        curves={},
        records={"slices.json": SHA_B},
    ),
    GatesRecord(
        model="m",
        model_sha256=SHA_A,
        passed=True,
        checks=[{"metric": "accuracy", "rule": "min", "passed": True}],
        no_baseline=True,
        metrics_sha256=SHA_B,
        baseline_source=None,
        baseline_missing=None,
        if_no_baseline="pass",
    ),
    ExportRecord(skipped=True),
    ExportRecord(
        skipped=False,
        passed=True,
        message="ok",
        model_sha256=SHA_A,
        onnx_sha256=SHA_B,
        opset=17,
        framework="sklearn",
        task="classification",
        inputs=[{"name": "input", "shape": [None, 4]}],
        outputs=["label", "probabilities"],
        compared="probabilities",
        n_samples=10,
        max_abs_diff=1e-7,
        tolerance=1e-5,
        label_mismatches=0,
        max_label_mismatches=0,
        latency={"batch1_speedup": None},
        onnxruntime="1.20.0",
        replay={"inputs": [[1.0, 2.0]]},
        converter="skl2onnx 1.17",
        exported_at="2026-01-01T00:00:00+00:00",
    ),
    ReportRecord(model="m", report_sha256=SHA_A),
    SpecOriginRecord(path="models/churn/mlops.yaml"),
    DataTestRecord(
        model="m",
        passed=True,
        statistics={"datasets": 1},
        datasets={"train": {"rows": 3, "passed": True, "expectations": []}},
        great_expectations_version="1.5",
    ),
    TrackingRecord(
        model="m",
        model_sha256=SHA_A,
        run_id="r1",
        experiment="churn",
        experiment_id="1",
        server="mlflow",
        tracking_uri="http://127.0.0.1:5000",
        url=None,
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: f"{r.FILE}-{len(r.to_json())}")
def test_each_record_round_trips_through_its_file(tmp_path: Path, record: Record) -> None:
    path = record.write(tmp_path)

    assert path == tmp_path / record.FILE
    assert type(record).read(tmp_path) == record
    # The keys on disk are the field names, as the steps have always written them.
    on_disk = json.loads(path.read_text())
    assert on_disk == record.to_json()
    if not getattr(record, "skipped", False):
        assert set(on_disk) == {f.name for f in fields(record)} - {"extra"}


def test_an_export_with_export_off_says_skipped_and_no_more(tmp_path: Path) -> None:
    ExportRecord(skipped=True).write(tmp_path)
    assert json.loads((tmp_path / "export.json").read_text()) == {"skipped": True}


def test_keys_a_record_does_not_declare_are_kept(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(
        json.dumps({"model": "m", "report_sha256": SHA_A, "written_by": "a newer version"})
    )

    record = ReportRecord.read(tmp_path)
    record.write(tmp_path)

    assert record.extra == {"written_by": "a newer version"}
    assert json.loads((tmp_path / "report.json").read_text())["written_by"] == "a newer version"


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        (TrainRecord, {"input_hash": SHA_B}, "model_sha256: missing"),
        (TrainRecord, {"model_sha256": 5}, "model_sha256: expected a string, found an integer"),
        (
            MetricsRecord,
            {"metrics": {}, "n_samples": True},
            "n_samples: expected an integer or null, found true or false",
        ),
        (MetricsRecord, {"metrics": [0.9]}, "metrics: expected an object, found a list"),
        (
            GatesRecord,
            {"model": "m", "model_sha256": SHA_A, "passed": "yes"},
            "passed: expected true or false, found a string",
        ),
        (ExportRecord, {"skipped": False, "opset": 17.5}, "opset: expected an integer or null"),
        (ReportRecord, {"model": "m"}, "report_sha256: missing"),
    ],
)
def test_a_missing_or_mistyped_field_names_the_file_and_the_field(
    tmp_path: Path, kind: type[Record], data: dict[str, object], message: str
) -> None:
    (tmp_path / kind.FILE).write_text(json.dumps(data))

    with pytest.raises(StepError) as raised:
        kind.read(tmp_path)

    text = str(raised.value)
    assert text.startswith(f"{tmp_path / kind.FILE}: {message}")
    assert "\n" not in text and raised.value.exit_code == 2


def test_a_number_field_takes_an_integer(tmp_path: Path) -> None:
    TrainRecord.from_json({"model_sha256": SHA_A, "duration_seconds": 3})
    ExportRecord.from_json({"skipped": False, "max_abs_diff": 0})


def test_a_file_that_is_no_json_object_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "gates.json").write_text("[1, 2]")
    with pytest.raises(StepError, match=r"gates\.json: expected a JSON object$"):
        GatesRecord.read(tmp_path)
    (tmp_path / "gates.json").write_text("{")
    with pytest.raises(StepError, match=r"gates\.json: unreadable JSON"):
        GatesRecord.read(tmp_path)


def test_a_record_is_never_read_through_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"model": "m", "report_sha256": SHA_A}))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "report.json").symlink_to(elsewhere)

    with pytest.raises(StepError, match="symbolic link"):
        ReportRecord.read(folder)


def test_a_mistyped_record_stops_deploy_with_one_line(tmp_path: Path) -> None:
    folder = copy_example("breast-cancer", tmp_path)
    work = workdir(folder)
    work.mkdir(parents=True)
    (work / "model.joblib").write_bytes(b"model")
    (work / "gates.json").write_text(json.dumps({"model": "m", "model_sha256": 1, "passed": True}))

    result = invoke(folder, "deploy")

    assert result.code == 2
    line = f"{work / 'gates.json'}: model_sha256: expected a string, found an integer"
    assert line in result.stderr and "Traceback" not in result.stderr


# --- every "still the file its step recorded" check raises IntegrityError --------------


def test_report_refuses_a_model_or_onnx_file_changed_after_its_step(tmp_path: Path) -> None:
    spec = load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")
    model = spec.models[0]
    work = spec.workdir(model)
    work.mkdir(parents=True)
    (work / model.model_file).write_bytes(b"trained")
    TrainRecord(model_sha256=sha(b"trained")).write(work)
    (work / "model.onnx").write_bytes(b"exported")
    ExportRecord(skipped=False, passed=True, onnx_sha256=sha(b"exported")).write(work)
    report.check_artifacts(work, model)  # both still match

    (work / "model.onnx").write_bytes(b"swapped")
    with pytest.raises(IntegrityError) as raised:
        report.check_artifacts(work, model)
    error = raised.value
    assert (error.path, error.expected, error.actual) == (
        work / "model.onnx",
        sha(b"exported"),
        sha(b"swapped"),
    )
    assert str(error).endswith(
        "in " + f"{work / 'export.json'}; the file changed after its step wrote it"
    )

    (work / model.model_file).write_bytes(b"retrained by hand")
    with pytest.raises(IntegrityError) as raised:
        report.check_artifacts(work, model)
    assert raised.value.path == work / model.model_file
    assert (raised.value.expected, raised.value.actual) == (
        sha(b"trained"),
        sha(b"retrained by hand"),
    )
    assert raised.value.exit_code == 1


def test_evaluate_refuses_a_model_file_train_json_does_not_record(tmp_path: Path) -> None:
    model_path = tmp_path / "model.joblib"
    TrainRecord(model_sha256=sha(b"trained")).write(tmp_path)

    with pytest.raises(IntegrityError) as raised:
        evaluate.check_integrity(tmp_path / "train.json", model_path, sha(b"other"))

    assert (raised.value.path, raised.value.expected, raised.value.actual) == (
        model_path,
        sha(b"trained"),
        sha(b"other"),
    )
    assert "retrain with `ci-mlops train --force`" in str(raised.value)


def test_a_packaged_folder_whose_model_changed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"packaged")
    record = {
        "model": "m",
        "version": "1.0.0",
        "task": "classification",
        "files": {"model.onnx": {"sha256": sha(b"packaged"), "size": 8}},
    }
    (tmp_path / "package.json").write_text(json.dumps(record))
    assert container.read_folder(tmp_path).sha256 == sha(b"packaged")

    (tmp_path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(IntegrityError) as raised:
        container.read_folder(tmp_path)

    assert (raised.value.path, raised.value.expected, raised.value.actual) == (
        tmp_path / "model.onnx",
        sha(b"packaged"),
        sha(b"tampered"),
    )
    assert [c.recorded_in for c in raised.value.changes] == ["package.json"]
