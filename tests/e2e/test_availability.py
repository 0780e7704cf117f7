"""``POST /api/availability`` and ``python -m sync_core availability`` against the local host,
Azurite and the simulated tenant: the mirror answers without Graph, the rest through getSchedule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import (
    KEY_HEADER,
    ROOM_A,
    LocalHost,
    drained,
    product_env,
    send_and_sync,
    wait,
)
from tests.e2e.test_cli import cli

Stack = tuple[LocalHost, PlatformSim, Sandbox]
PERSON = "ada@contoso.example"
NOBODY = "nobody@contoso.example"


def week() -> tuple[str, str]:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return _z(start), _z(start + timedelta(days=7))


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ask(host: LocalHost, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return requests.post(
        f"{host.base}/api/availability",
        json=body,
        headers=KEY_HEADER if headers is None else headers,
        timeout=60,
    )


def schedule_requests(tenant: Sandbox) -> list[dict[str, Any]]:
    return [r for r in tenant.control.requests() if r["path"].endswith("/calendar/getSchedule")]


def outlook_event(tenant: Sandbox, mailbox: str, day: int, hour: int, **extra: Any) -> Any:
    start = (datetime.now(UTC) + timedelta(days=day)).replace(
        hour=hour, minute=0, second=0, microsecond=0
    )
    return tenant.control.create_event(
        mailbox,
        {
            "subject": "Private planning",
            "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {
                "dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                "timeZone": "UTC",
            },
            **extra,
        },
    )


def test_a_current_mirror_answers_without_graph(stack: Stack) -> None:
    host, platform, tenant = stack
    event = outlook_event(tenant, ROOM_A, 2, 13, showAs="tentative")
    wait(
        lambda: [
            r
            for r in platform.received("blocker.upserted")
            if r["data"]["source"]["event_id"] == event["id"]
        ],
        what="the Outlook event's blocker",
    )
    send_and_sync(platform, platform.booking_event(resource_id="room-42"))
    wait(lambda: drained(host), what="the queued work to be done")
    tenant.control.clear_requests()

    start, end = week()
    answer = ask(host, {"resource_ids": ["room-42"], "start": start, "end": end})
    assert answer.status_code == 200, answer.text
    assert tenant.control.requests(mailbox=ROOM_A) == []
    assert schedule_requests(tenant) == []
    (item,) = answer.json()["value"]
    assert item["resource_id"] == "room-42" and item["mailbox"] == ROOM_A
    assert "error" not in item
    sources = {b["source"]: b for b in item["busy"]}
    assert set(sources) == {"blocker", "booking"}
    assert sources["blocker"]["show_as"] == "tentative"
    assert sources["booking"]["show_as"] == "busy"
    starts = [b["start"] for b in item["busy"]]
    assert starts == sorted(starts) and all(s.endswith("Z") for s in starts)
    assert "Private planning" not in answer.text and "Sprint review" not in answer.text

    # The same calendar asked by address comes from Graph, and shows both events.
    by_address = ask(host, {"mailboxes": [ROOM_A.upper()], "start": start, "end": end}).json()
    (graph_item,) = by_address["value"]
    assert graph_item["mailbox"] == ROOM_A
    assert [b["source"] for b in graph_item["busy"]] == ["graph", "graph"]
    assert {b["show_as"] for b in graph_item["busy"]} == {"busy", "tentative"}
    assert len(schedule_requests(tenant)) == 1


def test_mailboxes_unknown_ids_and_many_schedules(stack: Stack) -> None:
    host, _, tenant = stack
    outlook_event(tenant, PERSON, 1, 10, showAs="oof")
    outlook_event(tenant, PERSON, 1, 12, showAs="free")
    tenant.control.clear_requests()
    start, end = week()
    answer = ask(
        host,
        {
            "resource_ids": ["room-nope"],
            "mailboxes": [PERSON, NOBODY],
            "start": start,
            "end": end,
        },
    )
    assert answer.status_code == 200, answer.text
    unmapped, person, nobody = answer.json()["value"]
    assert unmapped["resource_id"] == "room-nope" and unmapped["mailbox"] is None
    assert unmapped["error"]["code"] == "ResourceNotMapped"
    assert [(b["show_as"], b["source"]) for b in person["busy"]] == [("oof", "graph")]
    assert nobody["busy"] == [] and nobody["error"]["code"] == "5009"
    assert "does not exist" in nobody["error"]["message"] and nobody["error"]["hint"]
    assert len(schedule_requests(tenant)) == 1

    tenant.control.clear_requests()
    many = [f"guest{n}@contoso.example" for n in range(24)] + [PERSON]
    answer = ask(host, {"mailboxes": many, "start": start, "end": end})
    assert answer.status_code == 200
    assert len(answer.json()["value"]) == 25
    sent = schedule_requests(tenant)
    assert len(sent) == 2
    assert sorted(len(json.loads(r["body"])["schedules"]) for r in sent if r.get("body")) in (
        [5, 20],
        [],
    )


def test_bad_requests_name_every_field_and_a_scoped_key_opens_the_route(
    tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox
) -> None:
    env = product_env(tenant_env, platform) | {
        "FUNCTIONS_FUNCTION_KEYS": "availability/platform=avail-key,booking_events/platform=bk-key"
    }
    host = LocalHost(env).wait_ready()
    try:
        start = datetime(2030, 1, 1, tzinfo=UTC)
        body = {
            "resource_ids": [f"r{n}" for n in range(101)],
            "mailboxes": ["not an address"],
            "start": _z(start),
            "end": _z(start + timedelta(days=63)),
        }
        tenant.control.clear_requests()
        answer = ask(host, body, {"x-functions-key": "avail-key"})
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        fields = {e["field"] for e in answer.json()["errors"]}
        assert {"resource_ids", "mailboxes.0"} <= fields
        assert "at most 100" in answer.text
        window = ask(
            host,
            {"mailboxes": [PERSON], "start": _z(start), "end": _z(start + timedelta(days=63))},
            {"x-functions-key": "avail-key"},
        )
        assert window.status_code == 400
        assert [e["field"] for e in window.json()["errors"]] == ["end"]
        naive = ask(
            host,
            {"mailboxes": [PERSON], "start": "2030-01-01T00:00:00", "end": "2030-01-02"},
            {"x-functions-key": "avail-key"},
        )
        assert {e["field"] for e in naive.json()["errors"]} == {"start", "end"}
        assert schedule_requests(tenant) == []

        fine = {"mailboxes": [PERSON], "start": _z(start), "end": _z(start + timedelta(days=62))}
        assert ask(host, fine, {"x-functions-key": "avail-key"}).status_code == 200
        # Graph takes windows under 62 days: 62 days are two requests.
        assert len(schedule_requests(tenant)) == 2
        assert ask(host, fine, {"x-functions-key": "bk-key"}).status_code == 401
        assert ask(host, fine, {}).status_code == 401
    finally:
        host.stop()


def test_the_cli_locally_and_remotely(stack: Stack) -> None:
    host, _, tenant = stack
    outlook_event(tenant, PERSON, 1, 10)
    start, end = week()
    env = host.env
    local = cli(
        env, "availability", "--mailbox", PERSON, "--resource", "room-nope",
        "--start", start, "--end", end,
    )  # fmt: skip
    assert local.returncode == 1, local.stderr
    assert "RESOURCE/MAILBOX" in local.stdout and PERSON in local.stdout
    assert "room-nope: not answered" in local.stdout and "ResourceNotMapped" in local.stdout
    remote = cli(
        {k: v for k, v in env.items() if k != "AzureWebJobsStorage"},
        "availability", "--mailbox", PERSON, "--start", start, "--end", end, "--json",
        "--url", host.base, "--key", env["FUNCTIONS_KEY"],
    )  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    (item,) = json.loads(remote.stdout)["value"]
    assert [b["source"] for b in item["busy"]] == ["graph"]
    bad = cli(env, "availability", "--mailbox", PERSON, "--start", end, "--end", start)
    assert bad.returncode == 1 and "end: must be after start" in bad.stderr


def test_each_resource_of_a_shared_mailbox_is_busy_by_its_own_filters(stack: Stack) -> None:
    host, platform, tenant = stack
    body = {"mailbox": ROOM_A, "filters": {"ignore_title_pattern": "^private"}}
    answer = requests.put(
        f"{host.base}/api/admin/mappings/desk-1", json=body, headers=KEY_HEADER, timeout=60
    )
    assert answer.status_code == 201
    event = outlook_event(tenant, ROOM_A, 2, 15)  # "Private planning"
    wait(
        lambda: [
            r
            for r in platform.received("blocker.upserted")
            if r["data"]["source"]["event_id"] == event["id"]
        ],
        what="room-42's blocker",
    )
    wait(lambda: drained(host), what="the queued work to be done")
    start, end = week()
    tenant.control.clear_requests()
    found = ask(host, {"resource_ids": ["room-42", "desk-1"], "start": start, "end": end}).json()
    busy = {item["resource_id"]: item["busy"] for item in found["value"]}
    assert [b["source"] for b in busy["room-42"]] == ["blocker"]
    assert busy["desk-1"] == []  # its filter leaves the event out
    assert schedule_requests(tenant) == []
