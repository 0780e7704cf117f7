"""The status page: what a person reads in a real browser (headless Chromium, Debian's package),
and that nothing from Graph, the platform or an admin can inject markup or script."""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import FUNCTION_KEY, KEY_HEADER, ROOM_A, ROOM_B, LocalHost, wait

Stack = tuple[LocalHost, PlatformSim, Sandbox]
CHROMIUM = Path("/usr/bin/chromium")
# As root on a machine without outbound network: no sandbox, no GPU, and no background traffic.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,1100",
)
HOSTILE = "<img src=x onerror=alert(1)>&amp;<script>alert(2)</script>"


# -- a small DOM, enough to read the page as a person would ---------------------------------------


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        """The text as it reads: blocks are separated, inline elements run on."""
        parts = [
            c if isinstance(c, str) else (f" {c.text()} " if c.tag in BLOCKS else c.text())
            for c in self.children
        ]
        return " ".join("".join(parts).split())

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    found.append(child)
                found += child.all(tag, cls)
        return found

    def one(self, tag: str | None = None, cls: str | None = None) -> Node:
        (found,) = self.all(tag, cls)
        return found

    def by_id(self, ident: str) -> Node:
        return next(n for n in self.all() if n.attrs.get("id") == ident)


VOID = {"meta", "br", "img", "link", "input", "hr"}
BLOCKS = {"div", "p", "section", "header", "main", "table", "tr", "td", "th", "h1", "h2", "br"}


class DomBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def dom(markup: str) -> Node:
    builder = DomBuilder()
    builder.feed(markup)
    return builder.root


# -- Chromium --------------------------------------------------------------------------------------


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser test needs Debian's chromium package "
            "(apt-get install -y chromium; scripts/dev.sh installs it for `make test`)"
        )
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def admin(
    host: LocalHost, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> requests.Response:
    return requests.request(
        method,
        f"{host.base}/api/admin/{path}",
        headers=KEY_HEADER | (headers or {}),
        timeout=60,
        **kwargs,
    )


def one_healthy_one_failing(stack: Stack) -> None:
    """room-42 read its mailbox; room-43's mailbox left the app's scope (ErrorAccessDenied)."""
    host, _, tenant = stack

    def read() -> bool:
        status = admin(host, "GET", "status").json()
        rows = {m["resource_id"]: m for m in status["mappings"]}
        # Mapping both rooms queues reads of both; the page is read once they are done.
        return bool(rows["room-42"]["last_success"]) and status["work"]["pending"] == 0

    wait(read, what="room-42's first read")
    tenant.control.set_mailbox_state(ROOM_B, "access_denied")
    assert admin(host, "POST", "mappings/room-43/resync").status_code == 422


def test_a_person_reads_the_status_page_in_a_browser(stack: Stack, tmp_path: Path) -> None:
    host, _, _ = stack
    one_healthy_one_failing(stack)
    url = f"{host.base}/api/admin/ui?code={FUNCTION_KEY}"

    dumped = chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    page = dom(dumped.stdout)
    assert page.one("title").text() == "Calendar sync status"

    banner = page.by_id("overall")
    assert "error" in banner.classes
    assert banner.text() == "Something is not syncing. See the red entries below for what to do."

    rows = {r.attrs["data-resource"]: r for r in page.all("tr", "mapping")}
    assert list(rows) == ["room-42", "room-43"]
    healthy, failing = rows["room-42"], rows["room-43"]
    assert "ok" in healthy.classes
    assert healthy.one("span", "badge").text() == "In sync"
    assert healthy.one("td", "mailbox").text() == f"{ROOM_A} privacy: full"
    assert healthy.one("td", "last-success").text().endswith("UTC (just now)")
    assert "(in 2 days)" in healthy.one("td", "subscription").text()

    assert "error" in failing.classes
    assert failing.one("span", "badge").text() == "Error"
    detail = page.one("td", "last-error").text()
    assert f"ErrorAccessDenied: access to mailbox {ROOM_B} was denied" in detail
    assert "What to do: Add the mailbox to the mail-enabled security group" in detail

    credential = page.by_id("credential")
    assert "ok" in credential.classes
    assert credential.one("h2").text() == "Credential: ok"
    assert "Client secret: the client secret is valid until" in credential.text()
    assert "days) —" in credential.one("span", "expires").parent.text()  # type: ignore[union-attr]
    work = page.by_id("work")
    assert "Pending: 0 · Parked: 0" in work.text()

    history = page.by_id("history").text()
    assert "mapping.check" in history
    assert "failed" in history

    screenshot = tmp_path / "status-page.png"
    shot = chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"status page screenshot: {screenshot}")


def test_nothing_on_the_page_can_inject_markup(stack: Stack, tmp_path: Path) -> None:
    host, _, tenant = stack
    tegel = "berlin.tegel@contoso.example"
    mapped = admin(host, "PUT", f"mappings/{quote(HOSTILE, safe='')}", json={"mailbox": tegel})
    assert mapped.status_code == 201, mapped.text
    tenant.control.set_mailbox_state(tegel, "access_denied")
    assert admin(host, "POST", f"mappings/{quote(HOSTILE, safe='')}/resync").status_code == 422

    for answer in (
        admin(host, "GET", "status", headers={"Accept": "text/html,*/*;q=0.8"}),
        admin(host, "GET", "ui"),
    ):
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "script-src" not in policy  # falls back to default-src 'none': no script at all
        assert "'unsafe-inline'" not in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        markup = answer.text
        assert "<script" not in markup
        assert "<img" not in markup
        assert "&lt;img src=x onerror=alert(1)&gt;&amp;amp;&lt;script&gt;" in markup

    # JSON stays JSON for API clients.
    assert admin(host, "GET", "status").headers["Content-Type"] == "application/json"

    # And in a browser the hostile id is text, not an element.
    dumped = chromium(
        tmp_path / "profile", "--dump-dom", f"{host.base}/api/admin/ui?code={FUNCTION_KEY}"
    )
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    page = dom(dumped.stdout)
    assert page.all("img") == []
    assert page.all("script") == []
    rows = {r.attrs["data-resource"]: r for r in page.all("tr", "mapping")}
    assert rows[HOSTILE].one("td", "resource").text() == HOSTILE
