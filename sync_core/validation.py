"""Validation of request bodies and identifiers, reporting every bad field at once."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sync_core.problems import FieldError, ValidationFailed

M = TypeVar("M", bound=BaseModel)

# What Graph accepts as a mailbox address here: one @, no spaces, a dotted domain.
MAILBOX = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_ID_LENGTH = 256


def parse_model(model: type[M], data: Any) -> M:
    """``data`` as ``model``, or :class:`ValidationFailed` listing every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            FieldError(".".join(str(part) for part in err["loc"]) or "body", _message(err))
            for err in exc.errors()
        ]
        raise ValidationFailed(f"{len(errors)} field(s) are not valid", errors) from None


def _message(err: Any) -> str:
    if err["type"] == "missing":
        return "is required"
    if err["type"] == "extra_forbidden":
        return "is not a known field"
    return str(err["msg"])


def check_identifier(field: str, value: str) -> str:
    """A platform id (resource, booking): 1-256 printable characters."""
    if not value or len(value) > MAX_ID_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationFailed(
            f"{field} is not valid",
            [FieldError(field, f"must be 1-{MAX_ID_LENGTH} printable characters")],
        )
    return value


def normalize_mailbox(value: str) -> str:
    value = value.strip()
    if len(value) > 320 or not MAILBOX.match(value):
        raise ValueError("must be a mailbox address like room.berlin@contoso.com")
    return value.lower()
