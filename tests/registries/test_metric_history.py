"""Registry.metric_history of the remote deploy targets: the metrics of the last N
versions deployed to the first environment, oldest first, read with the real
python-gitlab and PyGithub clients from the fake GitLab and GitHub servers, in a number
of requests that grows by a fixed amount per version. A version whose metrics cannot be
read is left out with a warning."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci_mlops.records import TrackingRecord
from ci_mlops.registries import registry_for
from ci_mlops.registries.base import Registry
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Model, Spec
from tests.fakes.env import GITLAB_TOKEN, github_vars, gitlab_vars, start_github, start_gitlab
from tests.fakes.github_api import FakeGitHub
from tests.fakes.gitlab_api import FakeGitLab
from tests.helpers import copy_example, publishable_files

# version -> accuracy recorded in its metrics.json; None: published without one;
# "broken": a metrics.json that is not JSON.
VERSIONS: dict[str, float | str | None] = {
    "1.0.0-pipeline.1": 0.90,
    "1.0.0-pipeline.2": 0.91,
    "1.0.0-pipeline.3": "broken",
    "1.0.0-pipeline.4": None,
    "1.0.0-pipeline.5": 0.94,
}


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    loaded = load_spec(copy_example("breast-cancer", tmp_path) / "mlops.yaml")
    loaded.workdir(loaded.models[0]).mkdir(parents=True)
    return loaded


@pytest.fixture
def gitlab_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitLab]:
    api = start_gitlab()
    for name, value in gitlab_vars(api, mr_iid=None).items():
        monkeypatch.setenv(name, value)
    yield api
    api.stop()


@pytest.fixture
def github_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeGitHub]:
    api = start_github()
    for name, value in github_vars(api, tmp_path, pr_number=None).items():
        monkeypatch.setenv(name, value)
    yield api
    api.stop()


def _target(spec: Spec, target: str) -> Model:
    base = spec.models[0]
    return dataclasses.replace(base, deploy=dataclasses.replace(base.deploy, target=target))


def deploy_all(
    registry: Registry, spec: Spec, model: Model, runs: dict[str, str] | None = None
) -> list[str]:
    """Publish every version of VERSIONS (files of their own, from the model's folder)
    and promote it to the first environment; the versions as the registry names them.
    ``runs``: version -> the tracked evaluation run that judged it (tracking.json)."""
    environment = model.deploy.environments[0].name
    workdir = spec.workdir(model)
    workdir.mkdir(parents=True, exist_ok=True)
    names = []
    for version, accuracy in VERSIONS.items():
        files = {}
        for name, path in publishable_files(spec).items():
            files[name] = workdir / name
            files[name].write_bytes(path.read_bytes() + version.encode())
        metrics = workdir / "metrics.json"
        if accuracy == "broken":
            metrics.write_text("{not json", encoding="utf-8")
            files["metrics.json"] = metrics
        elif accuracy is not None:
            metrics.write_text(json.dumps({"metrics": {"accuracy": accuracy}}), encoding="utf-8")
            files["metrics.json"] = metrics
        tracking = workdir / "tracking.json"
        tracking.unlink(missing_ok=True)
        if runs and version in runs:
            digest = hashlib.sha256(files[model.model_file].read_bytes()).hexdigest()
            TrackingRecord(model=model.name, model_sha256=digest, run_id=runs[version]).write(
                workdir
            )
        published = registry.publish(model, version, files)
        registry.promote(model, environment, published.version)
        names.append(published.version)
    return names


def test_gitlab_packages_read_each_versions_metrics_json_in_one_request_each(
    spec: Spec, gitlab_api: FakeGitLab, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _target(spec, "gitlab-packages")
    registry = registry_for(spec, model, "gitlab")
    deploy_all(registry, spec, model)
    gitlab_api.requests.clear()
    capsys.readouterr()

    history = registry.metric_history(model, limit=4)

    assert history == [
        ("1.0.0-pipeline.2", {"accuracy": 0.91}),
        ("1.0.0-pipeline.5", {"accuracy": 0.94}),
    ]
    warnings = capsys.readouterr().err
    assert "1.0.0-pipeline.3" in warnings and "not a ci-mlops metrics file" in warnings
    assert "1.0.0-pipeline.4: no metrics in gitlab-packages" in warnings
    # The environment record, then one metrics.json per version: 1 + 4.
    assert len(gitlab_api.requests) == 5
    assert [r.route for r in gitlab_api.requests] == ["package_get"] * 5


def test_gitlab_packages_history_follows_rollbacks_and_is_empty_before_a_deploy(
    spec: Spec, gitlab_api: FakeGitLab
) -> None:
    model = _target(spec, "gitlab-packages")
    registry = registry_for(spec, model, "gitlab")
    assert registry.metric_history(model) == []
    deploy_all(registry, spec, model)
    registry.rollback(model, "staging")  # 5 is no longer deployed: 4 runs again

    assert [v for v, _ in registry.metric_history(model, limit=10)] == [
        "1.0.0-pipeline.1",
        "1.0.0-pipeline.2",
    ]
    assert registry.metric_history(model, limit=0) == []


def test_github_releases_read_each_versions_metrics_asset_in_bounded_requests(
    spec: Spec, github_api: FakeGitHub, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _target(spec, "github-releases")
    registry = registry_for(spec, model, "github")
    deploy_all(registry, spec, model)
    github_api.requests.clear()
    capsys.readouterr()

    history = registry.metric_history(model, limit=4)

    assert history == [
        ("1.0.0-pipeline.2", {"accuracy": 0.91}),
        ("1.0.0-pipeline.5", {"accuracy": 0.94}),
    ]
    warnings = capsys.readouterr().err
    assert "1.0.0-pipeline.3" in warnings and "not a ci-mlops metrics file" in warnings
    assert "1.0.0-pipeline.4: no metrics in github-releases" in warnings
    routes = [r.route for r in github_api.requests]
    # The newest deployment, then per version its release by tag (which lists the
    # assets) and, where it has one, the metrics.json asset with the redirect to storage.
    assert routes.count("list_deployments") == 1
    assert routes.count("release_by_tag") == 4
    assert routes.count("get_asset") == 3
    assert routes.count("storage") == 3
    assert len(routes) == 1 + 4 + 3 * 2


def test_gitlab_model_registry_reads_each_versions_metrics_json_in_two_requests(
    spec: Spec,
    gitlab_api: FakeGitLab,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", GITLAB_TOKEN)
    model = _target(spec, "gitlab-model-registry")
    registry = registry_for(spec, model, "gitlab")
    deploy_all(registry, spec, model)
    gitlab_api.requests.clear()
    capsys.readouterr()

    history = registry.metric_history(model, limit=4)

    assert history == [
        ("1.0.0-pipeline.2", {"accuracy": 0.91}),
        ("1.0.0-pipeline.5", {"accuracy": 0.94}),
    ]
    warnings = capsys.readouterr().err
    assert "1.0.0-pipeline.3" in warnings and "not a ci-mlops metrics file" in warnings
    assert "1.0.0-pipeline.4: no metrics in gitlab-model-registry" in warnings
    # The environment record, then per version its id by semver and its metrics.json.
    routes = [r.route for r in gitlab_api.requests]
    assert len(routes) == 1 + 4 * 2
    assert routes.count("ml_file_get") == 4


def test_mlflow_reads_the_evaluation_runs_metrics_else_the_published_metrics_json(
    spec: Spec,
    mlflow_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    base = _target(spec, "mlflow")
    model = dataclasses.replace(base, name=f"history-{id(spec)}")
    registry = registry_for(spec, model, "local")
    # Versions 1 and 5 were evaluated in a tracked run, which deploy tags them with.
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment(f"history-eval-{id(spec)}")
    runs = {}
    for version, accuracy in (("1.0.0-pipeline.1", 0.80), ("1.0.0-pipeline.5", 0.84)):
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "accuracy", accuracy)
        runs[version] = run.info.run_id
    names = deploy_all(registry, spec, model, runs)
    operations: list[str] = []
    real_call = registry.connection.call
    monkeypatch.setattr(
        registry.connection,
        "call",
        lambda operation, action, hint="": (
            operations.append(operation) or real_call(operation, action, hint)
        ),
    )
    capsys.readouterr()

    history = registry.metric_history(model, limit=5)

    assert history == [
        (names[0], {"accuracy": 0.80}),  # the evaluation run's metrics
        (names[1], {"accuracy": 0.91}),  # no run: the published metrics.json
        (names[4], {"accuracy": 0.84}),
    ]
    warnings = capsys.readouterr().err
    assert f"{model.name} {names[2]}:" in warnings and "not a ci-mlops metrics file" in warnings
    assert f"{model.name} {names[3]}: no metrics in mlflow" in warnings
    # The registered model (its environment record), then per version the version and
    # either its evaluation run or a download of its metrics.json.
    assert operations[0] == f"get_registered_model({model.name})"
    assert len(operations) == 1 + 5 * 2


def test_the_merge_request_report_charts_the_gitlab_package_history(
    spec: Spec, gitlab_api: FakeGitLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ci_mlops.steps import report

    model = _target(spec, "gitlab-packages")
    deploy_all(registry_for(spec, model, "gitlab"), spec, model)
    # This merge request's evaluation, in the job's model folder.
    monkeypatch.setenv("CI_PIPELINE_SOURCE", "merge_request_event")
    monkeypatch.setenv("CI_MERGE_REQUEST_IID", "7")
    for name in ("model.joblib", "model.onnx", "report.md", "tracking.json"):
        (spec.workdir(model) / name).unlink(missing_ok=True)
    metrics = {"model": model.name, "metrics": {"accuracy": 0.95}}
    (spec.workdir(model) / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")

    report.run(spec, model, post=True, echo=False)

    (note,) = gitlab_api.notes[7]
    body = str(note["body"])
    assert 'title "accuracy over the deployed versions"' in body
    assert 'x-axis ["1.0.0-pipeline.1", "1.0.0-pipeline.2", "1.0.0-pipeline.5", "this run"]' in body
    assert "line [0.9, 0.91, 0.94, 0.95]" in body
    assert "| `1.0.0-pipeline.2` | 0.91 |" in body
