"""``ci-mlops pin-images`` against a registry that answers as the OCI distribution spec
says (tests/fakes/oci_registry.py): the bearer-token challenge followed anonymously or
with credentials, digests written into the spec with its comments kept, ``--check``,
the errors that name the image and the URL, and the generated workflow that then runs
each image by digest and passes zizmor and actionlint without a suppression comment."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ci_mlops.errors import UsageError
from ci_mlops.generate.github import TAG_PINNED
from ci_mlops.generate.kinds import image_tag
from ci_mlops.generate.plan import build_plan
from ci_mlops.spec import load_spec
from ci_mlops.spec.edit import job_image_digests_edited
from tests.fakes.oci_registry import FakeOciRegistry, digest_of, index_manifest
from tests.helpers import copy_example, run_cli
from tests.linters import actionlint_findings, zizmor_findings

MODEL = "breast-cancer"
NAME = "ci-mlops/job"
OLD = "sha256:" + "0" * 64


@pytest.fixture
def registry() -> Iterator[FakeOciRegistry]:
    server = FakeOciRegistry().start()
    yield server
    server.stop()


def project(tmp_path: Path, repository: str) -> Path:
    """The example with ``runtime.job_images`` added by hand, a comment beside it."""
    folder = copy_example(MODEL, tmp_path)
    spec = folder / "mlops.yaml"
    text = spec.read_text("utf-8")
    line = '  python: "3.11"\n'
    assert line in text
    spec.write_text(
        text.replace(line, f"{line}  job_images: {repository}   # the team's mirror\n"), "utf-8"
    )
    return folder


def repository(registry: FakeOciRegistry) -> str:
    return f"127.0.0.1:{registry.port}/{NAME}"


def push_all(registry: FakeOciRegistry, folder: Path) -> dict[str, str]:
    """Push every job image the spec's jobs run in; their digests by image name."""
    spec = load_spec(folder / "mlops.yaml", check_files=False)
    images = spec.runtime.job_images
    assert images is not None
    tags = {n: image_tag(n, images.repository, "3.11") for n in build_plan(spec).job_image_names()}
    return {n: registry.push(NAME, tag.rsplit(":", 1)[1]) for n, tag in tags.items()}


def digests_in(folder: Path) -> dict[str, str]:
    runtime = yaml.safe_load((folder / "mlops.yaml").read_text("utf-8"))["runtime"]
    return dict(runtime.get("job_image_digests") or {})


def test_pins_every_job_image_through_the_bearer_challenge_and_keeps_the_spec_as_written(
    tmp_path: Path, registry: FakeOciRegistry
) -> None:
    folder = project(tmp_path, repository(registry))
    before = (folder / "mlops.yaml").read_text("utf-8")
    pushed = push_all(registry, folder)
    assert {"base", "train", "evaluate", "deploy"} <= set(pushed)

    result = run_cli("pin-images", cwd=folder)

    assert result.code == 0, result.output
    assert digests_in(folder) == pushed
    lines = result.stdout.splitlines()
    assert len(lines) == len(pushed)
    for name, digest in pushed.items():
        assert f"{name}: {repository(registry)}:" in result.stdout
        assert f"-py3.11-{name}@{digest} (new)" in result.stdout
    after = (folder / "mlops.yaml").read_text("utf-8")
    # Every line the user wrote is still there, the comment beside job_images too.
    assert [
        line
        for line in after.splitlines()
        if "job_image_digests" not in line and "sha256:" not in line
    ] == before.splitlines()
    assert "# the team's mirror\n  job_image_digests:\n    base: sha256:" in after
    # Anonymous: the first manifest was refused with a challenge, then every one was
    # read with the token the realm gave without credentials.
    heads = registry.calls("manifest-head")
    assert len(heads) == len(pushed) + 1
    assert "authorization" not in heads[0].headers
    assert all(r.headers["authorization"].startswith("Bearer ") for r in heads[1:])
    # One token serves every image of the repository.
    tokens = registry.calls("token")
    assert len(tokens) == 1 and "authorization" not in tokens[0].headers
    assert tokens[0].query["scope"] == f"repository:{NAME}:pull"


def test_generate_then_runs_github_jobs_by_digest_with_no_suppression_and_lints_clean(
    tmp_path: Path, registry: FakeOciRegistry
) -> None:
    folder = project(tmp_path, repository(registry))
    pushed = push_all(registry, folder)
    unpinned = run_cli("generate", cwd=folder)
    assert unpinned.code == 0, unpinned.output
    assert "ci-mlops pin-images" in unpinned.stderr
    workflow = folder / ".github/workflows/mlops.yml"
    assert TAG_PINNED.removeprefix("# ") in workflow.read_text("utf-8")

    assert run_cli("pin-images", cwd=folder).code == 0
    pinned = run_cli("generate", cwd=folder)

    assert pinned.code == 0, pinned.output
    assert "pin-images" not in pinned.stderr
    text = workflow.read_text("utf-8")
    assert "zizmor" not in text
    images = [
        job["container"]["image"]
        for job in yaml.safe_load(text)["jobs"].values()
        if "container" in job
    ]
    assert images
    for image in images:
        name = image.split("@")[0].rsplit("-py3.11-", 1)[1]
        assert image.endswith(f"@{pushed[name]}"), image
    gitlab = yaml.safe_load((folder / ".gitlab-ci.yml").read_text("utf-8"))
    assert gitlab[f"{MODEL}:train"]["image"].endswith(f"@{pushed['train']}")
    assert zizmor_findings([workflow]) == []
    assert actionlint_findings([workflow]) == []


def test_check_exits_1_when_a_tag_moved_and_writes_nothing(
    tmp_path: Path, registry: FakeOciRegistry
) -> None:
    folder = project(tmp_path, repository(registry))
    push_all(registry, folder)
    assert run_cli("pin-images", cwd=folder).code == 0
    assert run_cli("pin-images", "--check", cwd=folder).code == 0
    pinned = (folder / "mlops.yaml").read_text("utf-8")
    spec = load_spec(folder / "mlops.yaml", check_files=False)
    tag = image_tag("train", repository(registry), "3.11").rsplit(":", 1)[1]
    moved = registry.push(NAME, tag, index_manifest("rebuilt"))

    result = run_cli("pin-images", "--check", cwd=folder)

    assert result.code == 1, result.output
    assert "differs from the registry for train;" in result.stderr
    assert "ci-mlops pin-images" in result.stderr
    assert f"train: {image_tag('train', repository(registry), '3.11')}@{moved} (was " in (
        result.stdout
    )
    assert (folder / "mlops.yaml").read_text("utf-8") == pinned
    assert spec.runtime.job_images is not None and spec.runtime.job_images.digests["train"] != moved
    # Without --check the moved digest is written, and only it changes.
    assert run_cli("pin-images", cwd=folder).code == 0
    assert digests_in(folder)["train"] == moved


def test_a_missing_tag_names_the_image_and_the_url_and_writes_nothing(
    tmp_path: Path, registry: FakeOciRegistry
) -> None:
    folder = project(tmp_path, repository(registry))
    pushed = push_all(registry, folder)
    del registry.repositories[NAME].tags[image_tag("deploy", "r", "3.11").rsplit(":", 1)[1]]
    before = (folder / "mlops.yaml").read_text("utf-8")

    result = run_cli("pin-images", cwd=folder)

    assert result.code == 2, result.output
    url = f"http://127.0.0.1:{registry.port}/v2/{NAME}/manifests/"
    assert "job image deploy: no tag " in result.stderr
    assert url in result.stderr and "-py3.11-deploy (404)" in result.stderr
    assert "Traceback" not in result.stderr
    assert (folder / "mlops.yaml").read_text("utf-8") == before
    assert "deploy" in pushed


def test_a_private_mirror_takes_the_token_from_the_environment_and_never_prints_it(
    tmp_path: Path, registry: FakeOciRegistry
) -> None:
    folder = project(tmp_path, repository(registry))
    pushed = push_all(registry, folder)
    secret = "glpat-not-for-logs-0123456789"
    registry.repositories[NAME].credentials = ("deployer", secret)

    anonymous = run_cli("pin-images", cwd=folder)
    assert anonymous.code == 2, anonymous.output
    assert "token request to" in anonymous.stderr and "answered 401" in anonymous.stderr

    wrong = {"MLOPS_REGISTRY_TOKEN": secret[::-1], "MLOPS_REGISTRY_USER": "deployer"}
    refused = run_cli("pin-images", "--debug", cwd=folder, env=wrong)
    assert refused.code != 0 and "answered 401" in refused.output
    assert "Traceback" in refused.stderr  # --debug shows it, and still no token in it
    assert secret[::-1] not in refused.output
    assert base64.b64encode(f"deployer:{secret[::-1]}".encode()).decode() not in refused.output

    env = {"MLOPS_REGISTRY_TOKEN": secret, "MLOPS_REGISTRY_USER": "deployer"}
    result = run_cli("pin-images", "--debug", cwd=folder, env=env)

    assert result.code == 0, result.output
    assert digests_in(folder) == pushed
    assert secret not in result.output
    assert all(r.headers["authorization"].startswith("Basic ") for r in registry.calls("token")[1:])


def test_without_the_digest_header_the_digest_is_that_of_the_manifest_bytes(
    tmp_path: Path,
) -> None:
    server = FakeOciRegistry(send_digest_header=False).start()
    try:
        folder = project(tmp_path, repository(server))
        pushed = push_all(server, folder)
        result = run_cli("pin-images", cwd=folder)
    finally:
        server.stop()
    assert result.code == 0, result.output
    assert digests_in(folder) == pushed
    manifest = next(iter(server.repositories[NAME].tags.values()))
    assert digest_of(manifest) in pushed.values()


def test_an_unreachable_registry_and_a_spec_without_job_images_exit_2(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the command runs
    folder = project(tmp_path / "a", f"127.0.0.1:{port}/{NAME}")
    result = run_cli("pin-images", cwd=folder)
    assert result.code == 2, result.output
    assert f"registry unreachable at http://127.0.0.1:{port}/v2/{NAME}/manifests/" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr

    plain = copy_example(MODEL, tmp_path / "b")
    result = run_cli("pin-images", cwd=plain)
    assert result.code == 2, result.output
    assert "runtime.job_images is not set" in result.stderr


def test_other_registries_are_reached_over_https_only() -> None:
    from ci_mlops.generate.pin import ImageRef

    assert ImageRef.parse("ghcr.io/ci-mlops/ci-mlops-job:1.0-py3.11-base").manifest_url == (
        "https://ghcr.io/v2/ci-mlops/ci-mlops-job/manifests/1.0-py3.11-base"
    )
    assert ImageRef.parse("docker.io/me/job:t").manifest_url == (
        "https://registry-1.docker.io/v2/me/job/manifests/t"
    )
    assert ImageRef.parse("localhost:5000/me/job:t").manifest_url.startswith("http://localhost")


SPEC = """\
runtime:
  python: "3.11"   # the jobs' Python
  job_images: published
{digests}
  # what follows stays
  timeout_minutes: 20
models: []
"""
NEW = {"train": "sha256:" + "1" * 64, "base": "sha256:" + "2" * 64}


@pytest.mark.parametrize(
    "digests",
    [
        "",
        "  job_image_digests: {}",
        f"  job_image_digests: {{base: {OLD}}}  # old",
        f"  job_image_digests:\n    # pinned by hand\n    base: {OLD}\n    deploy: {OLD}",
    ],
    ids=["absent", "empty", "flow", "block"],
)
def test_the_digests_edit_touches_only_their_own_lines(digests: str) -> None:
    text = SPEC.format(digests=digests).replace("\n\n", "\n")
    out = job_image_digests_edited(text, NEW)
    expected = SPEC.format(
        digests=f"  job_image_digests:\n    base: {NEW['base']}\n    train: {NEW['train']}"
    )
    assert out == expected


def test_a_flow_runtime_is_refused_rather_than_rewritten() -> None:
    with pytest.raises(UsageError, match=r"mlops.yaml:1: runtime is not a block mapping"):
        job_image_digests_edited("runtime: {job_images: published}\nmodels: []\n", NEW)


def test_an_expired_token_is_replaced_by_a_new_one_from_the_realm(
    registry: FakeOciRegistry,
) -> None:
    from ci_mlops.generate.pin import Registry

    base, train = (
        image_tag(n, f"127.0.0.1:{registry.port}/{NAME}", "3.11") for n in ("base", "train")
    )
    pushed = [registry.push(NAME, ref.rsplit(":", 1)[1]) for ref in (base, train)]
    client = Registry()
    assert client.digest("base", base) == pushed[0]
    registry.expire_tokens()
    assert client.digest("train", train) == pushed[1]
    assert len(registry.calls("token")) == 2
    assert [r.headers.get("authorization", "")[:7] for r in registry.calls("manifest-head")] == [
        "",
        "Bearer ",
        "Bearer ",  # the expired one: refused with a new challenge
        "Bearer ",
    ]
