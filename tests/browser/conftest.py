"""Browser tests: the admin pages in a real browser, as a person would use them.

Debian's Chromium (``/usr/bin/chromium``, headless) driven by Playwright's sync API; Playwright's
own browser downloads are never used. Fixtures:

- ``browser`` (session): the launched Chromium.
- ``console``: a local function host against the simulated tenant and platform, with a function
  key: ``console.base``, ``console.key``, ``console.tenant``, ``console.platform``,
  ``console.map(resource_id, mailbox)``.
- ``page``: a laptop-sized page (1280x800) whose every request carries ``x-functions-key``;
  ``phone_page`` the same on a phone (390x844, mobile); ``new_page("laptop" | "phone")`` for more.
- ``snapshot(page, name)``: a full-page PNG, ``test-artifacts/screenshots/<test>/<nn>-<name>.png``.
- ``check_accessibility(page, name)``: axe-core on the page as it is; fails on any serious or
  critical violation, and keeps axe's whole result as ``<nn>-<name>.axe.json`` beside the PNGs.

The artifacts' folder is named once at the end of the run; a passing test prints nothing.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from sandbox import Sandbox
from sandbox.platform import PlatformSim
from tests.conftest import FUNCTION_KEY, ROOT, LocalHost, product_env
from tests.e2e.test_status_page import CHROMIUM, CHROMIUM_FLAGS

# The same browser and flags as the status page's DevTools test (headless is Playwright's own).
CHROMIUM_ARGS = [f for f in CHROMIUM_FLAGS if f.startswith("--") and not f.startswith(
    ("--headless", "--hide-scrollbars", "--window-size"))]  # fmt: skip
DEVICES: dict[str, dict[str, Any]] = {
    "laptop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
# Playwright waits at most this long for a page or an element (its default is 30 s).
TIMEOUT_MS = 10_000

ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
AXE_SCRIPT = ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_OPTIONS = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"],
    }
}
FAILING_IMPACTS = ("serious", "critical")
TARGETS_SHOWN = 3

# Test folders written in this run, for the one line at the end.
_written: set[Path] = set()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _written:
        terminalreporter.write_line(
            f"browser tests: screenshots and accessibility results of {len(_written)} test(s) "
            f"in {ARTIFACTS}/"
        )


# -- the browser -----------------------------------------------------------------------------------


# Per module, not per session: Playwright's sync API keeps an event loop running on the main
# thread while it lives, and other tests (msgraph-sdk's) call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package; as root: "
            "apt-get update && apt-get install -y --no-install-recommends chromium "
            "(`make test` installs it)"
        )
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()
    finally:
        playwright.stop()


# -- the product -----------------------------------------------------------------------------------


@dataclass
class Console:
    """A running local function host with its key, and the simulated tenant and platform."""

    host: LocalHost
    tenant: Sandbox
    platform: PlatformSim
    key: str = FUNCTION_KEY

    @property
    def base(self) -> str:
        return self.host.base

    def map(self, resource_id: str, mailbox: str, privacy: str | None = "full") -> None:
        """Map a resource through the admin API (which also subscribes to its mailbox)."""
        self.host.map(resource_id, mailbox, privacy)


@pytest.fixture
def console(
    tenant_env: dict[str, str], platform: PlatformSim, tenant: Sandbox
) -> Iterator[Console]:
    host = LocalHost(product_env(tenant_env, platform)).wait_ready()
    platform.product_url = host.base
    yield Console(host=host, tenant=tenant, platform=platform)
    host.stop()


# -- pages -----------------------------------------------------------------------------------------


@pytest.fixture
def new_page(browser: Browser, console: Console) -> Iterator[Callable[[str], Page]]:
    """``new_page("laptop" | "phone")``: a page in a context of its own, sized as that device,
    whose every request (navigations, form posts) carries the host's function key."""
    contexts: list[BrowserContext] = []

    def open_page(device: str = "laptop") -> Page:
        context = browser.new_context(
            **DEVICES[device], extra_http_headers={"x-functions-key": console.key}
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[[str], Page]) -> Page:
    return new_page("laptop")


@pytest.fixture
def phone_page(new_page: Callable[[str], Page]) -> Page:
    return new_page("phone")


# -- what a test keeps: screenshots and accessibility results --------------------------------------


@dataclass
class Artifacts:
    """One test's folder under ``test-artifacts/screenshots``, emptied at its first use.
    Files are numbered in the order they are first named; the same name keeps its number, so a
    screenshot and the accessibility result of one view sit side by side."""

    folder: Path
    numbers: dict[str, int] = field(default_factory=dict)

    def path(self, name: str, suffix: str) -> Path:
        if not self.numbers:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            _written.add(self.folder)
        number = self.numbers.setdefault(name, len(self.numbers) + 1)
        return self.folder / f"{number:02d}-{safe(name)}{suffix}"


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "page"


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Artifacts:
    module = request.node.module.__name__.rsplit(".", 1)[-1]
    return Artifacts(ARTIFACTS / safe(f"{module}.{request.node.name}"))


@pytest.fixture
def snapshot(artifacts: Artifacts) -> Callable[[Page, str], Path]:
    """``snapshot(page, name)``: a full-page PNG of what the page shows now; its path."""

    def take(page: Page, name: str) -> Path:
        path = artifacts.path(name, ".png")
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def axe_run(page: Page) -> dict[str, Any]:
    """axe-core's result for the page as it is. The pages' Content-Security-Policy allows no
    script, so a <script> tag would be refused; Playwright's evaluate runs through the DevTools
    protocol, which the policy does not govern, in the page itself (no second load, no relaxed
    policy: the page is checked with the styles it really got)."""
    if not AXE_SCRIPT.exists():
        pytest.fail(f"{AXE_SCRIPT} is missing: install the npm devDependencies (`make setup`)")
    page.evaluate(AXE_SCRIPT.read_text(encoding="utf-8"))
    result: dict[str, Any] = page.evaluate(
        "options => window.axe.run(document, options)", AXE_OPTIONS
    )
    return result


def describe(violation: dict[str, Any]) -> str:
    nodes = violation.get("nodes") or []
    targets = [" ".join(map(str, node.get("target") or [])) for node in nodes[:TARGETS_SHOWN]]
    more = f" (+{len(nodes) - TARGETS_SHOWN} more)" if len(nodes) > TARGETS_SHOWN else ""
    return (
        f"  {violation['id']} ({violation['impact']}): {violation['help']}; "
        f"{len(nodes)} element(s): {', '.join(targets)}{more}"
    )


@pytest.fixture
def check_accessibility(artifacts: Artifacts) -> Callable[[Page, str], dict[str, Any]]:
    """``check_accessibility(page, name)``: run axe-core (WCAG 2.0/2.1 A and AA, best practices)
    on the page; fail listing each serious or critical violation. The whole result is kept as
    ``<nn>-<name>.axe.json``; it is also returned."""

    def check(page: Page, name: str) -> dict[str, Any]:
        result = axe_run(page)
        path = artifacts.path(name, ".axe.json")
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        # A check that ran no rule would pass whatever the page is.
        assert result.get("passes"), f"axe-core checked nothing on {page.url} (see {path})"
        failing = [v for v in result.get("violations", []) if v.get("impact") in FAILING_IMPACTS]
        if failing:
            version = result.get("testEngine", {}).get("version", "?")
            lines = [
                f"accessibility (axe-core {version}) of {name!r} at {page.url}: "
                f"{len(failing)} serious or critical violation(s)",
                *map(describe, failing),
                f"whole result: {path}",
            ]
            pytest.fail("\n".join(lines), pytrace=False)
        return result

    return check
