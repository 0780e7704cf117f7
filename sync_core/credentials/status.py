"""The credential as the status page, the CLI and the doctor show it, checked now, with what the
daily watch last recorded; and whether Key Vault answers."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sync_core import clock
from sync_core.clock import iso
from sync_core.config import Settings
from sync_core.credentials.expiry import Assessment, assess
from sync_core.credentials.vault import Vault
from sync_core.graph.client import GraphClient
from sync_core.graph.errors import GraphError

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

STATE_TABLE = "credentials"
_STATE_KEY = ("credential", "watch")


def load_state(svc: Services) -> dict[str, Any]:
    """What the watch recorded: last check, thresholds warned at, the last rotation."""
    return svc.tables.get(STATE_TABLE, *_STATE_KEY) or {}


def save_state(svc: Services, state: dict[str, Any]) -> None:
    svc.tables.upsert(
        STATE_TABLE, {**state, "PartitionKey": _STATE_KEY[0], "RowKey": _STATE_KEY[1]}
    )


def view(
    settings: Settings,
    found: Assessment,
    moment: datetime,
    last_watch: datetime | None,
    state: dict[str, Any],
) -> dict[str, Any]:
    """The credential's status document (see :func:`credential_status`)."""
    last = state.get("Rotation")
    return {
        **found.to_json(),
        "checked_at": iso(moment),
        "last_watch": iso(last_watch),
        "rotation": {
            "enabled": settings.rotation_enabled,
            "last": json.loads(last) if isinstance(last, str) and last else None,
        },
    }


def credential_status(
    svc: Services, now: datetime | None = None, *, graph: GraphClient | None = None
) -> dict[str, Any]:
    """The credential as status and the doctor show it, checked now (one sign-in, one Graph
    read, at most one Key Vault read) with ``graph``'s credential (the service's by default):

    ``{credential, kind, mode, source, expires_at, days_left, expiry_source, state, message,
    hint, error, checked_at, last_watch, rotation: {enabled, last}}`` with ``state`` ``ok``,
    ``warning`` (30 days or less, or the expiry is unknown), ``error`` (refused, expired, Key
    Vault failing: ``error`` has code, message and hint) or ``unknown`` (could not be checked
    just now: Graph, Entra or Key Vault unreachable). ``credential`` (and its alias ``kind``) is
    ``client_secret``, ``certificate`` or ``federated_credential``; ``source`` is ``settings``,
    ``key_vault`` or ``managed_identity``; ``expiry_source`` is ``graph``, ``key_vault``,
    ``certificate`` or null.
    """
    moment = now or clock.now()
    found = assess(svc.settings, graph or svc.graph, moment)
    try:
        state = load_state(svc)
    except Exception:  # storage trouble shows elsewhere in status; the credential still shows
        log.warning("credential status: the watch's state could not be read", exc_info=True)
        state = {}
    last_check = state.get("LastCheck")
    last_watch = last_check if isinstance(last_check, datetime) else None
    return view(svc.settings, found, moment, last_watch, state)


def key_vault_status(svc: Services) -> dict[str, Any]:
    """Whether ``KEY_VAULT_URL`` answers to this app's identity (for the doctor):
    ``{state: ok | error | not_configured, url, error: {code, message, hint} | None}``."""
    url = svc.settings.key_vault_url
    if not url:
        return {"state": "not_configured", "url": None, "error": None}
    source = svc.graph.tokens.credential
    try:
        vault = getattr(source, "vault", None)
        (vault if isinstance(vault, Vault) else Vault(svc.settings)).ping()
    except GraphError as error:
        return {"state": "error", "url": url, "error": error.to_json()}
    return {"state": "ok", "url": url, "error": None}
