"""The daily ``credential_watch`` timer: judges the credential, rotates a client secret that has
30 days or less (with ``ROTATION_ENABLED``), and warns at 30, 14, 7 and 1 days left (a warning
log line, the ``credential.expiring`` event once per threshold, history).

``credential.expiring`` is about the app, not a platform resource: it is emitted for the fixed
resource id ``_tenant`` (:data:`CREDENTIAL_RESOURCE`), which has its own sequence.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from sync_core import clock
from sync_core.clock import iso
from sync_core.config import Settings
from sync_core.credentials.expiry import Assessment, assess, threshold_for
from sync_core.credentials.rotation import (
    PROOF_TIMEOUT,
    ROTATE_WITHIN_DAYS,
    RotationResult,
    rotate_secret,
)
from sync_core.credentials.status import credential_status, load_state, save_state, view

if TYPE_CHECKING:
    from datetime import datetime

    from sync_core.services import Services

log = logging.getLogger(__name__)

CREDENTIAL_RESOURCE = "_tenant"  # resource_id of credential.expiring (per app, not per resource)


def watch(
    svc: Services,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    proof_timeout: float = PROOF_TIMEOUT,
) -> dict[str, Any]:
    """The daily ``credential_watch``: judge the credential, rotate where enabled, warn once per
    threshold (log, ``credential.expiring``, history). Returns the credential's status."""
    moment = now or clock.now()
    settings = svc.settings
    found = assess(settings, svc.graph, moment)
    rotation: RotationResult | None = None
    if _should_rotate(settings, found):
        rotation = rotate_secret(
            settings, svc.graph, now=moment, sleep=sleep, proof_timeout=proof_timeout
        )
        _report_rotation(svc, found, rotation)

    state = load_state(svc)
    _warn(svc, found, rotation, state)
    state["LastCheck"] = moment
    state["LastState"] = found.state
    if rotation is not None:
        state["Rotation"] = json.dumps({**rotation.to_json(), "at": iso(moment)})
    save_state(svc, state)
    if rotation is not None and rotation.outcome == "rotated":
        return credential_status(svc, now=moment)
    return view(settings, found, moment, moment, state)


def _should_rotate(settings: Settings, found: Assessment) -> bool:
    """A client secret in Key Vault with 30 days or less left, and Graph still reachable (a
    secret that expired minutes ago may still sign in from the token cache)."""
    if not settings.rotation_enabled or found.credential != "client_secret":
        return False
    if found.days_left is None or found.days_left > ROTATE_WITHIN_DAYS:
        return False
    return found.error is None or found.error.get("code") == "SecretExpired"


def _record(
    svc: Services,
    action: str,
    subject: str,
    outcome: Literal["ok", "failed"],
    detail: str,
    error: dict[str, Any] | None,
) -> None:
    from sync_core.store.history import HistoryEntry

    svc.history.record(
        HistoryEntry(
            at=clock.now(),
            resource_id=None,
            action=action,
            subject=subject,
            outcome=outcome,
            detail=detail,
            error=error,
        )
    )


def _report_rotation(svc: Services, found: Assessment, rotation: RotationResult) -> None:
    detail = rotation.detail + (f"; {rotation.warning}" if rotation.warning else "")
    if rotation.outcome == "rotated":
        log.info("credential_watch: rotated the client secret: %s", detail)
    else:
        log.error(
            "credential_watch: rotating the client secret failed at %s: %s (%s). The old secret "
            "stays in use. %s",
            rotation.step,
            rotation.detail,
            (rotation.error or {}).get("code"),
            (rotation.error or {}).get("hint", ""),
        )
    _record(
        svc,
        "credential.rotate",
        found.credential,
        "ok" if rotation.outcome == "rotated" else "failed",
        detail,
        rotation.error,
    )


def _warn(
    svc: Services, found: Assessment, rotation: RotationResult | None, state: dict[str, Any]
) -> None:
    """The log line, event and history entry of a check that is not plainly ok."""
    expires_at = found.expires_at
    rotated = rotation is not None and rotation.outcome == "rotated"
    if found.state == "ok":
        log.info("credential_watch: %s ok: %s", found.what, found.hint)
        return
    error = found.error or {}
    if rotated:
        pass  # reported as a rotation; the event below still tells the platform
    elif found.state in ("error", "unknown"):
        log.error(
            "credential_watch: %s %s: %s (%s). %s",
            found.what,
            found.state,
            error.get("message"),
            error.get("code"),
            found.hint,
        )
    else:
        left = "an unknown number of" if found.days_left is None else str(found.days_left)
        log.warning(
            "credential_watch: %s expires %s (%s days left). %s",
            found.what,
            iso(expires_at) or "at an unknown date",
            left,
            found.hint,
        )
    if found.days_left is not None and expires_at is not None:
        threshold = threshold_for(found.days_left)
        known = state.get("ExpiresAt") == iso(expires_at)
        last = int(state["Threshold"]) if known and state.get("Threshold") is not None else None
        if threshold >= 0 and (last is None or threshold < last):
            data: dict[str, Any] = {
                "credential": found.credential,
                "expires_at": iso(expires_at),
                "days_left": found.days_left,
                "rotated": rotated,
            }
            if rotated and rotation is not None:
                data["new_expires_at"] = iso(rotation.new_expires_at)
            svc.platform.emit("credential.expiring", CREDENTIAL_RESOURCE, data)
            state["ExpiresAt"] = iso(expires_at)
            state["Threshold"] = threshold
    if rotated:
        return
    detail = (
        f"expires {iso(expires_at)} ({found.days_left} days left)"
        if expires_at is not None
        else "expiry unknown"
    )
    _record(
        svc,
        "credential.check",
        found.credential,
        "failed" if found.state in ("error", "unknown") else "ok",
        f"{found.state}: {detail}",
        found.error or {"code": "CredentialExpiring", "message": detail, "hint": found.hint},
    )
