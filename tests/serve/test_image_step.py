"""How `ci-mlops image` drives buildah in a GitLab job: the job token reaches `buildah
login` on stdin only and never the output, the login file goes with the job's scratch
folder, the image is pushed to $CI_REGISTRY_IMAGE/<model>:<tag> and the pushed digest
recorded; a version built once is not built again.

buildah here is a stand-in script that records how it was called: what it would build
is built for real in test_image_build.py, which cannot log in anywhere."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import run_cli
from tests.steps.trained import clone, invoke

NAME = "breast-cancer"
TOKEN = "glcbt-secret-job-token-value"
DIGEST = "sha256:" + "c" * 64
FAKE = """#!{python}
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "--password-stdin" in args else None
auth = os.environ.get("REGISTRY_AUTH_FILE")
if args[0] == "login" and auth:
    open(auth, "w").write("{{}}")
if args[0] == "push":
    open(args[args.index("--digestfile") + 1], "w").write("{digest}\\n")
with open({log!r}, "a") as log:
    log.write(json.dumps({{"args": args, "stdin": stdin, "auth": auth}}) + "\\n")
"""


@pytest.fixture
def gitlab_job(exported: Path, tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """The example deployed to staging (local registry), a stand-in buildah on PATH
    and a GitLab job's variables."""
    folder = clone(exported, tmp_path / "job")
    spec = yaml.safe_load((folder / "mlops.yaml").read_text("utf-8"))
    spec["models"][0]["deploy"] = {"target": "local", "image": {}}
    (folder / "mlops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), "utf-8")
    assert invoke(folder, "deploy").code == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "buildah.jsonl"
    fake = bin_dir / "buildah"
    fake.write_text(FAKE.format(python=sys.executable, digest=DIGEST, log=str(calls)))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITLAB_CI": "true",
        "CI_REGISTRY": "registry.example.com",
        "CI_REGISTRY_IMAGE": "registry.example.com/group/project",
        "CI_REGISTRY_USER": "gitlab-ci-token",
        "CI_JOB_TOKEN": TOKEN,
    }
    return folder, env, calls


def recorded(calls: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_the_job_token_goes_to_buildah_on_stdin_and_the_digest_is_recorded(
    gitlab_job: tuple[Path, dict[str, str], Path],
) -> None:
    folder, env, calls = gitlab_job
    result = run_cli("image", "-e", "staging", cwd=folder, env=env)
    assert result.code == 0, result.output
    assert TOKEN not in result.output
    login, build, push = recorded(calls)
    assert login["args"] == [
        "login",
        "--username",
        "gitlab-ci-token",
        "--password-stdin",
        "registry.example.com",
    ]
    assert login["stdin"] == TOKEN
    assert all(TOKEN not in " ".join(c["args"]) for c in (login, build, push))
    assert not Path(login["auth"]).exists()  # gone with the scratch folder
    tag = f"registry.example.com/group/project/{NAME}:1.0.0_1"
    assert build["args"][:4] == ["build", "--layers", "--tag", tag]
    assert push["args"][-2:] == [tag, f"docker://{tag}"]
    staging = folder / ".mlops-registry" / NAME / "environments" / "staging.json"
    image = f"registry.example.com/group/project/{NAME}@{DIGEST}"
    assert json.loads(staging.read_text())["annotations"]["1.0.0+1"] == {"image": image}


def test_a_version_built_once_is_recorded_again_not_rebuilt(
    gitlab_job: tuple[Path, dict[str, str], Path],
) -> None:
    folder, env, calls = gitlab_job
    assert run_cli("image", "-e", "staging", cwd=folder, env=env).code == 0
    assert invoke(folder, "deploy", "--environment", "production").code == 0
    result = run_cli("image", "-e", "production", cwd=folder, env=env)
    assert result.code == 0, result.output
    assert [c["args"][0] for c in recorded(calls)] == ["login", "build", "push"]
    production = folder / ".mlops-registry" / NAME / "environments" / "production.json"
    image = f"registry.example.com/group/project/{NAME}@{DIGEST}"
    assert json.loads(production.read_text())["annotations"]["1.0.0+1"] == {"image": image}


def test_a_failed_build_records_nothing(
    gitlab_job: tuple[Path, dict[str, str], Path], tmp_path: Path
) -> None:
    folder, env, _ = gitlab_job
    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "buildah").write_text("#!/bin/sh\nexit 3\n")
    (failing / "buildah").chmod(0o755)
    env = {**env, "PATH": f"{failing}{os.pathsep}{os.environ['PATH']}"}
    result = run_cli("image", "-e", "staging", cwd=folder, env=env)
    assert result.code == 1
    assert "buildah login failed (exit 3)" in result.stderr
    assert TOKEN not in result.output
    staging = folder / ".mlops-registry" / NAME / "environments" / "staging.json"
    assert "image" not in staging.read_text()
