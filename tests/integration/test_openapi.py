"""docs/openapi.yaml describes exactly the HTTP routes ``function_app.app`` registers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.conftest import ROOT

SPEC = ROOT / "docs" / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}

# Run in a fresh interpreter: get_functions() may be called only once per app object.
LIST_ROUTES = """
import json
import function_app
routes = []
for function in function_app.app.get_functions():
    trigger = function.get_trigger()
    if trigger is None or trigger.get_binding_name() != "httpTrigger":
        continue
    data = trigger.get_dict_repr()
    for method in data.get("methods") or []:
        routes.append([str(method).lower(), "/" + data["route"], str(data.get("authLevel"))])
print(json.dumps(routes))
"""


def load_spec(path: Path = SPEC) -> dict[str, Any]:
    """The document is JSON-compatible YAML (YAML 1.2 is a superset of JSON): drop the comment
    lines YAML allows at the top, then parse as JSON. No YAML library is needed."""
    lines = path.read_text().splitlines()
    body = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    document: dict[str, Any] = json.loads(body)
    return document


def registered_routes(env: dict[str, str]) -> list[tuple[str, str, str]]:
    done = subprocess.run(
        [sys.executable, "-c", LIST_ROUTES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [tuple(r) for r in json.loads(done.stdout.strip().splitlines()[-1])]


def subprocess_env(settings_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobs")} | settings_env


def test_every_registered_route_is_documented_and_vice_versa(settings_env: dict[str, str]) -> None:
    routes = registered_routes(subprocess_env(settings_env))
    assert len(routes) >= 14  # health, 3 inbound, 4 mappings, resync, rooms, status, ui, ...
    registered = {(method, path) for method, path, _ in routes}
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in METHODS
    }
    assert registered - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - registered == set(), "documented routes the app does not register"


def test_security_matches_auth_levels(settings_env: dict[str, str]) -> None:
    """Anonymous routes have ``security: []``; every other route needs the function key."""
    spec = load_spec()
    for method, path, auth in registered_routes(subprocess_env(settings_env)):
        operation = spec["paths"][path][method]
        names = {name for requirement in operation["security"] for name in requirement}
        if auth.upper().endswith("ANONYMOUS"):
            assert operation["security"] == [], (method, path)
        else:
            assert names == {"functionKeyHeader", "functionKeyQuery"}, (method, path, auth)


def test_refs_resolve_and_errors_are_problem_json() -> None:
    spec = load_spec()

    def resolve(ref: str) -> Any:
        node: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs
    for ref in refs:
        assert resolve(ref) is not None, ref
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, given in operation["responses"].items():
                response = resolve(given["$ref"]) if "$ref" in given else given
                if status.startswith("4"):
                    assert list(response["content"]) == ["application/problem+json"], (
                        path,
                        method,
                        status,
                    )
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    booking = spec["paths"]["/api/bookings/events"]["post"]
    headers = {resolve(p["$ref"])["name"] for p in booking["parameters"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    for route in ("/api/graph/notifications", "/api/graph/lifecycle"):
        operation = spec["paths"][route]["post"]
        names = {resolve(p["$ref"])["name"] for p in operation["parameters"]}
        assert names == {"validationToken"}


# ---- outbound events: the webhooks section ------------------------------------------------

EVENT_CALL = re.compile(r"""(?:\.emit|\bOwed)\(\s*["']([a-z_]+\.[a-z_]+)["']""")


def emitted_types() -> set[str]:
    """Every event type the product's code emits to the platform, read from its source."""
    from sync_core.platform import TEST_EVENT  # sent by Platform.send_test, not emitted

    found: set[str] = {TEST_EVENT}
    for path in (ROOT / "sync_core").rglob("*.py"):
        found.update(EVENT_CALL.findall(path.read_text(encoding="utf-8")))
    return found


def event_validator(spec: dict[str, Any], event_type: str) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    schema = spec["webhooks"][event_type]["post"]["requestBody"]["content"]["application/json"]
    # The whole document is the root, so the schema's "#/components/..." references resolve.
    return Draft202012Validator({**spec, **schema["schema"]}, format_checker=FormatChecker())


class _Recorder:
    """Stands in for a service's queues, sequences, history, health and HTTP session."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.numbers: dict[str, int] = {}

    def next(self, resource_id: str) -> int:
        self.numbers[resource_id] = self.numbers.get(resource_id, 0) + 1
        return self.numbers[resource_id]

    def send(self, *args: Any, **kwargs: Any) -> str:
        raise AssertionError("a delivery made at once went to a queue")

    def post(self, url: str, data: bytes, headers: dict[str, str], timeout: Any) -> Any:
        self.posts.append((headers, data))
        return SimpleNamespace(status_code=204)

    def ignore(self, *args: Any, **kwargs: Any) -> None:
        return None

    record = ignore  # history, for a test event


def deliveries() -> list[tuple[dict[str, str], bytes]]:
    """One delivery of every event type, as the product posts it: the data built by the code
    that sends each event, then numbered, signed and posted by sync_core.platform."""
    from sync_core.config import load_settings
    from sync_core.credentials.expiry import Assessment, Expiry
    from sync_core.credentials.watch import _warn
    from sync_core.domain.booking import Booking
    from sync_core.domain.inbound import Own, blocker_id, to_blocker
    from sync_core.domain.outbound import NO_TEAMS
    from sync_core.graph.errors import error_from_response
    from sync_core.outbound.apply import _conflicts, _failed, _synced
    from sync_core.platform import Platform
    from sync_core.store.links import Link
    from tests.conftest import example_settings

    settings = load_settings(example_settings(), Path("/nonexistent/local.settings.json"))
    recorder = _Recorder()
    platform = Platform(
        settings,
        queues=recorder,  # type: ignore[arg-type]
        sequences=recorder,  # type: ignore[arg-type]
        history=recorder,  # type: ignore[arg-type]
        session=recorder,  # type: ignore[arg-type]
    )

    def emit(event_type: str, resource_id: str, data: dict[str, Any], **_: Any) -> str:
        return platform.emit(event_type, resource_id, data, at_once=True)

    mailbox = "room.berlin@contoso.example"
    timed = to_blocker(
        mailbox,
        {
            "id": "AAMkAGI2TG93AAA=",
            "iCalUId": "040000008200E00074C5B7101A82E008",
            "subject": "Board meeting",
            "showAs": "busy",
            "start": {"dateTime": "2026-11-23T09:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-23T10:00:00.0000000", "timeZone": "UTC"},
        },
        "full",
        "room-42",
    )
    all_day = to_blocker(
        mailbox,
        {
            "id": "AAMkAGI2TG94AAA=",
            "subject": "Closed",
            "sensitivity": "private",
            "showAs": "oof",
            "isAllDay": True,
            "start": {"dateTime": "2026-11-23T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-24T00:00:00.0000000", "timeZone": "UTC"},
        },
        "full",
        "room-42",
    )
    assert timed is not None and all_day is not None
    for blocker in (timed, all_day):
        emit("blocker.upserted", blocker.resource_id, blocker.to_json())
    emit("blocker.deleted", "room-42", {"id": blocker_id(mailbox, "AAMkAGI2TG95AAA=")})

    booking = Booking.model_validate(
        {
            "id": "bk_1001",
            "version": 3,
            "resource_id": "room-42",
            "start": "2026-11-23T09:30:00+01:00",
            "end": "2026-11-23T10:30:00+01:00",
            "time_zone": "Europe/Berlin",
            "online_meeting": True,
        }
    )
    link = Link(
        booking_id="bk_1001",
        resource_id="room-42",
        mailbox=mailbox,
        generation=1,
        transaction_id="tx-1",
        state="active",
        event_id="AAMkAGI2TG96AAA=",
        web_link="https://outlook.office365.com/owa/?itemid=AAMkAGI2TG96AAA%3D",
    )
    for warnings in ([], [NO_TEAMS]):
        owed = _synced(booking, link, warnings)
        emit(owed.type, owed.resource_id, owed.data)
    joined = _synced(booking, replace(link, join_url="https://teams.microsoft.com/l/meetup-join/1"))
    emit(joined.type, joined.resource_id, joined.data)

    # desk-1 shares the mailbox; its booking overlaps this one (a conflict of its own kind).
    other = replace(link, booking_id="bk_2002", resource_id="desk-1", event_id="AAMkAGI2TG97AAA=")
    own = Own("bk_2002", "", booking.interval_utc()[0], booking.interval_utc()[1])
    services = SimpleNamespace(
        platform=SimpleNamespace(emit=emit),
        blockers=SimpleNamespace(overlapping=lambda *args: [timed, all_day]),
        mappings=SimpleNamespace(
            sharing=lambda _: [
                SimpleNamespace(resource_id="room-42"),
                SimpleNamespace(resource_id="desk-1"),
            ]
        ),
        links=SimpleNamespace(projections=lambda _: {"AAMkAGI2TG97AAA=": own}, get=lambda _: other),
        health=SimpleNamespace(failure=recorder.ignore),
        history=SimpleNamespace(add=recorder.ignore, record=recorder.ignore),
        queues=recorder,
        settings=settings,
    )
    for owed in _conflicts(services, booking, mailbox, "AAMkAGI2TG96AAA="):  # type: ignore[arg-type]
        emit(owed.type, owed.resource_id, owed.data)
    denied = error_from_response(
        403,
        {"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}},
        mailbox=mailbox,
    )
    assert not denied.retryable
    _failed(services, booking, denied, {"booking_id": "bk_1001", "attempt": 1}, 1)  # type: ignore[arg-type]

    expires = datetime(2026, 12, 1, tzinfo=UTC)
    for days_left in (9, -2):
        found = Assessment(
            credential="client_secret",
            mode="secret",
            source="setting",
            state="warning" if days_left > 0 else "expired",  # type: ignore[arg-type]
            hint="rotate the client secret",
            expiry=Expiry(expires_at=expires, found_in="graph"),
            days_left=days_left,
        )
        _warn(services, found, None, {})  # type: ignore[arg-type]

    from sync_core import mapping_events
    from sync_core.store.health import HealthChange

    changes = SimpleNamespace(
        platform=SimpleNamespace(emit=emit),
        mappings=SimpleNamespace(get=lambda resource_id: SimpleNamespace(mailbox=mailbox)),
    )
    for change in (
        HealthChange("mapping.error", "room-42", denied.to_json()),
        HealthChange("mapping.recovered", "room-42"),
        HealthChange("subscription.lost", "room-42", denied.to_json()),
    ):
        mapping_events.announce(changes, change)  # type: ignore[arg-type]
    assert platform.send_test().delivered
    return recorder.posts


def test_every_emitted_event_type_has_a_webhook() -> None:
    from sandbox.platform import EVENT_FIELDS

    spec = load_spec()
    types = emitted_types()
    assert {"booking.synced", "blocker.upserted", "credential.expiring"} <= types
    assert types == set(spec["webhooks"]), "emitted types and docs/openapi.yaml webhooks differ"
    assert set(EVENT_FIELDS) == types  # the simulated platform knows the same events
    headers = {"webhook-id", "webhook-timestamp", "webhook-signature"}
    for event_type, item in spec["webhooks"].items():
        operation = item["post"]
        names = {
            spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]["name"]
            for p in operation["parameters"]
        }
        assert names == headers, event_type
        schema = event_validator(spec, event_type).schema
        envelope = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        assert envelope["properties"]["type"] == {"const": event_type}
        data = spec["components"]["schemas"][envelope["properties"]["data"]["$ref"].split("/")[-1]]
        # What the simulated platform checks every delivery for is documented as required.
        assert set(EVENT_FIELDS[event_type]) <= set(data["required"]), event_type


def test_deliveries_match_the_webhook_schemas() -> None:
    import jsonschema

    spec = load_spec()
    parameters = spec["components"]["parameters"]
    posted = deliveries()
    seen: set[str] = set()
    for headers, raw in posted:
        body = json.loads(raw)
        event_type = body["type"]
        seen.add(event_type)
        errors = [e.message for e in event_validator(spec, event_type).iter_errors(body)]
        assert errors == [], (event_type, errors, body)
        for name in ("WebhookId", "WebhookTimestamp", "WebhookSignature"):
            parameter = parameters[name]
            jsonschema.validate(headers[parameter["name"]], parameter["schema"])
    assert seen == set(spec["webhooks"])
    # And a payload that breaks the contract is caught.
    broken = json.loads(posted[0][1])
    del broken["data"]["sequence"]
    assert list(event_validator(spec, broken["type"]).iter_errors(broken))
