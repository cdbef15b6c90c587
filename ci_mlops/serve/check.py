"""The pre-deploy check, as TFX's InfraValidator does it: before a deploy publishes,
start the real server on the candidate model in a subprocess on a free 127.0.0.1 port,
replay the eval rows export.json recorded over HTTP one row per request, and require the
predictions export recorded (labels equal, values within ``export.tolerance``) and a
p99 latency within ``serve.max_latency_ms``. CheckFailed says which failed.

The server process is the one ``ci-mlops serve`` runs, so a model that passes here is a
model the service can load and answer for, not only one onnxruntime can run in-process.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import math
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ci_mlops.errors import CheckFailed, StepError
from ci_mlops.records import ExportRecord
from ci_mlops.spec.model import Model

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
WARMUP_REQUESTS = 5
MIN_TIMED_REQUESTS = 200
TIMING_BUDGET_S = 3.0
NEEDS = ("onnxruntime", "starlette", "uvicorn", "prometheus_client", "numpy")


@dataclass(frozen=True)
class Replay:
    """What export.json recorded: input rows and the ONNX model's answers for them."""

    inputs: list[Any]  # per row: a list of numbers (one input), or {input: values}
    labels: list[Any] | None
    values: list[list[float]]


def run(model: Model, workdir: Path, record: ExportRecord) -> dict[str, Any]:
    """Check the candidate ``model.onnx`` in ``workdir``, whose export.json is
    ``record``, through the real server."""
    replay = _replay_of(record, ExportRecord.at(workdir))
    _require_installed()
    onnx, sha256 = workdir / "model.onnx", str(record.onnx_sha256)
    with started(onnx, sha256, model) as address, _Client(address) as client:
        datatypes = _input_datatypes(client, model)
        requests = [_request(row, datatypes) for row in replay.inputs]
        answers = [client.infer(model.name, body) for body in requests]
        times = _timed(client, model.name, requests)
    result = _judge(model, replay, answers, times)
    print(_summary(model, result))
    if result["problems"]:
        raise CheckFailed(
            f"{model.name}: the pre-deploy check failed: {'; '.join(result['problems'])}"
        )
    return result


def _replay_of(record: ExportRecord, path: Path) -> Replay:
    raw = record.replay
    if not (isinstance(raw, dict) and isinstance(raw.get("inputs"), list) and raw["inputs"]):
        raise CheckFailed(
            f"{path}: no eval rows recorded for the pre-deploy check; run `ci-mlops export` again"
        )
    return Replay(raw["inputs"], raw.get("labels"), raw.get("values") or [])


def _require_installed() -> None:
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise StepError(
            f"the pre-deploy check starts the prediction service, which needs "
            f"{', '.join(missing)}: install ci-mlops[serve]"
        )


@contextmanager
def started(onnx: Path, sha256: str, model: Model) -> Iterator[tuple[str, int]]:
    """The server on ``onnx`` in a subprocess, listening on a free 127.0.0.1 port that is
    bound here and handed over, so there is no race for the port; stopped with SIGTERM
    (a graceful shutdown) on the way out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    address = sock.getsockname()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as logs:
        command = [
            *(sys.executable, "-m", "ci_mlops.serve.server", "--onnx", str(onnx)),
            *("--sha256", sha256, "--name", model.name, "--version", "candidate"),
            *("--task", model.task, "--fd", str(sock.fileno()), "--no-access-log"),
        ]
        process = subprocess.Popen(
            command, pass_fds=[sock.fileno()], stdin=subprocess.DEVNULL, stdout=logs, stderr=logs
        )
        # Only the server holds the socket now: if it dies, connections fail at once
        # instead of waiting in the backlog.
        sock.close()
        try:
            _wait_ready(address, process, logs)
            yield address
        except BaseException:
            _stop(process, logs)
            raise
        # Orchestrators stop a service with SIGTERM: it must drain and exit cleanly.
        if _stop(process, logs) != 0:
            raise CheckFailed(
                f"the server exited with code {process.returncode} on SIGTERM instead of "
                f"shutting down cleanly: {_tail(logs)}"
            )


def _wait_ready(address: tuple[str, int], process: subprocess.Popen[bytes], logs: IO[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckFailed(f"the server exited with code {process.returncode}: {_tail(logs)}")
        try:
            connection = http.client.HTTPConnection(*address, timeout=1.0)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.05)
    raise CheckFailed(f"the server was not ready within {READY_TIMEOUT_S:.0f} s: {_tail(logs)}")


def _stop(process: subprocess.Popen[bytes], logs: IO[str]) -> int:
    """Stop the server with SIGTERM (SIGKILL after STOP_TIMEOUT_S); its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise CheckFailed(
                f"the server did not shut down within {STOP_TIMEOUT_S:.0f} s of SIGTERM"
            ) from None
    return int(process.returncode)


def _tail(logs: IO[str]) -> str:
    logs.seek(0)
    lines = [line.strip() for line in logs.read().splitlines() if line.strip()]
    return " | ".join(lines[-3:]) or "no output"


class _Client:
    """One keep-alive HTTP connection, as a load balancer would hold."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.connection = http.client.HTTPConnection(*address, timeout=30.0)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.close()

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, None)

    def infer(self, name: str, body: str) -> dict[str, Any]:
        return self._call("POST", f"/v2/models/{name}/infer", body)

    def _call(self, method: str, path: str, body: str | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            payload = response.read()
        except OSError as exc:
            raise CheckFailed(f"{method} {path}: {exc}") from None
        answer = json.loads(payload)
        if response.status != 200:
            raise CheckFailed(f"{method} {path} answered {response.status}: {answer.get('error')}")
        return dict(answer)


def _input_datatypes(client: _Client, model: Model) -> dict[str, str]:
    """The served model's inputs and their protocol datatypes, from its metadata."""
    inputs = client.get(f"/v2/models/{model.name}")["inputs"]
    return {str(i["name"]): str(i["datatype"]) for i in inputs}


def _request(row: Any, datatypes: dict[str, str]) -> str:
    """One row as an inference request body: a list of numbers feeds the model's one
    input; ``{input: values}`` names each input."""
    if isinstance(row, list):
        if len(datatypes) != 1:
            raise CheckFailed(
                f"the served model takes {len(datatypes)} inputs; export recorded one per row"
            )
        row = {next(iter(datatypes)): row}
    unknown = sorted(set(row) - set(datatypes))
    if unknown:
        raise CheckFailed(f"export recorded inputs the served model does not take: {unknown}")
    inputs = [
        {"name": name, "shape": [1, len(values)], "datatype": datatypes[name], "data": values}
        for name, values in row.items()
    ]
    return json.dumps({"inputs": inputs})


def _timed(client: _Client, name: str, requests: list[str]) -> list[float]:
    """Seconds per one-row request, over at least MIN_TIMED_REQUESTS requests unless the
    time budget runs out first (a slow model cannot stall the job)."""
    for body in requests[:WARMUP_REQUESTS]:
        client.infer(name, body)
    times: list[float] = []
    deadline = time.perf_counter() + TIMING_BUDGET_S
    for i in range(max(MIN_TIMED_REQUESTS, len(requests))):
        start = time.perf_counter()
        client.infer(name, requests[i % len(requests)])
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return times


def _judge(
    model: Model, replay: Replay, answers: list[dict[str, Any]], times: list[float]
) -> dict[str, Any]:
    labels_differ, max_diff = _compare(replay, answers)
    p50 = statistics.median(times) * 1000
    p99 = _percentile(times, 0.99) * 1000
    budget = model.serve.max_latency_ms
    problems = []
    if labels_differ:
        problems.append(f"{labels_differ} of {len(answers)} labels differ from export's")
    if max_diff is None or max_diff > model.export.tolerance:
        shown = "NaN/inf" if max_diff is None else f"{max_diff:.3g}"
        problems.append(
            f"served values differ from export's by {shown} "
            f"(export.tolerance {model.export.tolerance:.3g})"
        )
    if p99 > budget:
        problems.append(f"p99 latency {p99:.2f} ms exceeds serve.max_latency_ms {budget:g}")
    return {
        "rows": len(answers),
        "requests": len(times),
        "labels_differ": labels_differ,
        "max_abs_diff": max_diff,
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "max_latency_ms": budget,
        "problems": problems,
    }


def _compare(replay: Replay, answers: list[dict[str, Any]]) -> tuple[int, float | None]:
    """Labels that differ, and the largest difference of values (None: not finite)."""
    labels_differ, max_diff = 0, 0.0
    for i, answer in enumerate(answers):
        outputs = {o["name"]: o["data"] for o in answer["outputs"]}
        if replay.labels is not None and str(outputs.get("label", [None])[0]) != str(
            replay.labels[i]
        ):
            labels_differ += 1
        served = outputs.get("probabilities") or outputs.get("scores") or outputs["prediction"]
        recorded = replay.values[i] if i < len(replay.values) else []
        if len(served) != len(recorded):
            return labels_differ, None
        for a, b in zip(served, recorded, strict=True):
            gap = abs(float(a) - float(b))
            if not math.isfinite(gap):
                return labels_differ, None
            max_diff = max(max_diff, gap)
    return labels_differ, max_diff


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _summary(model: Model, result: dict[str, Any]) -> str:
    verdict = "passed" if not result["problems"] else "FAILED"
    diff = result["max_abs_diff"]
    return (
        f"{model.name}: pre-deploy check {verdict}: the served model answered "
        f"{result['rows']} eval rows like export ({result['labels_differ']} labels differ, "
        f"max |diff| {'nan/inf' if diff is None else f'{diff:.2g}'}); "
        f"{result['requests']} one-row requests, p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms (budget {result['max_latency_ms']:g} ms)"
    )
