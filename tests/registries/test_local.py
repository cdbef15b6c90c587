"""The local deploy target: a registry folder with checksummed versions, environment
pointers, an exclusive lock, and baselines read from what is live."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ci_mlops.atomic import sha256_file
from ci_mlops.errors import CheckFailed, PlatformError, StepError, UsageError
from ci_mlops.platforms.local import LocalPlatform
from ci_mlops.registries import registry_for
from ci_mlops.registries.local import LocalRegistry, RegistryFolder
from ci_mlops.spec.check import load_spec
from ci_mlops.spec.model import Model, Spec
from tests.helpers import copy_example, git, make_git_repo

NAME = "breast-cancer"


@pytest.fixture
def spec(tmp_path: Path) -> Spec:
    return load_spec(copy_example(NAME, tmp_path) / "mlops.yaml")


@pytest.fixture
def model(spec: Spec) -> Model:
    return spec.models[0]


@pytest.fixture
def registry(spec: Spec) -> LocalRegistry:
    found = registry_for(spec, spec.models[0], "local")
    assert isinstance(found, LocalRegistry)
    return found


def artifacts(folder: Path, accuracy: float = 0.95, tag: str = "a") -> dict[str, Path]:
    """Files a deploy publishes; ``tag`` makes the model bytes differ between builds."""
    folder.mkdir(parents=True, exist_ok=True)
    content = {
        "model.joblib": f"model bytes {tag}",
        "model.onnx": f"onnx bytes {tag}",
        "metrics.json": json.dumps({"metrics": {"accuracy": accuracy, "f1": accuracy - 0.01}}),
        "gates.json": json.dumps({"passed": True}),
        "report.md": "# card\n",
    }
    for name, text in content.items():
        (folder / name).write_text(text)
    return {name: folder / name for name in content}


def registry_dir(spec: Spec) -> Path:
    return spec.root / ".mlops-registry" / NAME


def test_publish_stores_files_with_a_manifest_that_verifies(
    registry: LocalRegistry, model: Model, spec: Spec, tmp_path: Path
) -> None:
    files = artifacts(tmp_path / "build")

    published = registry.publish(model, "1.0.0", files)

    folder = registry_dir(spec) / "versions" / "1.0.0+1"
    assert published.version == "1.0.0+1"
    assert Path(published.location) == folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == NAME and manifest["version"] == "1.0.0+1"
    assert set(manifest["files"]) == set(files)
    for name, source in files.items():
        assert (folder / name).read_bytes() == source.read_bytes()
        assert manifest["files"][name] == {
            "sha256": sha256_file(source),
            "size": source.stat().st_size,
        }
        assert published.files[name] == sha256_file(source)
    assert manifest["model_sha256"] == sha256_file(files["model.joblib"])
    assert manifest["source"]["spec"] == "mlops.yaml"  # no local folder names
    assert manifest["source"]["git_commit"] is None  # tmp_path is no repository
    assert registry.verify(model, "1.0.0+1").files == published.files
    assert not list((registry_dir(spec) / "versions").glob(".tmp-*"))


def test_manifest_records_the_git_commit(tmp_path: Path) -> None:
    repo = make_git_repo(copy_example(NAME, tmp_path))
    spec = load_spec(repo / "mlops.yaml")
    registry = LocalRegistry(spec)

    registry.publish(spec.models[0], "1.0.0", artifacts(tmp_path / "build"))

    manifest = json.loads(
        (registry_dir(spec) / "versions" / "1.0.0+1" / "manifest.json").read_text()
    )
    assert manifest["source"]["git_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert manifest["source"]["spec"] == "mlops.yaml"


def test_manifest_records_the_spec_relative_to_the_repository(tmp_path: Path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    folder = copy_example(NAME, repo / "models")
    spec = load_spec(folder / "mlops.yaml")

    LocalRegistry(spec).publish(spec.models[0], "1.0.0", artifacts(tmp_path / "build"))

    manifest = json.loads(
        (registry_dir(spec) / "versions" / "1.0.0+1" / "manifest.json").read_text()
    )
    assert manifest["source"]["spec"] == f"models/{folder.name}/mlops.yaml"
    assert str(tmp_path) not in json.dumps(manifest)


def test_build_numbers_count_per_spec_version(
    registry: LocalRegistry, model: Model, tmp_path: Path
) -> None:
    files = artifacts(tmp_path / "build")
    made = [registry.publish(model, v, files).version for v in ("1.0.0", "1.0.0", "1.1.0", "1.0.0")]
    assert made == ["1.0.0+1", "1.0.0+2", "1.1.0+1", "1.0.0+3"]
    assert RegistryFolder(registry_dir(registry.spec).parent).versions(NAME) == made
    with pytest.raises(PlatformError, match=r"version 1\.0\.0\+2 of breast-cancer already exists"):
        registry.publish(model, "1.0.0+2", files)


def test_interrupted_publish_leaves_no_version(
    registry: LocalRegistry, model: Model, spec: Spec, tmp_path: Path
) -> None:
    files = artifacts(tmp_path / "build")
    files["report.md"].unlink()  # disappears between listing and copying

    with pytest.raises(StepError, match=r"report\.md: file to publish not found"):
        registry.publish(model, "1.0.0", files)

    versions = registry_dir(spec) / "versions"
    assert list(versions.iterdir()) == []
    # A publish killed mid-copy leaves a .tmp- folder; the next publish sweeps it.
    (versions / ".tmp-killed").mkdir()
    (versions / ".tmp-killed" / "model.joblib").write_text("half")
    del files["report.md"]
    assert registry.publish(model, "1.0.0", files).version == "1.0.0+1"
    assert sorted(p.name for p in versions.iterdir()) == ["1.0.0+1"]


def test_promote_and_rollback_move_the_pointer(
    registry: LocalRegistry, model: Model, spec: Spec, tmp_path: Path
) -> None:
    for tag in "abc":
        registry.publish(model, "1.0.0", artifacts(tmp_path / tag, tag=tag))
    pointer = registry_dir(spec) / "environments" / "staging.json"

    for version in ("1.0.0+1", "1.0.0+2", "1.0.0+3"):
        registry.promote(model, "staging", version)
    record = json.loads(pointer.read_text())
    assert record["version"] == "1.0.0+3"
    assert record["previous"] == ["1.0.0+2", "1.0.0+1"]
    assert record["updated_at"]

    registry.promote(model, "staging", "1.0.0+3")  # already live: history unchanged
    assert json.loads(pointer.read_text())["previous"] == ["1.0.0+2", "1.0.0+1"]

    assert registry.rollback(model, "staging") == "1.0.0+2"
    assert registry.rollback(model, "staging") == "1.0.0+1"
    live = registry.live(model, "staging")
    assert live is not None and live.version == "1.0.0+1"
    with pytest.raises(UsageError, match="no earlier version to roll back to"):
        registry.rollback(model, "staging")
    with pytest.raises(UsageError, match="nothing is deployed to production"):
        registry.rollback(model, "production")
    with pytest.raises(PlatformError, match=r"no version 9\.9\.9\+1"):
        registry.promote(model, "staging", "9.9.9+1")
    assert registry.live(model, "production") is None


def test_verify_names_a_changed_file_and_both_hashes(
    registry: LocalRegistry, model: Model, spec: Spec, tmp_path: Path
) -> None:
    files = artifacts(tmp_path / "build")
    registry.publish(model, "1.0.0", files)
    stored = registry_dir(spec) / "versions" / "1.0.0+1"
    (stored / "model.onnx").write_bytes(b"tampered")
    (stored / "report.md").unlink()

    with pytest.raises(CheckFailed) as caught:
        registry.verify(model, "1.0.0+1")

    message = str(caught.value)
    assert f"{stored / 'model.onnx'}: sha256 {sha256_file(stored / 'model.onnx')}" in message
    assert sha256_file(files["model.onnx"]) in message
    assert f"{stored / 'report.md'}: missing" in message
    assert "model.joblib" not in message


def test_baseline_is_the_live_version_else_the_latest(
    registry: LocalRegistry, model: Model, tmp_path: Path
) -> None:
    assert registry.baseline(model) is None
    registry.publish(model, "1.0.0", artifacts(tmp_path / "a", accuracy=0.91))
    registry.publish(model, "1.0.0", artifacts(tmp_path / "b", accuracy=0.97, tag="b"))

    latest = registry.baseline(model)
    assert latest is not None
    assert latest.metrics == {"accuracy": 0.97, "f1": pytest.approx(0.96)}
    assert latest.source == "local registry breast-cancer 1.0.0+2 (latest)"

    registry.promote(model, "staging", "1.0.0+1")  # staging is the first environment
    live = registry.baseline(model)
    assert live is not None and live.metrics["accuracy"] == 0.91
    assert live.source == "local registry breast-cancer 1.0.0+1 (live in staging)"


def test_metric_history_lists_the_published_versions_oldest_first(
    registry: LocalRegistry, model: Model, spec: Spec, tmp_path: Path
) -> None:
    assert registry.metric_history(model) == []
    for i, accuracy in enumerate((0.91, 0.93, 0.95)):
        registry.publish(model, "1.0.0", artifacts(tmp_path / f"b{i}", accuracy, tag=f"t{i}"))
    history = registry.metric_history(model, limit=2)
    assert [v for v, _ in history] == ["1.0.0+2", "1.0.0+3"]
    assert [m["accuracy"] for _, m in history] == [0.93, 0.95]
    # A version whose metrics.json cannot be read is left out, not fatal.
    (registry_dir(spec) / "versions" / "1.0.0+3" / "metrics.json").write_text("{")
    assert [v for v, _ in registry.metric_history(model)] == ["1.0.0+1", "1.0.0+2"]


def test_importance_ranking_travels_with_the_baseline(
    registry: LocalRegistry, model: Model, tmp_path: Path
) -> None:
    files = artifacts(tmp_path / "a")
    data = json.loads(files["metrics.json"].read_text())
    data["importance"] = {"metric": "accuracy", "ranking": ["worst_radius", "mean_texture"]}
    files["metrics.json"].write_text(json.dumps(data))
    registry.publish(model, "1.0.0", files)
    baseline = registry.baseline(model)
    assert baseline is not None and baseline.importance == ("worst_radius", "mean_texture")


def test_no_report_to_post_and_no_pipeline_to_trigger(model: Model, spec: Spec) -> None:
    platform = LocalPlatform(spec)
    before = sorted(p.name for p in spec.root.iterdir())
    assert platform.post_report(model, "# report", []) is None
    assert sorted(p.name for p in spec.root.iterdir()) == before
    with pytest.raises(UsageError, match=r"ci-mlops run --force --model breast-cancer"):
        platform.trigger_retrain(model, "drift in mean_radius")


def test_names_that_would_leave_the_registry_are_refused(
    registry: LocalRegistry, model: Model, tmp_path: Path
) -> None:
    files = artifacts(tmp_path / "build")
    with pytest.raises(PlatformError, match="cannot be a registry file name"):
        registry.publish(model, "1.0.0", {"../escape": files["model.joblib"]})
    with pytest.raises(PlatformError, match="cannot be a registry version"):
        registry.promote(model, "staging", "../../etc")
    with pytest.raises(PlatformError, match="the registry writes this file itself"):
        registry.publish(model, "1.0.0", {"manifest.json": files["gates.json"]})


def test_lock_keeps_other_processes_out(registry: LocalRegistry, model: Model) -> None:
    folder = registry.folder(model)
    probe = textwrap.dedent(
        f"""
        import fcntl, os, sys
        fd = os.open({str(folder.model_dir(NAME) / ".lock")!r}, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(3)
        sys.exit(0)
        """
    )
    with folder.locked(NAME), folder.locked(NAME):  # re-entrant in one process
        held = subprocess.run([sys.executable, "-c", probe], check=False)
    free = subprocess.run([sys.executable, "-c", probe], check=False)
    assert (held.returncode, free.returncode) == (3, 0)


def test_concurrent_publishes_get_distinct_versions(
    registry: LocalRegistry, spec: Spec, tmp_path: Path
) -> None:
    artifacts(tmp_path / "build")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from ci_mlops.registries.local import LocalRegistry
        from ci_mlops.spec.check import load_spec
        spec = load_spec({str(spec.path)!r})
        model = spec.models[0]
        registry = LocalRegistry(spec)
        build = Path({str(tmp_path / "build")!r})
        files = {{p.name: p for p in build.iterdir()}}
        for _ in range(3):
            with registry.exclusive(model):
                version = registry.publish(model, "1.0.0", files).version
                registry.promote(model, "staging", version)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]

    versions = registry.folder(spec.models[0]).versions(NAME)
    assert sorted(versions, key=lambda v: int(v.split("+")[1])) == [
        f"1.0.0+{n}" for n in range(1, 13)
    ]
    record = json.loads((registry_dir(spec) / "environments" / "staging.json").read_text())
    # Every promotion is remembered: none was lost to a concurrent read-modify-write.
    assert sorted([record["version"], *record["previous"]]) == sorted(versions)
    for version in versions:
        registry.verify(spec.models[0], version)


def test_history_lists_versions_newest_first_with_forced_and_annotations(
    registry: LocalRegistry, model: Model, tmp_path: Path
) -> None:
    for tag in ("a", "b", "c"):
        registry.publish(model, "1.0.0", artifacts(tmp_path / tag, tag=tag))
    registry.promote(model, "staging", "1.0.0+1")
    registry.annotate(model, "staging", "1.0.0+1", {"image": "registry.example/m@sha256:1"})
    registry.promote(model, "staging", "1.0.0+2", forced=True)
    registry.annotate(model, "staging", "1.0.0+2", {"image": "registry.example/m@sha256:2"})
    registry.promote(model, "staging", "1.0.0+3")

    entries = registry.history(model, "staging")

    assert [(e["version"], e["forced"], e.get("image")) for e in entries] == [
        ("1.0.0+3", False, None),
        ("1.0.0+2", True, "registry.example/m@sha256:2"),
        ("1.0.0+1", False, "registry.example/m@sha256:1"),
    ]
    assert entries[0]["at"] and entries[1]["at"] is None
    # A rollback returns to a version whose fields are still there.
    assert registry.rollback(model, "staging") == "1.0.0+2"
    assert registry.history(model, "staging")[0]["image"] == "registry.example/m@sha256:2"
    assert registry.history(model, "production") == []


def test_annotate_refuses_a_version_that_is_not_live(
    registry: LocalRegistry, model: Model, tmp_path: Path
) -> None:
    registry.publish(model, "1.0.0", artifacts(tmp_path / "a"))
    with pytest.raises(UsageError, match=r"staging runs nothing, not 1\.0\.0\+1"):
        registry.annotate(model, "staging", "1.0.0+1", {"image": "x"})
    registry.promote(model, "staging", "1.0.0+1")
    with pytest.raises(UsageError, match=r"staging runs 1\.0\.0\+1, not 1\.0\.0\+9"):
        registry.annotate(model, "staging", "1.0.0+9", {"image": "x"})
