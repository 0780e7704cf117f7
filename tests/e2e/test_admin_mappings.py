"""Health and the mappings admin API, over real HTTP through the local host and Azurite."""

from __future__ import annotations

from urllib.parse import quote

import requests

from sandbox import Sandbox
from tests.conftest import LocalHost

KEY = {"x-functions-key": "test-function-key"}


def url(host: LocalHost, resource_id: str) -> str:
    return f"{host.base}/api/admin/mappings/{quote(resource_id, safe='')}"


def mailboxes(tenant: Sandbox, *addresses: str) -> None:
    """Mailboxes the tenant knows, so that the PUT check (SPEC §5: the mailbox must exist and be
    reachable) lets the mapping through."""
    for address in addresses:
        tenant.control.add_mailbox(address, kind="room")


def put(host: LocalHost, resource_id: str, body: object, **headers: str) -> requests.Response:
    return requests.put(url(host, resource_id), json=body, headers=KEY | headers, timeout=10)


def test_health_is_anonymous_and_says_nothing_more(function_host: LocalHost) -> None:
    answer = requests.get(f"{function_host.base}/api/health", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_admin_routes_need_the_function_key(function_host: LocalHost) -> None:
    base = f"{function_host.base}/api/admin/mappings"
    assert requests.get(base, timeout=10).status_code == 401
    assert requests.get(base, headers={"x-functions-key": "wrong"}, timeout=10).status_code == 401
    assert requests.get(base, headers=KEY, timeout=10).status_code == 200
    assert requests.get(base, params={"code": "test-function-key"}, timeout=10).status_code == 200
    denied = requests.put(f"{base}/room-1", json={"mailbox": "a@b.example"}, timeout=10)
    assert denied.status_code == 401
    assert requests.get(base, headers=KEY, timeout=10).json()["value"] == []  # nothing written


def test_create_read_update_delete(function_host: LocalHost) -> None:
    created = put(function_host, "room-42", {"mailbox": "Room.Berlin@Contoso.example"})
    assert created.status_code == 201
    assert created.headers["Location"] == "/api/admin/mappings/room-42"
    body = created.json()
    assert body["mailbox"] == "room.berlin@contoso.example"
    assert body["privacy"] == "busy_only"
    assert body["enabled"] is True
    assert created.headers["ETag"] == body["etag"]

    updated = put(
        function_host,
        "room-42",
        {"mailbox": "room.berlin@contoso.example", "privacy": "full", "enabled": False},
    )
    assert updated.status_code == 200
    assert updated.json()["privacy"] == "full"
    assert updated.json()["enabled"] is False
    assert updated.json()["created_at"] == body["created_at"]

    fetched = requests.get(url(function_host, "room-42"), headers=KEY, timeout=10)
    assert fetched.json()["enabled"] is False
    listed = requests.get(f"{function_host.base}/api/admin/mappings", headers=KEY, timeout=10)
    assert [m["resource_id"] for m in listed.json()["value"]] == ["room-42"]

    assert (
        requests.delete(url(function_host, "room-42"), headers=KEY, timeout=10).status_code == 204
    )
    gone = requests.get(url(function_host, "room-42"), headers=KEY, timeout=10)
    assert gone.status_code == 404
    assert gone.headers["Content-Type"] == "application/problem+json"
    again = requests.delete(url(function_host, "room-42"), headers=KEY, timeout=10)
    assert again.status_code == 404


def test_every_bad_field_is_listed_and_nothing_is_written(function_host: LocalHost) -> None:
    answer = put(
        function_host,
        "room-1",
        {"mailbox": "not-an-address", "privacy": "everything", "enabled": "yes", "x": 1},
    )
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 400
    assert problem["type"].endswith("validation-error")
    assert {e["field"] for e in problem["errors"]} == {"mailbox", "privacy", "enabled", "x"}
    assert requests.get(url(function_host, "room-1"), headers=KEY, timeout=10).status_code == 404


def test_malformed_json_and_missing_fields(function_host: LocalHost) -> None:
    broken = requests.put(url(function_host, "room-1"), data=b"{not json", headers=KEY, timeout=10)
    assert broken.status_code == 400
    assert broken.json()["errors"][0]["field"] == "body"
    missing = put(function_host, "room-1", {})
    assert missing.status_code == 400
    assert missing.json()["errors"] == [{"field": "mailbox", "message": "is required"}]
    not_object = put(function_host, "room-1", ["a"])
    assert not_object.status_code == 400


def test_oversized_body_is_refused(function_host: LocalHost) -> None:
    big = {"mailbox": "a@b.example", "pad": "x" * (300 * 1024)}
    answer = put(function_host, "room-1", big)
    assert answer.status_code == 413
    assert requests.get(url(function_host, "room-1"), headers=KEY, timeout=10).status_code == 404


def test_if_match_protects_against_lost_updates(function_host: LocalHost, tenant: Sandbox) -> None:
    mailboxes(tenant, "r7@contoso.example")
    first = put(function_host, "room-7", {"mailbox": "r7@contoso.example"})
    etag = first.headers["ETag"]
    put(function_host, "room-7", {"mailbox": "r7@contoso.example", "privacy": "full"})
    stale = put(function_host, "room-7", {"mailbox": "r7@contoso.example"}, **{"If-Match": etag})
    assert stale.status_code == 412
    current = requests.get(url(function_host, "room-7"), headers=KEY, timeout=10)
    assert current.json()["privacy"] == "full"
    fresh = put(
        function_host,
        "room-7",
        {"mailbox": "r7@contoso.example"},
        **{"If-Match": current.headers["ETag"]},
    )
    assert fresh.status_code == 200


def test_several_resources_share_one_mailbox(function_host: LocalHost, tenant: Sandbox) -> None:
    mailboxes(tenant, "shared@contoso.example", "other@contoso.example")
    assert put(function_host, "desk-a", {"mailbox": "shared@contoso.example"}).status_code == 201
    assert put(function_host, "desk-b", {"mailbox": "SHARED@contoso.example"}).status_code == 201
    assert put(function_host, "desk-c", {"mailbox": "other@contoso.example"}).status_code == 201

    def mapped_to(mailbox: str) -> list[str]:
        answer = requests.get(
            f"{function_host.base}/api/admin/mappings",
            params={"mailbox": mailbox},
            headers=KEY,
            timeout=10,
        )
        return sorted(m["resource_id"] for m in answer.json()["value"])

    assert mapped_to("shared@contoso.example") == ["desk-a", "desk-b"]
    # A move takes the resource along; the other keeps the mailbox.
    assert put(function_host, "desk-b", {"mailbox": "other@contoso.example"}).status_code == 200
    assert mapped_to("shared@contoso.example") == ["desk-a"]
    assert mapped_to("other@contoso.example") == ["desk-b", "desk-c"]


def test_resource_ids_with_quotes_and_slashes(function_host: LocalHost, tenant: Sandbox) -> None:
    mailboxes(tenant, "desk-a@contoso.example", "desk-b@contoso.example")
    hostile = "desk 'A' or RowKey ne ''"
    assert put(function_host, hostile, {"mailbox": "desk-a@contoso.example"}).status_code == 201
    assert put(function_host, "desk-b", {"mailbox": "desk-b@contoso.example"}).status_code == 201
    fetched = requests.get(url(function_host, hostile), headers=KEY, timeout=10)
    assert fetched.status_code == 200
    assert fetched.json()["resource_id"] == hostile
    only = requests.get(
        f"{function_host.base}/api/admin/mappings",
        params={"mailbox": "desk-a@contoso.example' or Mailbox ne '"},
        headers=KEY,
        timeout=10,
    )
    assert only.json()["value"] == []


def test_listing_pages(function_host: LocalHost, tenant: Sandbox) -> None:
    mailboxes(tenant, *(f"room{i}@contoso.example" for i in range(5)))
    for i in range(5):
        put(function_host, f"room-{i}", {"mailbox": f"room{i}@contoso.example"})
    seen: list[str] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        page = requests.get(
            f"{function_host.base}/api/admin/mappings", params=params, headers=KEY, timeout=10
        ).json()
        seen += [m["resource_id"] for m in page["value"]]
        if not page["continuation"]:
            break
        params["continuation"] = page["continuation"]
    assert seen == [f"room-{i}" for i in range(5)]
    bad = requests.get(
        f"{function_host.base}/api/admin/mappings", params={"limit": "0"}, headers=KEY, timeout=10
    )
    assert bad.status_code == 400
