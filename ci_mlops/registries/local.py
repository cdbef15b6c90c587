"""The ``local`` deploy target: a model registry in a folder.

The registry lives at ``<spec folder>/<deploy.registry>`` (default ``.mlops-registry``)::

    <registry>/
      <model>/
        .lock                     flock-ed while a deploy numbers, publishes and promotes
        versions/
          1.0.0+1/                one published version; never changed once in place
            model.joblib          the native model file (model.pt, model.onnx ...)
            model.onnx            the exported model, when there is one
            metrics.json
            gates.json
            export.json
            report.md             the model card, when a report was rendered
            manifest.json         {model, version, created_at, files: {name: {sha256, size}},
                                   model_sha256, source: {spec (repository-relative), git_commit}}
          .tmp-<random>/          a publish in progress, renamed into place when complete
        environments/
          staging.json            {version, previous: [older versions, newest first], updated_at,
                                   forced: [versions promoted past the rules],
                                   annotations: {version: {field: value}}}
          production.json

Versions are ``<spec version>+<n>``, ``n`` counting local builds of that spec version.
A publish copies every file into a ``.tmp-`` folder, checks the copies' sha256 and then
renames the folder into place, so an interrupted publish never leaves half a version.
Environment files are replaced atomically. Numbering, publishing and pointer updates run
under an exclusive lock on ``<model>/.lock`` so that concurrent deploys stay consistent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from ci_mlops import log
from ci_mlops.atomic import copy_file, sha256_file, write_json
from ci_mlops.errors import PlatformError, StepError, UsageError
from ci_mlops.platforms.base import Baseline
from ci_mlops.platforms.remote import history_list, parse_metrics, parse_ranking
from ci_mlops.records import require_unchanged
from ci_mlops.registries.base import Published, Registry
from ci_mlops.registries.history import history_entries, notes, require_live
from ci_mlops.spec.model import Model, Spec

MANIFEST = "manifest.json"
# Names that become path components; anything else could escape the registry folder.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class RegistryFolder:
    """A folder of published model versions and per-environment pointers."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._depth: dict[str, int] = {}  # lock re-entry count per model, this process

    def model_dir(self, name: str) -> Path:
        return self.root / _safe(name, "model name")

    def version_dir(self, name: str, version: str) -> Path:
        return self.model_dir(name) / "versions" / _safe(version, "version")

    def pointer_file(self, name: str, environment: str) -> Path:
        return self.model_dir(name) / "environments" / f"{_safe(environment, 'environment')}.json"

    @contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the model's exclusive lock; re-entrant within this registry object."""
        if self._depth.get(name):
            self._depth[name] += 1
            try:
                yield
            finally:
                self._depth[name] -= 1
            return
        path = self.model_dir(name) / ".lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd, path)
            self._depth[name] = 1
            try:
                yield
            finally:
                self._depth.pop(name, None)
                _unlock(fd)
        finally:
            os.close(fd)

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        """The manifest of ``version``; PlatformError when there is no such version."""
        path = self.version_dir(name, version) / MANIFEST
        if not path.is_file():
            known = ", ".join(self.versions(name)) or "none"
            raise PlatformError(
                f"{path.parent}: no version {version} of {name} (versions: {known})"
            )
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise PlatformError(f"{path}: not a manifest (no 'files' mapping)")
        for file_name, entry in data["files"].items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
                raise PlatformError(
                    f"{path}: files.{file_name}: no sha256 (the manifest was edited)"
                )
        return data

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first."""
        folder = self.model_dir(name) / "versions"
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            if entry.name.startswith(".") or not (entry / MANIFEST).is_file():
                continue
            manifest = _read_json(entry / MANIFEST)
            created = str(manifest.get("created_at", "")) if isinstance(manifest, dict) else ""
            found.append((created, _build_number(entry.name), entry.name))
        return [name for _, _, name in sorted(found)]

    def publish(
        self,
        name: str,
        version: str,
        files: dict[str, Path],
        *,
        model_file: str,
        source: dict[str, Any],
    ) -> dict[str, Any]:
        """Store ``files`` as a new version and return its manifest.

        A ``version`` without a ``+build`` part gets the next local build number."""
        for file_name in files:
            if file_name == MANIFEST:
                raise PlatformError(f"{MANIFEST}: the registry writes this file itself")
            _safe(file_name, "file name")
        with self.locked(name):
            folder = self.model_dir(name) / "versions"
            folder.mkdir(parents=True, exist_ok=True)
            _sweep(folder)
            version = version if "+" in version else self._next_build(name, version)
            target = self.version_dir(name, version)
            if target.exists():
                raise PlatformError(f"{target}: version {version} of {name} already exists")
            return self._place(folder, target, name, version, files, model_file, source)

    def _place(
        self,
        folder: Path,
        target: Path,
        name: str,
        version: str,
        files: dict[str, Path],
        model_file: str,
        source: dict[str, Any],
    ) -> dict[str, Any]:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        try:
            entries = {n: _copy_checked(src, tmp / n) for n, src in sorted(files.items())}
            manifest = {
                "model": name,
                "version": version,
                "created_at": _now(),
                "files": entries,
                "model_sha256": entries[model_file]["sha256"] if model_file in entries else None,
                "source": source,
            }
            write_json(tmp / MANIFEST, manifest)
            os.chmod(tmp, 0o755)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(folder)
        return manifest

    def _next_build(self, name: str, base: str) -> str:
        pattern = re.compile(re.escape(base) + r"\+(\d+)")
        folder = self.model_dir(name) / "versions"
        numbers = [int(m.group(1)) for e in folder.iterdir() if (m := pattern.fullmatch(e.name))]
        return f"{base}+{max(numbers, default=0) + 1}"

    def pointer(self, name: str, environment: str) -> dict[str, Any] | None:
        """What ``environment`` points at, or None when nothing was deployed there."""
        path = self.pointer_file(name, environment)
        if not path.is_file():
            return None
        data = _read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            raise PlatformError(f"{path}: not an environment record (no 'version')")
        data["previous"] = history_list(data.get("previous"), f"{path}: previous")
        data["annotations"] = notes(data, str(path))
        return data

    def promote(
        self, name: str, environment: str, version: str, forced: bool = False
    ) -> dict[str, Any]:
        """Point ``environment`` at ``version``; the version it left goes first in
        ``previous``; ``forced`` promotions accumulate in ``forced``."""
        with self.locked(name):
            self.manifest(name, version)  # refuse to point at a version that is not there
            current = self.pointer(name, environment)
            if current and current["version"] == version:
                return current
            older = [current["version"], *current.get("previous", [])] if current else []
            record: dict[str, Any] = {
                "version": version,
                "previous": [v for v in older if v != version],
                "updated_at": _now(),
            }
            forced_before = list(current.get("forced", [])) if current else []
            if forced or forced_before:
                record["forced"] = forced_before + ([version] if forced else [])
            if current and current["annotations"]:
                record["annotations"] = current["annotations"]
            write_json(self.pointer_file(name, environment), record)
            return record

    def rollback(
        self, name: str, environment: str, check: Callable[[str], object] | None = None
    ) -> str:
        """Point ``environment`` back at its previous version and return that version;
        ``check`` sees that version first and may refuse it by raising."""
        with self.locked(name):
            current = self.pointer(name, environment)
            if current is None:
                raise UsageError(
                    f"{name}: nothing is deployed to {environment}, so nothing to roll back"
                )
            previous = list(current.get("previous", []))
            if not previous:
                raise UsageError(
                    f"{name}: {environment} has no earlier version to roll back to "
                    f"(live: {current['version']})"
                )
            if check is not None:
                check(str(previous[0]))
            record = {
                "version": previous[0],
                "previous": previous[1:],
                "updated_at": _now(),
                "rolled_back_from": current["version"],
            }
            if current.get("forced"):
                record["forced"] = current["forced"]
            if current["annotations"]:
                record["annotations"] = current["annotations"]
            write_json(self.pointer_file(name, environment), record)
            return str(previous[0])

    def annotate(self, name: str, environment: str, version: str, fields: dict[str, str]) -> None:
        """Attach ``fields`` to ``version``, which ``environment`` must point at now.
        They are kept per version, so a rollback finds those of the version it returns to."""
        with self.locked(name):
            current = self.pointer(name, environment) or {}
            require_live(name, environment, current.get("version"), version)
            kept = dict(current["annotations"])
            kept[version] = {**kept.get(version, {}), **fields}
            write_json(self.pointer_file(name, environment), {**current, "annotations": kept})

    def history(self, name: str, environment: str) -> list[dict[str, Any]]:
        """``environment``'s versions, newest first (see :meth:`Registry.history`)."""
        current = self.pointer(name, environment)
        if current is None:
            return []
        # previous is newest first; the shared reader takes the stack oldest first.
        stack = list(reversed(current["previous"]))
        return history_entries(current, stack, current.get("updated_at"))

    def verify(self, name: str, version: str) -> dict[str, Any]:
        """Re-hash every file of ``version``; IntegrityError names each file that differs."""
        manifest = self.manifest(name, version)
        folder = self.version_dir(name, version)
        expected = {
            _safe(file_name, "file name"): entry.get("sha256")
            for file_name, entry in manifest["files"].items()
        }
        require_unchanged(folder, expected, MANIFEST)
        return manifest

    def metrics(self, name: str, version: str, *, quiet: bool = False) -> dict[str, float] | None:
        """The metrics ``version`` was published with; None when it has no metrics.json."""
        path = self.version_dir(name, version) / "metrics.json"
        if not path.is_file():
            if not quiet:
                log.warn(f"{path}: not found; no baseline for {name}")
            return None
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PlatformError(f"{path}: unreadable registry file: {exc}") from None
        return parse_metrics(raw, str(path))

    def ranking(self, name: str, version: str, key: str = "ranking") -> tuple[str, ...] | None:
        """The importance ranking ``version``'s evaluation measured (``key``: ranking,
        or shap_ranking), or None."""
        path = self.version_dir(name, version) / "metrics.json"
        return parse_ranking(_read_json(path), key) if path.is_file() else None


class LocalRegistry(Registry):
    """Versions and environment pointers in the folder ``deploy.registry`` names
    (default ``.mlops-registry`` beside the spec); see the module docstring."""

    name: ClassVar[str] = "local"
    platforms: ClassVar[tuple[str, ...]] = ("local",)
    extras: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: Spec, env: Mapping[str, str] | None = None) -> None:
        super().__init__(spec, env)
        self._folders: dict[Path, RegistryFolder] = {}

    def folder(self, model: Model) -> RegistryFolder:
        """The folder ``model`` deploys to (one object per folder, so locks re-enter)."""
        root = self.spec.root / model.deploy.registry
        return self._folders.setdefault(root, RegistryFolder(root))

    def publish(self, model: Model, version: str, files: dict[str, Path]) -> Published:
        manifest = self.folder(model).publish(
            model.name, version, files, model_file=model.model_file, source=self._source()
        )
        return self._published(model, manifest)

    def promote(self, model: Model, environment: str, version: str, forced: bool = False) -> None:
        self.folder(model).promote(model.name, environment, version, forced)

    def rollback(
        self, model: Model, environment: str, check: Callable[[str], object] | None = None
    ) -> str:
        return self.folder(model).rollback(model.name, environment, check)

    def live(self, model: Model, environment: str) -> Published | None:
        pointer = self.folder(model).pointer(model.name, environment)
        if pointer is None:
            return None
        return self._published(model, self.folder(model).manifest(model.name, pointer["version"]))

    def verify(self, model: Model, version: str, into: Path | None = None) -> Published:
        """Re-hash the files in place; ``into`` is not needed, they are on this machine."""
        checked = self._published(model, self.folder(model).verify(model.name, version))
        return replace(checked, folder=self.folder(model).version_dir(model.name, version))

    def history(self, model: Model, environment: str) -> list[dict[str, Any]]:
        return self.folder(model).history(model.name, environment)

    def annotate(
        self, model: Model, environment: str, version: str, fields: dict[str, str]
    ) -> None:
        self.folder(model).annotate(model.name, environment, version, fields)

    def baseline(self, model: Model) -> Baseline | None:
        """Metrics of the version live in the first environment, else of the latest
        version, else None."""
        folder = self.folder(model)
        first = model.deploy.environments[0].name
        pointer = folder.pointer(model.name, first)
        versions = folder.versions(model.name)
        version = pointer["version"] if pointer else (versions[-1] if versions else None)
        metrics = None if version is None else folder.metrics(model.name, version)
        if metrics is None:
            return None
        where = f"live in {first}" if pointer else "latest"
        return Baseline(
            metrics=metrics,
            source=f"local registry {model.name} {version} ({where})",
            importance=folder.ranking(model.name, str(version)),
            shap=folder.ranking(model.name, str(version), "shap_ranking"),
        )

    def metric_history(self, model: Model, limit: int = 10) -> list[tuple[str, dict[str, float]]]:
        """The metrics.json of each of the last ``limit`` published versions; a version
        without a readable one is left out (the chart is for people, not a gate)."""
        folder = self.folder(model)
        out = []
        for version in folder.versions(model.name)[-limit:]:
            try:
                metrics = folder.metrics(model.name, version, quiet=True)
            except PlatformError as exc:
                log.warn(f"{exc}; left out of the metric history")
                continue
            if metrics is not None:
                out.append((version, metrics))
        return out

    def version_suffix(self) -> str:
        """Nothing: the folder numbers builds itself (``+<n>``)."""
        return ""

    @contextmanager
    def exclusive(self, model: Model) -> Iterator[None]:
        with self.folder(model).locked(model.name):
            yield

    def _published(self, model: Model, manifest: dict[str, Any]) -> Published:
        version = str(manifest["version"])
        return Published(
            version=version,
            location=str(self.folder(model).version_dir(model.name, version)),
            files={n: str(e.get("sha256")) for n, e in manifest["files"].items()},
        )

    def _source(self) -> dict[str, Any]:
        # Relative to the repository, so a record made on one machine names the same
        # file on another and leaks no local folder names.
        spec = _repo_relative(self.spec.path)
        return {"spec": spec, "git_commit": _git_commit(self.spec.root)}


def _safe(name: str, what: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise PlatformError(f"{name!r} cannot be a registry {what} (letters, digits, . _ + - only)")
    return name


def _build_number(version: str) -> int:
    _, _, build = version.rpartition("+")
    return int(build) if build.isdigit() else 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlatformError(f"{path}: unreadable registry file: {exc}") from None


def _copy_checked(source: Path, target: Path) -> dict[str, Any]:
    """Copy and prove the copy: the target's sha256 must equal the source's."""
    if not source.is_file():
        raise StepError(f"{source}: file to publish not found")
    expected = sha256_file(source)
    copy_file(source, target)
    actual = sha256_file(target)
    if actual != expected:
        raise PlatformError(f"{target}: copy has sha256 {actual}, but {source} has {expected}")
    return {"sha256": actual, "size": target.stat().st_size}


def _sweep(folder: Path) -> None:
    """Remove publishes that were interrupted; safe because the caller holds the lock."""
    for stale in folder.glob(".tmp-*"):
        log.warn(f"{stale}: removing an interrupted publish")
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's own entry list reaches the disk.
    if sys.platform == "win32":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(fd: int, path: Path) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        return
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info(f"waiting for another deploy to release {path}")
        fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _repo_relative(path: Path) -> str:
    """``path`` relative to the top of its git repository, or its file name outside one."""
    top = _git(path.resolve().parent, "rev-parse", "--show-toplevel")
    if top:
        try:
            return path.resolve().relative_to(Path(top).resolve()).as_posix()
        except ValueError:
            pass
    return path.name


def _git(cwd: Path, *args: str) -> str | None:
    """The output of a git command run in ``cwd``, or None when it fails or git is absent."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_commit(root: Path) -> str | None:
    """HEAD of the repository holding ``root``, or None outside one (or without git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit) else None
