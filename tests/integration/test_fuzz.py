"""Fuzzing of the four inbound routes (issue 9, item 3) and of every admin query parameter.

Over 10,000 hypothesis-generated hostile inputs go in-process through ``serve`` and the same
handlers the function app runs, with a real ``Services`` on Azurite and the simulated tenant; a
smaller sample goes over real HTTP through the local function host. For every input: no 5xx,
every 4xx is ``application/problem+json``, and nothing rejected changes any state (rows in
``bookings``, ``openwork``, ``mappings``, ``links``; messages in ``apply-booking`` and
``sync-mailbox``).

Classes every route gets: integers past 32 and 64 bits, negative ones, floats and bools wherever
a number goes; lone surrogates and control characters wherever a string goes (bodies, ids,
headers, route values, query parameters). The last test prints the totals per class and the
number of 5xx answers into the log.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
from sync_core import api
from sync_core.admin import mappings as admin
from sync_core.config import load_settings
from sync_core.inbound import notifications
from sync_core.services import Services
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX
from sync_core.web import MAX_BODY_BYTES, PROBLEM_JSON, Request, Response, json_response, serve
from sync_core.webhooks import sign
from tests.conftest import FUNCTION_KEY, KEY_HEADER, ROOM_A, LocalHost

TABLES = ("bookings", "openwork", "mappings", "links")
QUEUES = (APPLY_BOOKING, SYNC_MAILBOX)
MAPPED = "room-42"

# Inputs per route in-process (10,400 in all) and over real HTTP (375 in all).
IN_PROCESS = {
    "bookings": 3400,
    "notifications": 2000,
    "lifecycle": 2000,
    "mappings": 2000,
    "admin-queries": 1000,
}
TAMPERED = 300
OVER_HTTP = 75
HTTP_ROUTES = ("bookings", "notifications", "lifecycle", "mappings", "admin-queries")

# What every run found, for the totals the last test prints.
FOUND: dict[str, Tally[str]] = {"inputs": Tally(), "classes": Tally(), "answers": Tally()}


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
    # admin-queries: reads, and deletes of resources that are not mapped. mappings: 200/201
    # saved something.
    return route == "admin-queries"


@dataclass
class Counter:
    tried: int = 0
    classes: Tally[str] = field(default_factory=Tally)


NUMBER_TEXT = re.compile(r"-?[\d²³¹]+")
SURROGATE_BYTES = tuple(bytes([0xED, b]) for b in range(0xA0, 0xC0))  # U+D800-U+DFFF as UTF-8


def classes_of(case: Any) -> set[str]:
    """The hostile classes an input carries (anywhere: body, headers, route, query)."""
    found: set[str] = set()
    pending = [case]
    while pending:
        item = pending.pop()
        if isinstance(item, bytes):
            if b"\\ud" in item.lower() or any(b in item for b in SURROGATE_BYTES):
                found.add("lone surrogates")
            with contextlib.suppress(ValueError, RecursionError):
                pending.append(json.loads(item))
        elif isinstance(item, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                found.add("lone surrogates")
            if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in item):
                found.add("control characters")
            if NUMBER_TEXT.fullmatch(item):  # a number in a header or query parameter
                if not item.isascii():
                    found.add("non-ASCII digits")
                elif len(item) < 4300:  # int()'s limit on digits
                    pending.append(int(item))
        elif isinstance(item, bool):
            pass
        elif isinstance(item, int):
            if not -(2**31) <= item < 2**31:
                found.add("integers past 32 bits")
            if item < 0:
                found.add("negative integers")
        elif isinstance(item, float):
            found.add("floats")
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return found


def tally(route: str, tried: int, classes: Tally[str], answers: Tally[str]) -> None:
    FOUND["inputs"][route] += tried
    FOUND["classes"].update(classes)
    FOUND["answers"].update(answers)


# -- hostile values -----------------------------------------------------------------------------

# Lone surrogates (legal in JSON as "\ud800", not encodable as UTF-8) and control characters.
HOSTILE_CHAR = st.one_of(
    st.characters(),
    st.integers(min_value=0xD800, max_value=0xDFFF).map(chr),
    st.integers(min_value=0, max_value=0x1F).map(chr),
    st.sampled_from(["\x7f", "\x85", "\x9f", "\u2028", "\u2029", "\ufeff", "\ufffe", "\uffff"]),
)
UNICODE_TEXT = st.one_of(
    st.text(HOSTILE_CHAR, min_size=1, max_size=30),
    st.sampled_from(
        [
            "\ud800",
            "\udfff",
            "room-\ud800",
            "\udc80room",
            "a\ud83d",  # half of an emoji's surrogate pair
            "\ude00a",
            "\ud83d\ude00",  # both halves, unpaired in Python: still not UTF-8
            "room\x00",
            "\x1b[31mred",
            "line\nbreak",
            "tab\there",
            "\r\n",
            "\x7f",
            "\x85next",
        ]
    ),
)

ODD_TEXT = st.one_of(
    st.text(max_size=40),
    UNICODE_TEXT,
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
            "%ED%A0%80",
            "a" * 300,
            "null",
            "\\u0000",
            "room-42 ",
        ]
    ),
)

# Integers past Int32, Int64 and double precision, negative ones, floats and bools.
LARGE_INTS = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            2**31 - 1,
            2**31,
            -(2**31) - 1,
            2**32,
            2**53,
            2**53 + 1,
            2**63 - 1,
            2**63,
            -(2**63),
            -(2**63) - 1,
            2**64,
            10**30,
            -(10**30),
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
)
NUMBERS = st.one_of(
    LARGE_INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 0.5, -1.0, 2.0**31, 2.0**63, 9.007199254740993e15, 1e300, -0.0]),
    st.booleans(),
)

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    NUMBERS,
    ODD_TEXT,
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(ODD_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)

HOSTILE_HEADERS = st.dictionaries(
    st.sampled_from(["if-match", "accept", "x-ms-client-request-id", "user-agent"]),
    st.one_of(ODD_TEXT, UNICODE_TEXT),
    max_size=2,
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
            b'{"\\udfff": 1}',
            b'{"a": "\xed\xa0\x80"}',  # a surrogate as raw UTF-8 bytes
            b'{"a": "\\ud83d"}',
            b'{"a": "\\u0000\\u001b"}',
            b'{"a": 9223372036854775808}',
            b'{"a": -9223372036854775809}',
            b'{"a": 1e400}',
            b'{"a": -0}',
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
    if path.startswith("data.organizer."):
        copy["data"]["organizer"][path[15:]] = value
    elif path.startswith("data."):
        copy["data"][path[5:]] = value
    else:
        copy[path] = value
    return copy


TEXT_FIELDS = [
    "type",
    "timestamp",
    "data.id",
    "data.resource_id",
    "data.status",
    "data.start",
    "data.end",
    "data.time_zone",
    "data.title",
    "data.notes",
    "data.organizer.name",
    "data.organizer.email",
]


def booking_focus(data: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """A valid booking event with its version replaced by a hostile number, or one text field
    by text with lone surrogates or control characters."""
    base = {"type": "booking.created", "timestamp": "2026-01-01T00:00:00Z", "data": data}
    return st.one_of(
        NUMBERS.map(lambda n: dumps(_with(base, "data.version", n))),
        st.tuples(st.sampled_from(TEXT_FIELDS), UNICODE_TEXT).map(
            lambda pair: dumps(_with(base, *pair))
        ),
    )


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
    answers: Tally[str] = Tally()

    @fuzz(examples)
    @given(strategy)
    def one(case: Any) -> None:
        counter.tried += 1
        counter.classes.update(classes_of(case))
        response = quietly(call, case)
        answers[f"{response.status // 100}xx"] += 1
        check_answer(response.status, response.headers.get("Content-Type", ""), response.body)
        assert rejected(route, response.status, response.body), (case, response)

    one()
    assert snapshot(world.storage) == before
    tally(route, counter.tried, counter.classes, answers)
    print(
        f"\nfuzz {route}: {counter.tried} inputs in-process, 5xx: {answers['5xx']}, "
        f"no state change; {_classes_text(counter.classes)}"
    )
    assert counter.tried >= examples
    return counter.tried


def _classes_text(classes: Tally[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(classes.items())) or "no classes"


# -- POST /api/bookings/events ------------------------------------------------------------------

WEBHOOK_IDS = st.one_of(
    st.text(max_size=20),
    UNICODE_TEXT,
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
    body = draw(st.one_of(BODIES, booking_like(event_data), booking_focus(event_data)))
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
        return serve(lambda r: api.booking_events(r, world.svc), request)

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
        return serve(lambda r: api.booking_events(r, world.svc), request)

    run_fuzz(
        world,
        "bookings",
        TAMPERED,
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
                lambda v: not (isinstance(v, str) and v in notifications.LIFECYCLE_EVENTS)
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
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        query[draw(ODD_TEXT)] = draw(UNICODE_TEXT)
    return body, query


def test_fuzz_graph_notifications(world: World) -> None:
    def call(case: tuple[bytes, dict[str, str]]) -> Response:
        body, query = case
        request = Request("POST", "", query=query, body=body)
        return serve(lambda r: api.graph_notifications(r, world.svc), request)

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
        return serve(lambda r: api.graph_lifecycle(r, world.svc), request)

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
                        # Several resources may map to one mailbox, so an existing mailbox is
                        # a valid write, not a hostile input: only ones the tenant refuses.
                        "nobody@contoso.example",
                        "NOBODY@contoso.example",
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
    headers: dict[str, str] = draw(HOSTILE_HEADERS)
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


# -- every admin query parameter ----------------------------------------------------------------

COUNT_TEXT = st.one_of(
    st.sampled_from(
        [
            "²",  # str.isdigit() says yes, int() says no
            "¹²",
            "١٢",  # Arabic-Indic digits: int() reads them as 12
            "\U0001d7d9",  # MATHEMATICAL DOUBLE-STRUCK DIGIT ONE
            "①",
            "0",
            "-1",
            "1",
            "50",
            "1000",
            "1001",
            "2147483648",
            "9223372036854775808",
            "9" * 40,
            "9" * 5000,
            "1e3",
            "0x10",
            " 5",
            "5 ",
            "+5",
            "5.0",
            "5_0",
            "",
            " ",
            "true",
            "NaN",
            "\ud800",
            "5\x00",
        ]
    ),
    LARGE_INTS.map(str),
    ODD_TEXT,
)
FLAG_TEXT = st.one_of(
    st.sampled_from(
        ["true", "false", "TRUE", "1", "0", "yes", "", "tru\u0435", "true\x00", "\ud800", "²"]
    ),
    ODD_TEXT,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


CONTINUATIONS = st.one_of(
    ODD_TEXT,
    st.sampled_from(["%%%", "e30=", "W10=", "bnVsbA==", "=" * 8, "A" * 5000]),
    JSON_VALUE.map(lambda v: b64(dumps(v))),
    st.dictionaries(
        st.sampled_from(["PartitionKey", "RowKey", "NextPartitionKey", "x"]),
        st.one_of(ODD_TEXT, NUMBERS, st.just("1!8!cm9vbS0x")),
        max_size=3,
    ).map(lambda d: b64(dumps(d))),
    st.binary(max_size=40).map(b64),
)
MAILBOX_FILTERS = st.one_of(
    ODD_TEXT,
    st.sampled_from(
        [
            ROOM_A,
            ROOM_A.upper(),
            "x'@contoso.example",
            "' or Mailbox ne '",
            "room\ud800@contoso.example",
            "room\x00@contoso.example",
        ]
    ),
)
QUERY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "limit": COUNT_TEXT,
    "continuation": CONTINUATIONS,
    "mailbox": MAILBOX_FILTERS,
    "resource_id": RESOURCE_IDS,
    "purge": FLAG_TEXT,
    "resource_ids": st.one_of(ODD_TEXT, st.lists(RESOURCE_IDS, max_size=4).map(",".join)),
}
# (method, path under /api/admin, query parameters, handler); {id} is a resource id.
ADMIN_QUERIES: dict[str, tuple[str, str, tuple[str, ...], Callable[[Request], Response]]] = {
    "list": ("GET", "/mappings", ("limit", "continuation", "mailbox"), api.list_mappings),
    "history": ("GET", "/history", ("resource_id", "limit", "continuation"), api.history),
    "get": ("GET", "/mappings/{id}", (), api.get_mapping),
    "delete": ("DELETE", "/mappings/{id}", ("purge",), api.delete_mapping),
    "resync": ("POST", "/mappings/{id}/resync", (), api.resync_mapping),
    "rooms": ("GET", "/rooms", ("resource_ids",), api.list_rooms),
}


@st.composite
def admin_queries(
    draw: st.DrawFn,
) -> tuple[str, dict[str, str], dict[str, str], dict[str, str]]:
    """(operation, route values, query, headers): every parameter of the operation may be
    absent, hostile or well-formed, plus an unknown one now and then."""
    operation = draw(st.sampled_from(sorted(ADMIN_QUERIES)))
    _, path, names, _ = ADMIN_QUERIES[operation]
    route: dict[str, str] = {}
    if "{id}" in path:
        ids = RESOURCE_IDS
        if operation != "get":  # a delete or resync of the mapped resource would change state
            ids = ids.filter(lambda r: r != MAPPED)
        route["resource_id"] = draw(ids)
    query = {name: draw(QUERY_VALUES[name]) for name in names if draw(st.booleans())}
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        query[draw(ODD_TEXT)] = draw(ODD_TEXT)
    return operation, route, query, draw(HOSTILE_HEADERS)


def test_fuzz_admin_queries(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every admin query parameter (limit, continuation, mailbox, resource_id, purge,
    resource_ids), route value and header with hostile values, through the handlers of
    ``sync_core.api``: a 4xx that names the field, or an answer that changes nothing."""
    monkeypatch.setattr(api, "services", lambda: world.svc)

    def call(case: tuple[str, dict[str, str], dict[str, str], dict[str, str]]) -> Response:
        operation, route, query, headers = case
        method, _, _, handler = ADMIN_QUERIES[operation]
        request = Request(method, "", route=route, query=query, headers=headers)
        return serve(handler, request)

    run_fuzz(world, "admin-queries", IN_PROCESS["admin-queries"], admin_queries(), call)


def admin_path(operation: str, route: dict[str, str], query: dict[str, str]) -> str:
    """The URL of an admin query, with surrogates sent as their UTF-8 bytes (%ED%A0%80)."""
    _, path, _, _ = ADMIN_QUERIES[operation]
    resource_id = route.get("resource_id", "")
    segment = _segment(resource_id)
    url = "/api/admin" + path.replace("{id}", segment)
    if query:
        url += "?" + "&".join(f"{_segment(k)}={_segment(v)}" for k, v in query.items())
    return url


def _segment(text: str) -> str:
    if not text.strip() or text in (".", ".."):
        return "%20"
    return quote(text, safe="", errors="surrogatepass")


# -- the same over real HTTP --------------------------------------------------------------------


def test_fuzz_over_http(world: World, tenant_env: dict[str, str]) -> None:
    """A sample of each route through the local function host (its own parsing and routing)."""
    host = LocalHost(tenant_env | {"FUNCTIONS_KEY": FUNCTION_KEY}).wait_ready()
    counts = dict.fromkeys(HTTP_ROUTES, 0)
    classes: Tally[str] = Tally()
    answers: Tally[str] = Tally()
    session = requests.Session()
    try:
        before = snapshot(world.storage)

        def send(route: str, case: Any, method: str, path: str, body: bytes, **kw: Any) -> None:
            counts[route] += 1
            classes.update(classes_of(case))
            answer = session.request(method, host.base + path, data=body, timeout=30, **kw)
            answers[f"{answer.status_code // 100}xx"] += 1
            check_answer(answer.status_code, answer.headers.get("Content-Type", ""), answer.content)
            assert rejected(route, answer.status_code, answer.content), (body[:200], answer.text)

        @fuzz(OVER_HTTP)
        @given(booking_requests())
        def bookings_http(case: tuple[bytes, dict[str, str], bool]) -> None:
            body, spec, _ = case
            headers = booking_headers(world.secret, body, spec) | KEY_HEADER
            # requests refuses header values with newlines or non-latin-1 text; drop those.
            headers = {k: v for k, v in headers.items() if _sendable(v)}
            send("bookings", case, "POST", "/api/bookings/events", body, headers=headers)

        @fuzz(OVER_HTTP)
        @given(graph_bodies(world, lifecycle=False))
        def notifications_http(case: tuple[bytes, dict[str, str]]) -> None:
            body, query = case
            send("notifications", case, "POST", "/api/graph/notifications" + _query(query), body)

        @fuzz(OVER_HTTP)
        @given(graph_bodies(world, lifecycle=True))
        def lifecycle_http(case: tuple[bytes, dict[str, str]]) -> None:
            body, query = case
            send("lifecycle", case, "POST", "/api/graph/lifecycle" + _query(query), body)

        @fuzz(OVER_HTTP)
        @given(mapping_requests())
        def mappings_http(case: tuple[str, bytes, dict[str, str]]) -> None:
            resource_id, body, headers = case
            headers = {k: v for k, v in headers.items() if _sendable(v)}
            if resource_id == MAPPED and "if-match" not in headers:
                headers["if-match"] = 'W/"stale"'
            path = "/api/admin/mappings/" + _segment(resource_id)
            send("mappings", case, "PUT", path, body, headers=headers | KEY_HEADER)

        @fuzz(OVER_HTTP)
        @given(admin_queries())
        def admin_queries_http(
            case: tuple[str, dict[str, str], dict[str, str], dict[str, str]],
        ) -> None:
            operation, route, query, headers = case
            headers = {k: v for k, v in headers.items() if _sendable(v)}
            method = ADMIN_QUERIES[operation][0]
            path = admin_path(operation, route, query)
            send("admin-queries", case, method, path, b"", headers=headers | KEY_HEADER)

        bookings_http()
        notifications_http()
        lifecycle_http()
        mappings_http()
        admin_queries_http()
        assert snapshot(world.storage) == before
    finally:
        host.stop()
    total = sum(counts.values())
    FOUND["inputs"]["over HTTP"] += total
    FOUND["classes"].update(classes)
    FOUND["answers"].update(answers)
    print(
        f"\nfuzz over HTTP: {total} inputs ({counts}), 5xx: {answers['5xx']}, no state change; "
        f"{_classes_text(classes)}"
    )
    assert total >= len(HTTP_ROUTES) * OVER_HTTP


def _query(query: dict[str, str]) -> str:
    if not query:
        return ""
    return "?" + "&".join(
        f"{quote(k, safe='', errors='surrogatepass')}={quote(v, safe='', errors='surrogatepass')}"
        for k, v in query.items()
    )


def _sendable(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any(c in value for c in "\r\n\x00") and value == value.strip()


def test_json_nested_deeper_than_the_decoder_is_400_on_every_route(world: World) -> None:
    """The one bug the fuzzing found: 100,000 nested arrays raised RecursionError (a 500)."""
    before = snapshot(world.storage)
    body = deep(100_000)
    signed = booking_headers(
        world.secret, body, {"id": "msg_d", "timestamp": "now", "signature": "sign"}
    )
    handlers: list[Callable[[Request], Response]] = [
        lambda r: api.booking_events(r, world.svc),
        lambda r: api.graph_notifications(r, world.svc),
        lambda r: api.graph_lifecycle(r, world.svc),
        lambda r: put_mapping(world.svc, r),
    ]
    for handler in handlers:
        request = Request("POST", "", route={"resource_id": "room-9"}, headers=signed, body=body)
        answer = quietly(lambda r, h=handler: serve(h, r), request)  # type: ignore[misc]
        assert answer.status == 400
        check_answer(answer.status, answer.headers["Content-Type"], answer.body)
        assert json.loads(answer.body)["errors"][0]["field"] == "body"
    assert snapshot(world.storage) == before


def test_fuzz_total() -> None:
    """Last in this file: the totals of every fuzz run above, per class, with the 5xx count.

    The in-process quotas alone make over 10,000 inputs (each test asserts its own).
    """
    assert sum(IN_PROCESS.values()) >= 10_000
    planned = sum(IN_PROCESS.values()) + TAMPERED + len(HTTP_ROUTES) * OVER_HTTP
    ran = sum(FOUND["inputs"].values())
    answers = FOUND["answers"]
    print(
        f"\nfuzz total: {ran} inputs run of {planned} planned "
        f"({', '.join(f'{k} {v}' for k, v in sorted(FOUND['inputs'].items())) or 'none ran'})"
        f"\nfuzz classes: {_classes_text(FOUND['classes'])}"
        f"\nfuzz answers: {', '.join(f'{k} {v}' for k, v in sorted(answers.items()))}; "
        f"5xx: {answers['5xx']}"
    )
    assert answers["5xx"] == 0
