"""Standard Webhooks signing and verification (SPEC §3.2 in, §3.3 out).

The HMAC itself comes from the `standardwebhooks` package (`Webhook.sign`). Header parsing,
the timestamp check and the signature comparison are ours, because the package's `verify`:

- reads the wall clock itself and has a fixed tolerance (no injectable clock for tests);
- takes one secret only (we accept several during rotation);
- crashes with ValueError / UnicodeDecodeError on a malformed `webhook-signature` entry or a
  body that is not UTF-8, instead of rejecting the request;
- and its `sign` misreads aware datetimes that are not in UTC (`replace(tzinfo=utc)`), so we pass
  it UTC datetimes only.

The comparison uses `hmac.compare_digest`, as the package does. Messages of `SignatureError` and
`ValueError` raised here never contain a secret or a signature.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets as _random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

__all__ = [
    "DEFAULT_TOLERANCE",
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "SignatureError",
    "new_message_id",
    "sign",
    "verify",
]

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
DEFAULT_TOLERANCE = timedelta(minutes=5)

WHSEC_PREFIX = "whsec_"
_SIGNATURE_VERSION = "v1"
_SIGNATURE_BYTES = 32  # HMAC-SHA256
# Printable ASCII without space and without "." (the spec forbids "." in ids: "{id}.{ts}.{body}"
# must not be ambiguous), at most 256 characters.
_ID = re.compile(r"[!-\-/-~]{1,256}")
# Unix seconds as the spec's integer; no sign, no leading zeros, no fraction.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")


class SignatureError(Exception):
    """A webhook failed verification. `reason` is short and safe to log or return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_message_id() -> str:
    """A fresh, unguessable webhook id such as `msg_3mJ0…` (URL- and Table-key-safe)."""
    return "msg_" + _random.token_urlsafe(18)


def sign(secret: str, msg_id: str, timestamp: int | datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, signed with `secret` (`whsec_…`)."""
    if not _ID.fullmatch(msg_id):
        raise ValueError("webhook id must be 1-256 printable ASCII characters without '.'")
    seconds = _unix_seconds(timestamp)
    text = _text(body)
    if text is None:
        raise ValueError("webhook body must be UTF-8")
    signature = _webhook(secret).sign(msg_id, datetime.fromtimestamp(seconds, UTC), text)
    return {HEADER_ID: msg_id, HEADER_TIMESTAMP: str(seconds), HEADER_SIGNATURE: signature}


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime | None = None,
    tolerance: timedelta = DEFAULT_TOLERANCE,
) -> str:
    """Check a delivery's Standard Webhooks headers against the raw `body`; return its id.

    `secrets` are the accepted secrets (old and new during a rotation); `headers` are matched
    case-insensitively; `webhook-signature` may hold several space-separated signatures and one
    `v1` signature made with any of the secrets suffices. Raises `SignatureError` with a short
    reason; raises `ValueError` / `TypeError` for a configuration mistake (no or invalid secret).
    """
    if isinstance(secrets, str | bytes):
        raise TypeError("secrets must be a sequence of secrets, not one string")
    webhooks = [_webhook(secret) for secret in secrets]
    if not webhooks:
        raise ValueError("no webhook secret configured")
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")

    lowered = {str(name).strip().lower(): value for name, value in headers.items()}
    msg_id = _header(lowered, HEADER_ID)
    raw_timestamp = _header(lowered, HEADER_TIMESTAMP)
    raw_signatures = _header(lowered, HEADER_SIGNATURE)
    if not _ID.fullmatch(msg_id):
        raise SignatureError(f"malformed {HEADER_ID} header")
    if not _TIMESTAMP.fullmatch(raw_timestamp):
        raise SignatureError(f"malformed {HEADER_TIMESTAMP} header")
    timestamp = int(raw_timestamp)
    if abs(timestamp - now.timestamp()) > tolerance.total_seconds():
        raise SignatureError("timestamp outside the tolerance")

    candidates: list[bytes] = []
    well_formed = 0
    for entry in raw_signatures.split():
        version, comma, encoded = entry.partition(",")
        if not (version and comma and encoded):
            continue
        if version != _SIGNATURE_VERSION:
            well_formed += 1  # e.g. v1a (asymmetric): valid syntax, not ours to check
            continue
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) != _SIGNATURE_BYTES:
            continue
        well_formed += 1
        candidates.append(decoded)
    if not well_formed:
        raise SignatureError(f"malformed {HEADER_SIGNATURE} header")
    if not candidates:
        raise SignatureError("no v1 signature")

    text = _text(body)
    if text is None:
        raise SignatureError("body is not valid UTF-8")
    when = datetime.fromtimestamp(timestamp, UTC)
    for webhook in webhooks:
        expected = base64.b64decode(webhook.sign(msg_id, when, text).partition(",")[2])
        # No early exit inside one secret's loop: every candidate is compared in constant time.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return msg_id
    raise SignatureError("no signature matched")


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not str(value).strip():
        raise SignatureError(f"missing {name} header")
    return str(value).strip()


def _text(body: bytes) -> str | None:
    """The body as text for the package's `sign`; UTF-8 round-trips byte for byte."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("webhook body must be the raw bytes")
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _unix_seconds(timestamp: int | datetime) -> int:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None or timestamp.utcoffset() is None:
            raise ValueError("webhook timestamp must be timezone-aware")
        seconds = int(timestamp.timestamp() // 1)
    elif isinstance(timestamp, int) and not isinstance(timestamp, bool):
        seconds = timestamp
    else:
        raise TypeError("webhook timestamp must be unix seconds or an aware datetime")
    if not _TIMESTAMP.fullmatch(str(seconds)):
        raise ValueError("webhook timestamp must be non-negative unix seconds")
    return seconds


def _webhook(secret: str) -> Webhook:
    """The package's signer for `whsec_<base64>` (the prefix is optional); strict base64."""
    if not isinstance(secret, str):
        raise TypeError("webhook secret must be a string")
    encoded = secret.strip()
    encoded = encoded.removeprefix(WHSEC_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not whsec_ followed by base64") from None
    try:
        return Webhook(key)
    except EmptyWebhookSecretError:
        raise ValueError("webhook secret is empty") from None
