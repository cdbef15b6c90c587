"""Deploy: publish the judged model to its registry (``deploy.target``, see
:mod:`ci_mlops.registries`) and point an environment at it; roll an environment back; verify what an environment runs.

A model is deployed only with a passing verdict (gates.json) for its exact sha256, and
only with an ONNX export that passed and still matches export.json. What is published is
signed (see :mod:`ci_mlops.steps.signing`). An environment after the first (production
after staging) takes only the version live in the environment before it, and only when
it holds this very model file, unless ``force`` says otherwise (recorded in the
environment's history). Every version an environment is about to point at, by a
deploy, a promotion or a rollback, is re-hashed from the registry's stored bytes and its
signature and signer checked first; ``verify`` does the same for what is live.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_mlops import log
from ci_mlops.atomic import artifact_sha256, sha256_file
from ci_mlops.errors import CheckFailed, IntegrityError, StepError, UsageError
from ci_mlops.platforms.detect import current_platform
from ci_mlops.records import (
    ExportRecord,
    GatesRecord,
    MetricsRecord,
    Record,
    ReportRecord,
    require_recorded,
    require_sha256,
)
from ci_mlops.registries import Published, Registry, registry_for
from ci_mlops.spec.model import Model, Spec
from ci_mlops.steps import signing

# What a version holds besides the model file, in the order a reader looks for them.
COMPANIONS = ("model.onnx", "metrics.json", "gates.json", "export.json", "report.md")
# Step records published as they are: each must be a JSON object in a regular file.
RECORDS: dict[str, type[Record]] = {r.FILE: r for r in (MetricsRecord, GatesRecord, ExportRecord)}


def run(
    spec: Spec,
    model: Model,
    environment: str | None = None,
    rollback: bool = False,
    verify: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Deploy ``model`` to ``environment`` (default: the spec's first environment).

    ``rollback`` points the environment back at its previous version instead;
    ``verify`` re-checks the version live there. ``force`` lets a later environment take
    a model the one before it does not run. Raises CheckFailed when the model may not
    ship (no passing verdict, changed files, a bad signature)."""
    if rollback and verify:
        raise UsageError("--rollback and --verify do not go together: run one, then the other")
    env = _environment(spec, model, environment)
    registry = _registry(spec, model)
    if verify:
        return verify_environment(spec, model, env, registry)
    trust = _policy(spec, model, registry)
    with _scratch() as scratch:
        if rollback:
            return _rollback(registry, model, env, trust, scratch)
        files = _deployable(spec, model)
        with registry.exclusive(model):
            published, action = _place(spec, registry, model, env, files, trust, scratch, force)
            if action != "promoted":  # a promoted version was verified by _place
                _trusted(registry, model, published.version, trust, scratch)
            registry.promote(model, env, published.version, forced=action == "forced")
    print(f"{action} {model.name} {published.version} to {env}: {published.location}")
    return {
        "environment": env,
        "version": published.version,
        "location": published.location,
        "action": action,
    }


def verify(spec: Spec, model: Model, environment: str | None = None) -> list[dict[str, Any]]:
    """Verify the version live in ``environment`` (default: every environment with a
    version); CheckFailed names the first file, signature or signer that is wrong."""
    registry = _registry(spec, model)
    names = (
        [_environment(spec, model, environment)]
        if environment
        else [e.name for e in model.deploy.environments]
    )
    results = []
    for env in names:
        if environment is None and registry.live(model, env) is None:
            continue
        results.append(verify_environment(spec, model, env, registry))
    if not results:
        raise UsageError(
            f"{model.name}: nothing is deployed to any environment, so nothing to verify"
        )
    return results


def verify_environment(spec: Spec, model: Model, env: str, registry: Registry) -> dict[str, Any]:
    live = registry.live(model, env)
    if live is None:
        raise UsageError(f"{model.name}: nothing is deployed to {env}, so nothing to verify")
    trust = _policy(spec, model, registry)
    with _scratch() as scratch:
        checked = _trusted(registry, model, live.version, trust, scratch)
    signed = f", signed by {trust.describe()}" if trust else " (no signing policy: hashes only)"
    print(
        f"verified {model.name} {checked.version} in {env}: "
        f"{len(checked.files)} files match their checksums{signed} ({checked.location})"
    )
    return {"environment": env, "version": checked.version, "action": "verified"}


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ci-mlops-deploy-") as folder:
        yield Path(folder)


def _environment(spec: Spec, model: Model, environment: str | None) -> str:
    names = [e.name for e in model.deploy.environments]
    if environment is None:
        return names[0]
    if environment not in names:
        raise UsageError(
            f"{spec.path}: model {model.name} has no environment {environment!r} "
            f"(environments: {', '.join(names)})"
        )
    return environment


def _registry(spec: Spec, model: Model) -> Registry:
    return registry_for(spec, model, current_platform())


def registry_of(spec: Spec, model: Model) -> Registry:
    """The registry ``model`` deploys to, from this machine or job."""
    return _registry(spec, model)


def environment_name(spec: Spec, model: Model, environment: str | None) -> str:
    """``environment``, checked against the model's, or the first one when None."""
    return _environment(spec, model, environment)


def _policy(spec: Spec, model: Model, registry: Registry) -> signing.Policy | None:
    """Who must have signed what ``registry`` holds: the pipeline of the CI platform the
    registry belongs to (GitLab's packages, GitHub's releases), else of the platform this
    job runs on; a laptop's local folder needs no signer (see :func:`signing.policy`)."""
    platform = registry.platforms[0] if registry.platforms else current_platform()
    return signing.policy(spec, model, platform)


def _trusted(
    registry: Registry, model: Model, version: str, trust: signing.Policy | None, scratch: Path
) -> Published:
    """Re-hash ``version``'s stored bytes and verify its signature and signer; the
    checked version, whose ``files`` are the hashes just computed."""
    into = scratch / "verify" / version
    into.mkdir(parents=True, exist_ok=True)
    checked = registry.verify(model, version, into=into)
    if trust is not None:
        folder = checked.folder or into
        signing.verify(folder, trust, f"{model.name} {version}", scratch / "keys")
    return checked


def _rollback(
    registry: Registry, model: Model, env: str, trust: signing.Policy | None, scratch: Path
) -> dict[str, Any]:
    version = registry.rollback(
        model, env, check=lambda v: _trusted(registry, model, v, trust, scratch)
    )
    print(f"rolled back {model.name} in {env}: {version} is live now")
    return {"environment": env, "version": version, "action": "rolled back"}


def _place(
    spec: Spec,
    registry: Registry,
    model: Model,
    env: str,
    files: dict[str, Path],
    trust: signing.Policy | None,
    scratch: Path,
    force: bool,
) -> tuple[Published, str]:
    """The version live in the environment before ``env`` when it holds this very model
    file (verified first); otherwise a new signed version, which only the first
    environment (or ``force``) takes."""
    names = [e.name for e in model.deploy.environments]
    index = names.index(env)
    model_sha = sha256_file(files[model.model_file])
    action = "deployed"
    if index > 0:
        before = names[index - 1]
        earlier = registry.live(model, before)
        if earlier is not None:
            checked = _trusted(registry, model, earlier.version, trust, scratch)
            if checked.files.get(model.model_file) == model_sha:
                return checked, "promoted"
        held = (
            f"{before} runs {earlier.version} (model sha256 {earlier.files.get(model.model_file)})"
            if earlier is not None
            else f"nothing is deployed to {before}"
        )
        if not force:
            raise CheckFailed(
                f"{model.name}: {env} takes only a model that {before} runs, and {held}; "
                f"this model has sha256 {model_sha}: deploy it to {before} first, or pass "
                "--force (recorded in the environment's history)"
            )
        log.warn(
            f"{model.name}: --force: deploying to {env} a model {before} does not run ({held})"
        )
        action = "forced"
    _pre_deploy_check(spec, model, files)
    signed = signing.sign(files, scratch / "sign", required=trust is not None)
    version = model.version + registry.version_suffix()
    return registry.publish(model, version, signed), action


def _pre_deploy_check(spec: Spec, model: Model, files: dict[str, Path]) -> None:
    """Run the candidate in the real prediction service before it is published (see
    :mod:`ci_mlops.serve.check`); CheckFailed when it answers differently or too slowly."""
    if "model.onnx" not in files:
        log.info(f"{model.name}: no ONNX export (export.onnx: false), so no pre-deploy check")
        return
    from ci_mlops.serve import check

    workdir = spec.workdir(model)
    check.run(model, workdir, ExportRecord.read(workdir))


@dataclass(frozen=True)
class Servable:
    """A registry version's model.onnx, read after its files, signature and signer were
    verified; ``sha256`` is the verified hash the bytes must have."""

    version: str
    onnx: bytes
    sha256: str
    trust: str
    location: str = ""  # where the registry keeps it


def servable(
    spec: Spec, model: Model, environment: str | None = None, version: str | None = None
) -> Servable:
    """The model.onnx of ``version`` (default: what ``environment``, by default the
    first one, points at), verified as a deploy verifies what it promotes."""
    registry = _registry(spec, model)
    if version is None:
        env = _environment(spec, model, environment)
        live = registry.live(model, env)
        if live is None:
            raise UsageError(f"{model.name}: nothing is deployed to {env}, so nothing to serve")
        version = live.version
    trust = _policy(spec, model, registry)
    with _scratch() as scratch:
        checked = _trusted(registry, model, version, trust, scratch)
        expected = checked.files.get("model.onnx")
        if expected is None:
            raise UsageError(
                f"{model.name} {version} has no model.onnx to serve (export.onnx was off)"
            )
        onnx = ((checked.folder or scratch / "verify" / version) / "model.onnx").read_bytes()
    signed = f"signed by {trust.describe()}" if trust else "no signing policy: hashes only"
    return Servable(
        version=checked.version,
        onnx=onnx,
        sha256=expected,
        trust=signed,
        location=checked.location,
    )


def _deployable(spec: Spec, model: Model) -> dict[str, Path]:
    """The files to publish, after proving the model may ship; CheckFailed otherwise."""
    workdir = spec.workdir(model)
    model_path = workdir / model.model_file
    if not model_path.is_file():
        raise StepError(f"{model_path}: no trained model; run `ci-mlops train` first")
    model_sha = artifact_sha256(workdir, model.model_file)
    _require_verdict(workdir, model_path, model_sha)
    exported = _require_export(workdir, model, model_path, model_sha)
    files = {model.model_file: model_path}
    for name in COMPANIONS:
        if name == "model.onnx" and not exported:
            continue
        present = (workdir / name).is_file() or (workdir / name).is_symlink()
        if present and _vouched_for(workdir, name):
            files.setdefault(name, workdir / name)
    return files


def _vouched_for(workdir: Path, name: str) -> bool:
    """Publish a companion only when it is a regular file inside the model's folder and
    its content is what a step recorded: records must parse, metrics.json must have the
    sha256 gates.json recorded, report.md the one report.json recorded (model.onnx was
    checked against export.json already). Anything else is left out with a warning."""
    try:
        if name in RECORDS:
            RECORDS[name].read(workdir)
        if name == "metrics.json":
            gates = GatesRecord.read(workdir)
            require_recorded(workdir, name, gates.metrics_sha256, GatesRecord.FILE)
        elif name == "report.md":
            report = ReportRecord.read(workdir)
            require_recorded(workdir, name, report.report_sha256, ReportRecord.FILE)
        return True
    except (StepError, IntegrityError) as exc:
        log.warn(f"{exc}; not published")
        return False


def _require_verdict(workdir: Path, model_path: Path, model_sha: str) -> None:
    gates = GatesRecord.at(workdir)
    if not gates.is_file():
        raise CheckFailed(f"{gates}: no verdict for this model; run `ci-mlops evaluate` first")
    verdict = GatesRecord.read(workdir)
    if not verdict.passed:
        raise CheckFailed(f"{gates}: the model failed its quality gates; it may not be deployed")
    hint = f"{gates.name} judged another model; run `ci-mlops evaluate` again"
    require_sha256(model_path, model_sha, verdict.model_sha256, gates.name, hint=hint)


def _require_export(workdir: Path, model: Model, model_path: Path, model_sha: str) -> bool:
    """Check the ONNX export of this model; True when model.onnx is to ship with it."""
    record_path = ExportRecord.at(workdir)
    if not model.export.onnx:
        return False
    if not record_path.is_file():
        raise CheckFailed(f"{record_path}: not found; run `ci-mlops export` before deploying")
    record = ExportRecord.read(workdir)
    if record.skipped:
        raise CheckFailed(
            f"{record_path}: written with ONNX export off; run `ci-mlops export` again"
        )
    if not record.passed:
        raise CheckFailed(
            f"{record_path}: the ONNX export failed its parity check; it may not be deployed"
        )
    hint = f"{record_path.name} exported another model; run `ci-mlops export` again"
    require_sha256(model_path, model_sha, record.model_sha256, record_path.name, hint=hint)
    onnx_path = workdir / "model.onnx"
    if not onnx_path.is_file():
        raise CheckFailed(f"{onnx_path}: not found, but {record_path.name} says it was exported")
    require_recorded(
        workdir,
        "model.onnx",
        record.onnx_sha256,
        record_path.name,
        hint="the file changed after export",
    )
    return True


def run_local(spec: Spec, model: Model, *, environment: str | None, force: bool) -> None:
    """What ``ci-mlops run`` calls for this step's job. Deploy to ``environment``."""
    run(spec, model, environment=environment, rollback=False)
