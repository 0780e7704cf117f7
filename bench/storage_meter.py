"""A counting reverse proxy in front of Azurite: storage requests counted at the process edge.

``StorageMeter(connection_string).start()`` listens on loopback ports, one per storage service
named in the connection string (table, queue, and blob when it has a BlobEndpoint), forwards every
HTTP request to Azurite unchanged (method, path, query, headers including Authorization and Host,
body) over keep-alive connections, and counts it by (service, resource name, method, operation):
the resource name is the table, queue or container (a table ``$batch`` is attributed to the table
its inner requests name). ``connection_string`` points the storage clients at the proxy: the
explicit ``TableEndpoint=``/``QueueEndpoint=``/``BlobEndpoint=`` URLs with the ports rewritten.

Azurite checks SharedKey signatures over the account and path (and some x-ms-* and content
headers), not over the host and port, so a request signed for the proxy's port is valid at
Azurite's; ``python bench/storage_meter.py`` checks that against a fresh Azurite.

A queue ``GET .../messages`` (not ``peekonly``) whose answer holds no ``<QueueMessage>`` is
counted with operation ``receive-empty``: polling, not work. Nothing is excluded.

The proxy runs in a process of its own (so the bench process's threads do not slow storage down
through the GIL); ``counts()``, ``statuses()``, ``reset()`` and ``idle_for()`` ask it over its
stdin and stdout.
Request bodies are read whole before forwarding (storage requests are small: a queue message is
at most 64 KiB); answers are streamed, except a queue receive's, which is read to tell polls
from work.
"""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.client import HTTPConnection, HTTPException, HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

SERVICES = {"BlobEndpoint": "blob", "QueueEndpoint": "queue", "TableEndpoint": "table"}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
# Node's default keep-alive timeout is 5 s: an upstream connection idle longer is not reused.
UPSTREAM_IDLE = 4.0
CHUNK = 64 * 1024
BATCH_TABLE = re.compile(
    rb"(?:GET|POST|PUT|PATCH|MERGE|DELETE) https?://[^/\s]+/[^/\s]+/([A-Za-z][A-Za-z0-9]*)"
)


class Key(NamedTuple):
    service: str  # table, queue, blob
    name: str  # table, queue or container name; "(account)" for account-level requests
    method: str
    op: str  # what the request does (receive-empty: a queue poll that found nothing)


def is_poll(key: Key) -> bool:
    return key.service == "queue" and key.op == "receive-empty"


# -- what a request is -----------------------------------------------------------------------


def classify(
    service: str, account: str, method: str, target: str, body: bytes, answer: bytes | None
) -> Key:
    """The key one request is counted under; ``answer``: the body of a queue receive."""
    split = urlsplit(target)
    query = parse_qs(split.query)
    parts = [unquote(p) for p in split.path.split("/") if p]
    if parts and parts[0] == account:  # IP-style URL: /<account>/<resource>...
        parts = parts[1:]
    if not parts:
        comp = query.get("comp", [""])[0]
        return Key(service, "(account)", method, comp or "service")
    if service == "table":
        return _table_key(method, parts, body)
    if service == "queue":
        return _queue_key(method, parts, query, answer)
    op = "container" if len(parts) == 1 else "blob"
    return Key(service, parts[0], method, op)


def _table_key(method: str, parts: list[str], body: bytes) -> Key:
    first = parts[0]
    if first.startswith("$batch"):
        tables = {m.decode() for m in BATCH_TABLE.findall(body)}
        name = tables.pop() if len(tables) == 1 else ",".join(sorted(tables)) or "$batch"
        return Key("table", name, method, "batch")
    if first.startswith("Tables"):
        inner = re.search(r"Tables\('([^']*)'\)", first)
        ops = {"POST": "create-table", "GET": "list-tables", "DELETE": "delete-table"}
        name = inner.group(1) if inner else "Tables"
        return Key("table", name, method, ops.get(method, "tables"))
    name, _, keys = first.partition("(")
    if method == "GET":
        op = "get" if "PartitionKey=" in keys or "RowKey=" in keys else "query"
    else:
        op = {"POST": "insert", "PUT": "replace", "PATCH": "merge", "MERGE": "merge"}.get(
            method, method.lower()
        )
    return Key("table", name, method, op)


def _queue_key(
    method: str, parts: list[str], query: dict[str, list[str]], answer: bytes | None
) -> Key:
    name = parts[0]
    if len(parts) == 1:
        if "metadata" in query.get("comp", []):
            return Key("queue", name, method, "metadata")
        return Key(
            "queue", name, method, {"PUT": "create", "DELETE": "delete-queue"}.get(method, "queue")
        )
    if len(parts) == 2:  # <queue>/messages
        if method == "GET":
            if query.get("peekonly", [""])[0].lower() == "true":
                return Key("queue", name, method, "peek")
            if answer is not None and b"<QueueMessage>" not in answer:
                return Key("queue", name, method, "receive-empty")
            return Key("queue", name, method, "receive")
        return Key(
            "queue", name, method, {"POST": "send", "DELETE": "clear"}.get(method, "messages")
        )
    return Key("queue", name, method, {"DELETE": "delete", "PUT": "update"}.get(method, "message"))


# -- the proxy --------------------------------------------------------------------------------


class _Upstream(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _dropped(connection: HTTPConnection) -> bool:
    """An idle keep-alive connection the other side closed reads as ready (EOF)."""
    sock = connection.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, service: str, upstream: tuple[str, int], account: str, meter: _Counts):
        self.service = service
        self.upstream = upstream
        self.account = account
        self.meter = meter
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards the storage clients
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn: HTTPConnection | None = None
        self._last_used = 0.0

    def finish(self) -> None:
        super().finish()
        if self._conn is not None:
            self._conn.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_upstream(self, body: bytes, chunked: bool) -> HTTPResponse:
        """Send the request as it came; once more on a fresh connection if a reused one was
        closed by Azurite before it read anything."""
        for attempt in (1, 2):
            fresh = False
            if (
                self._conn is None
                or time.monotonic() - self._last_used > UPSTREAM_IDLE
                or _dropped(self._conn)
            ):
                if self._conn is not None:
                    self._conn.close()
                self._conn = _Upstream(*self.server.upstream, timeout=300)
                fresh = True
            conn = self._conn
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        conn.putheader(name, value)
                if chunked:  # read whole above; sent with its length
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                return conn.getresponse()
            except (ConnectionError, HTTPException, OSError):
                conn.close()
                self._conn = None
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _forward(self) -> None:
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        body = self._body()
        service = self.server.service
        receive = service == "queue" and self.command == "GET" and "/messages" in self.path
        try:
            answer = self._send_upstream(body, chunked)
        except (ConnectionError, HTTPException, OSError) as error:
            key = classify(service, self.server.account, self.command, self.path, body, None)
            self.server.meter.add(key._replace(op="proxy-error"), 502)
            message = f"storage meter: upstream failed: {error!r}".encode()
            self.send_response_only(502)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        self.send_response_only(answer.status, answer.reason)
        headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP]
        no_body = self.command == "HEAD" or answer.status in (204, 304) or answer.status < 200
        content: bytes | None = None
        length = answer.getheader("Content-Length")
        if receive and not no_body:
            content = answer.read()
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(content))))
        elif not no_body and length is None:
            headers.append(("Transfer-Encoding", "chunked"))
        # Counted before the client has its answer: what it sees done is already counted.
        key = classify(service, self.server.account, self.command, self.path, body, content)
        self.server.meter.add(key, answer.status)
        for name, value in headers:
            self.send_header(name, value)
        if no_body and length is None and self.command != "HEAD":
            self.send_header("Content-Length", "0")
        self.end_headers()
        if content is not None:
            self.wfile.write(content)
        elif not no_body:
            chunk_it = length is None
            while chunk := answer.read1(CHUNK) if chunk_it else answer.read(CHUNK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunk_it else chunk)
            if chunk_it:
                self.wfile.write(b"0\r\n\r\n")
        else:
            answer.read()
        if answer.will_close:
            assert self._conn is not None
            self._conn.close()
            self._conn = None
        self._last_used = time.monotonic()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_MERGE = do_OPTIONS = _forward  # noqa: N815


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[Key] = Counter()
        self.statuses: Counter[tuple[str, str, str, int]] = Counter()
        self.started = time.monotonic()
        self.last_work: dict[str, float] = {}  # name → when it last saw a request not a poll

    def add(self, key: Key, status: int) -> None:
        with self.lock:
            self.counts[key] += 1
            if status >= 300:
                self.statuses[(key.service, key.name, key.op, status)] += 1
            if not is_poll(key):
                self.last_work[key.name] = time.monotonic()

    def idle_for(self, ignore: set[str]) -> float:
        """Seconds since the last request that was not a poll nor for a name in ``ignore``."""
        moments = [t for name, t in self.last_work.items() if name not in ignore]
        return time.monotonic() - max(moments, default=self.started)


def endpoints(connection_string: str) -> dict[str, str]:
    """Setting name → value of a storage connection string."""
    pairs = (part.partition("=") for part in connection_string.split(";") if part.strip())
    return {name.strip(): value.strip() for name, _, value in pairs}


def _serve(connection_string: str) -> None:
    """The proxy's process: one server per service, then one JSON answer per command line read
    from stdin (counts, reset, idle) until stdin closes."""
    counts = _Counts()
    servers: dict[str, _Server] = {}
    for setting, service in SERVICES.items():
        url = endpoints(connection_string).get(setting)
        if not url:
            continue
        parsed = urlsplit(url)
        account = parsed.path.strip("/").split("/")[0]
        upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        server = _Server(service, upstream, account, counts)
        servers[setting] = server
        threading.Thread(target=server.serve_forever, name=f"meter-{service}", daemon=True).start()

    def say(value: Any) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    say({setting: s.server_address[1] for setting, s in servers.items()})
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "stop":
            break
        with counts.lock:
            if command == "counts":
                say(
                    {
                        "counts": [[*k, n] for k, n in counts.counts.items()],
                        "statuses": [[*k, n] for k, n in counts.statuses.items()],
                    }
                )
            elif command == "reset":
                counts.counts.clear()
                counts.statuses.clear()
                say(None)
            elif command == "idle":
                say(counts.idle_for({n for n in argument.split(",") if n}))
            else:
                say({"error": f"unknown command {command!r}"})
    for server in servers.values():
        server.shutdown()
        server.server_close()


class StorageMeter:
    """See the module docstring."""

    def __init__(self, connection_string: str) -> None:
        self.upstream = connection_string
        self.ports: dict[str, int] = {}
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 30.0) -> StorageMeter:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        # The connection string (with the account key) on stdin, not on a command line.
        self._process.stdin.write(self.upstream + "\n")
        self._process.stdin.flush()
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        if not ready:
            self.stop()
            raise RuntimeError(f"the storage meter did not start within {timeout:.0f} s")
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            raise RuntimeError(f"the storage meter exited with code {code} at start-up")
        self.ports = json.loads(line)
        return self

    def _ask(self, command: str) -> Any:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError("the storage meter is not running")
            assert self._process.stdin is not None and self._process.stdout is not None
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
            return json.loads(self._process.stdout.readline())

    @property
    def connection_string(self) -> str:
        """The upstream connection string with the proxied endpoints' ports rewritten."""
        parts = []
        for part in self.upstream.split(";"):
            name, eq, value = part.partition("=")
            if eq and name.strip() in self.ports:
                url = urlsplit(value.strip())
                value = url._replace(netloc=f"127.0.0.1:{self.ports[name.strip()]}").geturl()
            parts.append(f"{name}{eq}{value}")
        return ";".join(parts)

    def _both(self) -> tuple[dict[Key, int], dict[tuple[str, str, str, int], int]]:
        answer = self._ask("counts")
        counts = {Key(*row[:4]): row[4] for row in answer["counts"]}
        statuses = {(r[0], r[1], r[2], r[3]): r[4] for r in answer["statuses"]}
        return counts, statuses

    def counts(self) -> dict[Key, int]:
        """Requests since the last reset, by (service, name, method, op)."""
        return self._both()[0]

    def statuses(self) -> dict[tuple[str, str, str, int], int]:
        """Answers of 300 or more since the last reset, by (service, name, op, status)."""
        return self._both()[1]

    def reset(self) -> None:
        self._ask("reset")

    def idle_for(self, ignore: Iterable[str] = ()) -> float:
        """Seconds since the last request that was neither an empty queue poll nor for a
        table, queue or container named in ``ignore`` (background work such as leases)."""
        return float(self._ask(f"idle {','.join(ignore)}".strip()))

    def wait_idle(
        self, quiet: float = 1.5, timeout: float = 60.0, ignore: Iterable[str] = ()
    ) -> bool:
        """Wait until only polls (and requests for ``ignore``) were seen for ``quiet`` seconds."""
        ignore = list(ignore)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle_for(ignore) >= quiet:
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            assert process.stdin is not None
            process.stdin.write("stop\n")
            process.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def summarize(counts: dict[Key, int]) -> dict[str, int]:
    """table, queue-work and queue-poll (and blob) totals."""
    totals = {"table": 0, "queue-work": 0, "queue-poll": 0, "blob": 0}
    for key, n in counts.items():
        if key.service == "queue":
            totals["queue-poll" if is_poll(key) else "queue-work"] += n
        else:
            totals[key.service] += n
    return totals


def _self_check() -> None:
    """Azurite behind the meter: table, batch, queue and blob calls signed for the proxy's port
    succeed, and each is counted once under the right name."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import urllib.error
    import urllib.request

    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from devhost.azurite import Azurite

    azurite = Azurite().start()
    meter = StorageMeter(azurite.connection_string).start()
    try:
        cs = meter.connection_string
        print(f"azurite: {azurite.connection_string}\nmeter:   {cs}")
        tables = TableServiceClient.from_connection_string(cs)
        table = tables.create_table_if_not_exists("checks")
        table.upsert_entity({"PartitionKey": "p", "RowKey": "1", "v": 1})
        table.submit_transaction(
            [("upsert", {"PartitionKey": "p", "RowKey": str(i), "v": i}) for i in range(2, 5)]
        )
        got = table.get_entity("p", "1")
        assert got["v"] == 1
        assert len(list(table.query_entities("PartitionKey eq 'p'"))) == 4
        queues = QueueServiceClient.from_connection_string(cs)
        queue = queues.get_queue_client("checks")
        queue.create_queue()
        queue.send_message("hello")
        [message] = list(queue.receive_messages(max_messages=1))
        queue.delete_message(message)
        assert not list(queue.receive_messages(max_messages=1))
        # A large answer, streamed through: 1,000 entities of 1 KiB in pages.
        for start in range(0, 1000, 100):
            table.submit_transaction(
                [
                    ("upsert", {"PartitionKey": "big", "RowKey": f"{i:04d}", "pad": "x" * 1024})
                    for i in range(start, start + 100)
                ]
            )
        assert len(list(table.query_entities("PartitionKey eq 'big'"))) == 1000
        if "BlobEndpoint" in meter.ports:  # no blob SDK here: an unsigned request is refused
            url = f"http://127.0.0.1:{meter.ports['BlobEndpoint']}/devstoreaccount1?comp=list"
            try:
                with urllib.request.urlopen(url) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            print("blob list without a signature, through the meter:", status)
        time.sleep(0.1)
        for key, n in sorted(meter.counts().items()):
            print(f"  {n:3d}  {key.service:5} {key.name:10} {key.method:6} {key.op}")
        print("statuses >= 300:", meter.statuses() or "none")
        print("totals:", summarize(meter.counts()))
    finally:
        meter.stop()
        azurite.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.stdin.readline().strip())
    else:
        _self_check()
