"""Shared builders for the prediction service's tests: the breast-cancer example trained,
evaluated and exported once per session, and a real server on a free port."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ci_mlops.serve import server
from ci_mlops.serve.app import ServedModel
from tests.steps.trained import invoke, trained_example


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The breast-cancer example trained, evaluated and exported (nothing deployed)."""
    folder = trained_example("breast-cancer", tmp_path_factory.mktemp("served"))
    for step in ("evaluate", "export"):
        result = invoke(folder, step)
        assert result.code == 0, result.output
    return folder


@contextmanager
def running(model: ServedModel, max_body: int = 4096 * 1024) -> Iterator[tuple[str, int]]:
    """``model`` served by uvicorn in a thread on a free 127.0.0.1 port."""
    import uvicorn

    from ci_mlops.serve.app import create_app

    sock = server.bind("127.0.0.1", 0)
    config = uvicorn.Config(
        create_app(model, max_body=max_body), log_config=None, access_log=False, lifespan="off"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        address = sock.getsockname()[:2]
        wait_ready(address)
        yield address
    finally:
        instance.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive()


def wait_ready(address: tuple[str, int], attempts: int = 200) -> None:
    import time

    for _ in range(attempts):
        try:
            status, _ = call(address, "GET", "/v2/health/ready")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no server at {address}")


def call(
    address: tuple[str, int],
    method: str,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP request; the status and the decoded JSON answer (text for /metrics)."""
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        payload = raw if raw is not None else (None if body is None else json.dumps(body))
        connection.request(method, path, body=payload, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    kind = response.getheader("content-type") or ""
    return response.status, json.loads(data) if "json" in kind else data.decode()
