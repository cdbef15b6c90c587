"""The one integrity check: a file still matches the sha256 recorded for it, else one
IntegrityError naming every file that changed, used by steps and registries alike."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ci_mlops.errors import CheckFailed, IntegrityError
from ci_mlops.records import (
    DataTestRecord,
    changed,
    changed_files,
    passed,
    require_unchanged,
)
from ci_mlops.registries.local import LocalRegistry
from ci_mlops.spec.check import load_spec
from tests.helpers import copy_example


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
