"""The Open Inference Protocol v2 over REST for one ONNX model, as a Starlette app.

Paths (KServe, Triton and their clients use the same): ``GET /v2/health/live``,
``GET /v2/health/ready``, ``GET /v2/models/NAME[/versions/V]`` (metadata),
``GET /v2/models/NAME[/versions/V]/ready``, ``POST /v2/models/NAME[/versions/V]/infer``,
and Prometheus's ``GET /metrics``. Every error answers ``{"error": "..."}`` with a 4xx
status: wrong model, input names, datatypes or shapes, non-finite numbers, a body over
the size bound.

A model with one numeric input takes a ``[N, features]`` tensor; a model with one ONNX
input per column (mixed types) takes one named tensor per column. Classifiers answer
``label`` and ``probabilities`` (or ``scores`` when the graph has no probabilities),
regressors ``prediction``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ci_mlops import __version__
from ci_mlops.errors import StepError
from ci_mlops.records import require_sha256

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    from prometheus_client import CollectorRegistry
    from starlette.requests import Request
    from starlette.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 4 * 1024 * 1024
ACCESS_LOG = logging.getLogger("ci_mlops.serve.access")
# ONNX tensor types and their protocol datatypes.
DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
NUMPY_TYPES = {"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32"}
# What a client may send for an input: its own datatype, or one that converts without
# surprises (JSON numbers carry no width, so FP64 for an FP32 input is common).
ACCEPTED = {
    "FP32": ("FP32", "FP64"),
    "FP64": ("FP64", "FP32"),
    "INT64": ("INT64", "INT32"),
    "INT32": ("INT32", "INT64"),
    "BOOL": ("BOOL",),
    "BYTES": ("BYTES",),
}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class BadRequest(Exception):
    """A request the protocol refuses; ``status`` is its 4xx code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Tensor:
    """A named input or output as the protocol describes it; -1 is any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class ServedModel:
    """One ONNX model in onnxruntime, with the protocol's view of its inputs and outputs."""

    def __init__(
        self, onnx: bytes, *, name: str, version: str, task: str, sha256: str | None = None
    ) -> None:
        actual = hashlib.sha256(onnx).hexdigest()
        if sha256 is not None:
            # Loading is the last moment the bytes can be checked: refuse, never serve.
            require_sha256(f"{name} {version}: model.onnx", actual, sha256, "the verified hashes")
        self.name, self.version, self.task, self.sha256 = name, version, task, actual
        self.session = _session(onnx, name, version)
        self.inputs = tuple(_tensor(node) for node in self.session.get_inputs())
        self._onnx_outputs = [node.name for node in self.session.get_outputs()]
        self.outputs = self._describe_outputs()

    def _describe_outputs(self) -> tuple[Tensor, ...]:
        nodes = self.session.get_outputs()
        if self.task != "classification":
            return (Tensor("prediction", "FP32", (-1,)),)
        if len(nodes) >= 2:
            label = DATATYPES.get(nodes[0].type, "INT64")
            return (Tensor("label", label, (-1,)), _renamed(nodes[1], "probabilities"))
        scores = _renamed(nodes[0], "scores")
        # One score column says nothing about which class it favours: no label then.
        if scores.shape[1] == 1:
            return (scores,)
        return (Tensor("label", "INT64", (-1,)), scores)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [t.describe() for t in self.inputs],
            "outputs": [t.describe() for t in self.outputs],
            "parameters": {"sha256": self.sha256, "task": self.task},
        }

    def predict(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; the protocol's outputs by name, each with rows first."""
        import numpy as np

        results = self.session.run(None, feeds)
        first = np.asarray(results[0])
        if self.task != "classification":
            return {"prediction": first.reshape(len(first), -1).squeeze(axis=1)}
        if len(results) >= 2:
            return {"label": first.ravel(), "probabilities": np.asarray(results[1])}
        scores = first.reshape(len(first), -1)
        if scores.shape[1] == 1:
            return {"scores": scores}
        return {"label": scores.argmax(axis=1), "scores": scores}


def _session(onnx: bytes, name: str, version: str) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One request runs at a time on the event loop; one intra-op thread keeps a small
    # model's latency low and steady on shared CPUs (scale out with replicas instead).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            onnx, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime's error types are not importable portably
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(f"{name} {version}: onnxruntime cannot load model.onnx: {first}") from None


def _renamed(node: Any, name: str) -> Tensor:
    """The protocol's name for an ONNX output, with its shape: [-1, classes] when known."""
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return Tensor(name, DATATYPES.get(node.type, "FP32"), shape if len(shape) == 2 else (-1, -1))


def _tensor(node: Any) -> Tensor:
    datatype = DATATYPES.get(node.type)
    if datatype is None:
        raise StepError(
            f"model.onnx input {node.name!r} has type {node.type}, which cannot be served"
        )
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return Tensor(node.name, datatype, shape)


# --- requests -----------------------------------------------------------------------


def parse_inference(body: bytes, model: ServedModel) -> tuple[dict[str, Any], Any, list[str]]:
    """The feeds for onnxruntime, the request id, and the outputs asked for."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise BadRequest('the body must be a JSON object with an "inputs" list')
    expected = {t.name: t for t in model.inputs}
    feeds: dict[str, Any] = {}
    for index, item in enumerate(doc["inputs"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"inputs[{index}]: an object with a string 'name' is required")
        spec = expected.get(item["name"])
        if spec is None:
            raise BadRequest(f"inputs[{index}]: unknown input {item['name']!r}; {_names(model)}")
        if spec.name in feeds:
            raise BadRequest(f"inputs[{index}]: input {spec.name!r} is given twice")
        feeds[spec.name] = _array(item, spec, index)
    missing = [name for name in expected if name not in feeds]
    if missing:
        raise BadRequest(f"missing input(s) {', '.join(map(repr, missing))}; {_names(model)}")
    rows = {len(a) for a in feeds.values()}
    if len(rows) > 1:
        raise BadRequest(f"inputs have different numbers of rows: {sorted(rows)}")
    return feeds, doc.get("id"), _wanted(doc.get("outputs"), model)


def _names(model: ServedModel) -> str:
    described = ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in model.inputs)
    return f"the model takes {described}"


def _array(item: dict[str, Any], spec: Tensor, index: int) -> Any:
    import numpy as np

    where = f"inputs[{index}] ({spec.name})"
    datatype, shape, data = item.get("datatype"), item.get("shape"), item.get("data")
    if datatype not in ACCEPTED[spec.datatype]:
        allowed = " or ".join(ACCEPTED[spec.datatype])
        raise BadRequest(f"{where}: datatype {datatype!r}; this input takes {allowed}")
    if not (isinstance(shape, list) and shape and all(_count(d) for d in shape)):
        raise BadRequest(f"{where}: shape must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise BadRequest(f"{where}: shape {shape} does not fit {list(spec.shape)} (-1: any)")
    if shape[0] == 0:
        raise BadRequest(f"{where}: no rows (shape {shape})")
    if not isinstance(data, list):
        raise BadRequest(f"{where}: 'data' must be a list")
    array = _convert(data, spec, where)
    if array.size != math.prod(shape):
        raise BadRequest(f"{where}: {array.size} values do not fill shape {shape}")
    if array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
        raise BadRequest(f"{where}: NaN or infinite values (also after conversion to {datatype})")
    return array.reshape(shape)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _convert(data: list[Any], spec: Tensor, where: str) -> Any:
    import numpy as np

    if spec.datatype == "BYTES":
        flat = _flatten(data)
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"{where}: BYTES data must be strings")
        return np.asarray(flat, dtype=object)
    if spec.datatype == "BOOL":
        flat = _flatten(data)
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"{where}: BOOL data must be true or false")
        return np.asarray(flat, dtype=bool)
    try:
        # Parse without a target type first: numpy would turn strings such as "1.5" into
        # numbers, which a typed protocol must refuse.
        array = np.asarray(data)
    except ValueError:  # ragged nesting
        raise BadRequest(f"{where}: data must be a flat or row-major nested list") from None
    kind = array.dtype.kind
    target = np.dtype(NUMPY_TYPES[spec.datatype])
    if kind not in "iufb" or (target.kind == "i" and kind == "f"):
        raise BadRequest(f"{where}: data must be {spec.datatype} numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target, copy=False).ravel()


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in data:
        if isinstance(value, list):
            out.extend(_flatten(value))
        else:
            out.append(value)
    return out


def _wanted(outputs: Any, model: ServedModel) -> list[str]:
    names = [t.name for t in model.outputs]
    if outputs is None:
        return names
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    asked = [o["name"] for o in outputs]
    unknown = [n for n in asked if n not in names]
    if unknown:
        raise BadRequest(f"unknown output(s) {', '.join(map(repr, unknown))}; outputs: {names}")
    return asked


def encode_outputs(results: dict[str, Any], wanted: list[str]) -> list[Any]:
    """The protocol's output tensors, each datatype read from the array itself."""
    encoded = []
    for name in wanted:
        array = results[name]
        datatype = _datatype(array)
        data = array.astype(str).ravel().tolist() if datatype == "BYTES" else array.ravel().tolist()
        encoded.append(
            {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}
        )
    return encoded


def _datatype(array: Any) -> str:
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "f":
        return "FP32" if size == 4 else "FP64"
    if kind in "iu":
        return "INT32" if size == 4 else "INT64"
    return "BOOL" if kind == "b" else "BYTES"


# --- the app --------------------------------------------------------------------------


def create_app(model: ServedModel, *, max_body: int = MAX_BODY_BYTES) -> ASGIApp:
    """The ASGI app serving ``model``; metrics go to a registry of its own."""
    from prometheus_client import CollectorRegistry
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    registry = CollectorRegistry()
    handlers = _Handlers(model, max_body, registry)
    routes = [Route("/v2/health/live", handlers.live), Route("/v2/health/ready", handlers.ready)]
    routes.append(Route("/v2", handlers.server_metadata))
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes.append(Route(prefix, handlers.model_metadata))
        routes.append(Route(prefix + "/ready", handlers.model_ready))
        routes.append(Route(prefix + "/infer", handlers.infer, methods=["POST"]))
    routes.append(Route("/metrics", handlers.metrics))
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error, BadRequest: _bad_request}
    )
    known = {
        r.path.replace("{name}", model.name).replace("{version}", model.version) for r in routes
    }
    return _Observed(app, registry, model, known)


async def _http_error(request: Request, exc: Exception) -> Response:
    from starlette.exceptions import HTTPException

    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return _json({"error": f"{request.method} {request.url.path}: {_reason(status)}"}, status)


async def _bad_request(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, BadRequest) else 400
    return _json({"error": str(exc)}, status)


def _reason(status: int) -> str:
    from http import HTTPStatus

    return HTTPStatus(status).phrase.lower()


def _json(content: Any, status: int = 200) -> Response:
    from starlette.responses import Response

    body = json.dumps(content, separators=(",", ":"), allow_nan=False)
    return Response(body, status_code=status, media_type="application/json")


class _Handlers:
    def __init__(self, model: ServedModel, max_body: int, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter

        self.model, self.max_body, self.registry = model, max_body, registry
        self.rows = Counter(
            "ci_mlops_serve_inference_rows",
            "Rows predicted.",
            registry=registry,
        )

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        # The model is loaded and verified before the server accepts connections.
        return _json({"ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return _json({"name": "ci-mlops", "version": __version__, "extensions": []})

    def _check(self, request: Request) -> None:
        name = request.path_params["name"]
        if name != self.model.name:
            raise BadRequest(f"unknown model {name!r}; this server serves {self.model.name!r}", 404)
        version = request.path_params.get("version")
        if version is not None and version != self.model.version:
            raise BadRequest(
                f"model {name!r} has no version {version!r} here; it serves {self.model.version!r}",
                404,
            )

    async def model_metadata(self, request: Request) -> Response:
        self._check(request)
        return _json(self.model.metadata())

    async def model_ready(self, request: Request) -> Response:
        self._check(request)
        return _json({"name": self.model.name, "ready": True})

    async def infer(self, request: Request) -> Response:
        self._check(request)
        body = await self._body(request)
        feeds, request_id, wanted = parse_inference(body, self.model)
        # onnxruntime runs on the event loop: for table models a call takes microseconds,
        # less than a hop to a worker thread would cost.
        results = self.model.predict(feeds)
        self.rows.inc(len(next(iter(feeds.values()))))
        answer: dict[str, Any] = {
            "model_name": self.model.name,
            "model_version": self.model.version,
            "outputs": encode_outputs(results, wanted),
        }
        if request_id is not None:
            answer["id"] = request_id
        return _json(answer)

    async def _body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it is known to be over the bound."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise BadRequest(f"the body has {declared} bytes; the limit is {self.max_body}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise BadRequest(f"the body is over the limit of {self.max_body} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        from starlette.responses import Response

        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class _Observed:
    """ASGI middleware: Prometheus counts and latency per endpoint, and one JSON access
    log line per request. Endpoints are the served paths; anything else counts as
    ``other`` so that scanners cannot blow up the metrics' label sets."""

    def __init__(
        self, app: ASGIApp, registry: CollectorRegistry, model: ServedModel, known: set[str]
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.app, self.known = app, known
        self.requests = Counter(
            "ci_mlops_serve_requests", "HTTP requests.", ["endpoint", "code"], registry=registry
        )
        self.latency = Histogram(
            "ci_mlops_serve_request_duration_seconds",
            "Time from request to response.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        info = Gauge(
            "ci_mlops_serve_model_info",
            "The model served: always 1, with its name, version and sha256 as labels.",
            ["model", "version", "sha256"],
            registry=registry,
        )
        info.labels(model.name, model.version, model.sha256).set(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - start
            path = scope.get("path", "")
            endpoint = path if path in self.known else "other"
            self.requests.labels(endpoint, str(status)).inc()
            self.latency.labels(endpoint).observe(elapsed)
            if ACCESS_LOG.isEnabledFor(logging.INFO):
                ACCESS_LOG.info(_access_line(scope, status, elapsed))


def _access_line(scope: Scope, status: int, elapsed: float) -> str:
    client = scope.get("client")
    return json.dumps(
        {
            "ts": round(time.time(), 3),
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status,
            "ms": round(elapsed * 1000, 3),
            "client": f"{client[0]}:{client[1]}" if client else None,
        },
        separators=(",", ":"),
    )
