"""When the credential in use expires, and how it stands now (ok, warning, error, unknown).

The expiry is the app registration's ``passwordCredentials`` through Graph, where permitted,
matched by ``hint`` = the secret's first three characters; else the Key Vault secret's
``expires_on``; a certificate's own ``notAfter``. A federated credential does not expire.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from sync_core import clock
from sync_core.clock import iso, parse_iso
from sync_core.config import Settings
from sync_core.credentials.sources import (
    CredentialKind,
    KeyVaultCertificateCredential,
    KeyVaultSecretCredential,
    ManagedIdentityAssertion,
    kind_of,
    source_name,
)
from sync_core.graph.auth import CredentialSource, TokenProvider
from sync_core.graph.client import GraphClient
from sync_core.graph.errors import ErrorKind, GraphError

THRESHOLDS = (30, 14, 7, 1)  # days left at which the watch warns (and emits) once each

State = Literal["ok", "warning", "error", "unknown"]


@dataclass(frozen=True)
class Expiry:
    """When the credential in use stops working, and how that was found out."""

    expires_at: datetime | None
    found_in: Literal["graph", "key_vault", "certificate"] | None
    key_id: str | None = None  # the app registration's keyId of the secret in use
    application_id: str | None = None  # the app registration's object id
    reason: str = ""  # why it is unknown, or why key_id is missing


@dataclass(frozen=True)
class PasswordMatch:
    """The app registration's passwordCredentials that may be the secret in use."""

    candidates: list[dict[str, Any]]
    reason: str = ""  # why there is not exactly one

    @property
    def one(self) -> dict[str, Any] | None:
        return self.candidates[0] if len(self.candidates) == 1 else None


def match_password(app: dict[str, Any], secret: str, key_id: str | None = None) -> PasswordMatch:
    """The app's passwordCredential for ``secret``: the one whose ``hint`` (its first three
    characters) the secret starts with, narrowed by the keyId Key Vault recorded, if any."""
    passwords = [p for p in app.get("passwordCredentials") or [] if isinstance(p, dict)]
    hinted = [p for p in passwords if p.get("hint") and secret.startswith(str(p["hint"]))]
    if key_id and any(p.get("keyId") == key_id for p in hinted):
        hinted = [p for p in hinted if p.get("keyId") == key_id]
    if not hinted:
        return PasswordMatch([], "no secret of the app registration starts like the secret in use")
    if len(hinted) > 1:
        return PasswordMatch(
            hinted, f"{len(hinted)} secrets of the app registration start like the secret in use"
        )
    return PasswordMatch(hinted)


def recorded_expiry(source: CredentialSource) -> Expiry | None:
    """The expiry the credential itself records, without Graph: a certificate's ``notAfter``,
    the Key Vault secret's expiration date."""
    if isinstance(source, KeyVaultCertificateCredential):
        return Expiry(source.current().not_after, "certificate")
    stored = source.current() if isinstance(source, KeyVaultSecretCredential) else None
    return Expiry(stored.expires_on, "key_vault") if stored and stored.expires_on else None


def find_expiry(graph: GraphClient, source: CredentialSource) -> Expiry:
    """Where the credential's expiry is known: the certificate itself, the app registration
    (Graph, needs Application.Read.All or Application.ReadWrite.OwnedBy), or Key Vault."""
    if isinstance(source, ManagedIdentityAssertion):
        return Expiry(None, None, reason="a federated credential does not expire")
    recorded = recorded_expiry(source)
    if recorded is not None and recorded.found_in == "certificate":
        return recorded
    stored = source.current() if isinstance(source, KeyVaultSecretCredential) else None
    secret = str(source.client_credential())
    graph_problem = ""
    app_id: str | None = None
    try:
        app = graph.get_application()
        app_id = str(app.get("id") or "") or None
        match = match_password(app, secret, stored.tags.get("keyId") if stored else None)
        graph_problem = match.reason
        ends = [
            end for p in match.candidates if (end := parse_iso(p.get("endDateTime"))) is not None
        ]
        if ends:
            # Several candidates: warn by the earliest, but name none (rotation removes none).
            one = match.one
            key_id = str(one.get("keyId") or "") or None if one else None
            return Expiry(min(ends), "graph", key_id, app_id, graph_problem)
    except GraphError as error:
        if error.kind not in (ErrorKind.PERMISSION_MISSING, ErrorKind.ACCESS_DENIED):
            raise
        graph_problem = f"the app registration cannot be read ({error.code})"
    if recorded is not None:
        return replace(recorded, application_id=app_id, reason=graph_problem)
    return Expiry(None, None, None, app_id, graph_problem or "no expiry date is recorded")


def days_left(expires_at: datetime, now: datetime) -> int:
    """Whole days until ``expires_at`` (0 within the last day, negative once past)."""
    return math.floor((expires_at - now).total_seconds() / 86_400)


def threshold_for(days: int) -> int:
    """The warning threshold ``days`` left falls under: 30, 14, 7 or 1; 0 once expired; -1 for
    more than 30 days."""
    if days < 0:
        return 0
    return min((t for t in THRESHOLDS if days <= t), default=-1)


# -- assessment -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    credential: CredentialKind
    mode: str
    source: str
    state: State
    hint: str
    expiry: Expiry | None = None
    days_left: int | None = None
    error: dict[str, Any] | None = None  # {code, message, hint}

    @property
    def what(self) -> str:
        """The credential's kind in words: client secret, certificate, federated credential."""
        return self.credential.replace("_", " ")

    @property
    def expires_at(self) -> datetime | None:
        return self.expiry.expires_at if self.expiry else None

    @property
    def message(self) -> str:
        """One line for a person: what the credential is and how it stands."""
        if self.error is not None and self.state in ("error", "unknown"):
            return str(self.error.get("message") or self.state)
        if self.credential == "federated_credential":
            return "a managed identity signs in as a federated credential: nothing expires"
        if self.expires_at is None:
            return f"the {self.what}'s expiry is unknown"
        verb = "expires" if self.state == "warning" else "is valid until"
        return f"the {self.what} {verb} {iso(self.expires_at)} ({self.days_left} days left)"

    def to_json(self) -> dict[str, Any]:
        return {
            "credential": self.credential,
            "kind": self.credential,
            "mode": self.mode,
            "source": self.source,
            "expires_at": iso(self.expires_at),
            "days_left": self.days_left,
            "expiry_source": self.expiry.found_in if self.expiry else None,
            "state": self.state,
            "message": self.message,
            "hint": self.hint,
            "error": self.error,
        }


def _renew_hint(kind: CredentialKind, settings: Settings, expires_at: datetime) -> str:
    day = expires_at.astimezone(UTC).date().isoformat()
    if kind == "certificate":
        return (
            f"Renew the certificate in Key Vault ({settings.key_vault_certificate_name}) and "
            f"upload the new public key to the app registration before {day}."
        )
    if settings.rotation_enabled:
        return (
            f"Rotation is on: the daily check makes a new secret before {day}; if this stays, see "
            "the credential.rotate entries in history."
        )
    where = (
        "CLIENT_SECRET"
        if settings.client_secret
        else f"Key Vault secret {settings.key_vault_secret_name}"
    )
    return (
        f"Create a new client secret under App registrations → Certificates & secrets and put "
        f"its value in {where} before {day}; or set ROTATION_ENABLED (secret in Key Vault), or "
        "switch CREDENTIAL_MODE to managed_identity so nothing expires."
    )


def assess(settings: Settings, graph: GraphClient, now: datetime | None = None) -> Assessment:
    """Sign in with ``graph``'s credential, find the expiry and judge the credential: ok,
    warning, error or unknown."""
    moment = now or clock.now()
    source = graph.tokens.credential
    kind = kind_of(source)
    what = kind.replace("_", " ")

    def judged(
        state: State,
        hint: str,
        expiry: Expiry | None,
        left: int | None = None,
        error: dict[str, Any] | None = None,
    ) -> Assessment:
        return Assessment(
            kind, settings.credential_mode, source_name(source), state, hint, expiry, left, error
        )

    # A sign-in of its own, not the process's cached token: proves the credential works now and
    # sees the permissions granted now (roles are fixed in a token when it is issued).
    probe = GraphClient(settings, TokenProvider(settings, source, graph.session), graph.session)
    try:
        probe.tokens.token()
        found = find_expiry(probe, source)
    except GraphError as error:
        partial = _expiry_without_graph(source)
        stamp = partial.expires_at if partial else None
        return judged(
            "unknown" if error.retryable else "error",
            error.hint,
            partial,
            days_left(stamp, moment) if stamp else None,
            error.to_json(),
        )
    if kind == "federated_credential":
        return judged(
            "ok",
            "Nothing expires: the app signs in with the managed identity "
            f"{settings.managed_identity_client_id} as a federated credential.",
            found,
        )
    if found.expires_at is None:
        fix = (
            "Grant Application.ReadWrite.OwnedBy (or Application.Read.All) so the expiry can be "
            "read from the app registration, or keep the secret in Key Vault (KEY_VAULT_URL) "
            "with an expiration date."
        )
        return judged(
            "warning",
            f"The expiry of the {what} is unknown ({found.reason}). {fix}",
            found,
            error={
                "code": "CredentialExpiryUnknown",
                "message": f"the {what}'s expiry is unknown ({found.reason})",
                "hint": fix,
            },
        )
    left = days_left(found.expires_at, moment)
    renew = _renew_hint(kind, settings, found.expires_at)
    if left < 0:
        code = "CertificateExpired" if kind == "certificate" else "SecretExpired"
        message = f"the {what} expired on {iso(found.expires_at)}"
        return judged(
            "error", renew, found, left, {"code": code, "message": message, "hint": renew}
        )
    if left <= THRESHOLDS[0]:
        return judged("warning", renew, found, left)
    later = "; rotation makes a new one 30 days before." if settings.rotation_enabled else "."
    return judged("ok", f"The {what} is valid for {left} more days{later}", found, left)


def _expiry_without_graph(source: CredentialSource) -> Expiry | None:
    """What can still be known when signing in fails (Key Vault failing too: nothing)."""
    try:
        return recorded_expiry(source)
    except GraphError:
        return None
