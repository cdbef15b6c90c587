"""The image of each deployed version, recorded by digest in the environment's history:
`package` writes manifests that run it, production runs the image staging recorded for
the same version, and after a rollback the manifests run the previous version's image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import run_cli
from tests.steps.trained import clone, invoke

NAME = "breast-cancer"
REPOSITORY = "registry.example.com/ml/breast-cancer"
FIRST = f"{REPOSITORY}@sha256:{'1' * 64}"
SECOND = f"{REPOSITORY}@sha256:{'2' * 64}"


def images(out: Path) -> list[str]:
    """The image each manifest runs: the Deployment's and the InferenceService's."""
    deployment, _ = yaml.safe_load_all((out / "manifests" / "deployment.yaml").read_text())
    (isvc,) = yaml.safe_load_all((out / "manifests" / "inferenceservice.yaml").read_text())
    run: Any = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    storage: Any = isvc["spec"]["predictor"]["model"]["storageUri"]
    return [run, storage.removeprefix("oci://")]


@pytest.fixture
def recorded(exported: Path, tmp_path: Path) -> Path:
    """Staging ran 1.0.0+1 (image FIRST) and now runs 1.0.0+2 (image SECOND)."""
    folder = clone(exported, tmp_path / "recorded")
    for image in (FIRST, SECOND):
        assert invoke(folder, "deploy").code == 0
        result = run_cli("record-image", "-e", "staging", "--image", image, cwd=folder)
        assert result.code == 0, result.output
    return folder


def test_manifests_run_the_recorded_image_and_the_previous_one_after_a_rollback(
    recorded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "context"
    result = run_cli("package", "-e", "staging", "--image", REPOSITORY, "--out", out, cwd=recorded)
    assert result.code == 0, result.output
    assert images(out) == [SECOND, SECOND]
    assert f"buildah build -t {REPOSITORY}:1.0.0_2" in result.stdout

    assert invoke(recorded, "deploy", "--rollback").code == 0
    assert run_cli("package", "-e", "staging", "--out", out, cwd=recorded).code == 0
    assert images(out) == [FIRST, FIRST]


def test_production_runs_the_image_staging_recorded_for_the_same_version(
    recorded: Path, tmp_path: Path
) -> None:
    assert invoke(recorded, "deploy", "--environment", "production").code == 0
    out = tmp_path / "context"
    assert run_cli("package", "-e", "production", "--out", out, cwd=recorded).code == 0
    assert images(out) == [SECOND, SECOND]


def test_a_version_without_a_recorded_image_runs_its_tag(recorded: Path, tmp_path: Path) -> None:
    assert invoke(recorded, "deploy").code == 0  # 1.0.0+3, no image recorded yet
    out = tmp_path / "context"
    assert run_cli("package", "--image", REPOSITORY, "--out", out, cwd=recorded).code == 0
    assert images(out) == [f"{REPOSITORY}:1.0.0_3"] * 2


def test_recording_is_refused_for_a_version_the_environment_does_not_run(recorded: Path) -> None:
    result = run_cli(
        "record-image", "-e", "staging", "--version", "1.0.0+1", "--image", FIRST, cwd=recorded
    )
    assert result.code == 2
    assert "1.0.0+1" in result.stderr and "1.0.0+2" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(
        "record-image", "-e", "staging", "--image", f"{REPOSITORY}:1.0.0_2", cwd=recorded
    )
    assert result.code == 2
    assert "not an image reference by digest" in result.stderr
    result = run_cli("record-image", "-e", "production", "--image", FIRST, cwd=recorded)
    assert result.code == 2
    assert "nothing is deployed to production" in result.stderr
