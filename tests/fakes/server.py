"""A threaded HTTP server on 127.0.0.1 that fake REST APIs build on: routing by method
and path pattern, a log of every request, and fault injection: the next N answers of a
route are 5xx/429 (before or after the route did its work), or are cut short; and the
origin the server advertises in the URLs it returns can differ from the one it listens
on, as behind a misconfigured proxy.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    """One request as the server saw it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    route: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int
    body: Any = None  # bytes are sent as they are; anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Reply]


@dataclass
class _Route:
    name: str
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class FakeServer:
    """Routes requests to handlers; subclasses register routes in ``__init__``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._routes: list[_Route] = []
        self._faults: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self._after: dict[str, list[int]] = {}
        self._truncated: dict[str, int] = {}
        self.advertised_origin: str | None = None
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeServer:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per response

            def _serve(self) -> None:
                api._handle(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def origin(self) -> str:
        """Where the server says it is, in the URLs it returns."""
        return self.advertised_origin or f"http://127.0.0.1:{self.port}"

    # -- routes and faults -----------------------------------------------------------

    def route(self, name: str, method: str, pattern: str, handler: Handler) -> None:
        """``pattern`` is a regex over the path (named groups become ``params``)."""
        self._routes.append(_Route(name, method, re.compile(f"^{pattern}$"), handler))

    def fail(self, route: str, *statuses: int, retry_after: int | None = None) -> None:
        """Answer the next requests of ``route`` with ``statuses``, one each, in order."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self._lock:
            self._faults.setdefault(route, []).extend((s, headers) for s in statuses)

    def fail_after(self, route: str, *statuses: int) -> None:
        """Let the next requests of ``route`` do their work, then answer ``statuses``
        (a gateway that times out after the backend stored the write)."""
        with self._lock:
            self._after.setdefault(route, []).extend(statuses)

    def truncate(self, route: str, count: int = 1) -> None:
        """Cut the next ``count`` answers of ``route`` to half their body."""
        with self._lock:
            self._truncated[route] = self._truncated.get(route, 0) + count

    def calls(self, route: str) -> list[Request]:
        """Requests that reached ``route`` (including those answered with a fault)."""
        with self._lock:
            return [r for r in self.requests if r.route == route]

    # -- dispatch --------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        request = self._read(handler)
        reply = self._dispatch(request)
        self._write(handler, reply)

    def _read(self, handler: BaseHTTPRequestHandler) -> Request:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in handler.headers.items()}
        return Request(handler.command, parts.path, query, headers, body)

    def _dispatch(self, request: Request) -> Reply:
        for route in self._routes:
            match = route.pattern.match(request.path)
            if route.method == request.method and match:
                request.route = route.name
                request.params = {k: unquote(v) for k, v in match.groupdict().items()}
                with self._lock:
                    self.requests.append(request)
                    faults = self._faults.get(route.name)
                    fault = faults.pop(0) if faults else None
                if fault:
                    return Reply(fault[0], {"message": f"injected {fault[0]}"}, dict(fault[1]))
                with self._lock:
                    reply = route.handler(request)
                    return self._after_work(route.name, reply)
        with self._lock:
            self.requests.append(request)
        return Reply(404, {"message": "404 Not Found"})

    def _after_work(self, name: str, reply: Reply) -> Reply:
        after = self._after.get(name)
        if after:
            status = after.pop(0)
            return Reply(status, {"message": f"injected {status} after the work was done"})
        if self._truncated.get(name):
            self._truncated[name] -= 1
            data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            headers = {"Content-Type": "application/json", **reply.headers}
            return Reply(reply.status, data[: len(data) // 2], headers)
        return reply

    def _write(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            data = reply.body
            content_type = "application/octet-stream"
        elif reply.body is None:
            data, content_type = b"", ""
        else:
            data = json.dumps(reply.body).encode()
            content_type = "application/json"
        handler.send_response(reply.status)
        headers = (
            {"Content-Type": content_type, **reply.headers}
            if content_type and "Content-Type" not in reply.headers
            else dict(reply.headers)
        )
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if data and handler.command != "HEAD":
            handler.wfile.write(data)


def page_of(
    items: list[Any], query: dict[str, str], default_per_page: int
) -> tuple[list[Any], int, int, int]:
    """Slice ``items`` by the ``page``/``per_page`` query; return (slice, page, per_page, pages)."""
    per_page = max(1, min(100, int(query.get("per_page") or default_per_page)))
    page = max(1, int(query.get("page") or 1))
    pages = max(1, -(-len(items) // per_page))
    return items[(page - 1) * per_page : page * per_page], page, per_page, pages


def link_header(url: str, query: dict[str, str], page: int, pages: int) -> str:
    """An RFC 8288 Link header with next/prev/first/last page URLs."""
    from urllib.parse import urlencode

    def at(number: int) -> str:
        return f"{url}?{urlencode({**query, 'page': str(number)})}"

    links = []
    if page < pages:
        links.append(f'<{at(page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{at(page - 1)}>; rel="prev"')
    links.append(f'<{at(1)}>; rel="first"')
    links.append(f'<{at(pages)}>; rel="last"')
    return ", ".join(links)
