"""Benchmark `ci-mlops serve` against the floors and the service a user would write.

For each example (breast-cancer: StandardScaler + LogisticRegression; diabetes:
GradientBoostingRegressor), trained and exported once, measured in one run at batch 1
and batch 64:

- in-process onnxruntime (the floor: no HTTP, no JSON);
- an empty endpoint on the same stack (Starlette on uvicorn, reading the same body and
  answering a constant): the HTTP floor;
- ci-mlops serve (the Open Inference Protocol app, access log and metrics on);
- the hand-written service: FastAPI with a pydantic body, the joblib-loaded
  scikit-learn model, predictions through a DataFrame with the training columns.

Each server runs in its own process on a socket bound here (127.0.0.1, a free port);
one client sends requests one after another over a keep-alive connection, so the
client's own cost is the same for every server. Throughput is requests per second of
that loop; p50/p99 are per request, from each cell's best of ``--rounds`` interleaved
rounds. Prints a Markdown table and the ratios the aims are about.

    .venv/bin/python benchmarks/bench_serve.py [--seconds S] [--rounds N]
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("breast-cancer", "diabetes")
BATCHES = (1, 64)
WARMUP = 200
TARGET_SPEEDUP = 2.0


# --- the servers (each runs in a child: `bench_serve.py --serve KIND ...`) ------------


def _empty_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def empty(request: Request) -> Response:
        await request.body()
        return Response(b"{}", media_type="application/json")

    return Starlette(routes=[Route("/empty", empty, methods=["POST"])])


def _handwritten_app(folder: Path, columns: list[str], task: str) -> Any:
    """What a team writes by hand: FastAPI, pydantic, joblib, pandas."""
    import joblib
    import pandas as pd
    from fastapi import FastAPI
    from pydantic import BaseModel

    model = joblib.load(folder / "model.joblib")
    app = FastAPI()

    class Rows(BaseModel):
        rows: list[list[float]]

    # FastAPI resolves the (postponed) annotation below in this module's globals.
    globals()["Rows"] = Rows

    @app.post("/predict")
    def predict(body: Rows) -> dict[str, Any]:
        frame = pd.DataFrame(body.rows, columns=columns)
        if task == "classification":
            return {
                "labels": model.predict(frame).tolist(),
                "probabilities": model.predict_proba(frame).tolist(),
            }
        return {"predictions": model.predict(frame).tolist()}

    return app


def _child(args: argparse.Namespace) -> None:
    import logging

    import uvicorn

    folder = Path(args.folder)
    meta = json.loads((folder / "bench.json").read_text())
    if args.serve == "empty":
        app = _empty_app()
    elif args.serve == "ci-mlops":
        from ci_mlops.serve import server
        from ci_mlops.serve.app import ServedModel

        server.configure_logging()  # access lines on, as `ci-mlops serve` runs them
        onnx = (folder / "model.onnx").read_bytes()
        model = ServedModel(onnx, name=meta["name"], version="1", task=meta["task"])
        server.serve(model, socket.socket(fileno=args.fd))
        return
    else:
        logging.disable(logging.WARNING)
        app = _handwritten_app(folder, meta["columns"], meta["task"])
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


# --- the client -------------------------------------------------------------------------


@contextmanager
def server(kind: str, folder: Path) -> Iterator[tuple[str, int]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    address = sock.getsockname()
    command = [sys.executable, __file__, "--serve", kind, "--fd", str(sock.fileno())]
    process = subprocess.Popen(
        [*command, "--folder", str(folder)],
        pass_fds=[sock.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sock.close()
    try:
        _wait(address, process)
        yield address
    finally:
        process.terminate()
        process.wait(30)


def _wait(address: tuple[str, int], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a benchmark server exited with {process.returncode}")
        try:
            with socket.create_connection(address, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("a benchmark server did not start")


def _loop(call: Callable[[], object], seconds: float) -> list[float]:
    for _ in range(WARMUP):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _http(address: tuple[str, int], path: str, body: bytes, seconds: float) -> list[float]:
    connection = http.client.HTTPConnection(*address, timeout=30)
    headers = {"Content-Type": "application/json"}

    def call() -> None:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"POST {path}: {response.status} {data[:200]!r}")

    try:
        return _loop(call, seconds)
    finally:
        connection.close()


def _in_process(folder: Path, rows: Any, seconds: float) -> list[float]:
    from ci_mlops.serve.app import ServedModel

    meta = json.loads((folder / "bench.json").read_text())
    model = ServedModel(
        (folder / "model.onnx").read_bytes(), name="m", version="1", task=meta["task"]
    )
    feeds = {model.inputs[0].name: rows}
    return _loop(lambda: model.predict(feeds), seconds)


# --- preparing the models -----------------------------------------------------------


def prepare(example: str, root: Path) -> Path:
    """Train and export the example with the CLI; its model folder, with bench.json."""
    folder = root / example
    shutil.copytree(
        REPO / "examples" / example,
        folder,
        ignore=shutil.ignore_patterns(".ci-mlops", ".mlops-registry", ".gitlab-ci-local"),
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for step in ("train", "export"):
        subprocess.run(
            [sys.executable, "-m", "ci_mlops", step, "--spec", str(folder / "mlops.yaml")],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )
    from ci_mlops.spec.check import load_spec

    spec = load_spec(folder / "mlops.yaml")
    model = spec.models[0]
    workdir = spec.workdir(model)
    export = json.loads((workdir / "export.json").read_text())
    from ci_mlops.steps.datasets import load_dataset

    features = load_dataset(spec.root, model.eval_data).features
    columns = [str(c) for c in features.columns]
    meta = {"name": model.name, "task": model.task, "columns": columns}
    (workdir / "bench.json").write_text(json.dumps(meta))
    (workdir / "rows.json").write_text(json.dumps(features.to_numpy(float).tolist()))
    assert export["passed"], export
    return workdir


def measure(example: str, workdir: Path, seconds: float, rounds: int) -> list[dict[str, Any]]:
    import numpy as np

    meta = json.loads((workdir / "bench.json").read_text())
    all_rows = json.loads((workdir / "rows.json").read_text())
    results: list[dict[str, Any]] = []
    for batch in BATCHES:
        rows = (all_rows * (batch // len(all_rows) + 1))[:batch]
        oip = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [batch, len(rows[0])],
                        "datatype": "FP32",
                        "data": rows,
                    }
                ]
            }
        ).encode()
        plain = json.dumps({"rows": rows}).encode()
        array = np.asarray(rows, dtype=np.float32)
        runs = {
            "onnxruntime in-process (floor)": functools.partial(
                _in_process, workdir, array, seconds
            )
        }
        for kind, path, body in (
            ("empty", "/empty", oip),
            ("ci-mlops", f"/v2/models/{meta['name']}/infer", oip),
            ("handwritten", "/predict", plain),
        ):
            runs[LABELS[kind]] = _served(kind, workdir, path, body, seconds)
        cells = {label: [] for label in runs}
        # Rounds interleave the backends, so a burst of load from elsewhere on a shared
        # machine hits them alike; each keeps its best round (as timeit does).
        for _ in range(rounds):
            for label, run in runs.items():
                cells[label].append(_row(example, batch, label, run()))
        results += [max(found, key=lambda r: r["per_s"]) for found in cells.values()]
    return results


LABELS = {
    "empty": "empty endpoint, Starlette + uvicorn (HTTP floor)",
    "ci-mlops": "ci-mlops serve (OIP v2, onnxruntime)",
    "handwritten": "FastAPI + joblib scikit-learn (hand-written)",
}


def _served(
    kind: str, workdir: Path, path: str, body: bytes, seconds: float
) -> Callable[[], list[float]]:
    def run() -> list[float]:
        with server(kind, workdir) as address:
            return _http(address, path, body, seconds)

    return run


def _row(example: str, batch: int, label: str, times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "example": example,
        "batch": batch,
        "backend": label,
        "requests": len(times),
        "per_s": len(times) / sum(times),
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": p99 * 1000,
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model | batch | backend | requests/s | p50 ms | p99 ms |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['example']} | {r['batch']} | {r['backend']} | {r['per_s']:,.0f} | "
            f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} |"
        )
    return "\n".join(lines)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for example in EXAMPLES:
        for batch in BATCHES:
            got = {
                r["backend"]: r for r in results if r["example"] == example and r["batch"] == batch
            }
            ours, hand = got[LABELS["ci-mlops"]], got[LABELS["handwritten"]]
            floor = got[LABELS["empty"]]["p99_ms"] + got["onnxruntime in-process (floor)"]["p99_ms"]
            speedup = ours["per_s"] / hand["per_s"]
            goal = f" (aim >= {TARGET_SPEEDUP:g}x)" if batch == 1 else ""
            out.append(
                f"{example}, batch {batch}: ci-mlops serve {speedup:.2f}x the hand-written "
                f"service's throughput{goal}; p99 {ours['p99_ms']:.3f} ms is "
                f"{ours['p99_ms'] / floor:.2f}x (HTTP floor + in-process) p99 (aim <= 2x)"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each cell keeps its best")
    parser.add_argument("--serve", choices=sorted(LABELS), help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        results = []
        for example in EXAMPLES:
            workdir = prepare(example, Path(tmp))
            results += measure(example, workdir, args.seconds, args.rounds)
    print(table(results))
    print()
    for line in verdicts(results):
        print(line)
    print(f"\n({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()
