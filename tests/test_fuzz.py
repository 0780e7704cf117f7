"""Fuzzing of the four inbound routes (issue 9, item 3).

Over 10,000 hypothesis-generated hostile inputs go in-process through ``serve`` and the same
handlers the function app runs, with a real ``Services`` on Azurite and the simulated tenant; a
smaller sample goes over real HTTP through the local function host. For every input: no 5xx,
every 4xx is ``application/problem+json``, and nothing rejected changes any state (rows in
``bookings``, ``webhookids``, ``mappings``, ``links``; messages in ``apply-booking`` and
``sync-mailbox``).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import Sandbox
from sync_core import admin, bookings, inbound
from sync_core.config import load_settings
from sync_core.services import Services
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX
from sync_core.web import MAX_BODY_BYTES, PROBLEM_JSON, Request, Response, json_response, serve
from sync_core.webhooks import sign
from tests.conftest import FUNCTION_KEY, KEY_HEADER, ROOM_A, LocalHost

TABLES = ("bookings", "webhookids", "mappings", "links")
QUEUES = (APPLY_BOOKING, SYNC_MAILBOX)
MAPPED = "room-42"

# Inputs per route in-process (10,000 in all) and over real HTTP (300 in all).
IN_PROCESS = {"bookings": 3800, "notifications": 2200, "lifecycle": 2000, "mappings": 2000}
OVER_HTTP = 75


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# -- state and answers --------------------------------------------------------------------------


def snapshot(storage: str) -> dict[str, int]:
    """Row counts of the state tables and message counts of the work queues."""
    table_service = TableServiceClient.from_connection_string(storage)
    existing = {t.name for t in table_service.list_tables()}
    counts = {
        table: (
            sum(1 for _ in table_service.get_table_client(table).list_entities())
            if table in existing
            else 0
        )
        for table in TABLES
    }
    queue_service = QueueServiceClient.from_connection_string(storage)
    existing_queues = {q.name for q in queue_service.list_queues()}
    for name in QUEUES:
        counts[name] = (
            int(
                queue_service.get_queue_client(name)
                .get_queue_properties()
                .approximate_message_count
                or 0
            )
            if name in existing_queues
            else 0
        )
    return counts


def check_answer(status: int, content_type: str, body: bytes) -> None:
    """No 5xx; a 4xx is RFC 9457 problem+json whose ``status`` is the response's."""
    assert status < 500, (status, body[:300])
    if 400 <= status < 500:
        assert content_type == PROBLEM_JSON, (status, content_type, body[:300])
        problem = json.loads(body)
        assert problem["status"] == status
        assert isinstance(problem["type"], str) and problem["type"]
        assert isinstance(problem["title"], str) and problem["title"]
        assert isinstance(problem["detail"], str)


def rejected(route: str, status: int, body: bytes) -> bool:
    """The answer turned the input away: nothing may have been written for it."""
    if status >= 400:
        return True
    if route in ("notifications", "lifecycle") and status == 200:
        return True  # the validation echo (text/plain)
    data: dict[str, Any] = json.loads(body)
    if route == "bookings":
        return status == 200 and data.get("status") in {"duplicate", "ignored"}
    if route == "notifications":
        return bool(data.get("accepted") == 0)
    if route == "lifecycle":
        return bool(data.get("queued") == 0)
    return False  # mappings: 200/201 saved something


@dataclass
class Counter:
    tried: int = 0


# -- hostile values -----------------------------------------------------------------------------

ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "'",
            "''",
            '"',
            "' or '1' eq '1",
            "room-42' or PartitionKey ne '",
            "room-42\x00",
            "\u202eroom",
            "😀" * 10,
            "../../etc/passwd",
            "%27",
            "a" * 300,
            "null",
            "\\u0000",
            "room-42 ",
        ]
    ),
)

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    ODD_TEXT,
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(ODD_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def near_limit(size: int, wrap: str) -> bytes:
    """A body of exactly ``size`` bytes: a huge JSON string field, or plain filler."""
    if wrap == "raw":
        return b"x" * size
    head = b'{"' + wrap.encode() + b'": "'
    tail = b'"}'
    return head + b"\xc3\xa9" * max(0, (size - len(head) - len(tail)) // 2) + tail


BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUE.map(dumps),
    st.integers(min_value=1, max_value=2000).map(deep),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b"{}",
            b'"\xff\xfe"',
            b"\xff\xfe{}",
            b'{"a": NaN}',
            b'{"a": Infinity}',
            b"1e999999",
            b'{"value": null}',
            b'{"value": [1, 2]}',
            b'{"value": [{"subscriptionId": null}]}',
            b'{"type": "booking.created", "data": []}',
            b'{"__proto__": {"x": 1}}',
            b'{"a": "\\ud800"}',
            deep(100_000),  # deeper than the JSON decoder's stack: was a 500 (RecursionError)
            b'{"a":' * 50_000,
        ]
    ),
    st.tuples(
        st.integers(min_value=MAX_BODY_BYTES - 64, max_value=MAX_BODY_BYTES + 64),
        st.sampled_from(["raw", "notes", "value", "mailbox"]),
    ).map(lambda t: near_limit(*t)),
)


def booking_like(data: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A valid booking event with one field broken in a hostile way."""
    base = {"type": "booking.created", "timestamp": "2026-01-01T00:00:00Z", "data": data}
    return st.tuples(
        st.sampled_from(["type", "timestamp", "data", *[f"data.{k}" for k in data]]), JSON_VALUE
    ).map(lambda pair: dumps(_with(base, *pair)))


def _with(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(event))
    if path.startswith("data."):
        copy["data"][path[5:]] = value
    else:
        copy[path] = value
    return copy


# -- in-process set-up --------------------------------------------------------------------------


@dataclass
class World:
    svc: Services
    storage: str
    secret: str
    subscription_id: str
    client_state: str


@pytest.fixture
def world(
    tenant_env: dict[str, str], tenant: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """``room-42`` mapped to ROOM_A (with its Graph subscription) through the real host, which is
    then stopped: the in-process handlers run against the same Azurite with no queue consumer."""
    # In-process Graph calls (the mailbox check of PUT) trust the simulated tenant's CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    host = LocalHost(tenant_env | {"FUNCTIONS_KEY": FUNCTION_KEY}).wait_ready()
    try:
        host.map(MAPPED, ROOM_A)
        storage = tenant_env["AzureWebJobsStorage"]
        # Let the initial sync finish, so the queues are empty before fuzzing.
        deadline = time.monotonic() + 20
        while any(snapshot(storage)[q] for q in QUEUES) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        host.stop()
    env = tenant_env | {"PUBLIC_BASE_URL": host.base}
    svc = Services(load_settings(env, tmp_path / "no-local-settings.json"))
    records = svc.subscriptions.all()
    assert [r.mailbox for r in records] == [ROOM_A]
    record = records[0]
    yield World(
        svc, storage, env["BOOKING_WEBHOOK_SECRET"], record.subscription_id, record.client_state
    )


def quietly(call: Callable[[Any], Response], case: Any) -> Response:
    """Call with the cyclic GC paused: JSON nested past the recursion limit makes the decoder
    raise RecursionError at ~1,000 frames deep, and a finalizer the GC happened to run right
    there would hit the limit too and surface as pytest's "unraisable exception" (seen once in
    ~10 runs), which says nothing about the answer. The answer is what this file checks."""
    gc.disable()
    try:
        return call(case)
    finally:
        gc.enable()


def run_fuzz(
    world: World,
    route: str,
    examples: int,
    strategy: st.SearchStrategy[Any],
    call: Callable[[Any], Response],
) -> int:
    before = snapshot(world.storage)
    counter = Counter()

    @fuzz(examples)
    @given(strategy)
    def one(case: Any) -> None:
        counter.tried += 1
        response = quietly(call, case)
        check_answer(response.status, response.headers.get("Content-Type", ""), response.body)
        assert rejected(route, response.status, response.body), (case, response)

    one()
    assert snapshot(world.storage) == before
    print(f"\nfuzz {route}: {counter.tried} inputs in-process, no 5xx, no state change")
    assert counter.tried >= examples
    return counter.tried


# -- POST /api/bookings/events ------------------------------------------------------------------

WEBHOOK_IDS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "msg.1", "msg 1", "a" * 257, "msg_'quote'", "msg_\u00e9"]),
    st.just("msg_fuzz"),
)
TIMESTAMPS = st.one_of(
    st.just("now"),
    st.sampled_from(
        ["", "0", "-1", "01", "1e9", "1.5", "999999999999", "9" * 40, " now", "now\n", "NaN"]
    ),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.integers(min_value=301, max_value=10**6).map(lambda d: f"offset:{d}"),
    st.integers(min_value=-(10**6), max_value=-301).map(lambda d: f"offset:{d}"),
)
SIGNATURES = st.one_of(
    st.just("sign"),
    st.sampled_from(
        [
            "",
            "v1",
            "v1,",
            ",abc",
            "v1,not-base64!",
            "v1,AAAA",
            "v1," + "A" * 43 + "=",
            "v1a,abc v1,xyz",
            "v2," + "A" * 43 + "=",
        ]
    ),
    st.text(max_size=60),
    st.just("wrong-secret"),
)


@st.composite
def booking_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    event_data = {
        "id": "bk_fuzz",
        "version": 1,
        # Unmapped: an event that is valid after all is "ignored", which writes nothing.
        "resource_id": "room-unmapped",
        "status": "confirmed",
        "start": "2030-01-01T09:00:00+01:00",
        "end": "2030-01-01T10:00:00+01:00",
        "all_day": False,
        "time_zone": "Europe/Berlin",
        "title": "t",
        "organizer": {"name": "A", "email": "a@contoso.example"},
    }
    body = draw(st.one_of(BODIES, booking_like(event_data)))
    if draw(st.booleans()):  # correctly signed: the body itself is what gets fuzzed
        msg_id, stamp, mode = (
            draw(st.from_regex(r"msg_[A-Za-z0-9_'-]{1,40}", fullmatch=True)),
            "now",
            "sign",
        )
    else:
        msg_id, stamp, mode = draw(WEBHOOK_IDS), draw(TIMESTAMPS), draw(SIGNATURES)
    return body, {"id": msg_id, "timestamp": stamp, "signature": mode}, draw(st.booleans())


def booking_headers(secret: str, body: bytes, spec: dict[str, str]) -> dict[str, str]:
    now = int(time.time())
    stamp = spec["timestamp"]
    if stamp == "now":
        stamp = str(now)
    elif stamp.startswith("offset:"):
        stamp = str(now + int(stamp[7:]))
    headers = {"content-type": "application/json", "webhook-id": spec["id"]}
    headers["webhook-timestamp"] = stamp
    signature = spec["signature"]
    if signature in ("sign", "wrong-secret") and stamp.isdigit() and spec["id"]:
        key = secret if signature == "sign" else "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        try:
            signature = sign(key, spec["id"], int(stamp), body)["webhook-signature"]
        except Exception:
            signature = "v1,invalid"
    headers["webhook-signature"] = signature
    return headers


def test_fuzz_booking_events(world: World) -> None:
    def call(case: tuple[bytes, dict[str, str], bool]) -> Response:
        body, spec, drop_id = case
        headers = booking_headers(world.secret, body, spec)
        if drop_id:
            headers.pop("webhook-id")
        request = Request("POST", "http://x/api/bookings/events", headers=headers, body=body)
        return serve(lambda r: bookings.receive(world.svc, r), request)

    run_fuzz(world, "bookings", IN_PROCESS["bookings"], booking_requests(), call)


def test_fuzz_tampered_signed_bodies(world: World) -> None:
    """A body signed correctly and then changed by a byte is never accepted."""

    def call(case: tuple[bytes, int]) -> Response:
        body, position = case
        headers = booking_headers(
            world.secret, body, {"id": "msg_t", "timestamp": "now", "signature": "sign"}
        )
        flipped = bytearray(body or b"x")
        flipped[position % len(flipped)] ^= 0x01
        request = Request("POST", "", headers=headers, body=bytes(flipped))
        return serve(lambda r: bookings.receive(world.svc, r), request)

    run_fuzz(
        world,
        "bookings",
        300,
        st.tuples(JSON_VALUE.map(dumps), st.integers(min_value=0, max_value=10**6)),
        call,
    )


# -- POST /api/graph/notifications and /api/graph/lifecycle ------------------------------------


@st.composite
def graph_bodies(draw: st.DrawFn, world: World, lifecycle: bool) -> tuple[bytes, dict[str, str]]:
    subscription = st.one_of(
        st.just(world.subscription_id),
        ODD_TEXT,
        JSON_VALUE,
        st.just(world.subscription_id + "'"),
        st.just("' or RowKey ne '"),
    )
    client_state = st.one_of(
        st.just(world.client_state[:-1]),
        st.just(world.client_state + "x"),
        st.just(world.client_state.upper()),
        st.just(""),
        ODD_TEXT,
        JSON_VALUE,
    )
    item = st.fixed_dictionaries(
        {"subscriptionId": subscription, "clientState": client_state},
        optional={
            "changeType": st.sampled_from(["created", "updated", "deleted", "", "x"]),
            "resource": ODD_TEXT,
            "lifecycleEvent": st.sampled_from(
                ["reauthorizationRequired", "subscriptionRemoved", "missed", "", "other"]
            ),
            "tenantId": ODD_TEXT,
            "resourceData": JSON_VALUE,
        },
    )
    # A right subscription with the right clientState but no valid lifecycleEvent queues nothing.
    right_unknown_event = st.fixed_dictionaries(
        {
            "subscriptionId": st.just(world.subscription_id),
            "clientState": st.just(world.client_state),
            "lifecycleEvent": st.one_of(ODD_TEXT, JSON_VALUE).filter(
                lambda v: not (isinstance(v, str) and v in inbound.LIFECYCLE_EVENTS)
            ),
        }
    )
    items = st.lists(st.one_of(item, right_unknown_event) if lifecycle else item, max_size=3)
    body = draw(
        st.one_of(
            items.map(lambda v: dumps({"value": v})),
            st.tuples(items, JSON_VALUE).map(lambda t: dumps({"value": t[0], "extra": t[1]})),
            st.lists(JSON_VALUE, max_size=4).map(lambda v: dumps({"value": v})),
            BODIES,
        )
    )
    query: dict[str, str] = {}
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        query["validationToken"] = draw(ODD_TEXT)
    return body, query


def test_fuzz_graph_notifications(world: World) -> None:
    def call(case: tuple[bytes, dict[str, str]]) -> Response:
        body, query = case
        request = Request("POST", "", query=query, body=body)
        return serve(lambda r: inbound.receive_notifications(world.svc, r), request)

    run_fuzz(
        world,
        "notifications",
        IN_PROCESS["notifications"],
        graph_bodies(world, lifecycle=False),
        call,
    )


def test_fuzz_graph_lifecycle(world: World) -> None:
    def call(case: tuple[bytes, dict[str, str]]) -> Response:
        body, query = case
        request = Request("POST", "", query=query, body=body)
        return serve(lambda r: inbound.receive_lifecycle(world.svc, r), request)

    run_fuzz(world, "lifecycle", IN_PROCESS["lifecycle"], graph_bodies(world, lifecycle=True), call)


# -- PUT /api/admin/mappings/{resource_id} ------------------------------------------------------

RESOURCE_IDS = st.one_of(
    ODD_TEXT,
    st.just(MAPPED),
    st.just("room-99"),
    st.sampled_from(
        ["room-42'", "room'42", "room-42' or '1'='1", "room/42", "room#42", "a" * 1025]
    ),
)
MAPPING_BODIES = st.one_of(
    BODIES,
    st.fixed_dictionaries(
        {},
        optional={
            "mailbox": st.one_of(
                JSON_VALUE,
                st.sampled_from(
                    [
                        ROOM_A,  # mapped to room-42 already: 409 for any other id
                        ROOM_A.upper(),
                        "nobody@contoso.example",
                        "x'@contoso.example",
                        "' or Mailbox ne '",
                        "not-an-address",
                        "a@b",
                    ]
                ),
            ),
            "privacy": st.one_of(JSON_VALUE, st.sampled_from(["full", "busy_only", "FULL"])),
            "enabled": JSON_VALUE,
            "extra": JSON_VALUE,
        },
    ).map(dumps),
)


def put_mapping(svc: Services, request: Request) -> Response:
    """What ``sync_core.api.put_mapping`` does, with an explicit ``Services``."""
    resource_id = request.route["resource_id"]
    result = admin.save_mapping(
        svc, resource_id, request.json(), if_match=request.header("if-match")
    )
    return json_response(201 if result.created else 200, result.mapping.to_json())


@st.composite
def mapping_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    resource_id = draw(RESOURCE_IDS)
    body = draw(MAPPING_BODIES)
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["if-match"] = draw(st.one_of(ODD_TEXT, st.just('W/"x"')))
    if resource_id == MAPPED:
        # An update of the existing mapping is only fuzzed with a stale If-Match or a bad body.
        headers["if-match"] = 'W/"stale"' if not headers.get("if-match") else headers["if-match"]
        if headers["if-match"] == "*":
            headers["if-match"] = 'W/"stale"'
    return resource_id, body, headers


def test_fuzz_mapping_put(world: World) -> None:
    def call(case: tuple[str, bytes, dict[str, str]]) -> Response:
        resource_id, body, headers = case
        request = Request("PUT", "", route={"resource_id": resource_id}, headers=headers, body=body)
        return serve(lambda r: put_mapping(world.svc, r), request)

    run_fuzz(world, "mappings", IN_PROCESS["mappings"], mapping_requests(), call)


# -- the same over real HTTP --------------------------------------------------------------------


def test_fuzz_over_http(world: World, tenant_env: dict[str, str]) -> None:
    """A sample of each route through the local function host (its own parsing and routing)."""
    host = LocalHost(tenant_env | {"FUNCTIONS_KEY": FUNCTION_KEY}).wait_ready()
    counts = dict.fromkeys(("bookings", "notifications", "lifecycle", "mappings"), 0)
    session = requests.Session()
    try:
        before = snapshot(world.storage)

        def send(route: str, method: str, path: str, body: bytes, **kwargs: Any) -> None:
            counts[route] += 1
            answer = session.request(method, host.base + path, data=body, timeout=30, **kwargs)
            check_answer(answer.status_code, answer.headers.get("Content-Type", ""), answer.content)
            assert rejected(route, answer.status_code, answer.content), (body[:200], answer.text)

        @fuzz(OVER_HTTP)
        @given(booking_requests())
        def bookings_http(case: tuple[bytes, dict[str, str], bool]) -> None:
            body, spec, _ = case
            headers = booking_headers(world.secret, body, spec) | KEY_HEADER
            # requests refuses header values with newlines or non-latin-1 text; drop those.
            headers = {k: v for k, v in headers.items() if _sendable(v)}
            send("bookings", "POST", "/api/bookings/events", body, headers=headers)

        @fuzz(OVER_HTTP)
        @given(graph_bodies(world, lifecycle=False))
        def notifications_http(case: tuple[bytes, dict[str, str]]) -> None:
            body, query = case
            send("notifications", "POST", "/api/graph/notifications", body, params=query)

        @fuzz(OVER_HTTP)
        @given(graph_bodies(world, lifecycle=True))
        def lifecycle_http(case: tuple[bytes, dict[str, str]]) -> None:
            body, query = case
            send("lifecycle", "POST", "/api/graph/lifecycle", body, params=query)

        @fuzz(OVER_HTTP)
        @given(mapping_requests())
        def mappings_http(case: tuple[str, bytes, dict[str, str]]) -> None:
            resource_id, body, headers = case
            headers = {k: v for k, v in headers.items() if _sendable(v)}
            if resource_id == MAPPED and "if-match" not in headers:
                headers["if-match"] = 'W/"stale"'
            path = "/api/admin/mappings/" + quote(resource_id, safe="")
            if not resource_id.strip() or resource_id in (".", ".."):
                path = "/api/admin/mappings/%20"
            send("mappings", "PUT", path, body, headers=headers | KEY_HEADER)

        bookings_http()
        notifications_http()
        lifecycle_http()
        mappings_http()
        assert snapshot(world.storage) == before
    finally:
        host.stop()
    total = sum(counts.values())
    print(f"\nfuzz over HTTP: {total} inputs ({counts}), no 5xx, no state change")
    assert total >= 4 * OVER_HTTP


def _sendable(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(c in value for c in "\r\n\x00") and value == value.strip()


def test_fuzz_total() -> None:
    """The in-process quotas alone make at least 10,000 inputs (each test asserts its own)."""
    assert sum(IN_PROCESS.values()) >= 10_000
    print(f"\nfuzz total: {sum(IN_PROCESS.values()) + 300 + 4 * OVER_HTTP} inputs planned")


def test_json_nested_deeper_than_the_decoder_is_400_on_every_route(world: World) -> None:
    """The one bug the fuzzing found: 100,000 nested arrays raised RecursionError (a 500)."""
    before = snapshot(world.storage)
    body = deep(100_000)
    signed = booking_headers(
        world.secret, body, {"id": "msg_d", "timestamp": "now", "signature": "sign"}
    )
    handlers: list[Callable[[Request], Response]] = [
        lambda r: bookings.receive(world.svc, r),
        lambda r: inbound.receive_notifications(world.svc, r),
        lambda r: inbound.receive_lifecycle(world.svc, r),
        lambda r: put_mapping(world.svc, r),
    ]
    for handler in handlers:
        request = Request("POST", "", route={"resource_id": "room-9"}, headers=signed, body=body)
        answer = quietly(lambda r, h=handler: serve(h, r), request)  # type: ignore[misc]
        assert answer.status == 400
        check_answer(answer.status, answer.headers["Content-Type"], answer.body)
        assert json.loads(answer.body)["errors"][0]["field"] == "body"
    assert snapshot(world.storage) == before
