"""`ci-mlops serve` as a user runs it: a process on a free port serving what an
environment points at (or a given version), verified first; rollback serves the previous
version; a tampered or wrongly signed version is never served; SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from tests.helpers import cli_command, make_key_pair
from tests.serve.conftest import call, wait_ready
from tests.steps.trained import clone, invoke, read_json, workdir

NAME = "breast-cancer"
LISTENING = re.compile(r"at http://127\.0\.0\.1:(\d+)/v2/models/")


@pytest.fixture(scope="module")
def deployed_twice(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Staging has run 1.0.0+1 and now runs 1.0.0+2."""
    folder = clone(exported, tmp_path_factory.mktemp("twice"))
    for _ in range(2):
        result = invoke(folder, "deploy")
        assert result.code == 0, result.output
    return folder


@contextmanager
def serving(folder: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """``ci-mlops serve --port 0 ARGS`` in ``folder``; yields (address, stderr file)."""
    with (folder / "serve.log").open("w+", encoding="utf-8") as log:
        process = subprocess.Popen(
            [*cli_command(), "serve", "--port", "0", *args],
            cwd=folder,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            address = ("127.0.0.1", _port(process, log))
            wait_ready(address)
            yield address, log, process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)


def _port(process: subprocess.Popen[bytes], log: IO[str]) -> int:
    import time

    for _ in range(600):
        log.seek(0)
        found = LISTENING.search(log.read())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            log.seek(0)
            raise AssertionError(f"serve exited {process.returncode}: {log.read()}")
        time.sleep(0.05)
    raise AssertionError("serve never said where it listens")


def version_served(address: tuple[str, int], folder: Path) -> str:
    row = read_json(workdir(folder) / "export.json")["replay"]["inputs"][0]
    body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]}
    status, answer = call(address, "POST", f"/v2/models/{NAME}/infer", body)
    assert status == 200, answer
    return str(answer["model_version"])


def test_serves_what_staging_runs_logs_json_and_stops_gracefully(deployed_twice: Path) -> None:
    with serving(deployed_twice) as (address, log, process):
        assert version_served(address, deployed_twice) == "1.0.0+2"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        log.seek(0)
        lines = log.read().splitlines()
    assert "serving breast-cancer 1.0.0+2 (no signing policy: hashes only)" in lines[0]
    access = [json.loads(line) for line in lines if '"method"' in line]
    infer = [a for a in access if a["path"] == f"/v2/models/{NAME}/infer"]
    assert infer and infer[0]["status"] == 200 and infer[0]["ms"] > 0
    assert any(json.loads(line).get("message") == "Shutting down" for line in lines[1:])


def test_a_version_can_be_named(deployed_twice: Path) -> None:
    with serving(deployed_twice, "--version", "1.0.0+1") as (address, _, _):
        assert version_served(address, deployed_twice) == "1.0.0+1"


def test_after_a_rollback_the_previous_version_is_served(
    deployed_twice: Path, tmp_path: Path
) -> None:
    folder = clone(deployed_twice, tmp_path)
    result = invoke(folder, "deploy", "--rollback")
    assert result.code == 0, result.output
    with serving(folder) as (address, _, _):
        assert version_served(address, folder) == "1.0.0+1"


def test_a_tampered_version_is_never_served(deployed_twice: Path, tmp_path: Path) -> None:
    folder = clone(deployed_twice, tmp_path)
    stored = folder / ".mlops-registry" / NAME / "versions" / "1.0.0+2" / "model.onnx"
    stored.write_bytes(stored.read_bytes() + b"\0")
    result = subprocess.run(
        [*cli_command(), "serve", "--port", "0"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "model.onnx: sha256" in result.stderr and "does not match" in result.stderr
    assert "Traceback" not in result.stderr and "serving" not in result.stderr


def test_a_version_signed_by_someone_else_is_never_served(exported: Path, tmp_path: Path) -> None:
    folder = clone(exported, tmp_path)
    private, _ = make_key_pair(tmp_path / "ours")
    _, theirs = make_key_pair(tmp_path / "theirs")
    assert invoke_signed(folder, private).code == 0
    spec = folder / "mlops.yaml"
    data = yaml.safe_load(spec.read_text("utf-8"))
    data["models"][0]["deploy"]["signing"] = {"public_key": str(theirs)}
    spec.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    result = subprocess.run(
        [*cli_command(), "serve", "--port", "0"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "serving" not in result.stderr and "Traceback" not in result.stderr


def invoke_signed(folder: Path, private: Path) -> Any:
    old = os.environ.get("MLOPS_SIGNING_KEY")
    os.environ["MLOPS_SIGNING_KEY"] = str(private)
    try:
        return invoke(folder, "deploy")
    finally:
        if old is None:
            del os.environ["MLOPS_SIGNING_KEY"]
        else:
            os.environ["MLOPS_SIGNING_KEY"] = old


def test_nothing_deployed_is_a_usage_error(exported: Path, tmp_path: Path) -> None:
    folder = clone(exported, tmp_path)
    result = subprocess.run(
        [*cli_command(), "serve", "--port", "0"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "nothing is deployed to staging, so nothing to serve" in result.stderr
