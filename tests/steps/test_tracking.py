"""Experiment tracking and the registry baseline against a real MLflow server: each
evaluation becomes a run with its params, metrics, verdict, links and plots; the report
links the run; ``baseline.from: registry`` compares with what production runs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from ci_mlops.registries import registry_for
from ci_mlops.spec.check import load_spec
from tests.steps.trained import clone, invoke, read_json, trained_example, workdir

_names = itertools.count(1)
GITLAB_JOB = {
    "GITLAB_CI": "true",
    "CI_COMMIT_SHA": "c0ffee" * 6 + "abcd",
    "CI_COMMIT_REF_NAME": "feature/deeper-trees",
    "CI_MERGE_REQUEST_IID": "7",
    "CI_PROJECT_URL": "https://gitlab.example.invalid/group/project",
    "CI_PIPELINE_URL": "https://gitlab.example.invalid/group/project/-/pipelines/90017",
    "CI_JOB_ID": "4242",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_example("breast-cancer", tmp_path_factory.mktemp("tracking"))


def configure(folder: Path, **model_fields: Any) -> None:
    spec_file = folder / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    data["models"][0].update(model_fields)
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")


@pytest.fixture
def bc(trained: Path, tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trained example with tracking to the shared server, in an experiment of its
    own, and a baseline file (so that no platform is asked for one)."""
    folder = clone(trained, tmp_path)
    configure(
        folder, tracking={"server": "mlflow", "experiment": f"bc-eval-{next(_names)}-{id(folder)}"}
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return folder


def runs(uri: str, experiment: str) -> list[Any]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]))


def experiment_of(folder: Path) -> str:
    return str(
        yaml.safe_load((folder / "mlops.yaml").read_text())["models"][0]["tracking"]["experiment"]
    )


def test_an_evaluation_in_a_merge_request_pipeline_is_logged_as_a_run_and_the_report_links_it(
    bc: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in GITLAB_JOB.items():
        monkeypatch.setenv(name, value)
    baseline = bc / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {"accuracy": 0.5}}))

    result = invoke(bc, "evaluate", "--baseline", str(baseline))

    assert result.code == 0, result.output
    [run] = runs(mlflow_uri, experiment_of(bc))
    metrics = read_json(workdir(bc) / "metrics.json")
    assert run.data.metrics["accuracy"] == pytest.approx(metrics["metrics"]["accuracy"])
    assert run.data.metrics["gates_passed"] == 1.0
    assert run.data.params["framework"] == "sklearn"
    assert run.data.tags["ci_mlops.gates"] == "passed"
    assert run.data.tags["ci_mlops.model_sha256"] == metrics["model_sha256"]
    assert run.data.tags["mlflow.source.git.commit"] == GITLAB_JOB["CI_COMMIT_SHA"]
    assert run.data.tags["ci_mlops.branch"] == "feature/deeper-trees"
    assert (
        run.data.tags["ci_mlops.merge_request"]
        == f"{GITLAB_JOB['CI_PROJECT_URL']}/-/merge_requests/7"
    )
    assert run.data.tags["ci_mlops.pipeline"] == GITLAB_JOB["CI_PIPELINE_URL"]
    assert run.data.tags["gitlab.CI_JOB_ID"] == "4242"
    assert run.data.tags["ci_mlops.baseline"] == f"file {baseline}"
    assert run.info.status == "FINISHED"
    logged = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(run.info.run_id)}
    assert {"metrics.json", "gates.json"} <= logged
    assert any(p.endswith(".png") for p in logged) and not any("/" in p for p in logged)
    record = read_json(workdir(bc) / "tracking.json")
    assert record["run_id"] == run.info.run_id
    assert (
        record["url"]
        == f"{mlflow_uri}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )

    report = invoke(bc, "report", "--no-post")

    assert report.code == 0, report.output
    markdown = (workdir(bc) / "report.md").read_text()
    assert f"Logged as run [`{run.info.run_id}`]({record['url']})" in markdown


def test_a_failed_evaluation_is_logged_too(bc: Path, mlflow_uri: str) -> None:
    configure(bc, metrics={"accuracy": {"min": 0.999}})

    result = invoke(bc, "evaluate")

    assert result.code == 1, result.output
    [run] = runs(mlflow_uri, experiment_of(bc))
    assert run.data.tags["ci_mlops.gates"] == "failed"
    assert run.data.metrics["gates_passed"] == 0.0


def test_without_a_tracking_uri_the_evaluation_warns_and_stands(
    bc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir(bc) / "tracking.json").write_text(json.dumps({"run_id": "stale"}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    result = invoke(bc, "evaluate")

    assert result.code == 0, result.output
    assert "MLFLOW_TRACKING_URI is not set: evaluation not logged" in result.output
    # An earlier run's link never outlives the evaluation it belonged to.
    assert not (workdir(bc) / "tracking.json").exists()


def test_baseline_from_the_registry_is_what_production_runs(
    bc: Path, mlflow_uri: str, tmp_path: Path
) -> None:
    # A registered model of its own on the shared server: rename the model and its folder.
    name = f"bc-base-{next(_names)}-{id(bc)}"
    workdir(bc).rename(workdir(bc).with_name(name))
    configure(bc, baseline={"from": "registry"}, deploy={"target": "mlflow"}, name=name)
    spec = load_spec(bc / "mlops.yaml")
    model = spec.models[0]
    registry = registry_for(spec, model, "local")
    assert invoke(bc, "evaluate").code == 0  # nothing in production: a first run
    assert read_json(workdir(bc) / "gates.json")["baseline_source"] is None
    stored = tmp_path / "stored"
    stored.mkdir()
    (stored / "metrics.json").write_text(
        json.dumps({"metrics": {"accuracy": 0.25, "roc_auc": 0.5}})
    )
    (stored / model.model_file).write_bytes(b"an older model")
    version = registry.publish(
        model, "0.0.9", {n: stored / n for n in ("metrics.json", model.model_file)}
    ).version
    registry.promote(model, "production", version)

    result = invoke(bc, "evaluate")

    assert result.code == 0, result.output
    source = f"mlflow registry: {model.name} {version} (live in production)"
    metrics = read_json(workdir(bc) / "metrics.json")
    assert metrics["baseline"] == {"source": source, "metrics": {"accuracy": 0.25, "roc_auc": 0.5}}
    assert invoke(bc, "report", "--no-post").code == 0
    assert f"Baseline: {source}." in (workdir(bc) / "report.md").read_text()


def test_tracking_in_gitlab_logs_the_run_to_the_project_and_links_its_job(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.env import GITLAB_TOKEN, gitlab_vars, start_gitlab

    api = start_gitlab()
    try:
        folder = clone(trained, tmp_path)
        configure(folder, tracking={"server": "gitlab"})
        for name, value in {
            **gitlab_vars(api),
            "CI_JOB_ID": "4242",
            "MLFLOW_TRACKING_TOKEN": GITLAB_TOKEN,
        }.items():
            monkeypatch.setenv(name, value)
        baseline = folder / "baseline.json"
        baseline.write_text(json.dumps({"metrics": {"accuracy": 0.5}}))

        result = invoke(folder, "evaluate", "--baseline", str(baseline))

        assert result.code == 0, result.output
        [experiment] = api.experiments.values()
        [run] = api.runs.values()
        assert experiment["name"] == "breast-cancer" and run["status"] == "FINISHED"
        assert run["tags"]["gitlab.CI_JOB_ID"] == "4242"
        assert (
            run["tags"]["ci_mlops.merge_request"]
            == "https://gitlab.example.invalid/group/project/-/merge_requests/7"
        )
        assert run["metrics"]["gates_passed"] == 1.0
        stored = api.run_artifact(experiment["iid"], run["iid"], "metrics.json")
        assert stored == (workdir(folder) / "metrics.json").read_bytes()
        record = read_json(workdir(folder) / "tracking.json")
        assert (
            record["url"]
            == f"https://gitlab.example.invalid/group/project/-/ml/experiments/{experiment['iid']}"
        )
    finally:
        api.stop()


def test_a_version_published_to_mlflow_links_the_run_that_evaluated_its_model(
    bc: Path, mlflow_uri: str
) -> None:
    name = f"bc-linked-{next(_names)}-{id(bc)}"
    workdir(bc).rename(workdir(bc).with_name(name))
    configure(bc, deploy={"target": "mlflow"}, name=name)
    spec = load_spec(bc / "mlops.yaml")
    model = spec.models[0]
    baseline = bc / "baseline.json"
    baseline.write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    assert invoke(bc, "evaluate", "--baseline", str(baseline)).code == 0
    logged = read_json(workdir(bc) / "tracking.json")["run_id"]
    registry = registry_for(spec, model, "local")
    files = {n: workdir(bc) / n for n in (model.model_file, "metrics.json")}

    linked = registry.publish(model, "1.0.0", files).version
    (workdir(bc) / "tracking.json").write_text(json.dumps({"run_id": 5}))  # mistyped
    unlinked = registry.publish(model, "1.0.1", files).version

    client = MlflowClient(mlflow_uri)
    assert client.get_model_version(name, linked).tags["ci_mlops.evaluation_run"] == logged
    assert "ci_mlops.evaluation_run" not in client.get_model_version(name, unlinked).tags
