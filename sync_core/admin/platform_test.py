"""``POST /api/admin/platform/test``: one signed ``platform.test`` event, sent and answered now."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sync_core.problems import Conflict

if TYPE_CHECKING:
    from sync_core.services import Services

SETTING = "PLATFORM_WEBHOOK_URL"


class PlatformNotConfigured(Conflict):
    """No platform address is set. Extension members: ``code`` and ``hint`` (the setting)."""

    title, slug = "No platform to send to", "platform-not-configured"
    code = "PlatformNotConfigured"
    hint = (
        f"Set {SETTING} (where this service posts its events) and PLATFORM_WEBHOOK_SECRET in "
        "the app settings, then try again."
    )

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "code": self.code, "hint": self.hint}


def send_platform_test(svc: Services) -> dict[str, Any]:
    """``{delivered, status, latency_ms, error?}`` of a test event posted to the platform."""
    if not svc.settings.platform_webhook_url:
        raise PlatformNotConfigured(f"no platform address is configured ({SETTING} is empty)")
    return svc.platform.send_test().to_json()
