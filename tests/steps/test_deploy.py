"""Deploy through the CLI on trained, evaluated and exported copies of the examples:
versions with verifiable manifests, rollback, promotion to production, refusals of
models that may not ship, registry corruption, and concurrent deploys."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops.atomic import sha256_file
from ci_mlops.registries.local import RegistryFolder
from ci_mlops.steps import signing
from tests.helpers import EXAMPLE_NAMES, cli_command, make_key_pair
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


def test_production_refuses_a_model_staging_never_ran_unless_forced(bc: Path) -> None:
    refused = invoke(bc, "deploy", "-e", "production")

    assert refused.code == 1
    model_sha = sha256_file(workdir(bc) / "model.joblib")
    assert (
        "production takes only a model that staging runs, and nothing is deployed to staging; "
        f"this model has sha256 {model_sha}"
    ) in refused.stderr
    assert not versions_dir(bc).exists()

    forced = invoke(bc, "deploy", "-e", "production", "--force")

    assert forced.code == 0, forced.output
    assert "forced breast-cancer 1.0.0+1 to production" in forced.stdout
    assert "--force: deploying to production a model staging does not run" in forced.stderr
    assert pointer(bc, "production")["forced"] == ["1.0.0+1"]


def test_production_refuses_a_model_other_than_the_one_in_staging(bc: Path) -> None:
    assert invoke(bc, "deploy", "-e", "staging").code == 0
    staged = sha256_file(workdir(bc) / "model.joblib")
    train_example(bc, C=0.5)
    prepare(bc)

    result = invoke(bc, "deploy", "-e", "production")

    assert result.code == 1
    assert f"staging runs 1.0.0+1 (model sha256 {staged})" in result.stderr
    assert not (bc / REGISTRY / "breast-cancer" / "environments" / "production.json").exists()


def test_promotion_re_hashes_the_stored_bytes(bc: Path) -> None:
    """``printf EVIL > versions/1.0.0+1/model.joblib``, then promote: refused."""
    assert invoke(bc, "deploy", "-e", "staging").code == 0
    stored = versions_dir(bc) / "1.0.0+1" / "model.joblib"
    recorded = sha256_file(stored)
    stored.write_bytes(b"EVIL")

    result = invoke(bc, "deploy", "-e", "production")

    assert result.code == 1
    evil = sha256_file(stored)
    assert f"{stored}: sha256 {evil} does not match {recorded} in manifest.json" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (bc / REGISTRY / "breast-cancer" / "environments" / "production.json").exists()


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
        f"{model}: sha256 {sha256_file(model)} does not match {judged} in gates.json; "
        "gates.json judged another model; run `ci-mlops evaluate` again"
    ) in result.stderr
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


def test_companions_that_changed_after_their_step_are_left_out(bc: Path) -> None:
    work = workdir(bc)
    assert invoke(bc, "report", "--no-post").code == 0
    metrics, report = work / "metrics.json", work / "report.md"
    recorded = {
        "metrics.json": read_json(work / "gates.json")["metrics_sha256"],
        "report.md": read_json(work / "report.json")["report_sha256"],
    }
    metrics.write_text(metrics.read_text() + " ")
    report.write_text(report.read_text() + "edited\n")

    result = invoke(bc, "deploy")

    assert result.code == 0, result.output
    for path, recorded_in in ((metrics, "gates.json"), (report, "report.json")):
        assert (
            f"{path}: sha256 {sha256_file(path)} does not match {recorded[path.name]} in "
            f"{recorded_in}; not published"
        ) in result.stderr
    manifest = read_json(versions_dir(bc) / "1.0.0+1" / "manifest.json")
    assert set(manifest["files"]) == {"model.joblib", "model.onnx", "gates.json", "export.json"}


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


# -- signed versions ---------------------------------------------------------------------


@pytest.fixture
def signed(bc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ready example whose spec names a public key; the private half is in
    MLOPS_SIGNING_KEY, as only default-branch deploys would have it."""
    private, public = make_key_pair(tmp_path / "secrets")
    (bc / "keys").mkdir()
    (bc / "keys" / "deploy.pub").write_bytes(public.read_bytes())
    spec_file = bc / "mlops.yaml"
    data = yaml.safe_load(spec_file.read_text("utf-8"))
    data["models"][0]["deploy"] = {"signing": {"public_key": "keys/deploy.pub"}}
    spec_file.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    monkeypatch.setenv("MLOPS_SIGNING_KEY", str(private))
    return bc


def rewrite_stored_model(folder: Path, version: str) -> tuple[Path, str, str]:
    """Replace the stored model and fix its manifest entry, as someone with write access
    to the registry would; return the file, its signed and its new sha256."""
    stored = versions_dir(folder) / version / "model.joblib"
    signed_sha = sha256_file(stored)
    stored.write_bytes(b"EVIL")
    manifest_path = stored.parent / "manifest.json"
    manifest = read_json(manifest_path)
    manifest["files"]["model.joblib"]["sha256"] = manifest["model_sha256"] = sha256_file(stored)
    manifest_path.write_text(json.dumps(manifest))
    return stored, signed_sha, sha256_file(stored)


def test_a_signed_version_is_promoted_and_verified(signed: Path) -> None:
    deployed = invoke(signed, "deploy")
    assert deployed.code == 0, deployed.output
    stored = versions_dir(signed) / "1.0.0+1"
    assert "model.sig" in read_json(stored / "manifest.json")["files"]
    assert set(signing.signed_digests(stored / "model.sig")) == {
        "model.joblib",
        "model.onnx",
        "metrics.json",
        "gates.json",
        "export.json",
    }

    promoted = invoke(signed, "deploy", "-e", "production")
    verified = invoke(signed, "verify")

    assert promoted.code == 0, promoted.output
    assert "promoted breast-cancer 1.0.0+1 to production" in promoted.stdout
    assert verified.code == 0, verified.output
    for env in ("staging", "production"):
        assert (
            f"verified breast-cancer 1.0.0+1 in {env}: 6 files match their checksums, signed "
            "by the public key from deploy.signing.public_key (keys/deploy.pub)"
        ) in verified.stdout


def test_stored_bytes_edited_with_their_manifest_are_refused_everywhere(signed: Path) -> None:
    assert invoke(signed, "deploy").code == 0
    train_example(signed, C=0.5)
    prepare(signed)
    assert invoke(signed, "deploy").code == 0  # 1.0.0+2 in staging, 1.0.0+1 before it
    stored, signed_sha, evil_sha = rewrite_stored_model(signed, "1.0.0+1")
    expected = f"{stored}: sha256 {evil_sha} does not match {signed_sha} in model.sig"

    rollback = invoke(signed, "deploy", "--rollback")
    assert rollback.code == 1 and expected in rollback.stderr
    assert pointer(signed, "staging")["version"] == "1.0.0+2"

    assert invoke(signed, "deploy", "--rollback", "-e", "staging").code == 1
    stored2, signed2, evil2 = rewrite_stored_model(signed, "1.0.0+2")
    promote = invoke(signed, "deploy", "-e", "production")
    assert promote.code == 1
    assert f"{stored2}: sha256 {evil2} does not match {signed2} in model.sig" in promote.stderr
    assert not (signed / REGISTRY / "breast-cancer" / "environments" / "production.json").exists()

    verify = invoke(signed, "verify", "-e", "staging")
    assert verify.code == 1
    assert f"breast-cancer 1.0.0+2: {stored2}: sha256 {evil2}" in verify.stderr


def test_a_version_signed_by_anyone_else_is_never_promoted(signed: Path, tmp_path: Path) -> None:
    """What a merge-request pipeline can do with a job token: publish a version of its
    own (signed with its own key, or not at all) and point staging at it."""
    registry = RegistryFolder(signed / REGISTRY)
    attacker, _ = make_key_pair(tmp_path / "attacker")
    files = {n: workdir(signed) / n for n in ("model.joblib", "metrics.json", "gates.json")}
    forged = signing.sign(files, tmp_path / "s", True, {"MLOPS_SIGNING_KEY": str(attacker)})
    for version, content in (("1.0.0+1", forged), ("1.0.0+2", files)):
        registry.publish("breast-cancer", version, content, model_file="model.joblib", source={})
        registry.promote("breast-cancer", "staging", version)
        if version == "1.0.0+1":
            first = invoke(signed, "deploy", "-e", "production")
            assert first.code == 1
            assert (
                "breast-cancer 1.0.0+1: model.sig was not signed by the public key from "
                "deploy.signing.public_key (keys/deploy.pub)"
            ) in first.stderr

    unsigned = invoke(signed, "deploy", "-e", "production")
    assert unsigned.code == 1
    assert "breast-cancer 1.0.0+2: not signed (no model.sig)" in unsigned.stderr
    assert invoke(signed, "verify").code == 1
    assert not (signed / REGISTRY / "breast-cancer" / "environments" / "production.json").exists()


def test_without_the_private_key_nothing_is_published(
    signed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLOPS_SIGNING_KEY")

    result = invoke(signed, "deploy")

    assert result.code == 2
    assert "no way to sign this version: set MLOPS_SIGNING_KEY" in result.stderr
    assert not versions_dir(signed).exists()
