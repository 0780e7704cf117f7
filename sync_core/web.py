"""Plain HTTP request/response values, so handlers are testable without the Functions runtime.

``function_app.py`` converts ``azure.functions.HttpRequest`` into :class:`Request` and
:class:`Response` back; everything in between is ordinary Python.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sync_core.problems import FieldError, PayloadTooLarge, Problem, ValidationFailed
from sync_core.validation import is_proper_text, proper_json

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Request:
    method: str
    url: str = ""
    route: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON, or :class:`ValidationFailed` saying why it is not."""
        if not self.body:
            raise ValidationFailed(
                "the request needs a JSON body", [FieldError("body", "is empty")]
            )
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: nesting deeper than the decoder's stack (e.g. 2,000 "[").
            raise ValidationFailed(
                "the body is not valid JSON", [FieldError("body", f"is not valid JSON: {exc}")]
            ) from None
        # JSON may spell a lone surrogate ("\ud800"); nothing downstream gets to see one.
        return proper_json(value)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def json_response(status: int, data: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status,
        json.dumps(data, separators=(",", ":"), default=str).encode(),
        {"Content-Type": JSON, **(headers or {})},
    )


def problem_response(problem: Problem) -> Response:
    return Response(
        problem.status, json.dumps(problem.to_json()).encode(), {"Content-Type": PROBLEM_JSON}
    )


Handler = Callable[[Request], Response]


def serve(handler: Handler, request: Request) -> Response:
    """Run a handler with the checks every route shares: body size, problems, no leaked errors."""
    if len(request.body) > MAX_BODY_BYTES:
        return problem_response(
            PayloadTooLarge(
                f"the body has {len(request.body)} bytes; the limit is {MAX_BODY_BYTES}"
            )
        )
    try:
        _check_text(request)
        return handler(request)
    except Problem as problem:
        return problem_response(problem)
    except Exception:
        # The details go to the log, not to the caller.
        log.exception("unhandled error in %s %s", request.method, request.url.split("?", 1)[0])
        return problem_response(Problem("an unexpected error occurred; see the function log"))


def _check_text(request: Request) -> None:
    """Refuse a request whose URL, route values, query parameters or headers are not proper
    Unicode (a lone surrogate, e.g. from ``%ED%A0%80``): they reach keys, hashes and logs."""
    parts = (("route", request.route), ("query", request.query), ("header", request.headers))
    for kind, values in parts:
        for name, value in values.items():
            if not (is_proper_text(name) and is_proper_text(value)):
                field = name if is_proper_text(name) else kind
                raise ValidationFailed.single(
                    field, f"({kind}) is not valid Unicode text (it has a lone surrogate)"
                )
    if not is_proper_text(request.url):
        raise ValidationFailed.single("url", "is not valid Unicode text (it has a lone surrogate)")
