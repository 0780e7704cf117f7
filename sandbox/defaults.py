"""Fixed identities and tunables of the simulated tenant.

The identities match `local.settings.example.json`, so the product runs against the sandbox with
the example settings unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

TENANT_ID = "7d0c9a4e-5b1f-4c36-9a57-0c2d3e4f5a61"
TENANT_DOMAIN = "contoso.example"
TENANT_NAME = "Contoso (sandbox)"
CLIENT_ID = "3f2b8c1d-6e4a-4b7c-8d9e-1a2b3c4d5e6f"
CLIENT_SECRET = "sandbox-client-secret-for-local-runs-only"  # noqa: S105 - public test value
APP_OBJECT_ID = "9a1c5e2f-3b4d-4e6f-8a7b-2c3d4e5f6a7b"
SERVICE_PRINCIPAL_ID = "4b6d8f0a-1c2e-4a3b-9d5f-6e7a8b9c0d1e"
APP_DISPLAY_NAME = "Calendar Sync"
# A user-assigned managed identity, registered as a federated credential of the app.
MANAGED_IDENTITY_CLIENT_ID = "5e8f1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
MANAGED_IDENTITY_OBJECT_ID = "2d4f6a8c-0e1b-4c3d-8e5f-7a9b1c3d5e7f"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"  # noqa: S105 - an audience
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"

DEFAULT_PORT = 9443
DEFAULT_ROLES = (
    "Calendars.ReadWrite",
    "Place.Read.All",
    "User.Read.All",
    "Application.ReadWrite.OwnedBy",
)


@dataclass
class Settings:
    """Tunables; change them at run time with `PATCH /_sandbox/settings`."""

    # Throttling per app and mailbox (Outlook's documented limits).
    concurrency_limit: int = 4
    request_budget: int = 10_000
    budget_window_seconds: float = 600.0
    concurrency_retry_after: int = 1
    # Subscriptions and notifications.
    require_https_notifications: bool = False
    # Outlook events without resource data: 10,080 minutes (GD subscription resource page).
    max_subscription_minutes: int = 10080
    validation_timeout_seconds: float = 10.0
    notification_delay_seconds: float = 0.2
    delivery_timeout_seconds: float = 3.0
    delivery_retry_delays: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0])
    # Login.
    token_lifetime_seconds: int = 3600
    credential_propagation_seconds: float = 0.0
    # Paging defaults.
    calendar_page_size: int = 10
    places_page_size: int = 100
    subscriptions_page_size: int = 100

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply known keys; return the unknown ones."""
        known = {f.name: f for f in fields(self)}
        unknown = [key for key in changes if key not in known]
        for key, value in changes.items():
            if key not in known:
                continue
            current = getattr(self, key)
            if isinstance(current, bool):
                setattr(self, key, bool(value))
            elif isinstance(current, int):
                setattr(self, key, int(value))
            elif isinstance(current, float):
                setattr(self, key, float(value))
            elif isinstance(current, list):
                setattr(self, key, [float(v) for v in value])
            else:
                setattr(self, key, value)
        return unknown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
