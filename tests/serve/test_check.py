"""The pre-deploy check: deploy starts the real server on the candidate, replays the eval
rows export recorded, and publishes only when the answers match and p99 is in budget."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.steps.trained import clone, invoke, read_json, workdir

VERSIONS = Path(".mlops-registry/breast-cancer/versions")


def set_spec(folder: Path, **serve: object) -> None:
    path = folder / "mlops.yaml"
    data = yaml.safe_load(path.read_text("utf-8"))
    data["models"][0]["serve"] = serve
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")


def edit_replay(folder: Path, **changes: object) -> None:
    path = workdir(folder) / "export.json"
    record = read_json(path)
    record["replay"].update(changes)
    path.write_text(json.dumps(record), "utf-8")


def test_export_records_eval_rows_and_their_predictions(exported: Path) -> None:
    replay = read_json(workdir(exported) / "export.json")["replay"]
    assert len(replay["inputs"]) == 64 and len(replay["inputs"][0]) == 30
    assert len(replay["labels"]) == 64 and set(replay["labels"]) <= {0, 1}
    assert len(replay["values"]) == 64 and all(len(v) == 2 for v in replay["values"])


def test_deploy_passes_the_check_then_publishes(exported: Path, tmp_path: Path) -> None:
    folder = clone(exported, tmp_path)
    result = invoke(folder, "deploy")
    assert result.code == 0, result.output
    assert "breast-cancer: pre-deploy check passed: the served model answered 64 eval rows" in (
        result.stdout
    )
    assert "0 labels differ" in result.stdout and "(budget 100 ms)" in result.stdout
    assert (folder / VERSIONS / "1.0.0+1").is_dir()


def test_a_p99_over_budget_fails_the_deploy_and_publishes_nothing(
    exported: Path, tmp_path: Path
) -> None:
    folder = clone(exported, tmp_path)
    set_spec(folder, max_latency_ms=0.001)
    result = invoke(folder, "deploy")
    assert result.code == 1, result.output
    assert "the pre-deploy check failed: p99 latency" in result.stderr
    assert "exceeds serve.max_latency_ms 0.001" in result.stderr
    assert not (folder / VERSIONS).exists() or not any((folder / VERSIONS).iterdir())


def test_answers_unlike_export_fail_the_deploy(exported: Path, tmp_path: Path) -> None:
    folder = clone(exported, tmp_path)
    replay = read_json(workdir(folder) / "export.json")["replay"]
    flipped = [1 - label for label in replay["labels"][:3]] + replay["labels"][3:]
    shifted = [[v[0] + 0.01, v[1] - 0.01] for v in replay["values"]]
    edit_replay(folder, labels=flipped, values=shifted)
    result = invoke(folder, "deploy")
    assert result.code == 1, result.output
    assert "3 of 64 labels differ from export's" in result.stderr
    assert "served values differ from export's by 0.01" in result.stderr
    assert not (folder / VERSIONS).exists() or not any((folder / VERSIONS).iterdir())


def test_an_export_record_without_replay_rows_is_refused(exported: Path, tmp_path: Path) -> None:
    folder = clone(exported, tmp_path)
    path = workdir(folder) / "export.json"
    record = read_json(path)
    del record["replay"]
    path.write_text(json.dumps(record), "utf-8")
    result = invoke(folder, "deploy")
    assert result.code == 1
    assert "no eval rows recorded for the pre-deploy check; run `ci-mlops export` again" in (
        result.stderr
    )


def test_a_later_environment_promotes_without_a_second_check(
    exported: Path, tmp_path: Path
) -> None:
    folder = clone(exported, tmp_path)
    assert invoke(folder, "deploy").code == 0
    result = invoke(folder, "deploy", "--environment", "production")
    assert result.code == 0, result.output
    assert "promoted breast-cancer 1.0.0+1 to production" in result.stdout
    assert "pre-deploy check" not in result.stdout


def test_the_budget_defaults_to_100_ms_and_must_be_positive(tmp_path: Path) -> None:
    from ci_mlops.spec.check import load_spec
    from tests.helpers import copy_example

    folder = copy_example("breast-cancer", tmp_path)
    assert load_spec(folder / "mlops.yaml").models[0].serve.max_latency_ms == 100.0
    set_spec(folder, max_latency_ms=0)
    result = invoke(folder, "validate")
    assert result.code == 2
    assert "serve.max_latency_ms" in result.stderr and "mlops.yaml:" in result.stderr
    set_spec(folder, max_latency_ms=2.5)
    assert load_spec(folder / "mlops.yaml").models[0].serve.max_latency_ms == 2.5


def test_a_regressor_is_served_and_checked_by_its_predictions(tmp_path: Path) -> None:
    from ci_mlops.serve.app import ServedModel
    from tests.serve.conftest import call, running
    from tests.steps.trained import trained_example

    folder = trained_example("diabetes", tmp_path)
    for step in ("evaluate", "export"):
        assert invoke(folder, step).code == 0
    result = invoke(folder, "deploy")
    assert result.code == 0, result.output
    assert "diabetes: pre-deploy check passed" in result.stdout
    work = workdir(folder)
    replay = read_json(work / "export.json")["replay"]
    assert replay["labels"] is None
    model = ServedModel(
        (work / "model.onnx").read_bytes(), name="d", version="1", task="regression"
    )
    assert [o.name for o in model.outputs] == ["prediction"]
    with running(model) as address:
        rows = replay["inputs"][:2]
        body = {
            "inputs": [
                {"name": "input", "shape": [2, len(rows[0])], "datatype": "FP32", "data": rows}
            ]
        }
        status, answer = call(address, "POST", "/v2/models/d/infer", body)
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert output["name"] == "prediction" and output["shape"] == [2]
    assert abs(output["data"][0] - replay["values"][0][0]) < 1e-4
