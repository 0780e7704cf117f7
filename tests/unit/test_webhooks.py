"""Standard Webhooks signing and verification (sync_core.webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sync_core.webhooks import SignatureError, new_message_id, sign, verify

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NOW = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())
BODY = b'{"type":"booking.created","data":{"id":"bk_1","title":"Caf\xc3\xa9"}}'

# The test vector of the standard-webhooks reference library: libraries/python/tests/
# test_webhooks.py, test_sign_function, in github.com/standard-webhooks/standard-webhooks
# (the spec document itself shows a signature without its secret, so it cannot be checked).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def signature_of(headers: dict[str, str]) -> str:
    return headers["webhook-signature"].partition(",")[2]


def reason(excinfo: pytest.ExceptionInfo[SignatureError]) -> str:
    return excinfo.value.reason


def assert_no_secret_in(error: BaseException, *secret_values: str) -> None:
    text = f"{error} {error!r} {getattr(error, 'reason', '')}"
    for value in secret_values:
        assert value not in text
        assert value.removeprefix("whsec_") not in text


def test_known_vector_signs_and_verifies() -> None:
    headers = sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIGNATURE,
    }
    when = datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC) + timedelta(seconds=30)
    assert verify([VECTOR_SECRET], headers, VECTOR_BODY, now=when) == VECTOR_ID


def test_known_vector_matches_plain_hmac() -> None:
    """Independent of the package: HMAC-SHA256 over "{id}.{timestamp}.{body}"."""
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    content = f"{VECTOR_ID}.{VECTOR_TIMESTAMP}.".encode() + VECTOR_BODY
    digest = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert "v1," + digest == VECTOR_SIGNATURE


def test_round_trip_returns_the_id() -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-timestamp"] == str(T)
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", headers["webhook-signature"])
    assert verify([SECRET], headers, BODY, now=NOW) == "msg_1"


def test_sign_accepts_aware_datetimes_in_any_zone() -> None:
    berlin = NOW.astimezone(timezone(timedelta(hours=1)))
    assert sign(SECRET, "msg_1", berlin, BODY) == sign(SECRET, "msg_1", T, BODY)
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(SECRET, "msg_1", datetime(2026, 11, 22, 10, 0), BODY)


def test_secret_without_prefix_is_the_same_key() -> None:
    headers = sign(SECRET.removeprefix("whsec_"), "msg_1", T, BODY)
    assert verify([SECRET], headers, BODY, now=NOW) == "msg_1"


def test_header_names_are_case_insensitive() -> None:
    headers = {name.upper(): value for name, value in sign(SECRET, "msg_1", T, BODY).items()}
    assert "WEBHOOK-ID" in headers
    assert verify([SECRET], headers, BODY, now=NOW) == "msg_1"


@pytest.mark.parametrize(
    "body",
    [
        BODY + b" ",
        BODY.replace(b"bk_1", b"bk_2"),
        b'{"type": "booking.created","data":{"id":"bk_1","title":"Caf\xc3\xa9"}}',
        b"",
    ],
    ids=["trailing-space", "changed-value", "reserialised", "empty"],
)
def test_tampered_body_is_rejected(body: bytes) -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    with pytest.raises(SignatureError) as excinfo:
        verify([SECRET], headers, body, now=NOW)
    assert reason(excinfo) == "no signature matched"


def test_tampered_id_or_timestamp_is_rejected() -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    with pytest.raises(SignatureError, match="no signature matched"):
        verify([SECRET], {**headers, "webhook-id": "msg_2"}, BODY, now=NOW)
    with pytest.raises(SignatureError, match="no signature matched"):
        verify([SECRET], {**headers, "webhook-timestamp": str(T + 1)}, BODY, now=NOW)


def test_wrong_secret_is_rejected_without_leaking_it() -> None:
    headers = sign(OTHER_SECRET, "msg_1", T, BODY)
    with pytest.raises(SignatureError) as excinfo:
        verify([SECRET], headers, BODY, now=NOW)
    assert reason(excinfo) == "no signature matched"
    assert_no_secret_in(excinfo.value, SECRET, OTHER_SECRET, signature_of(headers))


def test_one_matching_signature_among_several_is_enough() -> None:
    good = sign(SECRET, "msg_1", T, BODY)
    bad = sign(OTHER_SECRET, "msg_1", T, BODY)
    listed = " ".join(
        [
            bad["webhook-signature"],
            "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==",
            "v2," + signature_of(good),
            good["webhook-signature"],
        ]
    )
    headers = {**good, "webhook-signature": listed}
    assert verify([SECRET], headers, BODY, now=NOW) == "msg_1"
    # The same list without the good entry fails: the match above was not by accident.
    without = listed.replace(good["webhook-signature"], "").strip()
    with pytest.raises(SignatureError, match="no signature matched"):
        verify([SECRET], {**good, "webhook-signature": without}, BODY, now=NOW)


def test_rotation_accepts_either_configured_secret() -> None:
    old = sign(OTHER_SECRET, "msg_old", T, BODY)
    new = sign(SECRET, "msg_new", T, BODY)
    assert verify([OTHER_SECRET, SECRET], old, BODY, now=NOW) == "msg_old"
    assert verify([OTHER_SECRET, SECRET], new, BODY, now=NOW) == "msg_new"
    with pytest.raises(SignatureError, match="no signature matched"):
        verify([SECRET], old, BODY, now=NOW)


@pytest.mark.parametrize("offset", [timedelta(minutes=-5), timedelta(0), timedelta(minutes=5)])
def test_timestamp_within_tolerance_is_accepted(offset: timedelta) -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    assert verify([SECRET], headers, BODY, now=NOW + offset) == "msg_1"


@pytest.mark.parametrize(
    "now",
    [NOW + timedelta(minutes=5, seconds=1), NOW - timedelta(minutes=5, seconds=1)],
    ids=["stale", "future"],
)
def test_timestamp_outside_tolerance_is_rejected(now: datetime) -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    with pytest.raises(SignatureError) as excinfo:
        verify([SECRET], headers, BODY, now=now)
    assert reason(excinfo) == "timestamp outside the tolerance"


def test_tolerance_is_configurable() -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    later = NOW + timedelta(minutes=20)
    assert verify([SECRET], headers, BODY, now=later, tolerance=timedelta(minutes=30)) == "msg_1"
    with pytest.raises(SignatureError, match="tolerance"):
        verify([SECRET], headers, BODY, now=later)


def test_default_clock_is_now() -> None:
    fresh = sign(SECRET, "msg_1", datetime.now(UTC), BODY)
    assert verify([SECRET], fresh, BODY) == "msg_1"
    stale = sign(SECRET, "msg_1", datetime.now(UTC) - timedelta(hours=1), BODY)
    with pytest.raises(SignatureError, match="tolerance"):
        verify([SECRET], stale, BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_named(missing: str) -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    del headers[missing]
    with pytest.raises(SignatureError) as excinfo:
        verify([SECRET], headers, BODY, now=NOW)
    assert reason(excinfo) == f"missing {missing} header"


def test_blank_header_counts_as_missing() -> None:
    headers = {**sign(SECRET, "msg_1", T, BODY), "webhook-id": "  "}
    with pytest.raises(SignatureError, match="missing webhook-id header"):
        verify([SECRET], headers, BODY, now=NOW)


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "v1",
        "v1,",
        ",abc",
        "v1,not*base64!",
        "v1,c2hvcnQ=",  # valid base64, but not 32 bytes
    ],
)
def test_malformed_signature_header_is_rejected(value: str) -> None:
    headers = {**sign(SECRET, "msg_1", T, BODY), "webhook-signature": value}
    with pytest.raises(SignatureError) as excinfo:
        verify([SECRET], headers, BODY, now=NOW)
    assert reason(excinfo) == "malformed webhook-signature header"


def test_only_foreign_signature_versions_is_named() -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    headers["webhook-signature"] = "v1a,abc v2," + signature_of(headers)
    with pytest.raises(SignatureError, match="no v1 signature"):
        verify([SECRET], headers, BODY, now=NOW)


@pytest.mark.parametrize("value", ["soon", "1.5", "-1", "0x10", "01614265330", str(10**13)])
def test_malformed_timestamp_is_rejected(value: str) -> None:
    headers = {**sign(SECRET, "msg_1", T, BODY), "webhook-timestamp": value}
    with pytest.raises(SignatureError) as excinfo:
        verify([SECRET], headers, BODY, now=NOW)
    assert reason(excinfo) == "malformed webhook-timestamp header"


@pytest.mark.parametrize("value", ["msg.1", "msg 1", "x" * 257, "msg\u00e91"])
def test_malformed_id_is_rejected(value: str) -> None:
    headers = {**sign(SECRET, "msg_1", T, BODY), "webhook-id": value}
    with pytest.raises(SignatureError) as excinfo:
        verify([SECRET], headers, BODY, now=NOW)
    assert reason(excinfo) == "malformed webhook-id header"


def test_sign_refuses_ids_that_verify_would_reject() -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign(SECRET, "msg.1", T, BODY)
    with pytest.raises(ValueError, match="webhook id"):
        sign(SECRET, "", T, BODY)


def test_body_is_verified_as_raw_bytes() -> None:
    """Non-ASCII UTF-8 round-trips exactly; a non-UTF-8 body is a safe rejection, no crash."""
    body = '{"title":"Besprechung über Café ☕"}'.encode()
    headers = sign(SECRET, "msg_1", T, body)
    assert verify([SECRET], headers, body, now=NOW) == "msg_1"
    with pytest.raises(SignatureError, match="not valid UTF-8"):
        verify([SECRET], headers, b"\xff" + body, now=NOW)
    with pytest.raises(TypeError):
        verify([SECRET], headers, body.decode(), now=NOW)  # type: ignore[arg-type]


def test_configuration_mistakes_are_not_signature_errors() -> None:
    headers = sign(SECRET, "msg_1", T, BODY)
    with pytest.raises(ValueError, match="no webhook secret"):
        verify([], headers, BODY, now=NOW)
    with pytest.raises(TypeError):
        verify(SECRET, headers, BODY, now=NOW)
    with pytest.raises(ValueError) as excinfo:
        verify(["whsec_not base64!"], headers, BODY, now=NOW)
    assert not isinstance(excinfo.value, SignatureError)
    assert "not base64" not in str(excinfo.value)
    with pytest.raises(ValueError, match="empty"):
        sign("whsec_", "msg_1", T, BODY)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify([SECRET], headers, BODY, now=datetime(2026, 11, 22, 10, 0))


def test_no_reason_ever_contains_a_secret_or_signature() -> None:
    good = sign(SECRET, "msg_1", T, BODY)
    cases = [
        (
            {**good, "webhook-signature": "v1," + signature_of(sign(OTHER_SECRET, "m", T, BODY))},
            NOW,
        ),
        (good, NOW + timedelta(hours=1)),
        ({**good, "webhook-signature": "v1,@@" + signature_of(good)}, NOW),
        ({k: v for k, v in good.items() if k != "webhook-id"}, NOW),
    ]
    for headers, now in cases:
        with pytest.raises(SignatureError) as excinfo:
            verify([SECRET, OTHER_SECRET], headers, BODY, now=now)
        assert_no_secret_in(excinfo.value, SECRET, OTHER_SECRET, signature_of(good))
        assert len(str(excinfo.value)) < 60


def test_new_message_ids_are_unique_and_valid() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    for msg_id in list(ids)[:50]:
        assert re.fullmatch(r"msg_[A-Za-z0-9_-]{24}", msg_id)
        assert verify([SECRET], sign(SECRET, msg_id, T, BODY), BODY, now=NOW) == msg_id
