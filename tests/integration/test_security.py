"""Security (issue 9, item 4): signatures, replays, clientState, function keys, table-filter
injection, and a captured-log scan proving no secret, token or signature is logged."""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from sync_core import api
from sync_core.config import load_settings
from sync_core.inbound import sync as inbound
from sync_core.services import Services
from sync_core.store.history import HistoryEntry
from sync_core.store.mappings import Mapping
from sync_core.store.queues import APPLY_BOOKING, SYNC_MAILBOX
from sync_core.store.subscriptions import SubscriptionRecord
from sync_core.web import PROBLEM_JSON, Request, Response, serve
from sync_core.webhooks import sign
from tests.conftest import FUNCTION_KEY, KEY_HEADER, ROOM_A, ROOM_B, LocalHost, wait

OTHER_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
SIGNATURE_VALUE = re.compile(r"v1,[A-Za-z0-9+/]{43}=")


# -- in-process world: a mapping and its subscription record, no queue consumer -----------------


@pytest.fixture
def svc(tenant_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Services:
    # In-process Graph calls trust the simulated tenant's CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    services = Services(load_settings(tenant_env, tmp_path / "none.json"))
    moment = datetime.now(UTC)
    services.mappings.create(Mapping("room-42", ROOM_A, "full", True, moment, moment))
    services.subscriptions.save(
        SubscriptionRecord(ROOM_A, "room-42", "sub-1", "right-state", moment + timedelta(days=2))
    )
    return services


def depth(svc: Services, queue: str) -> int:
    return svc.queues.depth(queue)


def rows(svc: Services, table: str) -> int:
    return sum(1 for _ in svc.tables.table(table).list_entities())


def signed(
    svc: Services, event: dict[str, Any], msg_id: str, *, at: int | None = None, secret: str = ""
) -> Request:
    body = json.dumps(event).encode()
    headers = sign(
        secret or svc.settings.booking_webhook_secret,
        msg_id,
        int(time.time()) if at is None else at,
        body,
    )
    return Request("POST", "", headers=headers, body=body)


def booking_event(resource_id: str = "room-42") -> dict[str, Any]:
    return PlatformSim(platform_secret=OTHER_SECRET, booking_secret=OTHER_SECRET).booking_event(
        resource_id=resource_id
    )


def receive(svc: Services, request: Request) -> Response:
    return serve(lambda r: api.booking_events(r, svc), request)


def assert_problem(response: Response, status: int) -> None:
    assert response.status == status
    assert response.headers["Content-Type"] == PROBLEM_JSON
    assert json.loads(response.body)["status"] == status


# -- booking events -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["unsigned", "wrong secret", "tampered", "stale", "future"])
def test_bad_booking_events_are_401_and_write_nothing(svc: Services, case: str) -> None:
    event = booking_event()
    now = int(time.time())
    request = signed(svc, event, "msg_bad")
    headers = dict(request.headers)
    body = request.body
    if case == "unsigned":
        headers.pop("webhook-signature")
    elif case == "wrong secret":
        headers = dict(signed(svc, event, "msg_bad", secret=OTHER_SECRET).headers)
    elif case == "tampered":
        body = body.replace(b"Sprint review", b"Sprint revieW")
    elif case == "stale":
        headers = dict(signed(svc, event, "msg_bad", at=now - 301).headers)
    else:
        headers = dict(signed(svc, event, "msg_bad", at=now + 301).headers)
    answer = receive(svc, Request("POST", "", headers=headers, body=body))
    assert_problem(answer, 401)
    assert rows(svc, "bookings") == 0
    assert rows(svc, "openwork") == 0
    assert depth(svc, APPLY_BOOKING) == 0


def test_replayed_event_is_a_duplicate_and_queues_nothing_new(svc: Services) -> None:
    event = booking_event()
    first = receive(svc, signed(svc, event, "msg_replay"))
    assert first.status == 202
    assert depth(svc, APPLY_BOOKING) == 1
    stored = rows(svc, "bookings")
    # The same delivery again, even re-signed at a later second, and a changed body under the
    # same id (signed correctly): both are duplicates.
    again = receive(svc, signed(svc, event, "msg_replay"))
    changed = receive(svc, signed(svc, {**event, "type": "booking.updated"}, "msg_replay"))
    for answer in (again, changed):
        assert answer.status == 200
        assert json.loads(answer.body) == {"status": "duplicate"}
    assert depth(svc, APPLY_BOOKING) == 1
    assert rows(svc, "bookings") == stored


# -- Graph notifications: clientState -----------------------------------------------------------


def graph_post(svc: Services, route: str, items: list[dict[str, Any]]) -> Response:
    handler = api.graph_notifications if route == "notifications" else api.graph_lifecycle
    request = Request("POST", "", body=json.dumps({"value": items}).encode())
    return serve(lambda r: handler(r, svc), request)


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
@pytest.mark.parametrize(
    "client_state", ["wrong-state", "", "right-stat", "right-state ", "RIGHT-STATE", None]
)
def test_wrong_client_state_queues_nothing(
    svc: Services, route: str, client_state: str | None
) -> None:
    item: dict[str, Any] = {"subscriptionId": "sub-1", "lifecycleEvent": "missed"}
    if client_state is not None:
        item["clientState"] = client_state
    answer = graph_post(svc, route, [item, {**item, "subscriptionId": "sub-unknown"}])
    assert answer.status == 202
    assert json.loads(answer.body) == (
        {"accepted": 0} if route == "notifications" else {"queued": 0}
    )
    assert depth(svc, SYNC_MAILBOX) == 0


@pytest.mark.parametrize("route", ["notifications", "lifecycle"])
def test_right_client_state_queues_work(svc: Services, route: str) -> None:
    """The control: the same request with the right clientState does queue a sync."""
    item = {"subscriptionId": "sub-1", "clientState": "right-state", "lifecycleEvent": "missed"}
    answer = graph_post(svc, route, [item])
    assert answer.status == 202
    assert depth(svc, SYNC_MAILBOX) == 1


# -- function keys over real HTTP ---------------------------------------------------------------

KEYED_ROUTES = [
    ("GET", "/api/admin/mappings"),
    ("GET", "/api/admin/mappings/room-42"),
    ("PUT", "/api/admin/mappings/room-42"),
    ("DELETE", "/api/admin/mappings/room-42"),
    ("POST", "/api/admin/mappings/room-42/resync"),
    ("GET", "/api/admin/rooms"),
    ("GET", "/api/admin/status"),
    ("GET", "/api/admin/ui"),
    ("GET", "/api/admin/history"),
    ("GET", "/api/admin/doctor"),
    ("POST", "/api/bookings/events"),
]


def test_function_key_is_required_on_every_admin_and_booking_route(
    function_host: LocalHost,
) -> None:
    base = function_host.base
    body = json.dumps({"mailbox": ROOM_A}).encode()
    refused = 0
    for method, path in KEYED_ROUTES:
        for headers, params in (
            ({}, {}),
            ({"x-functions-key": "wrong"}, {}),
            ({"x-functions-key": FUNCTION_KEY.upper()}, {}),
            ({"x-functions-key": FUNCTION_KEY + " "}, {}),
            ({"x-functions-key": ""}, {}),
            ({}, {"code": "wrong"}),
            ({}, {"code": ""}),
        ):
            answer = requests.request(
                method, base + path, headers=headers, params=params, data=body, timeout=10
            )
            assert answer.status_code == 401, (method, path, headers, params, answer.text)
            refused += 1
    # Nothing got through: the mapping the PUTs tried to create does not exist.
    check = requests.get(f"{base}/api/admin/mappings/room-42", headers=KEY_HEADER, timeout=10)
    assert check.status_code == 404
    # The control: the right key, as a header or as ?code=, is let in.
    assert requests.get(f"{base}/api/admin/mappings", headers=KEY_HEADER, timeout=10).ok
    with_code = requests.get(
        f"{base}/api/admin/mappings", params={"code": FUNCTION_KEY}, timeout=10
    )
    assert with_code.status_code == 200
    assert refused == len(KEYED_ROUTES) * 7


# -- table-filter injection ---------------------------------------------------------------------

INJECTIONS = [
    "x' or 'a' eq 'a",
    "room-42' or PartitionKey ne '",
    "') or true or ('",
    "room-42'",
    "'",
    'room-42" or "1" eq "1',
]


@pytest.fixture
def injected(svc: Services, monkeypatch: pytest.MonkeyPatch) -> Services:
    """Mappings and history whose ids hold quotes, next to room-42; the API on this Services."""
    moment = datetime.now(UTC)
    svc.mappings.create(Mapping("o'brien", ROOM_B, "busy_only", True, moment, moment))
    svc.mappings.create(
        Mapping("x' or 'a' eq 'a", "q'uote@contoso.example", "full", True, moment, moment)
    )
    for resource in ("room-42", "o'brien", "x' or 'a' eq 'a"):
        svc.history.record(
            HistoryEntry(
                at=moment,
                resource_id=resource,
                action="mapping.create",
                subject=resource,
                outcome="ok",
                detail="",
            )
        )
    monkeypatch.setattr(api, "services", lambda: svc)
    return svc


def call(handler: Any, **kwargs: Any) -> tuple[int, Any]:
    answer = serve(handler, Request("GET", "", **kwargs))
    return answer.status, json.loads(answer.body)


def test_quoted_resource_ids_match_only_themselves(injected: Services) -> None:
    status, body = call(api.get_mapping, route={"resource_id": "o'brien"})
    assert (status, body["mailbox"]) == (200, ROOM_B)
    status, body = call(api.get_mapping, route={"resource_id": "x' or 'a' eq 'a"})
    assert (status, body["resource_id"]) == (200, "x' or 'a' eq 'a")
    for attempt in INJECTIONS[1:]:
        status, body = call(api.get_mapping, route={"resource_id": attempt})
        assert status == 404, (attempt, body)


def test_mailbox_filter_injection_returns_only_matches(injected: Services) -> None:
    status, body = call(api.list_mappings, query={"mailbox": "q'uote@contoso.example"})
    assert status == 200
    assert [m["resource_id"] for m in body["value"]] == ["x' or 'a' eq 'a"]
    for attempt in [*INJECTIONS, f"{ROOM_A}' or Mailbox ne '", f"{ROOM_A}'"]:
        status, body = call(api.list_mappings, query={"mailbox": attempt})
        assert status in (200, 400), (attempt, body)
        if status == 200:
            assert body["value"] == [], attempt
    status, body = call(api.list_mappings)
    assert len(body["value"]) == 3


def test_history_filter_injection_returns_only_matches(injected: Services) -> None:
    status, body = call(api.history, query={"resource_id": "o'brien"})
    assert status == 200
    assert [e["resource_id"] for e in body["value"]] == ["o'brien"]
    status, body = call(api.history, query={"resource_id": "x' or 'a' eq 'a"})
    assert [e["resource_id"] for e in body["value"]] == ["x' or 'a' eq 'a"]
    for attempt in INJECTIONS[1:]:
        status, body = call(api.history, query={"resource_id": attempt})
        assert status == 200
        assert body["value"] == [], attempt
    status, body = call(api.history)
    assert len(body["value"]) == 3


def test_quoted_ids_over_http_match_only_themselves(function_host: LocalHost) -> None:
    base = function_host.base
    created = requests.put(
        f"{base}/api/admin/mappings/" + quote("o'brien", safe=""),
        json={"mailbox": ROOM_B, "privacy": "busy_only"},
        headers=KEY_HEADER,
        timeout=20,
    )
    assert created.status_code == 201, created.text
    for attempt in INJECTIONS:
        answer = requests.get(
            f"{base}/api/admin/mappings/" + quote(attempt, safe=""),
            headers=KEY_HEADER,
            timeout=10,
        )
        assert answer.status_code == 404, (attempt, answer.text)
        assert answer.headers["Content-Type"] == PROBLEM_JSON
        listed = requests.get(
            f"{base}/api/admin/mappings",
            params={"mailbox": attempt},
            headers=KEY_HEADER,
            timeout=10,
        )
        assert listed.status_code in (200, 400)
        if listed.status_code == 200:
            assert listed.json()["value"] == []
        history = requests.get(
            f"{base}/api/admin/history",
            params={"resource_id": attempt},
            headers=KEY_HEADER,
            timeout=10,
        )
        assert history.status_code == 200
        assert history.json()["value"] == []
    mine = requests.get(
        f"{base}/api/admin/history",
        params={"resource_id": "o'brien"},
        headers=KEY_HEADER,
        timeout=10,
    )
    assert {e["resource_id"] for e in mine.json()["value"]} == {"o'brien"}


# -- captured-log scan --------------------------------------------------------------------------


def secret_values(env: dict[str, str]) -> dict[str, str]:
    values = {
        "CLIENT_SECRET": env["CLIENT_SECRET"],
        "function key": FUNCTION_KEY,
    }
    for name in ("BOOKING_WEBHOOK_SECRET", "PLATFORM_WEBHOOK_SECRET"):
        values[name] = env[name]
        key = env[name].removeprefix("whsec_")
        values[name + " key"] = key
        values[name + " key (hex)"] = base64.b64decode(key).hex()
    return values


def sandbox_token(tenant: Sandbox, env: dict[str, str]) -> str:
    answer = requests.post(
        tenant.info()["tokenEndpoint"],
        data={
            "grant_type": "client_credentials",
            "client_id": env["CLIENT_ID"],
            "client_secret": env["CLIENT_SECRET"],
            "scope": f"{env['GRAPH_ENDPOINT']}/.default",
        },
        verify=env["REQUESTS_CA_BUNDLE"],
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def assert_clean(text: str, secrets: dict[str, str], where: str) -> None:
    assert text, f"nothing was captured from {where}"
    for name, value in secrets.items():
        assert value not in text, f"{name} appears in {where}"
    assert not JWT.search(text), f"an access token appears in {where}: {JWT.search(text)}"
    assert not SIGNATURE_VALUE.search(text), f"a webhook-signature value appears in {where}"


def test_no_secret_token_or_signature_is_logged(
    stack: tuple[LocalHost, PlatformSim, Sandbox],
    tenant_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, platform, tenant = stack
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tenant_env["REQUESTS_CA_BUNDLE"])
    secrets = secret_values(tenant_env)
    token = sandbox_token(tenant, tenant_env)
    assert JWT.search(token), "the sandbox's token should look like a JWT (the scan's control)"
    secrets["access token"] = token

    # Bookings in, synced to Outlook, and reported back to the platform.
    sent = [platform.booking_event() for _ in range(3)]
    sent.append(platform.booking_event(resource_id="room-43"))
    signatures = []
    for number, event in enumerate(sent):
        moment, msg_id = int(time.time()), f"msg_scan_{number}"
        body = json.dumps(event).encode()
        signatures.append(sign(platform.booking_secret, msg_id, moment, body)["webhook-signature"])
        answer = platform.send_booking(event, webhook_id=msg_id, timestamp=moment)
        assert answer.status_code == 202, answer.text
    for event in sent:
        wait(
            lambda e=event: any(  # type: ignore[misc]
                r["data"].get("booking_id") == e["data"]["id"]
                for r in platform.received("booking.synced")
            ),
            timeout=30,
            what=f"booking.synced for {event['data']['id']}",
        )
    # Rejected deliveries log their reason, not their headers.
    bad = platform.send_booking(sent[0], secret=OTHER_SECRET)
    assert bad.status_code == 401
    platform.send_booking(sent[0], extra_headers={"x-functions-key": "wrong"})
    # An Outlook change: a notification, a delta read, a blocker back to the platform.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    tenant.control.create_event(
        ROOM_A,
        {
            "subject": "Board meeting",
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {
                "dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
        },
    )
    wait(lambda: platform.received("blocker.upserted"), timeout=30, what="a blocker")
    # The admin surface, with the key in the query string too.
    for path in ("status", "doctor", "history", "mappings"):
        requests.get(f"{host.base}/api/admin/{path}", params={"code": FUNCTION_KEY}, timeout=30)

    # In-process too, at DEBUG: a Graph read (MSAL token acquisition) and a signed intake. What
    # this test process logged so far was the harness's side (requests with ?code=...): dropped.
    caplog.clear()
    svc = Services(load_settings(tenant_env | {"PUBLIC_BASE_URL": host.base}, tmp_path / "n"))
    inbound.sync_mailbox(svc, {"mailbox": ROOM_B, "full": True})
    receive(svc, signed(svc, booking_event("room-43"), "msg_inproc"))
    receive(svc, signed(svc, booking_event("room-43"), "msg_inproc2", secret=OTHER_SECRET))

    for value in signatures:
        if value:
            secrets[f"signature {value[:8]}"] = value
    host_log = host.stop()
    assert "booking_events" in host_log or "POST" in host_log  # the log is the host's
    assert_clean(host_log, secrets, "the function host's output")
    in_process = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records
    )
    assert "oauth2/v2.0/token" in in_process and "calendarView" in in_process  # it saw Graph
    assert_clean(in_process, secrets, "in-process logging")
