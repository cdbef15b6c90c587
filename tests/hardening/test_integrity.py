"""Artifacts between jobs are checked by hash, and interrupted writes leave the previous
content: a tampered or truncated file fails the step that consumes it with a message
naming the file and both hashes; SIGKILL in the middle of an atomic write of a large file
and SIGTERM in the middle of training leave the old files intact."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ci_mlops import atomic
from tests.helpers import REPO, cli_command
from tests.steps.trained import clone, invoke, trained_example, workdir

SHA = r"[0-9a-f]{64}"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example trained, evaluated and exported once."""
    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("integrity"))
    for step in ("evaluate", "export"):
        result = invoke(folder, step)
        assert result.code == 0, result.output
    return folder


def _append(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CASES = [
    # (file, how, consuming step, its arguments)
    ("model.joblib", _append, "evaluate", ()),
    ("model.joblib", _truncate, "export", ()),
    ("model.joblib", _append, "report", ("--no-post",)),
    ("model.joblib", _truncate, "deploy", ("-e", "staging")),
    ("model.onnx", _truncate, "report", ("--no-post",)),
    ("model.onnx", _append, "deploy", ("-e", "staging")),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "tamper", "step", "args"), CASES)
def test_a_changed_artifact_fails_its_consumer_naming_file_and_hashes(
    pipeline: Path,
    tmp_path: Path,
    name: str,
    tamper: Callable[[Path], None],
    step: str,
    args: tuple[str, ...],
) -> None:
    folder = clone(pipeline, tmp_path)
    target = workdir(folder) / name
    before = {p.name: p.read_bytes() for p in workdir(folder).glob("*.json")}
    tamper(target)
    result = invoke(folder, step, *args)
    assert result.code in (1, 2), result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip().splitlines()[-1]
    assert name in message, message
    hashes = re.findall(SHA, message)
    assert atomic.sha256_file(target) in hashes, message
    assert len(set(hashes)) == 2, message
    # The records of earlier steps are left as they were.
    for record, data in before.items():
        assert (workdir(folder) / record).read_bytes() == data, record
    assert not (folder / ".mlops-registry").exists() or step != "deploy"


SIZE = 200 * 1024 * 1024
WRITER = f"""
import sys
from pathlib import Path
from ci_mlops import atomic
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
data = b"N" * {SIZE}
marker.write_text("writing")
while True:
    atomic.write_bytes(target, data)
"""


@pytest.mark.slow
def test_sigkill_during_an_atomic_write_leaves_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    old = b"previous model " * 1000
    atomic.write_bytes(target, old)
    marker = tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(marker)], cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)  # inside writing and flushing 200 MB
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    debris = [p for p in tmp_path.iterdir() if p.name not in {"model.bin", "writing"}]
    assert all(re.fullmatch(r"\.model\.bin\..+\.tmp", p.name) for p in debris), debris
    data = target.read_bytes()
    # Readable and whole: the old content, or (had the kill come after a rename) one
    # complete new version, never a mix or a prefix.
    assert data == old or (len(data) == SIZE and data == b"N" * SIZE)
    # The kill did land in the middle of a write (the writer loops, so one is always
    # under way): its temporary file is still there, beside the intact target.
    assert len(debris) == 1


SLOW_TRAIN = """
import os, pathlib, sys, time
if os.environ.get("SLOW"):
    pathlib.Path("child.pid").write_text(str(os.getpid()))
    time.sleep(120)
pathlib.Path(os.environ["MLOPS_MODEL_PATH"]).write_bytes(b"model " + os.environ["MLOPS_PARAMS"].encode())
"""


@pytest.mark.slow
def test_sigterm_during_training_keeps_the_previous_model(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(SLOW_TRAIN, "utf-8")
    (tmp_path / "eval.csv").write_text("x,y\n1,0\n", "utf-8")
    (tmp_path / "mlops.yaml").write_text(
        "version: 1\nmodels:\n- name: m\n  framework: sklearn\n  task: classification\n"
        "  data: {eval: {path: eval.csv, target: y}}\n"
        f"  train: {{command: '{sys.executable} train.py'}}\n  metrics: {{accuracy: {{}}}}\n",
        "utf-8",
    )
    first = subprocess.run([*cli_command(), "train"], cwd=tmp_path, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / ".ci-mlops" / "m"
    model, record = (folder / "model.joblib").read_bytes(), (folder / "train.json").read_bytes()
    assert json.loads(record)["model_sha256"] == atomic.sha256_file(folder / "model.joblib")

    proc = subprocess.Popen(
        [*cli_command(), "train", "--force"],
        cwd=tmp_path,
        env={**os.environ, "SLOW": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert (folder / "model.joblib").read_bytes() == model
    assert (folder / "train.json").read_bytes() == record
    assert [p.name for p in folder.iterdir() if p.name.startswith(".train-")] == []
    # The training command was stopped with ci-mlops, not left running as an orphan.
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert b"Traceback" not in err


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent (PID 1 here may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
