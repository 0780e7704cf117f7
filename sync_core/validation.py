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
MAX_VERSION = 2**63 - 1  # the largest booking version: what a 64-bit integer property holds


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


def is_proper_text(value: str) -> bool:
    """Whether ``value`` is Unicode that can be encoded (as UTF-8): no lone surrogates.

    JSON's ``\\ud800`` escapes, raw surrogate bytes (which ``json.loads`` decodes with
    ``surrogatepass``) and ``%ED%A0%80`` in a URL can all produce them; every key, hash,
    signature and log line downstream encodes text and would fail on one.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def proper_json(value: Any, field: str = "body") -> Any:
    """``value`` (decoded JSON) if every string in it, keys included, is proper Unicode.

    Iterative, since decoded JSON may be nested as deep as the decoder allows.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not is_proper_text(item):
                raise ValidationFailed.single(
                    field, "has a string that is not valid Unicode text (a lone surrogate)"
                )
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


def parse_count(field: str, text: str, *, minimum: int, maximum: int) -> int:
    """A whole number given as text (a query parameter): ASCII digits only, in range.

    ``str.isdigit`` alone accepts ``²`` and other digits ``int()`` refuses or reads differently.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise ValidationFailed.single(field, f"must be a whole number from {minimum} to {maximum}")
    number = int(text)
    if not minimum <= number <= maximum:
        raise ValidationFailed.single(field, f"must be between {minimum} and {maximum}")
    return number


def check_identifier(field: str, value: str) -> str:
    """A platform id (resource, booking): 1-256 printable characters of proper Unicode."""
    if (
        not value
        or len(value) > MAX_ID_LENGTH
        or not is_proper_text(value)
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    ):
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
