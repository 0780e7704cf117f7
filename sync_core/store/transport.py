"""The HTTP transport of the storage clients (tables and queues): keep-alive http.client
connections, without requests and urllib3 in between.

Storage calls are small request/response pairs that are never streamed. Through the SDKs'
default transport, requests and urllib3 spent more CPU on each of them (preparing the request,
merging session settings, cookies, URL parsing) than the SDK and the network together, and the
product makes many such calls per booking. With a proxy configured the default transport is used,
since it knows how to reach storage through one.
"""

from __future__ import annotations

import os
import select
import ssl
import threading
from http.client import HTTPConnection, HTTPException, HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

from azure.core.configuration import ConnectionConfiguration
from azure.core.exceptions import (
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest, HttpResponse

# The http.client-backed response of azure.core.rest; azure-core is pinned (requirements.txt)
# and tests/integration/test_storage_transport.py runs the tables and queue clients over it.
from azure.core.rest._http_response_impl import RestHttpClientTransportResponse

from sync_core.identity import uses_proxy

_Key = tuple[str, str, int]


class StorageTransport(HttpTransport[HttpRequest, HttpResponse]):
    """Keeps up to ``max_idle`` idle connections per host; any number may be busy at once."""

    def __init__(self, max_idle: int = 64, **kwargs: Any) -> None:
        self.connection_config = ConnectionConfiguration(**kwargs)
        self._max_idle = max_idle
        self._idle: dict[_Key, list[HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: dict[Any, ssl.SSLContext] = {}

    def __enter__(self) -> StorageTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        """Shared by the clients a service client makes: connections stay open for the next."""

    def open(self) -> None:
        """Connections open on first use."""

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        """Send an ``azure.core.rest.HttpRequest`` (what the tables and queue clients build)."""
        url = urlsplit(request.url)
        key: _Key = (
            url.scheme,
            url.hostname or "",
            url.port or (443 if url.scheme == "https" else 80),
        )
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        body = request.data
        if isinstance(body, str):
            body = body.encode("utf-8")
        connect_timeout = kwargs.get("connection_timeout", self.connection_config.timeout)
        read_timeout = kwargs.get("read_timeout", self.connection_config.read_timeout)
        verify = kwargs.get("connection_verify", self.connection_config.verify)

        connection = self._take(key) or self._connect(key, connect_timeout, verify)
        sent = False
        try:
            if connection.sock is None:
                connection.connect()
            connection.sock.settimeout(read_timeout)
            connection.request(request.method, target, body=body, headers=request.headers)
            sent = True
            raw = connection.getresponse()
            content = raw.read()
        except TimeoutError as exc:
            connection.close()
            raise (ServiceResponseTimeoutError if sent else ServiceRequestTimeoutError)(
                str(exc), error=exc
            ) from exc
        except (OSError, HTTPException) as exc:
            connection.close()
            raise (ServiceResponseError if sent else ServiceRequestError)(
                str(exc) or type(exc).__name__, error=exc
            ) from exc
        if raw.will_close:
            connection.close()
        else:
            self._give_back(key, connection)

        response = RestHttpClientTransportResponse(  # type: ignore[no-untyped-call]
            request=request, internal_response=raw
        )
        response._content = content
        return response

    def _take(self, key: _Key) -> HTTPConnection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                connection = idle.pop()
            if not _dropped(connection):
                return connection
            connection.close()

    def _give_back(self, key: _Key, connection: HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_idle:
                idle.append(connection)
                return
        connection.close()

    def _connect(self, key: _Key, timeout: float, verify: Any) -> HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            return HTTPSConnection(host, port, timeout=timeout, context=self._context(verify))
        return HTTPConnection(host, port, timeout=timeout)

    def _context(self, verify: Any) -> ssl.SSLContext:
        with self._lock:
            context = self._tls.get(verify)
            if context is None:
                context = self._tls[verify] = _tls_context(verify)
            return context


def _tls_context(verify: Any) -> ssl.SSLContext:
    """As requests verifies: a CA bundle path, REQUESTS_CA_BUNDLE, or certifi's bundle."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    bundle = os.environ.get("REQUESTS_CA_BUNDLE")
    if not bundle:
        import certifi

        bundle = certifi.where()
    return ssl.create_default_context(cafile=bundle)


def _dropped(connection: HTTPConnection) -> bool:
    """An idle keep-alive connection with something to read was closed by the server."""
    if connection.sock is None:
        return True
    try:
        readable, _, _ = select.select([connection.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def storage_transport() -> Any:
    """The transport of one storage service client and the table or queue clients it makes."""
    if uses_proxy():
        from azure.core.pipeline.transport import RequestsTransport

        from sync_core.identity import pooled_session

        return RequestsTransport(session=pooled_session(64), session_owner=False)
    return StorageTransport()
