"""The server process: uvicorn running the protocol app for one verified model.

The listening socket is bound here (or handed over as a file descriptor by the pre-deploy
check), so port 0 works and the real address is known before the first request. uvicorn
shuts down gracefully on SIGTERM and SIGINT: it stops accepting, lets requests in flight
finish (up to ``GRACE_SECONDS``), then exits. Logs are JSON lines on stderr.

``python -m ci_mlops.serve.server --onnx FILE --sha256 HEX ...`` serves a candidate
model file; the pre-deploy check starts it that way (``ci-mlops serve`` serves registry
versions).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from ci_mlops.errors import EXIT_BAD_INPUT, MlopsError, UsageError
from ci_mlops.serve.app import MAX_BODY_BYTES, ServedModel, create_app

GRACE_SECONDS = 10


class _JsonLines(logging.Formatter):
    """Access lines are JSON already; other records become one JSON object each."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "ci_mlops.serve.access":
            return record.getMessage()
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            },
            separators=(",", ":"),
        )


def configure_logging(access_log: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonLines())
    for name in ("ci_mlops.serve", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    if not access_log:
        logging.getLogger("ci_mlops.serve.access").setLevel(logging.WARNING)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(model: ServedModel, sock: socket.socket, *, max_body: int = MAX_BODY_BYTES) -> None:
    """Serve ``model`` on ``sock`` until SIGTERM or SIGINT."""
    import uvicorn

    config = uvicorn.Config(
        create_app(model, max_body=max_body),
        log_config=None,  # configure_logging's JSON lines, not uvicorn's text format
        access_log=False,  # the app writes its own access lines, with latency
        lifespan="off",
        timeout_graceful_shutdown=GRACE_SECONDS,
        server_header=False,
    )
    # uvicorn drains on SIGTERM, then raises the signal again for the handler it found:
    # with this one the process ends with 0 after a graceful stop, as orchestrators expect.
    previous = signal.signal(signal.SIGTERM, _stopped)
    # Everything loaded so far (onnxruntime, numpy, the app) lives as long as the process:
    # out of the collector's sight, full collections stay short and so does the p99.
    gc.collect()
    gc.freeze()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(signum: int, frame: object) -> None:
    logging.getLogger("ci_mlops.serve").info("stopped on SIGTERM after a graceful shutdown")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ci_mlops.serve.server")
    parser.add_argument("--onnx", type=Path, required=True, help="the model.onnx to serve")
    parser.add_argument("--sha256", required=True, help="what its sha256 must be")
    parser.add_argument("--name", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--task", required=True, choices=["classification", "regression"])
    parser.add_argument("--fd", type=int, help="an inherited listening socket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-body", type=int, default=MAX_BODY_BYTES)
    parser.add_argument("--no-access-log", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    configure_logging(access_log=not args.no_access_log)
    try:
        started = time.perf_counter()
        model = ServedModel(
            args.onnx.read_bytes(),
            name=args.name,
            version=args.version,
            task=args.task,
            sha256=args.sha256,
        )
        sock = socket.socket(fileno=args.fd) if args.fd is not None else bind(args.host, args.port)
    except OSError as exc:
        print(f"ci-mlops serve: error: {args.onnx}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MlopsError as exc:
        print(f"ci-mlops serve: error: {exc}", file=sys.stderr)
        return exc.exit_code
    _announce(model, sock, time.perf_counter() - started)
    serve(model, sock, max_body=args.max_body)
    return 0


def _announce(model: ServedModel, sock: socket.socket, load_s: float) -> None:
    logging.getLogger("ci_mlops.serve").info(
        f"serving {model.name} {model.version} (sha256 {model.sha256}) at {url(sock)}"
        f" (loaded in {load_s * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    sys.exit(main())
