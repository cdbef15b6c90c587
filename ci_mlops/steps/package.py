"""Package: the build context of a container image for one verified registry version,
and the cluster manifests that run it (see :mod:`ci_mlops.serve.container`).

The version's files are verified as a deploy verifies what it promotes (stored hashes,
signature, signer) before its ``model.onnx`` is copied into the context. The output
folder is written completely beside its target and renamed into place, so it holds the
old package or the new one, never half of either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci_mlops import atomic
from ci_mlops.errors import StepError, UsageError
from ci_mlops.generate.plan import install_args
from ci_mlops.serve import container
from ci_mlops.spec.model import Image, Model, Spec
from ci_mlops.steps import deploy


@dataclass(frozen=True)
class Options:
    """What the command line chose: which version, where, which image name."""

    out: Path
    environment: str | None = None
    version: str | None = None
    repository: str | None = None  # default: the platform's container registry
    wheels: Path | None = None  # a folder of wheels to install from, offline


def run(spec: Spec, model: Model, options: Options) -> dict[str, Any]:
    """Write the build context and manifests of ``model``'s version into ``options.out``.
    The manifests run the image recorded for that version (by digest) when an
    environment's history has one, else ``repository:tag``."""
    if options.environment and options.version:
        raise UsageError("--environment and --version do not go together: pick one")
    found = deploy.servable(spec, model, environment=options.environment, version=options.version)
    recorded = recorded_image(spec, model, found.version, options.environment)
    pkg = _package(spec, model, found.version, options, recorded)
    _write(options.out, pkg, found, options.wheels)
    print(
        f"packaged {model.name} {found.version} ({found.trust}) into {options.out}: "
        f"build with `buildah build -t {pkg.build_tag} {options.out}`; "
        f"manifests in {options.out / 'manifests'} run {pkg.image}"
    )
    return {
        "version": found.version,
        "image": pkg.image,
        "tag": pkg.build_tag,
        "out": str(options.out),
    }


def record_image(
    spec: Spec, model: Model, environment: str | None, ref: str, version: str | None = None
) -> dict[str, Any]:
    """Record ``ref`` (an image by digest) in ``environment``'s history, on its newest
    entry, which must be ``version`` (default: whatever is live there)."""
    container.check_digest_ref(ref)
    env = deploy.environment_name(spec, model, environment)
    registry = deploy.registry_of(spec, model)
    if version is None:
        live = registry.live(model, env)
        if live is None:
            raise UsageError(f"{model.name}: nothing is deployed to {env}, so no image to record")
        version = live.version
    registry.annotate(model, env, version, {"image": ref})
    print(f"recorded image {ref} for {model.name} {version} in {env}")
    return {"environment": env, "version": version, "image": ref}


def recorded_image(
    spec: Spec, model: Model, version: str, environment: str | None = None
) -> str | None:
    """The image recorded for ``version``: from ``environment``'s history first, then
    from the other environments' (production runs the image staging recorded); the
    newest entry wins. None when no history names one."""
    registry = deploy.registry_of(spec, model)
    names = [e.name for e in model.deploy.environments]
    if environment in names:
        names.remove(environment)
        names.insert(0, environment)
    for env in names:
        for entry in registry.history(model, env):
            image = entry.get("image")
            if entry.get("version") == version and isinstance(image, str):
                return container.check_digest_ref(image)
    return None


def _package(
    spec: Spec, model: Model, version: str, options: Options, recorded: str | None = None
) -> container.Package:
    # A model without a deploy.image section can still be packaged by hand, with the
    # section's defaults.
    image = model.deploy.image or Image()
    repository = options.repository or container.default_repository(model.name, os.environ)
    return container.Package(
        model=model.name,
        version=version,
        task=model.task,
        image=recorded or container.image_ref(repository, version),
        tag=container.image_ref(repository, version),
        base=image.base or f"python:{spec.runtime.python}-slim",
        port=image.port,
        replicas=image.replicas,
        install=tuple(install_args(spec.runtime.install, ("serve",))),
        wheels=options.wheels is not None,
    )


def _write(out: Path, pkg: container.Package, found: deploy.Servable, wheels: Path | None) -> None:
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _fill(staging, pkg, found, wheels)
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fill(
    folder: Path, pkg: container.Package, found: deploy.Servable, wheels: Path | None
) -> None:
    models = folder / "models"
    atomic.write_bytes(models / container.MODEL_FILE, found.onnx)
    # A remote registry's URL says where the model came from; a local folder's path
    # would only tell the image's users about the packaging machine.
    source = found.location if "://" in found.location else "local registry"
    record = container.package_record(pkg, found.onnx, found.trust, source)
    atomic.write_json(models / container.PACKAGE_FILE, record)
    atomic.write_text(folder / "Containerfile", container.containerfile(pkg))
    manifests = folder / "manifests"
    atomic.write_text(
        manifests / "inferenceservice.yaml",
        container.manifests_text([container.inference_service(pkg)], pkg),
    )
    atomic.write_text(
        manifests / "deployment.yaml", container.manifests_text(container.deployment(pkg), pkg)
    )
    if wheels is not None:
        _copy_wheels(wheels, folder / container.WHEELS)


def _copy_wheels(source: Path, target: Path) -> None:
    found = sorted(source.glob("*.whl")) if source.is_dir() else []
    if not found:
        raise UsageError(f"{source}: no wheels (*.whl) to install from")
    for wheel in found:
        atomic.copy_file(wheel, target / wheel.name)


def _check_target(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier package: ``--out .`` must not
    wipe a repository."""
    if not out.exists():
        return
    earlier = out / "models" / container.PACKAGE_FILE
    if out.is_dir() and (earlier.is_file() or not any(out.iterdir())):
        return
    raise UsageError(
        f"{out}: exists and is not a folder `ci-mlops package` wrote; pick a new --out"
    )


def _swap(staging: Path, out: Path) -> None:
    """Put ``staging`` where ``out`` is, with renames only."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    try:
        os.rename(out, old / out.name)
        try:
            os.rename(staging, out)
        except OSError:
            os.rename(old / out.name, out)  # the earlier package stays whole
            raise
    except OSError as exc:
        raise StepError(f"{out}: cannot replace: {exc.strerror}") from None
    finally:
        shutil.rmtree(old, ignore_errors=True)
