"""Deploy targets: where published model versions live and which one each environment
runs, chosen by the spec's ``deploy.target``.

Add a deploy target by writing one module here (a :class:`~ci_mlops.registries.base.Registry`
subclass with ``name``, ``platforms`` and ``extras``) and listing it in ``REGISTRIES``.
The spec schema's ``deploy.target`` values come from this table (a test fails when
schema.json disagrees). Modules are imported only when their target is used, so that
naming a target costs no SDK import.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from ci_mlops.errors import UsageError
from ci_mlops.registries.base import Published, Registry
from ci_mlops.spec.model import Model, Spec

# deploy.target -> "module:Class", imported on first use.
REGISTRIES: dict[str, str] = {
    "local": "ci_mlops.registries.local:LocalRegistry",
    "gitlab-packages": "ci_mlops.registries.gitlab_packages:GitLabPackages",
    "github-releases": "ci_mlops.registries.github_releases:GitHubReleases",
}
# Earlier names of targets, still accepted in specs.
ALIASES: dict[str, str] = {"gitlab": "gitlab-packages", "github": "github-releases"}
AUTO = "auto"
# Every value deploy.target may take, in the schema's order.
TARGETS: tuple[str, ...] = (AUTO, *REGISTRIES, *ALIASES)


def registry_class(name: str) -> type[Registry]:
    """The class of target ``name`` (an alias resolves to its target)."""
    name = ALIASES.get(name, name)
    try:
        module_name, _, class_name = REGISTRIES[name].partition(":")
    except KeyError:
        raise UsageError(
            f"unknown deploy target {name!r} (choose one of: {', '.join(TARGETS)})"
        ) from None
    cls: type[Registry] = getattr(importlib.import_module(module_name), class_name)
    return cls


def target_name(spec: Spec, model: Model, platform_name: str) -> str:
    """The registry name ``model``'s ``deploy.target`` resolves to on ``platform_name``."""
    target = model.deploy.target
    where = f"{spec.path}: models.{model.name}.deploy.target"
    if target == AUTO:
        for name in REGISTRIES:
            if platform_name in registry_class(name).platforms:
                return name
        raise UsageError(f"{where}: no deploy target serves platform {platform_name!r} by auto")
    name = ALIASES.get(target, target)
    if name not in REGISTRIES:
        raise UsageError(
            f"{where}: unknown deploy target {target!r} (choose one of: {', '.join(TARGETS)})"
        )
    return name


def registry_for(
    spec: Spec, model: Model, platform_name: str, env: Mapping[str, str] | None = None
) -> Registry:
    """The registry ``model`` deploys to when running on CI platform ``platform_name``
    (``auto`` picks the platform's own; an alias names its target)."""
    return registry_class(target_name(spec, model, platform_name))(spec, env)


__all__ = [
    "ALIASES",
    "AUTO",
    "REGISTRIES",
    "TARGETS",
    "Published",
    "Registry",
    "registry_class",
    "registry_for",
    "target_name",
]
