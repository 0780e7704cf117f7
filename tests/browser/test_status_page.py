"""The status page (GET /api/admin/ui) in a real browser, on a laptop and on a phone: it shows a
mapping made through the admin API, and has no serious accessibility problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import Console
from tests.conftest import ROOM_A, wait


def first_read_done(console: Console, resource_id: str) -> None:
    """Wait for the mapping's first read of its mailbox, so the page shows a settled state."""

    def read() -> bool:
        answer = requests.get(
            f"{console.base}/api/admin/status",
            headers={"x-functions-key": console.key},
            timeout=30,
        )
        answer.raise_for_status()
        rows = {m["resource_id"]: m for m in answer.json()["mappings"]}
        return bool(rows[resource_id]["last_success"])

    wait(read, what=f"{resource_id}'s first read")


@pytest.mark.parametrize("device", ["laptop", "phone"])
def test_the_status_page_shows_a_mapping(
    device: str,
    console: Console,
    new_page: Callable[[str], Page],
    snapshot: Callable[[Page, str], Path],
    check_accessibility: Callable[[Page, str], dict[str, Any]],
) -> None:
    console.map("room-42", ROOM_A)
    first_read_done(console, "room-42")
    page = new_page(device)

    answer = page.goto(f"{console.base}/api/admin/ui")
    assert answer is not None
    assert answer.status == 200

    expect(page).to_have_title("Calendar sync status")
    expect(page.get_by_role("heading", name="Calendar sync status", level=1)).to_be_visible()
    mappings = page.get_by_role("table", name="Mappings")
    row = mappings.get_by_role("row").filter(has_text="room-42")
    expect(row).to_have_count(1)
    expect(row.get_by_role("cell", name="room-42", exact=True)).to_be_visible()
    expect(row).to_contain_text(ROOM_A)

    snapshot(page, f"status-{device}")
    check_accessibility(page, f"status-{device}")
