"""The HTTP side: routes under the routePrefix, function keys, and the admin invoke endpoint."""

from __future__ import annotations

import hmac
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage

from devhost.functions import (
    Function,
    Invoker,
    log,
    log_invocation,
    outcome_text,
    utc_now,
)
from devhost.hostjson import StartupError
from devhost.routing import RouteTemplate, compile_route, split_prefix
from devhost.timers import fire

MAX_BODY = 100 * 1024 * 1024  # the Functions host's request size limit
ADMIN_PATH = re.compile(r"/admin/functions/([^/]+)/?")
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}


@dataclass(frozen=True)
class Route:
    fn: Function
    template: RouteTemplate


def build_routes(functions: list[Function]) -> list[Route]:
    """HTTP functions' routes, most specific first."""
    routes: list[Route] = []
    for fn in functions:
        if fn.kind == "http":
            try:
                routes.append(Route(fn, compile_route(fn.route)))
            except ValueError as exc:
                raise StartupError(f"function {fn.name}: route {fn.route!r}: {exc}") from None
    return sorted(routes, key=lambda r: r.template.rank)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, document: dict[str, Any]) -> Reply:
        body = json.dumps(document).encode("utf-8")
        return cls(status, body, (("Content-Type", "application/json; charset=utf-8"),))


def http_reply(response: Any) -> Reply:
    """What an HTTP function returned → status, headers and body."""
    if response is None:
        return Reply(204)
    if isinstance(response, str | bytes):
        response = func.HttpResponse(response)
    if not isinstance(response, func.HttpResponse):
        raise TypeError(f"an HTTP function must return HttpResponse, not {type(response).__name__}")
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP]
    if not any(k.lower() == "content-type" for k, _ in headers):
        mimetype = str(response.mimetype)
        textual = mimetype.startswith("text/") or mimetype.endswith(("json", "xml", "javascript"))
        headers.append(
            ("Content-Type", f"{mimetype}; charset={response.charset}" if textual else mimetype)
        )
    return Reply(int(response.status_code), response.get_body(), tuple(headers))


class DevServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts (Graph notifications) open many connections at once
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        *,
        functions: list[Function],
        routes: list[Route],
        route_prefix: str,
        invoker: Invoker,
        functions_key: str,
    ) -> None:
        super().__init__(address, Handler)
        self.functions = {fn.name.lower(): fn for fn in functions}
        self.routes = routes
        self.route_prefix = route_prefix
        self.invoker = invoker
        self.functions_key = functions_key
        self.stopping = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection is one log line, not a traceback on the console."""
        log.warning("HTTP connection from %s failed: %r", client_address[0], sys.exc_info()[1])

    def key_ok(self, header: str | None, query: dict[str, str]) -> bool:
        """True when no key is configured, or the request carries it."""
        if not self.functions_key:
            return True
        expected = self.functions_key.encode("utf-8")
        given = [v for v in (header, query.get("code")) if v]
        return any(hmac.compare_digest(v.encode("utf-8"), expected) for v in given)


class Handler(BaseHTTPRequestHandler):
    server: DevServer
    protocol_version = "HTTP/1.1"

    def version_string(self) -> str:
        return "devhost"

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines carry query strings (``code=``); invocations are logged."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        # Counted until the reply is written, so that shutdown waits for it.
        with self.server.invoker.inflight.track():
            self._handle()

    def _handle(self) -> None:
        started = time.monotonic()
        if self.server.stopping:
            self.close_connection = True
            self._send(Reply(503))
            return
        body = self._read_body()
        if body is None:
            return
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True)[::-1])  # first value wins
        admin = ADMIN_PATH.fullmatch(parts.path)
        if admin:
            self._send(self._admin(unquote(admin.group(1)), body, query))
            return
        relative = split_prefix(parts.path, self.server.route_prefix)
        matched = [
            (route, params)
            for route in self.server.routes
            if relative is not None and (params := route.template.match(relative)) is not None
        ]
        chosen = next(((r, p) for r, p in matched if self.command in r.fn.methods), None)
        if chosen is None:
            status = 405 if matched else 404
            allow = ", ".join(dict.fromkeys(m for r, _ in matched for m in r.fn.methods))
            log_invocation("-", "http", started, str(status), via=f"{self.command} {parts.path}")
            self._send(Reply(status, headers=(("Allow", allow),) if matched else ()))
            return
        route, params = chosen
        fn = route.fn
        if fn.needs_key and not self.server.key_ok(self.headers.get("x-functions-key"), query):
            log_invocation(fn.name, "http", started, "401")
            self._send(Reply(401))
            return
        self._send(self._invoke(fn, params, query, body, started))

    def _invoke(
        self,
        fn: Function,
        params: dict[str, str],
        query: dict[str, str],
        body: bytes,
        started: float,
    ) -> Reply:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = func.HttpRequest(
            self.command,
            f"http://{host}{self.path}",
            headers=headers,
            params=query,
            route_params=params,
            body=body,
        )
        try:
            reply = http_reply(self.server.invoker.call(fn, request))
        except Exception as exc:
            log.error("function %s failed", fn.name, exc_info=exc)
            log_invocation(fn.name, "http", started, outcome_text(exc))
            return Reply.json(500, {"error": "the function failed; see the host's log"})
        log_invocation(fn.name, "http", started, str(reply.status))
        return reply

    def _admin(self, name: str, body: bytes, query: dict[str, str]) -> Reply:
        """``POST /admin/functions/{name}`` ``{"input": "..."}``: run a timer or queue function."""
        if self.command != "POST":
            return Reply(405, headers=(("Allow", "POST"),))
        if not self.server.key_ok(self.headers.get("x-functions-key"), query):
            return Reply(401)
        fn = self.server.functions.get(name.lower())
        if fn is None:
            return Reply.json(404, {"error": f"no function named {name}"})
        if fn.kind == "http":
            return Reply.json(400, {"error": f"{fn.name} is HTTP-triggered: call its route"})
        try:
            document = json.loads(body) if body.strip() else {}
            text = document.get("input", "") if isinstance(document, dict) else None
            if not isinstance(text, str):
                raise ValueError
        except ValueError:
            return Reply.json(400, {"error": 'the body must be {"input": "<string>"}'})
        if fn.kind == "timer":
            ran, error = fire(self.server.invoker, fn, via="admin")
            if not ran:
                return Reply.json(409, {"error": f"{fn.name} is already running"})
        else:
            now = utc_now()
            message = QueueMessage(  # type: ignore[no-untyped-call]
                id=str(uuid.uuid4()),
                body=text.encode("utf-8"),
                dequeue_count=1,
                pop_receipt=None,
                insertion_time=now,
                expiration_time=now + timedelta(days=7),
                time_next_visible=now,
            )
            error = self.server.invoker.run(fn, message, via="admin")
        if error is not None:
            return Reply.json(500, {"error": f"{type(error).__name__}: {error}"})
        return Reply(202)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send(Reply(411))
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(Reply(413 if length > MAX_BODY else 400))
            return None
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)
