"""Image: build the container image of the version an environment runs, push it to the
platform's container registry and record its digest in the environment's history.

The build context is what ``ci-mlops package`` writes (the version verified first);
buildah builds it without a daemon. A version whose image is already recorded (by an
earlier run, or by another environment) is not built again: the digest is recorded for
this environment too, so every environment runs the very image staging tested.

Credentials reach buildah on stdin only (``--password-stdin``) and its auth file lives
in a temporary folder removed afterwards: no token is on a command line, in the log or
left on disk.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_mlops import log
from ci_mlops.errors import CheckFailed, StepError
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps import deploy, package

BUILD_MINUTES = 30


@dataclass(frozen=True)
class Login:
    """A registry login: host, user, and the variable that holds the password."""

    host: str
    user: str
    secret: str  # the variable's name; its value is never printed


def platform_login(env: Mapping[str, str]) -> Login | None:
    """The CI platform's own registry login: GitLab's job token for ``$CI_REGISTRY``,
    GitHub's ``GITHUB_TOKEN`` for GHCR; None elsewhere (a local build pushes nowhere
    that needs one)."""
    if env.get("GITLAB_CI") and env.get("CI_REGISTRY") and env.get("CI_JOB_TOKEN"):
        return Login(
            env["CI_REGISTRY"], env.get("CI_REGISTRY_USER", "gitlab-ci-token"), "CI_JOB_TOKEN"
        )
    if env.get("GITHUB_ACTIONS") and env.get("GITHUB_TOKEN") and env.get("GITHUB_ACTOR"):
        return Login("ghcr.io", env["GITHUB_ACTOR"], "GITHUB_TOKEN")
    return None


def run(
    spec: Spec,
    model: Model,
    environment: str | None = None,
    destination: str | None = None,
    wheels: Path | None = None,
) -> dict[str, Any]:
    """Build, push and record the image of what ``environment`` (default: the first)
    runs. ``destination`` is where buildah pushes (default ``docker://<repository:tag>``;
    ``oci:DIR:TAG`` writes an OCI layout instead)."""
    env = deploy.environment_name(spec, model, environment)
    live = deploy.registry_of(spec, model).live(model, env)
    if live is None:
        raise StepError(f"{model.name}: nothing is deployed to {env}, so no image to build")
    recorded = package.recorded_image(spec, model, live.version, env)
    if recorded is not None:
        log.info(f"{model.name} {live.version}: image {recorded} was built already")
        return package.record_image(spec, model, env, recorded, version=live.version)
    with tempfile.TemporaryDirectory(prefix="ci-mlops-image-") as scratch:
        out = Path(scratch) / "context"
        packaged = package.run(
            spec, model, package.Options(out=out, version=live.version, wheels=wheels)
        )
        tag = str(packaged["tag"])
        target = destination or f"docker://{tag}"
        digest = _build_and_push(out, tag, target, Path(scratch), offline=wheels is not None)
    ref = f"{tag.rsplit(':', 1)[0]}@{digest}"
    return package.record_image(spec, model, env, ref, version=live.version)


def _build_and_push(
    context: Path, tag: str, destination: str, scratch: Path, *, offline: bool
) -> str:
    """The digest of the pushed image. An ``offline`` build (from wheels) gets no
    network at all, so it cannot quietly fetch what the wheels lack."""
    env = dict(os.environ)
    env.setdefault("BUILDAH_ISOLATION", "chroot")  # no daemon, no nested namespaces
    login = platform_login(os.environ)
    if login is not None:
        # The login lives in the scratch folder, removed with it.
        env["REGISTRY_AUTH_FILE"] = str(scratch / "auth.json")
        _buildah(
            ["login", "--username", login.user, "--password-stdin", login.host],
            env,
            stdin=os.environ[login.secret],
        )
    network = ["--network", "none"] if offline else []
    _buildah(["build", "--layers", *network, "--tag", tag, str(context)], env)
    digest_file = scratch / "digest"
    _buildah(["push", "--digestfile", str(digest_file), tag, destination], env)
    digest = digest_file.read_text("utf-8").strip()
    if not digest.startswith("sha256:"):
        raise CheckFailed(f"buildah push wrote no sha256 digest for {tag} ({digest!r})")
    return digest


def _buildah(args: list[str], env: dict[str, str], stdin: str | None = None) -> None:
    """Run buildah; its output goes to the job log (it prints no secret it was not
    given on a command line, and none is)."""
    try:
        done = subprocess.run(
            ["buildah", *args],
            env=env,
            input=stdin,
            text=True,
            timeout=BUILD_MINUTES * 60,
            check=False,
        )
    except FileNotFoundError:
        raise StepError("buildah is not installed; the image job needs it") from None
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"buildah {args[0]} took more than {BUILD_MINUTES} minutes") from None
    if done.returncode != 0:
        raise CheckFailed(f"buildah {args[0]} failed (exit {done.returncode}); see its output")
