"""runtime.job_images: every job runs in the job image of its kind, which holds ci-mlops
with the kind's extras and uv, so its install line finds everything installed. The
generated files for such a spec (GitLab ``image:`` per job, GitHub ``container:`` and no
setup-python), the combinations the spec refuses, and that the images the generator names
are the ones the project builds and publishes (locks, Containerfile, release workflow)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci_mlops import __version__
from ci_mlops.generate.kinds import KINDS, PLATFORMS, job_images
from ci_mlops.local_ci import prepare
from ci_mlops.spec import load_spec
from ci_mlops.spec.model import DEFAULT_JOB_IMAGES, DEFAULT_TEMPLATES_GITHUB, JOB_IMAGE_PYTHONS
from tests.helpers import REPO, copy_example, run_cli
from tests.linters import (
    actionlint_findings,
    github_workflow_errors,
    gitlab_schema_errors,
    zizmor_findings,
)

MODEL = "breast-cancer"
IMAGES = REPO / "images" / "job"
RELEASE_WORKFLOW = REPO / ".github/workflows/job-images.yml"
DIGEST = "sha256:" + "ab" * 32
INSTALLER_CACHE_VARIABLES = {"PIP_CACHE_DIR", "UV_CACHE_DIR"}


def project_with(tmp_path: Path, runtime: dict[str, Any], example: str = MODEL) -> Path:
    """The example with ``runtime`` settings added to its spec."""
    folder = copy_example(example, tmp_path)
    spec = folder / "mlops.yaml"
    data = yaml.safe_load(spec.read_text("utf-8"))
    data.setdefault("runtime", {}).update(runtime)
    spec.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return folder


def generate(folder: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    result = run_cli("generate", *args, cwd=folder)
    assert result.code == 0, result.output
    gitlab = yaml.safe_load((folder / ".gitlab-ci.yml").read_text("utf-8"))
    github = yaml.safe_load((folder / ".github/workflows/mlops.yml").read_text("utf-8"))
    return gitlab, github


def tag(name: str, repository: str = DEFAULT_JOB_IMAGES, python: str = "3.11") -> str:
    return f"{repository}:{__version__}-py{python}-{name}"


def kind_of(job_name: str) -> str:
    """``breast-cancer:deploy-staging`` -> ``deploy``; the validate job -> ``validate``."""
    suffix = job_name.rsplit(":", 1)[-1].removeprefix(f"{MODEL}-").removeprefix("ci-mlops-")
    return next(k for k in sorted(KINDS, key=len, reverse=True) if suffix.startswith(k))


def gitlab_jobs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc.items() if isinstance(v, dict) and "script" in v}


def test_published_images_put_each_gitlab_job_in_its_kinds_image_without_installer_caches(
    tmp_path: Path,
) -> None:
    gitlab, _ = generate(project_with(tmp_path, {"job_images": "published"}))
    jobs = gitlab_jobs(gitlab)
    assert f"ghcr.io/{DEFAULT_TEMPLATES_GITHUB}-job" == DEFAULT_JOB_IMAGES
    assert {"ci-mlops:validate", f"{MODEL}:train", f"{MODEL}:deploy-staging"} <= set(jobs)
    for name, job in jobs.items():
        image = KINDS[kind_of(name)].job_image
        assert image is not None
        assert job["image"] == tag(image.name), name
        # The image's uv is used as it is: pip starts only if it is missing.
        assert job["before_script"][0] == (
            "python -I -m uv --version 2>/dev/null | grep -qF 'uv 0.13.8 ' "
            "|| python -I -m pip install uv==0.13.8"
        )
        assert job["before_script"][1].startswith("python -I -m uv pip install --no-config")
        assert "python -I -m uv cache prune --ci" not in job["before_script"]
        assert not INSTALLER_CACHE_VARIABLES & set(job["variables"]), name
        caches = [c["key"] for c in job.get("cache", [])]
        # Only train's model cache is left: nothing to restore for the installer.
        assert caches == ([f"ci-mlops-{MODEL}-model"] if name.endswith(":train") else []), name
    # Each job still installs what its kind needs, plus the project's requirements.
    assert "'ci-mlops[ml,plots,gitlab]==" in jobs[f"{MODEL}:evaluate"]["before_script"][1]
    assert "-r requirements.txt" in jobs[f"{MODEL}:train"]["before_script"][1]
    assert gitlab_schema_errors(tmp_path / MODEL / ".gitlab-ci.yml") == []


def test_published_images_run_github_jobs_in_containers_without_setup_python(
    tmp_path: Path,
) -> None:
    folder = project_with(tmp_path, {"job_images": "published"})
    _, github = generate(folder)
    for job_id, job in github["jobs"].items():
        image = KINDS[kind_of(job_id)].job_image
        assert image is not None
        assert job["container"] == {"image": tag(image.name)}, job_id
        uses = [step.get("uses", "") for step in job["steps"]]
        assert not any(u.startswith("actions/setup-python") for u in uses), job_id
        # No installer cache; train keeps its model cache.
        caches = [s["with"]["path"] for s in job["steps"] if "actions/cache" in s.get("uses", "")]
        assert caches == ([f".ci-mlops/{MODEL}/"] if job_id.endswith("-train") else []), job_id
        install = next(s for s in job["steps"] if s.get("name") == "Install ci-mlops")
        assert install["run"].startswith(
            "python -I -m uv --version 2>/dev/null | grep -qF 'uv 0.13.8 ' || "
        )
    workflow = folder / ".github/workflows/mlops.yml"
    text = workflow.read_text("utf-8")
    # Pinned by release tag; zizmor's pedantic persona asks for digests, and the line
    # says where they come from.
    assert text.count("# zizmor: ignore[unpinned-images]") == len(github["jobs"])
    assert github_workflow_errors(workflow) == []
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []


def test_a_mirror_with_digests_pins_each_image_by_tag_and_digest(tmp_path: Path) -> None:
    mirror = "registry.example.com:5000/platform/ci-mlops-job"
    digests = {name: DIGEST for name in job_images()}
    folder = project_with(
        tmp_path, {"job_images": mirror, "job_image_digests": digests, "python": "3.12"}
    )
    gitlab, github = generate(folder)
    for name, job in gitlab_jobs(gitlab).items():
        image = KINDS[kind_of(name)].job_image
        assert image is not None
        assert job["image"] == f"{tag(image.name, mirror, '3.12')}@{DIGEST}", name
    for job in github["jobs"].values():
        assert job["container"]["image"].startswith(f"{mirror}:{__version__}-py3.12-")
        assert job["container"]["image"].endswith(f"@{DIGEST}")
    workflow = folder / ".github/workflows/mlops.yml"
    assert "zizmor: ignore" not in workflow.read_text("utf-8")
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []
    assert gitlab_schema_errors(folder / ".gitlab-ci.yml") == []


def test_an_explicit_pip_installer_is_kept_in_job_images(tmp_path: Path) -> None:
    gitlab, _ = generate(project_with(tmp_path, {"job_images": "published", "installer": "pip"}))
    for job in gitlab_jobs(gitlab).values():
        assert job["before_script"][0].startswith("python -I -m pip install ")
        assert "cache" not in job or job["cache"][0]["key"].endswith("-model")


def test_the_image_building_job_keeps_the_specs_image_and_the_runner(tmp_path: Path) -> None:
    """buildah needs the runner (GitHub) or Debian's package (GitLab): no job image."""
    folder = project_with(tmp_path, {"job_images": "published"})
    spec = folder / "mlops.yaml"
    data = yaml.safe_load(spec.read_text("utf-8"))
    data["models"][0].setdefault("deploy", {})["image"] = {}
    spec.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    gitlab, github = generate(folder)
    image_job = gitlab[f"{MODEL}:image"]
    assert image_job["image"] == "python:3.11-slim"
    assert "buildah" in " ".join(image_job["before_script"])
    assert "container" not in github["jobs"][f"{MODEL}-image"]
    uses = [s.get("uses", "") for s in github["jobs"][f"{MODEL}-image"]["steps"]]
    assert any(u.startswith("actions/setup-python") for u in uses)


def test_the_matrix_layouts_plan_jobs_run_in_the_base_image(tmp_path: Path) -> None:
    gitlab, github = generate(
        project_with(tmp_path, {"job_images": "published", "layout": "matrix"})
    )
    assert gitlab["ci-mlops:plan"]["image"] == tag("base")
    assert not INSTALLER_CACHE_VARIABLES & set(gitlab["ci-mlops:plan"]["variables"])
    plan = github["jobs"]["plan"]
    assert plan["container"] == {"image": tag("base")}
    assert not any(s.get("uses", "").startswith("actions/setup-python") for s in plan["steps"])
    assert github["jobs"]["train"]["container"] == {"image": tag("train")}


@pytest.mark.parametrize(
    ("runtime", "where", "says"),
    [
        ({"image": "python:3.11"}, "$.runtime.image", "give image or job_images, not both"),
        (
            {"install": "ci-mlops[{extras}] @ git+https://example.com/ci-mlops.git"},
            "$.runtime.install",
            f"names ci-mlops[{{extras}}]=={__version__}",
        ),
        ({"install": "ci-mlops[{extras}]==0.0.9"}, "$.runtime.install", "as released"),
        ({"python": "3.10"}, "$.runtime.python", "built for Python 3.11, 3.12, 3.13"),
    ],
)
def test_combinations_job_images_cannot_serve_are_refused_with_their_line(
    tmp_path: Path, runtime: dict[str, str], where: str, says: str
) -> None:
    folder = project_with(tmp_path, {"job_images": "published", **runtime})
    result = run_cli("generate", cwd=folder)
    assert result.code == 2, result.output
    (line,) = [ln for ln in result.output.splitlines() if where in ln]
    assert re.match(r"^mlops\.yaml:\d+:\d+: ", line), line
    assert says in line
    assert "Traceback" not in result.output
    assert not (folder / ".gitlab-ci.yml").read_text("utf-8").count("ci-mlops-job")


def test_an_index_option_may_come_with_the_released_install(tmp_path: Path) -> None:
    install = f"--index-url https://pypi.example.com/simple ci-mlops[{{extras}}]=={__version__}"
    gitlab, _ = generate(project_with(tmp_path, {"job_images": "published", "install": install}))
    line = gitlab[f"{MODEL}:data-test"]["before_script"][1]
    assert line.endswith(
        f"--index-url https://pypi.example.com/simple 'ci-mlops[data]=={__version__}'"
    )


def test_digests_without_job_images_and_include_mode_are_refused(tmp_path: Path) -> None:
    folder = project_with(tmp_path / "a", {"job_image_digests": {"train": DIGEST}})
    result = run_cli("validate", cwd=folder)
    assert result.code == 2
    assert "$.runtime.job_image_digests: job_image_digests pins job images" in result.output
    folder = project_with(tmp_path / "b", {"job_images": "published"})
    result = run_cli("generate", "--platform", "gitlab", "--mode", "include", cwd=folder)
    assert result.code == 2
    assert "runtime.job_images needs --mode inline" in result.output
    bad = project_with(
        tmp_path / "c", {"job_image_digests": {"trian": DIGEST}, "job_images": "published"}
    )
    result = run_cli("validate", cwd=bad)
    assert result.code == 2 and "trian" in result.output


def test_try_runs_this_ci_mlops_rather_than_the_images(tmp_path: Path) -> None:
    """``ci-mlops try`` installs this ci-mlops in its copy's jobs: the images would hold
    the released one (and the copy's install setting would be refused with them)."""
    folder = project_with(tmp_path, {"job_images": "published", "job_image_digests": {}})
    install = f"{REPO}[{{extras}}]"
    copy = prepare(load_spec(folder / "mlops.yaml"), "gitlab", tmp_path / "try", install)
    runtime = yaml.safe_load(copy.read_text("utf-8"))["runtime"]
    assert "job_images" not in runtime and "job_image_digests" not in runtime
    pipeline = (tmp_path / "try" / ".gitlab-ci.yml").read_text("utf-8")
    assert "ci-mlops-job" not in pipeline
    assert f"pip install '{REPO}[data]'" in pipeline


# --- the images the generator names are the ones the project builds -------------------


def test_every_kinds_image_holds_the_kinds_extras_on_both_platforms() -> None:
    for kind in KINDS.values():
        if kind.job_image is None:
            continue
        for platform in PLATFORMS:
            missing = set(kind.extras_on(platform)) - set(kind.job_image.extras)
            assert not missing, (kind.name, platform, missing)


def test_each_image_has_its_lock_written_from_its_extras() -> None:
    locks = {p.stem: p for p in (IMAGES / "locks").glob("*.txt")}
    assert set(locks) == set(job_images())
    for name, image in job_images().items():
        text = locks[name].read_text("utf-8")
        first = text.splitlines()[0]
        assert first == f"# job image: {name}; extras: {','.join(image.extras) or '-'}"
        assert "\nuv==0.13.8 \\\n" in text  # the uv the install lines expect
        # Every requirement carries its hashes: pip and uv install it --require-hashes.
        lines = text.splitlines()
        pinned = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z0-9._-]+==", line)]
        assert len(pinned) > 5
        assert all(lines[i + 1].strip().startswith("--hash=sha256:") for i in pinned)
        assert "/tmp" not in text  # written the same on every machine


def test_all_locks_share_one_version_of_each_package() -> None:
    """A model trained in the train image loads in evaluate's and export's."""
    seen: dict[tuple[str, str], set[str]] = {}
    pin = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)(?: ; (.+?))? \\$", re.M)
    for lock in (IMAGES / "locks").glob("*.txt"):
        for name, version, marker in pin.findall(lock.read_text("utf-8")):
            seen.setdefault((name.lower(), marker), set()).add(version)
    assert {n: v for n, v in seen.items() if len(v) > 1} == {}
    assert ("scikit-learn", "") in seen


def test_the_containerfile_installs_the_named_images_lock() -> None:
    text = (IMAGES / "Containerfile").read_text("utf-8")
    assert "ARG PYTHON=" in text and "ARG IMAGE=base" in text
    assert "FROM docker.io/library/python:${PYTHON}-slim" in text
    assert "COPY images/job/locks/${IMAGE}.txt " in text
    assert "--require-hashes --no-deps -r " in text


def test_the_release_workflow_builds_every_image_for_every_python() -> None:
    doc = yaml.safe_load(RELEASE_WORKFLOW.read_text("utf-8"))
    # yaml 1.1 reads the "on" key as True.
    assert doc[True] == {"push": {"tags": ["v*"]}}
    assert doc["permissions"] == {}
    matrix = doc["jobs"]["image"]["strategy"]["matrix"]
    assert matrix["image"] == sorted(job_images())
    assert matrix["python"] == list(JOB_IMAGE_PYTHONS)
    grants = {job_id: job["permissions"] for job_id, job in doc["jobs"].items()}
    assert grants == {
        "wheel": {"contents": "read"},
        "image": {"contents": "read", "packages": "write"},
    }
    build = doc["jobs"]["image"]["steps"][-1]["run"]
    assert "-f images/job/Containerfile" in build
    assert "buildah push" in build
    assert not any(
        "uses" in s and not s["uses"].startswith("actions/")
        for job in doc["jobs"].values()
        for s in job["steps"]
    )


def test_the_release_workflow_passes_schema_zizmor_and_actionlint() -> None:
    assert github_workflow_errors(RELEASE_WORKFLOW) == []
    assert zizmor_findings([RELEASE_WORKFLOW]) == []
    assert actionlint_findings([RELEASE_WORKFLOW]) == []


def test_the_schema_lists_the_images_that_take_a_digest() -> None:
    schema = json.loads((REPO / "ci_mlops/spec/schema.json").read_text("utf-8"))
    digests = schema["properties"]["runtime"]["properties"]["job_image_digests"]
    assert digests["propertyNames"]["enum"] == sorted(job_images())


def test_the_projects_gitlab_pipeline_publishes_the_same_images_on_a_release_tag() -> None:
    doc = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text("utf-8"))
    job = doc["job-images"]
    assert job["rules"] == [{"if": "$CI_COMMIT_TAG =~ /^v/"}]
    (matrix,) = job["parallel"]["matrix"]
    assert matrix == {"PYTHON": list(JOB_IMAGE_PYTHONS), "IMAGE": sorted(job_images())}
    script = "\n".join(job["script"])
    assert "-f images/job/Containerfile" in script
    assert "${CI_REGISTRY_IMAGE}/job:${version}-py${PYTHON}-${IMAGE}" in script
    # The registry password reaches buildah on its standard input, never a command line.
    assert '"$CI_REGISTRY_PASSWORD" | buildah login' in script
    assert "--password-stdin" in script
