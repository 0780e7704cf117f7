"""Bulk mapping, deactivation and deletion (SPEC §9) over real HTTP through the local host,
against Azurite and the simulated tenant; and the same from the CLI, here and with --url."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import KEY_HEADER, ROOM_A, ROOM_B, LocalHost, wait
from tests.e2e.test_cli import cli, ours

Stack = tuple[LocalHost, PlatformSim, Sandbox]
BERLIN = "rooms.berlin@contoso.example"
TEGEL = "berlin.tegel@contoso.example"
ISAR = "munich.isar@contoso.example"
ALPS = "munich.alps@contoso.example"
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


def post(host: LocalHost, what: str, body: object, **params: str) -> requests.Response:
    return requests.post(
        f"{host.base}/api/admin/mappings/{what}",
        json=body,
        params=params,
        headers=KEY_HEADER,
        timeout=120,
    )


def listed(host: LocalHost) -> dict[str, dict[str, Any]]:
    answer = requests.get(f"{host.base}/api/admin/mappings", headers=KEY_HEADER, timeout=10)
    return {m["resource_id"]: m for m in answer.json()["value"]}


def mark(tenant: Sandbox) -> int:
    """The request log's newest entry, to count what comes after it."""
    entries = tenant.control.requests()
    return max((e["seq"] for e in entries), default=0)


def graph_writes(tenant: Sandbox, since: int) -> list[str]:
    return [
        f"{e['method']} {e['path']}"
        for e in tenant.control.requests(since=since)
        if e["kind"] == "graph" and e["method"] in WRITES
    ]


def outcome(document: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(r["resource_id"], r["mailbox"], r["status"]) for r in document["results"]]


def summary(host: LocalHost) -> dict[str, int]:
    answer = requests.get(f"{host.base}/api/admin/status", headers=KEY_HEADER, timeout=30)
    summary: dict[str, int] = answer.json()["summary"]
    return summary


def test_an_explicit_list_reports_each_item_and_one_error_stops_no_other(
    function_host: LocalHost,
) -> None:
    answer = post(
        function_host,
        "bulk",
        {
            "mappings": [
                {"resource_id": "room-1", "mailbox": "Room.Berlin@Contoso.example"},
                {"resource_id": "room-2", "mailbox": "nobody@contoso.example"},
                {"resource_id": "room-3", "mailbox": "not an address", "privacy": "loud"},
                {"resource_id": "room-4", "mailbox": ROOM_B, "privacy": "full", "enabled": False},
                {"resource_id": "room-1", "mailbox": ISAR},
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert outcome(document) == [
        ("room-1", ROOM_A, "created"),
        ("room-2", "nobody@contoso.example", "error"),
        ("room-3", "not an address", "error"),
        ("room-4", ROOM_B, "created"),
        ("room-1", ISAR, "error"),
    ]
    results = document["results"]
    assert results[1]["error"]["code"] == "ErrorInvalidUser"
    assert "does not exist" in results[1]["error"]["message"]
    assert results[1]["error"]["hint"]
    assert results[2]["error"]["code"] == "validation-error"
    assert {e["field"] for e in results[2]["error"]["errors"]} == {"mailbox", "privacy"}
    assert "more than once" in results[4]["error"]["message"]
    assert "error" not in results[0]
    assert document["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "error": 3}
    assert document["dry_run"] is False

    mappings = listed(function_host)
    assert set(mappings) == {"room-1", "room-4"}
    assert mappings["room-1"]["mailbox"] == ROOM_A
    assert mappings["room-4"]["privacy"] == "full" and mappings["room-4"]["enabled"] is False


def test_a_malformed_request_is_refused_whole_naming_every_bad_field(
    function_host: LocalHost,
) -> None:
    def refused(body: object) -> dict[str, str]:
        answer = post(function_host, "bulk", body)
        assert answer.status_code == 400, answer.text
        assert answer.headers["Content-Type"] == "application/problem+json"
        problem = answer.json()
        return {e["field"]: e["message"] for e in problem["errors"]}

    every = refused({"mappings": [{"mailbox": ROOM_A}, {"resource_id": 7}], "dryrun": True})
    assert set(every) == {"mappings.0.resource_id", "mappings.1.resource_id", "dryrun"}
    assert "either" in refused({"dry_run": True})["body"]
    assert "mappings" in refused({"mappings": [{"resource_id": f"r{i}"} for i in range(501)]})
    unknown = refused({"rule": {"mailboxes": [ISAR], "resource_id_template": "room-{name}"}})
    assert "{local}" in unknown["rule.resource_id_template"]
    assert "{address}" in unknown["rule.resource_id_template"]
    assert "rule.resource_id_template" in refused(
        {"rule": {"mailboxes": [ISAR], "resource_id_template": "room"}}
    )
    several = refused(
        {"rule": {"mailboxes": ["x", ISAR], "resource_id_template": "{local}", "privacy": "no"}}
    )
    assert set(several) == {"rule.mailboxes.0", "rule.privacy"}
    assert "rule" in refused({"rule": {"room_list": BERLIN, "mailboxes": [ISAR]}})
    assert refused(
        {"rule": {"room_list": "nowhere@contoso.example", "resource_id_template": "{local}"}}
    ) == {"rule.room_list": "nowhere@contoso.example is not a room list of the tenant"}
    assert listed(function_host) == {}


def test_a_room_list_rule_dry_run_predicts_the_run_and_a_rerun_does_nothing(
    function_host: LocalHost, tenant: Sandbox
) -> None:
    rule = {"room_list": BERLIN, "resource_id_template": "room-{local}", "privacy": "full"}
    before = mark(tenant)
    dry = post(function_host, "bulk", {"rule": rule, "dry_run": True})
    assert dry.status_code == 200, dry.text
    expected = [
        ("room-berlin.havel", ROOM_B, "created"),
        ("room-berlin.tegel", TEGEL, "created"),
        ("room-room.berlin", ROOM_A, "created"),
    ]
    assert sorted(outcome(dry.json())) == expected
    assert dry.json()["dry_run"] is True
    assert listed(function_host) == {}  # nothing written: no mapping,
    assert graph_writes(tenant, before) == []  # no subscription,
    history = requests.get(
        f"{function_host.base}/api/admin/history", headers=KEY_HEADER, timeout=10
    )
    assert history.json()["value"] == []  # no history
    checks = [
        e
        for e in tenant.control.requests(since=before)
        if e["path"].split("?")[0].endswith("/calendar")
    ]
    assert len(checks) == 3  # but each mailbox was checked through Graph

    done = post(function_host, "bulk", {"rule": rule})
    assert done.status_code == 200, done.text
    assert outcome(done.json()) == outcome(dry.json())
    assert {m["privacy"] for m in listed(function_host).values()} == {"full"}
    assert graph_writes(tenant, before)  # the real run subscribed (the positive control)

    wait(lambda: summary(function_host)["connected"] == 3, what="three healthy mappings")
    again = mark(tenant)
    rerun = post(function_host, "bulk", {"rule": rule})
    assert [r[2] for r in outcome(rerun.json())] == ["unchanged"] * 3
    assert rerun.json()["counts"]["unchanged"] == 3
    redry = post(function_host, "bulk", {"rule": rule, "dry_run": True})
    assert [r[2] for r in outcome(redry.json())] == ["unchanged"] * 3
    assert graph_writes(tenant, again) == []
    assert [
        e
        for e in tenant.control.requests(since=again)
        if e["path"].split("?")[0].endswith("/calendar")
    ] == []

    changed = post(function_host, "bulk", {"rule": {**rule, "privacy": "busy_only"}})
    assert [r[2] for r in outcome(changed.json())] == ["updated"] * 3


def test_a_mailboxes_rule_makes_ids_from_addresses(
    function_host: LocalHost, tenant: Sandbox
) -> None:
    tenant.control.set_mailbox_state(ALPS, "not_enabled")
    rule = {"mailboxes": [ISAR, ALPS, ISAR.upper()], "resource_id_template": "desk-{address}"}
    answer = post(function_host, "bulk", {"rule": {**rule, "enabled": False}})
    # A deactivated mapping is not checked through Graph (as for one PUT).
    assert outcome(answer.json()) == [
        (f"desk-{ISAR}", ISAR, "created"),
        (f"desk-{ALPS}", ALPS, "created"),
    ]
    enabled = post(function_host, "bulk", {"rule": rule})
    assert outcome(enabled.json()) == [
        (f"desk-{ISAR}", ISAR, "updated"),
        (f"desk-{ALPS}", ALPS, "error"),
    ]
    assert enabled.json()["results"][1]["error"]["code"] == "MailboxNotEnabledForRESTAPI"
    mappings = listed(function_host)
    assert mappings[f"desk-{ISAR}"]["enabled"] is True
    assert mappings[f"desk-{ALPS}"]["enabled"] is False  # nothing saved when the check fails


def test_the_bulk_routes_and_a_resource_named_bulk_live_side_by_side(
    function_host: LocalHost,
) -> None:
    put = requests.put(
        f"{function_host.base}/api/admin/mappings/bulk",
        json={"mailbox": ISAR},
        headers=KEY_HEADER,
        timeout=30,
    )
    assert put.status_code == 201  # PUT and GET still reach the resource "bulk"
    got = requests.get(
        f"{function_host.base}/api/admin/mappings/bulk", headers=KEY_HEADER, timeout=10
    )
    assert got.json()["mailbox"] == ISAR
    answer = post(function_host, "bulk", {"mappings": []})
    assert answer.json() == {
        "results": [],
        "counts": {"created": 0, "updated": 0, "unchanged": 0, "error": 0},
        "dry_run": False,
    }
    assert (
        requests.post(
            f"{function_host.base}/api/admin/mappings/bulk-delete", json={"all": True}, timeout=10
        ).status_code
        == 401
    )  # the bulk routes need the key too


def test_bulk_deactivate_and_delete_with_purge_and_the_status_counts(stack: Stack) -> None:
    host, platform, tenant = stack  # room-42 → ROOM_A and room-43 → ROOM_B
    booking = platform.booking_event(resource_id="room-42")
    platform.send_booking(booking)
    wait(lambda: len(ours(tenant, ROOM_A)) == 1, what="the booking in the room's calendar")
    made = post(host, "bulk", {"mappings": [{"resource_id": "room-44", "mailbox": TEGEL}]})
    assert outcome(made.json()) == [("room-44", TEGEL, "created")]
    wait(lambda: summary(host)["connected"] == 3, what="three healthy mappings")

    off = post(host, "bulk-deactivate", {"resource_ids": ["room-43", "room-44", "room-99"]})
    assert off.status_code == 200, off.text
    assert outcome(off.json()) == [
        ("room-43", ROOM_B, "deactivated"),
        ("room-44", TEGEL, "deactivated"),
        ("room-99", None, "error"),
    ]
    assert off.json()["results"][2]["error"]["code"] == "not-found"
    assert off.json()["counts"] == {"deactivated": 2, "unchanged": 0, "error": 1}
    assert not any(TEGEL in s["resource"].lower() for s in tenant.control.subscriptions())
    again = post(host, "bulk-deactivate", {"resource_ids": ["room-43"]})
    assert outcome(again.json()) == [("room-43", ROOM_B, "unchanged")]

    tenant.control.set_mailbox_state(ROOM_A, "not_enabled")  # room-42 now fails
    resynced = requests.post(
        f"{host.base}/api/admin/mappings/room-42/resync", headers=KEY_HEADER, timeout=30
    )
    assert resynced.status_code == 422
    counts = summary(host)
    assert (counts["mappings"], counts["connected"], counts["failed"]) == (3, 0, 1)
    assert counts["deactivated"] == 2
    page = requests.get(f"{host.base}/api/admin/ui", headers=KEY_HEADER, timeout=30).text
    assert '<span id="count-failed">1</span> failed' in page
    assert '<span id="count-deactivated">2</span> deactivated' in page
    tenant.control.set_mailbox_state(ROOM_A, "ok")

    one = post(host, "bulk-delete", {"resource_ids": ["room-44"]})
    assert outcome(one.json()) == [("room-44", TEGEL, "deleted")]
    assert "purged" not in one.json()["results"][0]
    purged = post(host, "bulk-delete", {"all": True}, purge="true")
    assert purged.status_code == 200, purged.text
    assert outcome(purged.json()) == [
        ("room-42", ROOM_A, "deleted"),
        ("room-43", ROOM_B, "deleted"),
    ]
    assert purged.json()["results"][0]["purged"]["deleted_events"] == 1
    assert purged.json()["remaining"] == 0
    assert ours(tenant, ROOM_A) == []
    assert listed(host) == {}
    assert summary(host)["mappings"] == 0
    bad = post(host, "bulk-delete", {"all": False})
    assert bad.status_code == 400


def test_the_cli_here_and_over_the_url(stack: Stack, tmp_path: Path) -> None:
    host, _, tenant = stack
    env = host.env
    remote = ["--url", host.base, "--key", env["FUNCTIONS_KEY"]]

    dry = cli(env, "map-bulk", "--room-list", BERLIN, "--template", "room-{local}", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].split() == ["RESOURCE", "MAILBOX", "STATUS"]
    assert "room-berlin.tegel" in dry.stdout and "created" in dry.stdout
    assert (
        lines[-1]
        == "dry run (nothing written): mappings: 3 created, 0 updated, 0 unchanged, 0 error"
    )
    assert "room-room.berlin" not in listed(host)

    mapped = cli(env, *remote, "map-bulk", "--mailboxes", f"{ISAR},{ALPS}", "--template", "{local}")
    assert mapped.returncode == 0, mapped.stderr
    assert mapped.stdout.splitlines()[-1] == "mappings: 2 created, 0 updated, 0 unchanged, 0 error"

    file = tmp_path / "mappings.json"
    file.write_text(
        json.dumps(
            [
                {"resource_id": "munich.isar", "mailbox": ISAR},
                {"resource_id": "nobody", "mailbox": "nobody@contoso.example"},
            ]
        )
    )
    from_file = cli(env, "map-bulk", "--file", str(file), "--json")
    assert from_file.returncode == 1  # one item failed
    assert outcome(json.loads(from_file.stdout)) == [
        ("munich.isar", ISAR, "unchanged"),
        ("nobody", "nobody@contoso.example", "error"),
    ]
    shown = cli(env, *remote, "map-bulk", "--file", str(file))
    assert "    ErrorInvalidUser: mailbox nobody@contoso.example does not exist" in shown.stdout
    assert "    hint: Check the address in the mapping." in shown.stdout

    off = cli(env, *remote, "deactivate-bulk", "munich.isar", "munich.alps")
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines()[-1] == "deactivation: 2 deactivated, 0 unchanged, 0 error"
    status = cli(env, "status")
    assert "Mappings: 4 in all, 2 connected, 0 failed, 2 deactivated" in status.stdout

    assert cli(env, "unmap-bulk").returncode == 2  # neither ids nor --all
    gone = cli(env, "unmap-bulk", "--all", "--purge", "--json")
    assert gone.returncode == 0, gone.stderr
    assert sorted(r["resource_id"] for r in json.loads(gone.stdout)["results"]) == [
        "munich.alps",
        "munich.isar",
        "room-42",
        "room-43",
    ]
    assert listed(host) == {}
    assert not tenant.control.subscriptions()
