"""Errors a caller can act on, shaped as RFC 9457 problem details.

Raised by the admin operations and HTTP handlers; the HTTP layer turns them into
``application/problem+json`` answers and the CLI into one readable line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class Problem(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal-error"

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []

    @property
    def type(self) -> str:
        return f"urn:calendar-sync:problem:{self.slug}"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


class ValidationFailed(Problem):
    status, title, slug = 400, "The request is not valid", "validation-error"

    @classmethod
    def single(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"{field} {message}", [FieldError(field, message)])


class Unauthorized(Problem):
    status, title, slug = 401, "Not authenticated", "unauthorized"


class NotFound(Problem):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class PreconditionFailed(Problem):
    status, title, slug = 412, "Precondition failed", "precondition-failed"


class PayloadTooLarge(Problem):
    status, title, slug = 413, "Request body too large", "payload-too-large"


class Unavailable(Problem):
    status, title, slug = 503, "Temporarily unavailable", "unavailable"
