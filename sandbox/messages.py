"""Transport-neutral request and response types, and the error bodies of Graph and Entra.

Every route of the sandbox takes a `Request` and returns a `Response`, so that `$batch` can run an
inner request through exactly the same code as an outer one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from sandbox import timeutil


class Headers:
    """Case-insensitive header map (last value wins, except Prefer, which is joined)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, given in items:
            key = name.lower()
            value = given
            if key == "prefer" and key in self._items:
                value = self._items[key][1] + ", " + given
            self._items[key] = (name, value)

    def get(self, name: str, default: str = "") -> str:
        found = self._items.get(name.lower())
        return found[1] if found else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items.values())


@dataclass
class Request:
    method: str
    path: str  # decoded path, no query
    query: dict[str, str]  # lower-cased names, first value
    headers: Headers
    body: bytes = b""
    origin: str = ""  # https://host:port the client used
    raw_query: str = ""
    batch_parent: str | None = None
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        headers: Headers,
        body: bytes,
        origin: str,
        batch_parent: str | None = None,
    ) -> Request:
        from urllib.parse import unquote

        path, _, raw_query = target.partition("?")
        query: dict[str, str] = {}
        for name, value in parse_qsl(raw_query, keep_blank_values=True):
            query.setdefault(name.lower(), value)
        return cls(
            method=method.upper(),
            path=unquote(path),
            query=query,
            headers=headers,
            body=body,
            origin=origin,
            raw_query=raw_query,
            batch_parent=batch_parent,
        )

    def json(self) -> Any:
        if not self.body.strip():
            raise GraphError(400, "BadRequest", "Empty Payload, JSON content expected.")
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise GraphError(
                400, "BadRequest", f"Unable to read JSON request payload: {error}."
            ) from error

    def json_object(self) -> dict[str, Any]:
        value = self.json()
        if not isinstance(value, dict):
            raise GraphError(400, "BadRequest", "A JSON object was expected in the request body.")
        return value

    def form(self) -> dict[str, str]:
        text = self.body.decode("utf-8", errors="replace")
        return dict(parse_qsl(text, keep_blank_values=True))

    @property
    def client_request_id(self) -> str:
        return self.headers.get("client-request-id") or self.request_id

    def prefer(self) -> dict[str, str]:
        """Prefer header preferences, names lower-cased, quotes stripped."""
        found: dict[str, str] = {}
        for part in self.headers.get("Prefer").split(","):
            name, _, value = part.strip().partition("=")
            if name:
                found[name.strip().lower()] = value.strip().strip('"')
        return found


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Set by the pipeline for the request log.
    throttled: bool = False
    fault: str | None = None
    app: str | None = None

    @classmethod
    def json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> Response:
        body = json.dumps(value, ensure_ascii=False).encode("utf-8")
        merged = {"Content-Type": "application/json; charset=utf-8"}
        merged.update(headers or {})
        return cls(status, body, merged)

    @classmethod
    def empty(cls, status: int = 204, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, b"", dict(headers or {}))

    def parsed(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return self.body.decode("utf-8", errors="replace")


class GraphError(Exception):
    """An error answered in Microsoft Graph's shape: {"error": {code, message, innerError}}."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        inner: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.inner = dict(inner or {})

    def response(self, request: Request) -> Response:
        inner: dict[str, Any] = dict(self.inner)
        inner.update(
            {
                "date": timeutil.now().strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request.request_id,
                "client-request-id": request.client_request_id,
            }
        )
        body = {"error": {"code": self.code, "message": self.message, "innerError": inner}}
        return Response.json(self.status, body, self.headers)


class EntraError(Exception):
    """An error answered as Entra's token endpoint does (OAuth 2.0 error + AADSTS details)."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def response(self, request: Request) -> Response:
        stamp = timeutil.now()
        correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
        trace = request.request_id
        description = (
            f"AADSTS{self.code}: {self.description} Trace ID: {trace} "
            f"Correlation ID: {correlation} Timestamp: {timeutil.entra_stamp(stamp)}"
        )
        body = {
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timeutil.entra_stamp(stamp),
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        return Response.json(self.status, body, {"Cache-Control": "no-store, no-cache"})


class ConnectionFault(Exception):
    """Answer nothing: reset the connection (after an optional delay)."""

    def __init__(self, kind: str, fault_id: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.fault_id = fault_id


def link(origin: str, path: str, params: Mapping[str, str]) -> str:
    """An absolute link like Graph's nextLink: origin + path + encoded query."""
    query = urlencode(params, safe="$:',()@", quote_via=quote)
    return f"{origin}{quote(path, safe='/$()=,@:')}" + (f"?{query}" if query else "")
