"""Rotation of a client secret kept in Key Vault (``ROTATION_ENABLED``): addPassword → new Key
Vault version → proven by a token (retried while Entra replicates) → switch → removePassword of
the old one. Any failure leaves the old secret working and is reported.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sync_core import clock
from sync_core.clock import iso, parse_iso
from sync_core.config import Settings
from sync_core.credentials.expiry import THRESHOLDS, match_password
from sync_core.credentials.sources import KeyVaultSecretCredential
from sync_core.graph.auth import SecretCredential, TokenProvider
from sync_core.graph.client import GraphClient, new_session
from sync_core.graph.errors import ErrorKind, GraphError

log = logging.getLogger(__name__)

ROTATE_WITHIN_DAYS = THRESHOLDS[0]  # rotation makes a new secret from the first warning on
PROOF_TIMEOUT = 300.0  # seconds to wait for Entra to accept a new secret (replication)
PROOF_FIRST_DELAY = 2.0
PROOF_MAX_DELAY = 30.0

_rotation_lock = threading.Lock()


@dataclass(frozen=True)
class RotationResult:
    outcome: Literal["rotated", "failed", "skipped"]
    step: str  # where it ended: application, addPassword, keyVault, proof, rollback, done
    detail: str
    old_key_id: str | None = None
    new_key_id: str | None = None
    new_expires_at: datetime | None = None
    error: dict[str, Any] | None = None  # {code, message, hint} of what failed
    warning: str = ""  # a rotation that worked but left something to tidy

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "new_expires_at": iso(self.new_expires_at)}


def _failed(
    step: str, detail: str, error: GraphError | dict[str, Any], **ids: Any
) -> RotationResult:
    body = error.to_json() if isinstance(error, GraphError) else error
    return RotationResult("failed", step, detail, error=body, **ids)


def _prove(
    settings: Settings,
    secret: str,
    *,
    sleep: Callable[[float], None],
    timeout: float,
    monotonic: Callable[[], float],
) -> GraphError | None:
    """Acquire a token with the new secret, retrying while Entra has not replicated it yet.
    None when it worked, else the last error."""
    provider = TokenProvider(settings, SecretCredential(secret), new_session(pool_size=2))
    deadline = monotonic() + timeout
    delay = PROOF_FIRST_DELAY
    attempt = 0
    while True:
        attempt += 1
        try:
            provider.token(force_refresh=True)
            log.info("credential rotation: the new secret works (try %d)", attempt)
            return None
        except GraphError as error:
            waiting = error.kind is ErrorKind.SECRET_INVALID or error.retryable
            if not waiting or monotonic() + delay > deadline:
                return error
            log.info(
                "credential rotation: the new secret is not accepted yet (%s); try %d in %.0f s",
                error.code,
                attempt + 1,
                delay,
            )
            sleep(delay)
            delay = min(delay * 2, PROOF_MAX_DELAY)


def rotate_secret(
    settings: Settings,
    graph: GraphClient,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    proof_timeout: float = PROOF_TIMEOUT,
    monotonic: Callable[[], float] = time.monotonic,
) -> RotationResult:
    """Replace the client secret ``graph`` signs in with: addPassword → Key Vault → proof →
    switch → removePassword.

    Needs ``ROTATION_ENABLED``, the secret in Key Vault and ``Application.ReadWrite.OwnedBy``.
    Whatever fails, the old secret stays registered, stays the one in use and stays the latest
    version in Key Vault (a stored but unproven one is superseded by the old value again).
    """
    source = graph.tokens.credential
    if not settings.rotation_enabled or not isinstance(source, KeyVaultSecretCredential):
        return RotationResult(
            "skipped", "application", "rotation is off or the secret is not kept in Key Vault"
        )
    if not _rotation_lock.acquire(blocking=False):
        return RotationResult("skipped", "application", "a rotation is already running")
    try:
        return _rotate(settings, graph, source, now or clock.now(), sleep, proof_timeout, monotonic)
    finally:
        _rotation_lock.release()


def _rotate(
    settings: Settings,
    graph: GraphClient,
    source: KeyVaultSecretCredential,
    now: datetime,
    sleep: Callable[[float], None],
    proof_timeout: float,
    monotonic: Callable[[], float],
) -> RotationResult:
    try:
        current = source.current()
        app = graph.get_application()
    except GraphError as error:
        return _failed("application", "could not read the app registration", error)
    app_id = str(app.get("id") or "")
    match = match_password(app, current.value, current.tags.get("keyId"))
    old = match.one
    old_key = str(old["keyId"]) if old and old.get("keyId") else None

    end = now + timedelta(days=settings.secret_lifetime_days)
    try:
        created = graph.add_password(app_id, f"calendar-sync {now.date().isoformat()}", end)
    except GraphError as error:
        return _failed("addPassword", "Entra refused a new secret", error, old_key_id=old_key)
    new_value = str(created.get("secretText") or "")
    new_key = str(created.get("keyId") or "")
    new_end = parse_iso(created.get("endDateTime")) or end
    ids = {"old_key_id": old_key, "new_key_id": new_key}
    if not new_value or not new_key:
        return _failed(
            "addPassword",
            "Entra's answer to addPassword carried no secretText or keyId",
            {"code": "UnexpectedAnswer", "message": "addPassword returned no secret", "hint": ""},
            **ids,
        )
    log.info("credential rotation: added secret %s (expires %s)", new_key, iso(new_end))

    def discard_new(reason: str) -> str:
        try:
            graph.remove_password(app_id, new_key)
            return f"{reason}; the new secret {new_key} was removed again"
        except GraphError as error:
            log.warning("credential rotation: could not remove new secret %s: %s", new_key, error)
            return f"{reason}; the new secret {new_key} could not be removed ({error.code})"

    try:
        stored = source.vault.set(
            source.name,
            new_value,
            expires_on=new_end,
            content_type="client secret",
            tags={"keyId": new_key, "clientId": settings.client_id},
        )
    except GraphError as error:
        return _failed(
            "keyVault", discard_new("Key Vault did not store the new secret"), error, **ids
        )
    log.info("credential rotation: stored as version %s of %s", stored.version, source.name)

    failure = _prove(settings, new_value, sleep=sleep, timeout=proof_timeout, monotonic=monotonic)
    if failure is not None:
        try:
            source.vault.set(
                source.name,
                current.value,
                expires_on=current.expires_on,
                content_type=current.content_type,
                tags=current.tags,
            )
        except GraphError as error:
            return _failed(
                "rollback",
                f"the new secret was not accepted ({failure.code}) and the old value could not "
                f"be stored again: Key Vault's latest version of {source.name} is the new, "
                "unproven secret; this instance keeps using the old one",
                error,
                **ids,
            )
        return _failed(
            "proof",
            discard_new(
                f"Entra did not accept the new secret within {proof_timeout:.0f} s "
                f"({failure.code}); Key Vault holds the old value again"
            ),
            failure,
            **ids,
        )

    source.switch(stored)
    graph.tokens.reset()
    log.info("credential rotation: switched to secret %s", new_key)

    warning = ""
    if old_key is None:
        warning = (
            f"the old secret was left in place ({match.reason}); remove it in the app registration"
        )
    else:
        try:
            graph.remove_password(app_id, old_key)
            log.info("credential rotation: removed old secret %s", old_key)
        except GraphError as error:
            warning = (
                f"the old secret {old_key} could not be removed ({error.code}); it keeps "
                "working until it expires: remove it in the app registration"
            )
    if warning:
        log.warning("credential rotation: %s", warning)
    return RotationResult(
        "rotated",
        "done",
        f"secret {new_key} replaces {old_key or 'the old one'}, valid until {iso(new_end)}",
        old_key_id=old_key,
        new_key_id=new_key,
        new_expires_at=new_end,
        warning=warning,
    )
