"""The admin console in a real browser, as an IT admin uses it: find a room, check its mailbox,
map it, see it in sync, resync, deactivate, and purge after confirming; every page screenshotted
and checked for accessibility, on a laptop and on a phone. Keyboard only for the first mapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import Console
from tests.conftest import ROOM_A, ROOM_B, send_and_sync, wait

Snapshot = Callable[[Page, str], Path]
Check = Callable[[Page, str], dict[str, Any]]


def api(console: Console, path: str) -> requests.Response:
    return requests.get(
        f"{console.base}{path}", headers={"x-functions-key": console.key}, timeout=30
    )


def look(page: Page, name: str, snapshot: Snapshot, check: Check) -> None:
    snapshot(page, name)
    check(page, name)


def test_map_a_room_and_look_after_it(
    console: Console, new_page: Callable[[str], Page], snapshot: Snapshot,
    check_accessibility: Check,
) -> None:  # fmt: skip
    page = new_page("laptop")
    page.goto(f"{console.base}/api/admin/ui")
    look(page, "status-empty", snapshot, check_accessibility)

    # The rooms of the tenant; map the first one from its row.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Rooms").click()
    expect(page.get_by_role("heading", name="Rooms", level=1)).to_be_visible()
    row = page.get_by_role("table", name="Rooms").get_by_role("row").filter(has_text=ROOM_A)
    expect(row).to_contain_text("not mapped")
    look(page, "rooms", snapshot, check_accessibility)
    row.get_by_role("link", name="Map a resource").click()

    # The form comes with the room's mailbox; check it before saving (keyboard only).
    expect(page.get_by_label("Microsoft 365 mailbox")).to_have_value(ROOM_A)
    page.get_by_label("Resource id").focus()
    page.keyboard.type("room-42")
    page.get_by_label("Privacy").select_option("full")
    page.get_by_role("button", name="Check mailbox").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("is reachable")
    look(page, "mapping-checked", snapshot, check_accessibility)
    assert api(console, "/api/admin/mappings/room-42").status_code == 404  # not saved yet

    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("sync has started")
    mapping = api(console, "/api/admin/mappings/room-42").json()
    assert (mapping["mailbox"], mapping["privacy"]) == (ROOM_A, "full")

    # In sync: a booking lands, and the page says so.
    send_and_sync(console.platform, console.platform.booking_event(resource_id="room-42"))

    def in_sync() -> bool:
        page.reload()
        return "In sync" in page.locator("#mapping-state").inner_text()

    wait(in_sync, what="the mapping page to show it in sync")
    look(page, "mapping-in-sync", snapshot, check_accessibility)

    page.get_by_role("button", name="Resync now").click()
    expect(page.get_by_role("status")).to_contain_text("fresh round")
    history = page.get_by_role("table", name="History")
    expect(history).to_contain_text("mapping.resync")

    page.get_by_role("button", name="Deactivate").click()
    expect(page.get_by_role("status")).to_contain_text("Sync stopped")
    expect(page.locator("#mapping-state")).to_contain_text("Deactivated")
    assert api(console, "/api/admin/mappings/room-42").json()["enabled"] is False
    look(page, "mapping-deactivated", snapshot, check_accessibility)

    # Purge: the confirmation says what goes; nothing goes until it is confirmed.
    page.get_by_role("link", name="Remove and purge…").click()
    expect(page.locator("#purge-events")).to_have_text("1")
    look(page, "purge-confirm", snapshot, check_accessibility)
    page.get_by_role("button", name="Remove and purge").click()
    expect(page.get_by_role("alert")).to_contain_text("Tick the box")
    assert api(console, "/api/admin/mappings/room-42").status_code == 200
    assert console.tenant.control.events(ROOM_A)
    page.get_by_label("Yes, remove room-42").check()
    page.get_by_role("button", name="Remove and purge").click()
    expect(page.get_by_role("status")).to_contain_text("mapping is removed")
    assert api(console, "/api/admin/mappings/room-42").status_code == 404
    assert console.tenant.control.events(ROOM_A) == []
    look(page, "status-after-purge", snapshot, check_accessibility)


def test_a_refused_mailbox_shows_what_to_do(
    console: Console, new_page: Callable[[str], Page], snapshot: Snapshot,
    check_accessibility: Check,
) -> None:  # fmt: skip
    page = new_page("laptop")
    page.goto(f"{console.base}/api/admin/ui/mapping")
    page.get_by_label("Resource id").fill("room-9")
    page.get_by_label("Microsoft 365 mailbox").fill("nobody@contoso.example")
    page.get_by_role("button", name="Save").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Not saved")
    expect(alert).to_contain_text("What to do:")
    expect(page.get_by_label("Microsoft 365 mailbox")).to_have_value("nobody@contoso.example")
    look(page, "mapping-refused", snapshot, check_accessibility)
    assert api(console, "/api/admin/mappings").json()["value"] == []


@pytest.mark.parametrize("device", ["laptop", "phone"])
def test_map_by_rule_and_the_doctor(
    device: str, console: Console, new_page: Callable[[str], Page], snapshot: Snapshot,
    check_accessibility: Check,
) -> None:  # fmt: skip
    page = new_page(device)
    page.goto(f"{console.base}/api/admin/ui/bulk")
    page.get_by_label("Or mailboxes, one a line").fill(f"{ROOM_A}\n{ROOM_B}")
    page.get_by_role("button", name="Preview (changes nothing)").click()
    result = page.locator("#bulk-result")
    expect(result).to_contain_text("Preview: nothing was saved")
    expect(result).to_contain_text("2 would be created")
    assert api(console, "/api/admin/mappings").json()["value"] == []
    look(page, f"bulk-preview-{device}", snapshot, check_accessibility)
    page.get_by_role("button", name="Map them").click()
    expect(page.locator("#bulk-result")).to_contain_text("2 created")
    assert len(api(console, "/api/admin/mappings").json()["value"]) == 2

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Status").click()
    expect(page.get_by_role("table", name="Mappings").get_by_role("link")).to_have_count(2)
    look(page, f"status-{device}", snapshot, check_accessibility)

    page.get_by_role("table", name="Mappings").get_by_role("link", name="room-room.berlin").click()
    expect(page.get_by_label("Microsoft 365 mailbox")).to_have_value(ROOM_A)
    look(page, f"mapping-{device}", snapshot, check_accessibility)

    page.get_by_role("link", name="Rooms").click()
    row = page.get_by_role("table", name="Rooms").get_by_role("row").filter(has_text=ROOM_B)
    expect(row).to_contain_text("room-berlin.havel")
    look(page, f"rooms-{device}", snapshot, check_accessibility)

    page.get_by_role("link", name="Doctor").click()
    expect(page.get_by_role("table", name="Checks")).to_contain_text("permissions")
    look(page, f"doctor-{device}", snapshot, check_accessibility)
