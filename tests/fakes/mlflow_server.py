"""A real MLflow tracking server for the tests: ``mlflow server`` from the project's
server venv (``make mlflow-server``), a SQLite backend and a local artifact root in a
temporary folder, on a free port of 127.0.0.1, one worker. Not a fake: the registry and
tracking code talk to MLflow itself."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO

SERVER = REPO / ".venv-mlflow" / "bin" / "mlflow"
START_TIMEOUT = 180.0  # the first start creates and migrates the SQLite schema


@dataclass
class MlflowServer:
    uri: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(folder: Path) -> MlflowServer:
    """Start the server with its state under ``folder`` and wait for ``/health``."""
    if not SERVER.is_file():
        raise RuntimeError(f"{SERVER} is missing: run `make mlflow-server` (make test does)")
    port = free_port()
    log = folder / "server.log"
    command = [
        str(SERVER),
        "server",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    server = MlflowServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(
        f"mlflow server did not answer /health: {log.read_text(errors='replace')[-2000:]}"
    )
