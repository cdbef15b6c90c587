"""The ``github-releases`` deploy target: GitHub releases hold the versions and GitHub
deployments say which one each environment runs, through PyGithub (the client, token
and retries of :class:`ci_mlops.platforms.github.GitHubApi`).

Registry. Version ``V`` of model ``M`` is the release tagged ``M-vV`` (``V`` carries
``-run.<run number>``), made on the commit that built it and never marked "latest".
Assets: the files given plus SHA256SUMS. After upload each asset's checksum is checked:
against the ``digest`` GitHub computes from the bytes it received where the API
returns one, otherwise by downloading the asset back.

Environments. Promotion creates a GitHub deployment (task ``deploy:<model>``, ref the
release tag) whose payload holds the version and the stack of earlier ones, and marks
it successful, so the repository's Environments page shows what runs where. Rollback
reads the newest such deployment and deploys the version below the top of its stack.
Annotations (:meth:`GitHubReleases.annotate`) are kept per version in the payload of a
new deployment of the same version, so the newest deployment always holds them all.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ci_mlops import log
from ci_mlops.atomic import sha256_file, write_bytes
from ci_mlops.errors import PlatformError, UsageError
from ci_mlops.platforms.remote import (
    ApiError,
    checksums_file,
    forced_versions,
    history_list,
    parse_checksums,
    parse_metrics,
    safe_file_name,
    sha256_bytes,
)
from ci_mlops.records import IntegrityError, changed
from ci_mlops.registries.base import Published, Registry
from ci_mlops.registries.history import history_entries, notes, require_live
from ci_mlops.spec.model import Model, Spec

if TYPE_CHECKING:
    from ci_mlops.platforms.github import GitHubApi


class GitHubReleases(Registry):
    """Releases ``<model>-v<version>`` and ``deploy:<model>`` deployments."""

    name: ClassVar[str] = "github-releases"
    platforms: ClassVar[tuple[str, ...]] = ("github",)
    extras: ClassVar[tuple[str, ...]] = ("github",)

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        super().__init__(spec, env)
        self._api: GitHubApi | None = None

    @property
    def api(self) -> GitHubApi:
        # Built on first use: it imports PyGithub, which naming a target must not.
        if self._api is None:
            from ci_mlops.platforms.github import GitHubApi

            self._api = GitHubApi(self.env)
        return self._api

    def version_suffix(self) -> str:
        """``-run.<GITHUB_RUN_NUMBER>``, GitHub's (see :mod:`ci_mlops.platforms.github`)."""
        from ci_mlops.platforms.github import version_suffix

        return version_suffix(self.api.env)

    def _tag(self, model: Model, version: str) -> str:
        return f"{model.name}-v{version}"

    def publish(self, model: Model, version: str, files: dict[str, Path]) -> Published:
        """Create (or reuse, on a re-run) release ``<model>-v<version>``, upload ``files``
        plus SHA256SUMS as assets, and verify each asset's checksum."""
        sums = {name: sha256_file(path) for name, path in files.items()}
        uploads = {name: path.read_bytes() for name, path in files.items()}
        uploads["SHA256SUMS"] = checksums_file(sums)
        release = self._release(model, version, create=True)
        existing = self._assets(release)
        for name, data in uploads.items():
            if name in existing:  # a re-run of the same run: replace the asset
                self.api.call(
                    f"DELETE {self.api.path(f'/releases/assets/{existing[name].id}')}",
                    "replacing assets needs `contents: write`",
                    existing[name].delete_asset,
                )
            asset = self._upload_asset(release, name, data)
            self._verify_asset(asset, name, data)
        log.info(f"published {model.name} {version}: {len(uploads)} assets, checksums verified")
        return Published(version=version, location=str(release.html_url), files=sums)

    def _release(self, model: Model, version: str, *, create: bool) -> Any:
        repo = self.api.repo()
        tag = self._tag(model, version)
        hint = "releases need `contents: write`"
        try:
            return self.api.call(
                f"GET {self.api.path(f'/releases/tags/{tag}')}", hint, lambda: repo.get_release(tag)
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            if not create:
                raise UsageError(
                    f"{model.name} {version}: no release tagged {tag}; publish it first"
                ) from None
        return self.api.call(
            f"POST {self.api.path('/releases')}",
            hint,
            lambda: repo.create_git_release(
                tag,
                name=f"{model.name} {version}",
                message=f"Model {model.name} {version}, published by ci-mlops.\n\n{model.description}".strip(),
                **_commitish(self.api.env.sha or self.api.env.ref_name),
                make_latest="false",
            ),
        )

    def _upload_asset(self, release: Any, name: str, data: bytes) -> Any:
        content_type = (
            "text/plain"
            if name == "SHA256SUMS" or name.endswith(".md")
            else "application/octet-stream"
        )
        return self.api.call(
            f"POST {self.api.path(f'/releases/{release.id}/assets')}?name={name}",
            "uploading release assets needs `contents: write`",
            lambda: release.upload_asset_from_memory(
                io.BytesIO(data), len(data), name, content_type=content_type
            ),
        )

    def _verify_asset(self, asset: Any, name: str, data: bytes) -> None:
        expected = sha256_bytes(data)
        digest = asset.digest if isinstance(getattr(asset, "digest", None), str) else None
        if digest and digest.startswith("sha256:"):
            actual = digest.removeprefix("sha256:")
        else:
            actual = sha256_bytes(self._asset_bytes(asset))
        if actual != expected or int(asset.size) != len(data):
            raise PlatformError(
                f"release asset {name}: GitHub holds sha256 {actual[:12]}... ({asset.size} bytes), "
                f"but {expected[:12]}... ({len(data)} bytes) was uploaded; the upload is corrupt, publish again"
            )

    def verify(self, model: Model, version: str, into: Path | None = None) -> Published:
        """Download every asset of release ``<model>-v<version>`` (into ``into`` when
        given) and compare it with its SHA256SUMS line."""
        release = self._release(model, version, create=False)
        assets = self._assets(release)
        sums = self._checksums(model, version, assets)
        problems = []
        for name, expected in sorted(sums.items()):
            data = self._asset_bytes(assets[name]) if name in assets else None
            problem = changed(name, data, expected, "SHA256SUMS")
            if problem is not None:
                problems.append(problem)
            if into is not None and data is not None:
                write_bytes(
                    into / safe_file_name(name, f"release {self._tag(model, version)}"), data
                )
        if problems:
            raise IntegrityError(problems, where=f"release {self._tag(model, version)}")
        return Published(version=version, location=str(release.html_url), files=sums, folder=into)

    def live(self, model: Model, environment: str) -> Published | None:
        """The version the newest ``deploy:<model>`` deployment to ``environment`` names,
        with the checksums its release was published with."""
        version = self._environment_state(model, environment).get("version")
        if not version:
            return None
        release = self._release(model, str(version), create=False)
        sums = self._checksums(model, str(version), self._assets(release))
        return Published(version=str(version), location=str(release.html_url), files=sums)

    def version_metrics(self, model: Model, version: str) -> dict[str, float] | None:
        """The metrics.json asset of release ``<model>-v<version>``: the release (whose
        answer lists its assets) and the asset's download, two requests; not checked
        against SHA256SUMS (a chart, not a gate; deploy and baselines verify)."""
        release = self._release(model, version, create=False)
        assets = {asset.name: asset for asset in release.assets}
        if "metrics.json" not in assets:
            return None
        tag = self._tag(model, version)
        return parse_metrics(
            self._asset_bytes(assets["metrics.json"]), f"release {tag}/metrics.json"
        )

    def _assets(self, release: Any) -> dict[str, Any]:
        return self.api.call(
            f"GET {self.api.path(f'/releases/{release.id}/assets')}",
            "reading releases needs `contents: read`",
            lambda: {asset.name: asset for asset in release.get_assets()},
        )

    def _asset_bytes(self, asset: Any) -> bytes:
        return self.api.download(
            str(asset.url),
            f"GET {self.api.path(f'/releases/assets/{asset.id}')}",
            "downloading release assets needs `contents: read`",
        )

    def _checksums(self, model: Model, version: str, assets: dict[str, Any]) -> dict[str, str]:
        tag = self._tag(model, version)
        if "SHA256SUMS" not in assets:
            raise PlatformError(f"release {tag} has no SHA256SUMS asset; publish it again")
        return parse_checksums(self._asset_bytes(assets["SHA256SUMS"]), f"release {tag}/SHA256SUMS")

    # -- environments ----------------------------------------------------------------

    def promote(self, model: Model, environment: str, version: str, forced: bool = False) -> None:
        """Deploy release ``<model>-v<version>`` to ``environment`` (a GitHub deployment)."""
        release = self._release(model, version, create=False)
        state = self._environment_state(model, environment)
        current = state.get("version")
        if current == version:
            log.info(f"{model.name} {environment} already runs {version}")
            return
        history = [*state["history"], current] if current else list(state["history"])
        marked = [*forced_versions(state), *([version] if forced else [])]
        self._deploy(
            model, environment, version, history, str(release.html_url), marked, notes(state)
        )
        log.info(f"{model.name} {environment}: {current or 'nothing'} -> {version}")

    def rollback(
        self, model: Model, environment: str, check: Callable[[str], object] | None = None
    ) -> str:
        """Deploy the version ``environment`` ran before the current one; return it."""
        state = self._environment_state(model, environment)
        history = state["history"]
        if not history:
            raise UsageError(
                f"{model.name} {environment}: no earlier version to roll back to "
                f"(now: {state.get('version') or 'nothing deployed'})"
            )
        previous = str(history.pop())
        if check is not None:
            check(previous)
        release = self._release(model, previous, create=False)
        self._deploy(
            model,
            environment,
            previous,
            history,
            str(release.html_url),
            forced_versions(state),
            notes(state),
        )
        log.info(f"{model.name} {environment}: rolled back {state.get('version')} -> {previous}")
        return previous

    def _environment_state(self, model: Model, environment: str) -> dict[str, Any]:
        repo = self.api.repo()
        task = f"deploy:{model.name}"

        def newest() -> Any | None:
            for deployment in repo.get_deployments(task=task, environment=environment):
                return deployment
            return None

        deployment = self.api.call(
            f"GET {self.api.path('/deployments')}?task={task}&environment={environment}",
            "reading deployments needs `deployments: read`",
            newest,
        )
        if deployment is None:
            return {"history": []}
        payload = deployment.payload
        if isinstance(payload, str):
            try:
                payload = json.loads(payload) if payload else {}
            except ValueError:
                payload = {}
        payload = payload if isinstance(payload, dict) else {}
        source = f"deployment {deployment.id} to {environment}: payload.history"
        created = getattr(deployment, "created_at", None)
        return {
            **payload,
            "history": history_list(payload.get("history"), source),
            "at": created.isoformat() if created else None,
        }

    def history(self, model: Model, environment: str) -> list[dict[str, Any]]:
        """The newest deployment's versions, newest first; only the live one has a time
        (the deployment's)."""
        state = self._environment_state(model, environment)
        return history_entries(state, state["history"], state.get("at"))

    def annotate(
        self, model: Model, environment: str, version: str, fields: dict[str, str]
    ) -> None:
        """Deploy ``version`` again with ``fields`` added to its payload's annotations."""
        state = self._environment_state(model, environment)
        require_live(model.name, environment, state.get("version"), version)
        annotations = notes(state)
        annotations[version] = {**annotations.get(version, {}), **fields}
        release = self._release(model, version, create=False)
        self._deploy(
            model,
            environment,
            version,
            state["history"],
            str(release.html_url),
            forced_versions(state),
            annotations,
        )

    def _deploy(
        self,
        model: Model,
        environment: str,
        version: str,
        history: list[str],
        url: str,
        forced: list[str],
        annotations: dict[str, dict[str, str]],
    ) -> None:
        repo = self.api.repo()
        hint = "deployments need `deployments: write`"
        deployment = self.api.call(
            f"POST {self.api.path('/deployments')}",
            hint,
            lambda: repo.create_deployment(
                ref=self._tag(model, version),
                task=f"deploy:{model.name}",
                auto_merge=False,
                required_contexts=[],
                payload={
                    "model": model.name,
                    "version": version,
                    "history": history,
                    # versions promoted with --force, oldest first
                    **({"forced": forced} if forced else {}),
                    # version -> fields such as its image, kept across rollbacks
                    **({"annotations": annotations} if annotations else {}),
                },
                environment=environment,
                description=f"{model.name} {version}"[:140],
                production_environment=environment == "production",
            ),
        )
        self.api.call(
            f"POST {self.api.path(f'/deployments/{deployment.id}/statuses')}",
            hint,
            lambda: deployment.create_status("success", environment_url=url, auto_inactive=True),
        )


def _commitish(ref: str) -> dict[str, str]:
    """``target_commitish`` when a ref is known; left out, GitHub takes the default
    branch (and this module needs none of PyGithub's own names)."""
    return {"target_commitish": ref} if ref else {}
