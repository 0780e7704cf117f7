"""The error table and the retry policy (pure: no network)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from sync_core.graph.errors import (
    DeltaReset,
    ErrorKind,
    error_from_login,
    error_from_response,
)
from sync_core.graph.retry import RetryPolicy, parse_retry_after


@pytest.mark.parametrize(
    ("status", "code", "kind", "words"),
    [
        (404, "ErrorInvalidUser", ErrorKind.MAILBOX_UNKNOWN, "does not exist"),
        (404, "ResourceNotFound", ErrorKind.MAILBOX_UNKNOWN, "does not exist"),
        (404, "Request_ResourceNotFound", ErrorKind.MAILBOX_UNKNOWN, "does not exist"),
        (404, "MailboxNotEnabledForRESTAPI", ErrorKind.MAILBOX_NOT_ENABLED, "Exchange Online"),
        (403, "ErrorAccessDenied", ErrorKind.ACCESS_DENIED, "denied"),
        (404, "ErrorItemNotFound", ErrorKind.ITEM_NOT_FOUND, "no longer exists"),
        (401, "InvalidAuthenticationToken", ErrorKind.TOKEN_INVALID, "access token"),
        (429, "ApplicationThrottled", ErrorKind.THROTTLED, "throttling"),
        (503, "ServiceUnavailable", ErrorKind.UNAVAILABLE, "unavailable"),
        (410, "syncStateNotFound", ErrorKind.SYNC_STATE_LOST, "from the start"),
        (400, "resyncRequired", ErrorKind.SYNC_STATE_LOST, "from the start"),
    ],
)
def test_every_graph_code_has_a_kind_message_and_hint(
    status: int, code: str, kind: ErrorKind, words: str
) -> None:
    body = {"error": {"code": code, "message": "Graph's own words"}}
    error = error_from_response(status, body, mailbox="room@contoso.example")
    assert error.kind is kind
    assert error.code == code
    assert words in error.message
    assert error.hint
    if kind.template.count("{mailbox}"):
        assert "room@contoso.example" in error.message
    assert error.to_json() == {"code": code, "message": error.message, "hint": error.hint}
    assert isinstance(error, DeltaReset) == (kind is ErrorKind.SYNC_STATE_LOST)


@pytest.mark.parametrize(
    ("codes", "kind", "setting"),
    [
        ([7000215], ErrorKind.SECRET_INVALID, "Value, not its Secret ID"),
        ([7000222], ErrorKind.SECRET_EXPIRED, "expired"),
        ([90002], ErrorKind.TENANT_UNKNOWN, "TENANT_ID"),
        ([700016], ErrorKind.APP_UNKNOWN, "CLIENT_ID"),
        ([50000], ErrorKind.LOGIN_FAILED, "refused"),
    ],
)
def test_login_errors(codes: list[int], kind: ErrorKind, setting: str) -> None:
    error = error_from_login(
        {
            "error": "invalid_client",
            "error_description": f"AADSTS{codes[0]}: words.\r\nTrace ID: abc",
            "error_codes": codes,
        }
    )
    assert error.kind is kind
    assert error.code == f"AADSTS{codes[0]}"
    assert setting in error.message + error.hint
    assert "Trace ID" not in error.detail
    assert not error.retryable


def test_retryable_is_part_of_the_kind() -> None:
    assert ErrorKind.THROTTLED.retryable and ErrorKind.UNAVAILABLE.retryable
    assert ErrorKind.NETWORK.retryable and ErrorKind.SYNC_STATE_LOST.retryable
    assert not ErrorKind.MAILBOX_UNKNOWN.retryable and not ErrorKind.SECRET_EXPIRED.retryable


def test_unknown_codes_fall_back_to_the_status() -> None:
    assert error_from_response(504, None).kind is ErrorKind.UNAVAILABLE
    assert error_from_response(418, {"error": {"code": "Teapot"}}).kind is ErrorKind.UNEXPECTED
    assert error_from_response(502, "not json").code == "HTTP502"


def test_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2", now) == 2.0
    assert parse_retry_after("Sun, 22 Nov 2026 10:00:07 GMT", now) == 7.0
    assert parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_grows_with_jitter_and_stops_at_the_budget() -> None:
    policy = RetryPolicy(attempts=6, base=0.5, cap=4.0, budget=10.0)
    rng = random.Random(7)
    delays = [policy.backoff(n, rng) for n in range(1, 6)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(4.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert policy.wait_before(1, 3.0, waited=0.0) == 3.0  # Retry-After wins
    assert policy.wait_before(1, 3.0, waited=8.0) is None  # would pass the budget
    assert policy.wait_before(6, None, waited=0.0) is None  # out of attempts
