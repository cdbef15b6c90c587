"""Deploy through the CLI on trained, evaluated and exported copies of the examples:
versions with verifiable manifests, rollback, promotion to production, refusals of
models that may not ship, registry corruption, and concurrent deploys."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ci_mlops.atomic import sha256_file
from tests.helpers import EXAMPLE_NAMES, cli_command
from tests.steps.trained import clone, invoke, read_json, train_example, trained_example, workdir

REGISTRY = ".mlops-registry"


def prepare(folder: Path) -> Path:
    """Run evaluate and export on the trained example in ``folder``."""
    for step in ("evaluate", "export"):
        result = invoke(folder, step)
        assert result.code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each example trained, evaluated (passing gates) and exported, once per module."""
    root = tmp_path_factory.mktemp("ready")
    return {name: prepare(trained_example(name, root)) for name in EXAMPLE_NAMES}


@pytest.fixture
def bc(ready: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the ready breast-cancer example."""
    return clone(ready["breast-cancer"], tmp_path)


def versions_dir(folder: Path, model: str = "breast-cancer") -> Path:
    return folder / REGISTRY / model / "versions"


def pointer(folder: Path, environment: str, model: str = "breast-cancer") -> dict[str, Any]:
    data = read_json(folder / REGISTRY / model / "environments" / f"{environment}.json")
    assert isinstance(data, dict)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_deploy_publishes_a_version_whose_checksums_verify(
    ready: dict[str, Path], tmp_path: Path, name: str
) -> None:
    folder = clone(ready[name], tmp_path)
    work = workdir(folder)
    assert invoke(folder, "report", "--no-post").code == 0  # records report.md's sha256

    result = invoke(folder, "deploy")

    assert result.code == 0, result.output
    stored = versions_dir(folder, name) / "1.0.0+1"
    assert f"deployed {name} 1.0.0+1 to staging: {stored}" in result.stdout
    manifest = read_json(stored / "manifest.json")
    shipped = {
        "model.joblib",
        "model.onnx",
        "metrics.json",
        "gates.json",
        "export.json",
        "report.md",
    }
    assert set(manifest["files"]) == shipped
    for file_name in shipped:
        assert manifest["files"][file_name]["sha256"] == sha256_file(work / file_name)
        assert (stored / file_name).read_bytes() == (work / file_name).read_bytes()
    assert manifest["model_sha256"] == read_json(work / "gates.json")["model_sha256"]
    assert pointer(folder, "staging", name) == {
        "version": "1.0.0+1",
        "previous": [],
        "updated_at": pointer(folder, "staging", name)["updated_at"],
    }
    verified = invoke(folder, "deploy", "--verify")
    assert verified.code == 0, verified.output
    assert f"verified {name} 1.0.0+1 in staging: 6 files match" in verified.stdout


@pytest.mark.slow
def test_second_deploy_makes_a_new_version_and_rollback_restores_the_first(bc: Path) -> None:
    assert invoke(bc, "deploy").code == 0
    first_model = sha256_file(workdir(bc) / "model.joblib")
    train_example(bc, C=0.5)
    prepare(bc)
    assert sha256_file(workdir(bc) / "model.joblib") != first_model

    second = invoke(bc, "deploy")

    assert second.code == 0, second.output
    assert "deployed breast-cancer 1.0.0+2 to staging" in second.stdout
    assert pointer(bc, "staging") | {"updated_at": None} == {
        "version": "1.0.0+2",
        "previous": ["1.0.0+1"],
        "updated_at": None,
    }

    back = invoke(bc, "deploy", "--rollback")

    assert back.code == 0, back.output
    assert "rolled back breast-cancer in staging: 1.0.0+1 is live now" in back.stdout
    live = pointer(bc, "staging")
    assert live["version"] == "1.0.0+1" and live["previous"] == []
    assert read_json(versions_dir(bc) / "1.0.0+1" / "manifest.json")["model_sha256"] == first_model
    again = invoke(bc, "deploy", "--rollback")
    assert again.code == 2 and "no earlier version to roll back to" in again.stderr


def test_production_promotes_the_version_live_in_staging(bc: Path) -> None:
    assert invoke(bc, "deploy", "-e", "staging").code == 0

    result = invoke(bc, "deploy", "-e", "production")

    assert result.code == 0, result.output
    assert "promoted breast-cancer 1.0.0+1 to production" in result.stdout
    assert sorted(p.name for p in versions_dir(bc).iterdir()) == ["1.0.0+1"]
    assert pointer(bc, "production")["version"] == pointer(bc, "staging")["version"] == "1.0.0+1"


def test_production_gets_a_new_version_for_a_model_staging_never_ran(bc: Path) -> None:
    result = invoke(bc, "deploy", "-e", "production")

    assert result.code == 0, result.output
    assert "deployed breast-cancer 1.0.0+1 to production" in result.stdout
    assert "is not the one live in staging" in result.stderr


@pytest.mark.parametrize(
    "verdict",
    [None, {"passed": False}],
    ids=["no-verdict", "failed-verdict"],
)
def test_refuses_a_model_without_a_passing_verdict(
    bc: Path, verdict: dict[str, Any] | None
) -> None:
    gates = workdir(bc) / "gates.json"
    if verdict is None:
        gates.unlink()
    else:
        gates.write_text(json.dumps({**read_json(gates), **verdict}))

    result = invoke(bc, "deploy")

    assert result.code == 1
    assert "gates.json" in result.stderr
    assert not (bc / REGISTRY).exists()


def test_refuses_a_model_changed_after_evaluation(bc: Path) -> None:
    model = workdir(bc) / "model.joblib"
    judged = read_json(workdir(bc) / "gates.json")["model_sha256"]
    with model.open("ab") as handle:
        handle.write(b"\0")

    result = invoke(bc, "deploy")

    assert result.code == 1
    assert (
        f"sha256 {sha256_file(model)} is not the model gates.json judged ({judged})"
        in result.stderr
    )
    assert not (bc / REGISTRY).exists()


def test_refuses_a_failed_or_tampered_export(bc: Path) -> None:
    record_path = workdir(bc) / "export.json"
    record = read_json(record_path)
    onnx_path = workdir(bc) / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")

    tampered = invoke(bc, "deploy")

    assert tampered.code == 1
    assert (
        f"sha256 {sha256_file(onnx_path)} does not match {record['onnx_sha256']}" in tampered.stderr
    )
    record_path.write_text(json.dumps({**record, "passed": False}))
    failed = invoke(bc, "deploy")
    assert failed.code == 1 and "failed its parity check" in failed.stderr
    assert not (bc / REGISTRY).exists()


def test_verify_detects_a_corrupted_registry_file(bc: Path) -> None:
    assert invoke(bc, "deploy").code == 0
    stored = versions_dir(bc) / "1.0.0+1" / "model.onnx"
    expected = sha256_file(stored)
    stored.write_bytes(b"corrupted")

    result = invoke(bc, "deploy", "--verify")

    assert result.code == 1
    assert f"{stored}: sha256 {sha256_file(stored)} does not match {expected}" in result.stderr


def test_unknown_environment_and_conflicting_options_are_usage_errors(bc: Path) -> None:
    unknown = invoke(bc, "deploy", "-e", "qa")
    assert unknown.code == 2
    assert "no environment 'qa' (environments: staging, production)" in unknown.stderr
    both = invoke(bc, "deploy", "--rollback", "--verify")
    assert both.code == 2 and "do not go together" in both.stderr
    nothing = invoke(bc, "deploy", "--verify")
    assert nothing.code == 2 and "nothing is deployed to staging" in nothing.stderr


@pytest.mark.slow
def test_concurrent_deploys_get_distinct_versions_and_consistent_pointers(bc: Path) -> None:
    spec = str(bc / "mlops.yaml")
    procs = [
        subprocess.Popen(
            [*cli_command(), "deploy", "--spec", spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs

    versions = sorted(p.name for p in versions_dir(bc).iterdir())
    assert versions == [f"1.0.0+{n}" for n in range(1, 5)]
    announced = sorted(out.split(" to staging")[0].split()[-1] for out, _ in outputs)
    assert announced == versions
    live = pointer(bc, "staging")
    assert sorted([live["version"], *live["previous"]]) == versions
    assert invoke(bc, "deploy", "--verify").code == 0
