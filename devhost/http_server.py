"""The HTTP side: routes under the routePrefix, access keys, and the admin invoke endpoint."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import socket
import sys
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
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
from sync_core.config import ConfigError
from sync_core.problems import PayloadTooLarge, Problem
from sync_core.web import MAX_BODY_BYTES, problem_response

# The product refuses bodies over 256 KiB, so the local host stops reading there (the Functions
# host allows 100 MB, which the product would read and then refuse).
MAX_BODY = MAX_BODY_BYTES
ADMIN_PATH = re.compile(r"/admin/functions/([^/]+)/?")
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}
# Headers a reverse proxy or tunnel adds: a request carrying one came from beyond this machine
# even though its connection is from loopback.
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "via")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,8}")
DRAIN_BYTES = 1024 * 1024  # read and dropped at most after an early answer, so it arrives
DRAIN_SECONDS = 1.0


# On every answer: which instance (0-based, DEVHOST_INSTANCES) served it.
INSTANCE_HEADER = "x-devhost-instance"

MASTER_KEY_SETTING = "FUNCTIONS_KEY"
HOST_KEYS_SETTING = "FUNCTIONS_HOST_KEYS"
FUNCTION_KEYS_SETTING = "FUNCTIONS_FUNCTION_KEYS"


@dataclass(frozen=True)
class Keys:
    """The access keys of the app, with the Functions host's rules:

    - a **function key** opens its own function only;
    - a **host key** opens every ``function``-level function;
    - the **master key** (``_master``) opens every function, is the only key that opens an
      ``admin``-level function, and the only one for the runtime's admin endpoints
      (``/admin/...``);
    - ``anonymous`` functions need no key.

    The key is read from the ``x-functions-key`` header, or from the ``code`` query parameter
    when the header is absent. No keys at all: nothing is enforced (the host then serves this
    machine only).
    """

    master: str = ""
    host: Mapping[str, str] = field(default_factory=dict)  # name → value
    # function name (lower case) → key name → value
    function: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def enforced(self) -> bool:
        return bool(self.master or self.host or self.function)

    @classmethod
    def from_settings(cls, environ: Mapping[str, str], functions: Collection[str]) -> Keys:
        """``FUNCTIONS_KEY`` (the master key), ``FUNCTIONS_HOST_KEYS`` (``name=value,...``) and
        ``FUNCTIONS_FUNCTION_KEYS`` (``function/name=value,...``; ``function=value`` names the
        key ``default``). ConfigError names a malformed one or a function the app does not have."""
        master = environ.get(MASTER_KEY_SETTING, "").strip()
        host: dict[str, str] = {}
        for name, value in _key_entries(environ, HOST_KEYS_SETTING, "name=value"):
            if "/" in name:
                raise ConfigError(HOST_KEYS_SETTING, f"key name {name!r} has a '/'")
            host[name] = value
        known = {f.lower(): f for f in functions}
        function: dict[str, dict[str, str]] = {}
        for target, value in _key_entries(environ, FUNCTION_KEYS_SETTING, "function/name=value"):
            owner, _, name = target.partition("/")
            if owner.lower() not in known:
                raise ConfigError(FUNCTION_KEYS_SETTING, f"the app has no function named {owner!r}")
            function.setdefault(owner.lower(), {})[name.strip() or "default"] = value
        if (host or function) and not master:
            raise ConfigError(
                MASTER_KEY_SETTING,
                f"is missing (the master key; needed once {HOST_KEYS_SETTING} or "
                f"{FUNCTION_KEYS_SETTING} is set)",
            )
        return cls(master, host, function)

    def opens(self, level: str, function: str, key: str | None) -> bool:
        """Whether ``key`` opens ``function`` at authorization ``level``."""
        if level == "anonymous" or not self.enforced:
            return True
        if not key:
            return False
        if _same(key, self.master):
            return True
        if level == "admin":
            return False
        own = self.function.get(function.lower(), {})
        return any(_same(key, value) for value in (*self.host.values(), *own.values()))

    def opens_runtime_admin(self, key: str | None) -> bool:
        """The runtime's ``/admin/...`` endpoints: the master key only."""
        return not self.enforced or bool(key and _same(key, self.master))


def _same(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _key_entries(environ: Mapping[str, str], setting: str, shape: str) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for entry in environ.get(setting, "").split(","):
        if not entry.strip():
            continue
        name, equals, value = entry.strip().partition("=")
        if not equals or not name.strip() or not value.strip():
            raise ConfigError(setting, f"each entry must be {shape}")
        entries.append((name.strip(), value.strip()))
    return entries


def request_key(header: str | None, query: Mapping[str, str]) -> str | None:
    """The key a request carries: ``x-functions-key``, else ``?code=``."""
    return header if header else query.get("code")


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

    @classmethod
    def problem(cls, problem: Problem) -> Reply:
        """The product's RFC 9457 answer, for what the host refuses before the product runs."""
        response = problem_response(problem)
        return cls(problem.status, response.body, tuple(response.headers.items()))


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
        keys: Keys,
        instance: int = 0,
        reuse_port: bool = False,
    ) -> None:
        # Several instances bind the same port (SO_REUSEPORT): the kernel spreads the incoming
        # connections over them, as Azure's front end spreads requests over a scaled-out app.
        self.allow_reuse_port = reuse_port
        self.instance = instance
        super().__init__(address, Handler)
        self.functions = {fn.name.lower(): fn for fn in functions}
        self.routes = routes
        self.route_prefix = route_prefix
        self.invoker = invoker
        self.keys = keys
        self.stopping = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection is one log line, not a traceback on the console."""
        log.warning("HTTP connection from %s failed: %r", client_address[0], sys.exc_info()[1])

    def local_only(self, peer: str, headers: Any) -> bool:
        """Without keys the host serves this machine only: True when the request must be
        refused because it comes from another host or through a proxy or tunnel."""
        if self.keys.enforced:
            return False
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return not address.is_loopback or any(headers.get(h) for h in _PROXY_HEADERS)


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
        if self.server.local_only(str(self.client_address[0]), self.headers):
            log_invocation("-", "http", started, "403", via=f"{self.command} from beyond loopback")
            self._refuse(
                Reply.problem(
                    _Forbidden(
                        "this host has no FUNCTIONS_KEY, so it serves this machine only; "
                        "set FUNCTIONS_KEY to serve other hosts or a tunnel"
                    )
                )
            )
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
        key = request_key(self.headers.get("x-functions-key"), query)
        if not self.server.keys.opens(fn.auth_level, fn.name, key):
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
        if not self.server.keys.opens_runtime_admin(
            request_key(self.headers.get("x-functions-key"), query)
        ):
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

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue`` with a body over the limit: 413 before the client sends it."""
        text = (self.headers.get("Content-Length") or "").strip()
        if text.isdigit() and int(text) > MAX_BODY:
            self._too_large(f"the body has {text} bytes")
            return False
        return super().handle_expect_100()

    def _read_body(self) -> bytes | None:
        """The body, read no further than ``MAX_BODY``: a longer one is answered 413 from its
        Content-Length, or as soon as its chunks pass the limit, and the rest is not kept.
        None when the request was answered here."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        text = (self.headers.get("Content-Length") or "0").strip()
        if not text.isdigit():
            self._refuse(Reply(400))
            return None
        length = int(text)
        if length > MAX_BODY:
            self._too_large(f"the body has {length} bytes")
            return None
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client stopped sending
            self.close_connection = True
            return None
        return body

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            size = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size):
                self._refuse(Reply(400))
                return None
            length = int(size, 16)
            if length == 0:
                break
            if total + length > MAX_BODY:
                self._too_large(f"the body has more than {MAX_BODY} bytes")
                return None
            chunk = self.rfile.read(length)
            if len(chunk) < length or self.rfile.readline(3).strip():
                self._refuse(Reply(400))
                return None
            parts.append(chunk)
            total += length
        for _ in range(100):  # trailer fields, ignored
            if self.rfile.readline(8192).strip() == b"":
                return b"".join(parts)
        self._refuse(Reply(400))
        return None

    def _too_large(self, what: str) -> None:
        self._refuse(Reply.problem(PayloadTooLarge(f"{what}; the limit is {MAX_BODY}")))

    def _refuse(self, reply: Reply) -> None:
        """Answer before the body was read, then close. The client may still be sending: up to
        ``DRAIN_BYTES`` are read and dropped for a moment, so that closing does not reset the
        connection before it has read the answer."""
        self.close_connection = True
        self._send(reply)
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_SECONDS)
            deadline = time.monotonic() + DRAIN_SECONDS
            left = DRAIN_BYTES
            while left > 0 and time.monotonic() < deadline:
                dropped = self.connection.recv(min(65536, left))
                if not dropped:
                    break
                left -= len(dropped)
        except OSError:
            pass

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header(INSTANCE_HEADER, str(self.server.instance))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)


class _Forbidden(Problem):
    status, title, slug = 403, "Forbidden", "forbidden"
