"""Credentials that never expire silently (SPEC §6): the three modes, Key Vault, expiry, watch,
rotation, and the credential's status for the status page and the doctor.

Modes (``CREDENTIAL_MODE``), each a :class:`~sync_core.graph.auth.CredentialSource` behind the
Graph client's one :class:`~sync_core.graph.auth.TokenProvider`:

- ``secret``: ``CLIENT_SECRET`` when set, else the latest version of the Key Vault secret
  ``KEY_VAULT_SECRET_NAME`` (re-read when Entra refuses it, so a rotation by another instance
  is picked up);
- ``certificate``: the Key Vault certificate ``KEY_VAULT_CERTIFICATE_NAME``, read as the secret
  of the same name (PEM or PKCS#12, as Key Vault keeps a certificate's private key), signed
  into MSAL as a certificate credential (SHA-256 thumbprint, PS256);
- ``managed_identity``: no secret at all. The user-assigned identity
  ``MANAGED_IDENTITY_CLIENT_ID`` gets a token for ``api://AzureADTokenExchange``, which MSAL
  sends as the client assertion; the callable is asked on every token request MSAL makes.

Key Vault is read with the managed identity ``MANAGED_IDENTITY_CLIENT_ID`` when it is set, else
with the default Azure credential chain (the app's system-assigned identity in Azure).

``watch`` (the daily ``credential_watch`` timer) finds when the credential expires (the app
registration's ``passwordCredentials`` through Graph, where permitted, matched by ``hint`` =
the secret's first three characters; else the Key Vault secret's ``expires_on``; a
certificate's own ``notAfter``), warns at 30, 14, 7 and 1 days left (a warning log line, the
``credential.expiring`` event once per threshold, history) and, with ``ROTATION_ENABLED``,
rotates a client secret that has 30 days or less: addPassword → new Key Vault version →
proven by a token (retried while Entra replicates) → switch → removePassword of the old one.
Any failure leaves the old secret working and is reported.

``credential.expiring`` is about the app, not a platform resource: it is emitted for the fixed
resource id ``_tenant`` (:data:`CREDENTIAL_RESOURCE`), which has its own sequence.

Secret values, tokens and signatures are never logged, put into an error or stored anywhere but
Key Vault.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from sync_core.clock import iso, parse_iso
from sync_core.config import Settings
from sync_core.graph.auth import CredentialSource, SecretCredential, TokenProvider
from sync_core.graph.client import GraphClient, new_session
from sync_core.graph.errors import ErrorKind, GraphError

if TYPE_CHECKING:
    from sync_core.services import Services

log = logging.getLogger(__name__)

TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"  # noqa: S105 - a scope
THRESHOLDS = (30, 14, 7, 1)  # days left at which the watch warns (and emits) once each
ROTATE_WITHIN_DAYS = THRESHOLDS[0]  # rotation makes a new secret from the first warning on
CREDENTIAL_RESOURCE = "_tenant"  # resource_id of credential.expiring (per app, not per resource)
PROOF_TIMEOUT = 300.0  # seconds to wait for Entra to accept a new secret (replication)
PROOF_FIRST_DELAY = 2.0
PROOF_MAX_DELAY = 30.0
REFRESH_INTERVAL = 60.0  # at most one Key Vault re-read a minute when Entra refuses a secret
STATE_TABLE = "credentials"
_STATE_KEY = ("credential", "watch")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}

State = Literal["ok", "warning", "error", "unknown"]
CredentialKind = Literal["client_secret", "certificate", "federated_credential"]

_rotation_lock = threading.Lock()


# -- errors ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class CredentialError(GraphError):
    """A credential could not be loaded (Key Vault, certificate, managed identity).

    A :class:`GraphError`, so every caller of the Graph client handles it as it handles a refused
    login: ``kind`` says whether retrying helps, ``to_json()`` gives code, message and hint.
    """

    problem: str = ""
    fix: str = ""

    @property
    def message(self) -> str:
        return self.problem or super().message

    @property
    def hint(self) -> str:
        return self.fix or super().hint


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# -- Key Vault -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredSecret:
    """One version of a Key Vault secret. The value never shows in repr or logs."""

    value: str = field(repr=False)
    version: str
    expires_on: datetime | None
    content_type: str | None
    tags: dict[str, str]


class Vault:
    """The secrets of ``KEY_VAULT_URL`` through azure-keyvault-secrets, errors as
    :class:`CredentialError` with the fix an admin needs."""

    def __init__(self, settings: Settings, credential: Any = None) -> None:
        from azure.keyvault.secrets import SecretClient

        from sync_core.identity import azure_credential

        if not settings.key_vault_url:
            raise ValueError("KEY_VAULT_URL is not set")
        self.url = settings.key_vault_url
        host = (urlsplit(self.url).hostname or "").lower()
        self.client = SecretClient(
            self.url,
            credential or azure_credential(settings.managed_identity_client_id),
            # The SDK checks that the vault is a subdomain of the challenge's resource
            # (vault.azure.net); a vault on a loopback address (the simulated tenant) cannot be.
            verify_challenge_resource=host not in _LOOPBACK and not host.startswith("127."),
        )

    def get(self, name: str, version: str | None = None) -> StoredSecret:
        from azure.core.exceptions import AzureError

        try:
            secret = self.client.get_secret(name, version)
        except (AzureError, ValueError) as exc:
            raise self._error(exc, "read", name) from exc
        props = secret.properties
        return StoredSecret(
            value=secret.value or "",
            version=props.version or "",
            expires_on=props.expires_on,
            content_type=props.content_type,
            tags=dict(props.tags or {}),
        )

    def set(
        self,
        name: str,
        value: str,
        *,
        expires_on: datetime | None,
        content_type: str | None,
        tags: dict[str, str],
    ) -> StoredSecret:
        from azure.core.exceptions import AzureError

        try:
            secret = self.client.set_secret(
                name, value, expires_on=expires_on, content_type=content_type, tags=tags
            )
        except (AzureError, ValueError) as exc:
            raise self._error(exc, "write", name) from exc
        props = secret.properties
        return StoredSecret(
            value=value,
            version=props.version or "",
            expires_on=props.expires_on,
            content_type=props.content_type,
            tags=dict(props.tags or {}),
        )

    def ping(self) -> None:
        """Raise :class:`CredentialError` unless the vault answers (for the doctor)."""
        from azure.core.exceptions import AzureError

        try:
            next(iter(self.client.list_properties_of_secrets(max_page_size=1)), None)
        except (AzureError, ValueError) as exc:
            raise self._error(exc, "list", "") from exc

    def _error(self, exc: Exception, action: str, name: str) -> CredentialError:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        detail = _first_line(exc)
        role = "Key Vault Secrets Officer" if action == "write" else "Key Vault Secrets User"
        if isinstance(exc, ResourceNotFoundError):
            return CredentialError(
                kind=ErrorKind.LOGIN_FAILED,
                code="KeyVaultSecretNotFound",
                detail=detail,
                status=404,
                problem=f"Key Vault {self.url} has no secret {name!r}",
                fix=f"Store the credential in the vault as secret {name!r}, or set "
                "KEY_VAULT_SECRET_NAME / KEY_VAULT_CERTIFICATE_NAME to its name.",
            )
        if isinstance(exc, ClientAuthenticationError):
            return CredentialError(
                kind=ErrorKind.LOGIN_FAILED,
                code="KeyVaultSignInFailed",
                detail=detail,
                problem=f"could not sign in to Key Vault {self.url}",
                fix="Check the function app's managed identity (MANAGED_IDENTITY_CLIENT_ID for "
                f"a user-assigned one) and give it the role {role!r} on the vault.",
            )
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return CredentialError(
                kind=ErrorKind.NETWORK,
                code="KeyVaultUnreachable",
                detail=detail,
                problem=f"could not reach Key Vault {self.url}",
                fix="Nothing to do if it passes; otherwise check KEY_VAULT_URL and outbound "
                "network access (private endpoint, firewall) to the vault.",
            )
        if isinstance(exc, HttpResponseError):
            status = exc.status_code or 0
            code = str(getattr(exc.error, "code", "") or "") if exc.error else ""
            inner = _inner_code(exc)
            if status == 403 and inner == "SecretDisabled":
                return CredentialError(
                    kind=ErrorKind.LOGIN_FAILED,
                    code="KeyVaultSecretDisabled",
                    detail=detail,
                    status=403,
                    problem=f"the latest version of Key Vault secret {name!r} is disabled",
                    fix="Enable it in the vault, or store a new version of the secret.",
                )
            if status == 403:
                return CredentialError(
                    kind=ErrorKind.LOGIN_FAILED,
                    code="KeyVaultForbidden",
                    detail=detail,
                    status=403,
                    problem=f"Key Vault {self.url} refused to {action} secret {name!r}",
                    fix=f"Give the function app's identity the role {role!r} on the vault "
                    "(Access control (IAM)); role assignments take a few minutes to apply.",
                )
            retryable = status == 429 or status >= 500
            return CredentialError(
                kind=ErrorKind.NETWORK if retryable else ErrorKind.LOGIN_FAILED,
                code=f"KeyVault{code or status}",
                detail=detail,
                status=status or None,
                problem=f"Key Vault {self.url} could not {action} secret {name!r} "
                f"({status} {code})".rstrip(),
                fix="Nothing to do if it passes; otherwise see the vault's diagnostics."
                if retryable
                else "See the detail in the function log and the vault's diagnostics.",
            )
        return CredentialError(
            kind=ErrorKind.LOGIN_FAILED,
            code="KeyVaultError",
            detail=detail,
            problem=f"Key Vault {self.url} could not {action} secret {name!r}: {detail}",
            fix="Check KEY_VAULT_URL: it must be the vault's URI from its overview page.",
        )


def _inner_code(exc: Any) -> str:
    response = getattr(exc, "response", None)
    try:
        body = json.loads(response.text()) if response is not None else {}
    except (ValueError, TypeError, AttributeError):
        return ""
    inner = (body.get("error") or {}).get("innererror") or {}
    return str(inner.get("code") or "") if isinstance(inner, dict) else ""


# -- credential sources -----------------------------------------------------------------------


T = TypeVar("T")


class _VaultBacked(Generic[T]):
    """A credential read from Key Vault: loaded once, re-read (at most once per interval) when
    Entra refuses it, and switched after a rotation."""

    source = "key_vault"

    def __init__(
        self,
        vault: Vault,
        name: str,
        *,
        refresh_interval: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vault = vault
        self.name = name
        self._refresh_interval = refresh_interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._current: T | None = None
        self._read_at = -math.inf

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vault.url}, {self.name!r})"

    def _load(self) -> T:
        raise NotImplementedError

    @staticmethod
    def _version(value: T) -> str:
        return str(getattr(value, "version", ""))

    def _interval(self) -> float:
        return REFRESH_INTERVAL if self._refresh_interval is None else self._refresh_interval

    def current(self) -> T:
        with self._lock:
            if self._current is None:
                self._current = self._load()
                self._read_at = self._monotonic()
            return self._current

    def refresh(self) -> bool:
        """Read the vault again (at most once per interval): True if a new version is in use."""
        with self._lock:
            if self._monotonic() - self._read_at < self._interval():
                return False
            self._read_at = self._monotonic()
            fresh = self._load()
            changed = self._current is None or self._version(fresh) != self._version(self._current)
            self._current = fresh
            return changed


class KeyVaultSecretCredential(_VaultBacked[StoredSecret]):
    """``secret`` mode with the secret in Key Vault: its latest version, re-read on refusal."""

    kind: CredentialKind = "client_secret"

    def _load(self) -> StoredSecret:
        return self.vault.get(self.name)

    def client_credential(self) -> str:
        return self.current().value

    def switch(self, stored: StoredSecret) -> None:
        """Use this version from now on (after rotation proved it)."""
        with self._lock:
            self._current = stored
            self._read_at = self._monotonic()


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class LoadedCertificate:
    private_key_pem: str = field(repr=False)
    certificate_pem: str
    sha1: str  # hex, upper case: the thumbprint the portal shows
    not_after: datetime
    version: str


def _load_certificate(stored: StoredSecret, name: str) -> LoadedCertificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    def unreadable(reason: str) -> CredentialError:
        return CredentialError(
            kind=ErrorKind.CERTIFICATE_INVALID,
            code="CertificateUnreadable",
            detail=reason,
            problem=f"Key Vault certificate {name!r} could not be read ({reason})",
            fix="Import the certificate with its private key into Key Vault as "
            f"{name!r} (KEY_VAULT_CERTIFICATE_NAME), as PEM or PKCS#12, without a password.",
        )

    key: Any
    certificates: list[x509.Certificate]
    try:
        if (stored.content_type or "").lower() == "application/x-pkcs12":
            key, leaf, extra = pkcs12.load_key_and_certificates(
                base64.b64decode(stored.value), None
            )
            certificates = ([leaf] if leaf is not None else []) + list(extra)
        else:
            data = stored.value.encode()
            certificates = x509.load_pem_x509_certificates(data)
            keys = [m.group(0) for m in _PEM_BLOCK.finditer(data) if b"PRIVATE KEY" in m.group(1)]
            if not keys:
                raise ValueError("no private key in the PEM")
            key = serialization.load_pem_private_key(keys[0], None)
    except (ValueError, TypeError) as exc:
        raise unreadable(_first_line(exc)) from None
    if key is None or not certificates:
        raise unreadable("the certificate or its private key is missing")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    leaf = next(
        (
            c
            for c in certificates
            if c.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == public
        ),
        None,
    )
    if leaf is None:
        raise unreadable("no certificate matches the private key")
    return LoadedCertificate(
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        certificate_pem=leaf.public_bytes(serialization.Encoding.PEM).decode(),
        sha1=leaf.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - a thumbprint
        not_after=leaf.not_valid_after_utc,
        version=stored.version,
    )


class KeyVaultCertificateCredential(_VaultBacked[LoadedCertificate]):
    """``certificate`` mode: the Key Vault certificate's key and certificate, for MSAL."""

    kind: CredentialKind = "certificate"

    def _load(self) -> LoadedCertificate:
        return _load_certificate(self.vault.get(self.name), self.name)

    def client_credential(self) -> dict[str, Any]:
        loaded = self.current()
        # With public_certificate and no SHA-1 thumbprint, MSAL signs PS256 with x5t#S256.
        return {"private_key": loaded.private_key_pem, "public_certificate": loaded.certificate_pem}


class ManagedIdentityAssertion:
    """``managed_identity`` mode: the identity's token for ``api://AzureADTokenExchange`` as the
    client assertion, asked for on every token request MSAL sends (azure-identity caches it
    until shortly before it expires)."""

    kind: CredentialKind = "federated_credential"
    source = "managed_identity"

    def __init__(self, client_id: str, credential: Any = None) -> None:
        from sync_core.identity import azure_credential

        self.client_id = client_id
        self._credential = credential or azure_credential(client_id)

    def __repr__(self) -> str:
        return f"ManagedIdentityAssertion({self.client_id})"

    def client_credential(self) -> dict[str, Any]:
        return {"client_assertion": self.assertion}

    def assertion(self) -> str:
        from azure.core.exceptions import AzureError

        try:
            return str(self._credential.get_token(TOKEN_EXCHANGE_SCOPE).token)
        except AzureError as exc:
            raise CredentialError(
                kind=ErrorKind.LOGIN_FAILED,
                code="ManagedIdentityUnavailable",
                detail=_first_line(exc),
                problem=f"the managed identity {self.client_id} could not get a token for "
                "api://AzureADTokenExchange",
                fix="Assign the user-assigned identity to the function app and check "
                "MANAGED_IDENTITY_CLIENT_ID is its client id (Managed Identities → Overview).",
            ) from None


def source_for(settings: Settings) -> CredentialSource:
    """The credential source ``CREDENTIAL_MODE`` asks for (nothing is read until first use)."""
    if settings.credential_mode == "managed_identity":
        assert settings.managed_identity_client_id  # validated with the settings
        return ManagedIdentityAssertion(settings.managed_identity_client_id)
    if settings.credential_mode == "certificate":
        return KeyVaultCertificateCredential(Vault(settings), settings.key_vault_certificate_name)
    if settings.client_secret:
        return SecretCredential(settings.client_secret)
    return KeyVaultSecretCredential(Vault(settings), settings.key_vault_secret_name)


def _kind(source: CredentialSource) -> CredentialKind:
    if isinstance(source, KeyVaultCertificateCredential):
        return "certificate"
    if isinstance(source, ManagedIdentityAssertion):
        return "federated_credential"
    return "client_secret"


def _source_name(source: CredentialSource) -> str:
    return str(getattr(source, "source", "settings"))


# -- expiry ---------------------------------------------------------------------------------------


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


def find_expiry(graph: GraphClient, source: CredentialSource) -> Expiry:
    """Where the credential's expiry is known: the certificate itself, the app registration
    (Graph, needs Application.Read.All or Application.ReadWrite.OwnedBy), or Key Vault."""
    if isinstance(source, ManagedIdentityAssertion):
        return Expiry(None, None, reason="a federated credential does not expire")
    if isinstance(source, KeyVaultCertificateCredential):
        return Expiry(source.current().not_after, "certificate")
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
    if stored is not None and stored.expires_on is not None:
        return Expiry(stored.expires_on, "key_vault", None, app_id, graph_problem)
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
    def message(self) -> str:
        """One line for a person: what the credential is and how it stands."""
        what = self.credential.replace("_", " ")
        expires_at = self.expiry.expires_at if self.expiry else None
        if self.error is not None and self.state in ("error", "unknown"):
            return str(self.error.get("message") or self.state)
        if self.credential == "federated_credential":
            return "a managed identity signs in as a federated credential: nothing expires"
        if expires_at is None:
            return f"the {what}'s expiry is unknown"
        verb = "expires" if self.state == "warning" else "is valid until"
        return f"the {what} {verb} {iso(expires_at)} ({self.days_left} days left)"

    def to_json(self) -> dict[str, Any]:
        expires_at = self.expiry.expires_at if self.expiry else None
        return {
            "credential": self.credential,
            "kind": self.credential,
            "mode": self.mode,
            "source": self.source,
            "expires_at": iso(expires_at),
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


def assess(svc: Services, now: datetime | None = None) -> Assessment:
    """Sign in, find the expiry and judge the credential: ok, warning, error or unknown."""
    moment = now or datetime.now(UTC)
    settings = svc.settings
    source = svc.graph.tokens.credential
    kind = _kind(source)
    what = {"certificate": "certificate", "federated_credential": "federated credential"}.get(
        kind, "client secret"
    )

    def judged(
        state: State,
        hint: str,
        expiry: Expiry | None,
        left: int | None = None,
        error: dict[str, Any] | None = None,
    ) -> Assessment:
        return Assessment(
            kind, settings.credential_mode, _source_name(source), state, hint, expiry, left, error
        )

    # A sign-in of its own, not the process's cached token: proves the credential works now and
    # sees the permissions granted now (roles are fixed in a token when it is issued).
    probe = GraphClient(
        settings, TokenProvider(settings, source, svc.graph.session), svc.graph.session
    )
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
    """What can still be known when signing in fails: Key Vault's or the certificate's date."""
    try:
        if isinstance(source, KeyVaultCertificateCredential):
            return Expiry(source.current().not_after, "certificate")
        if isinstance(source, KeyVaultSecretCredential):
            stored = source.current()
            if stored.expires_on is not None:
                return Expiry(stored.expires_on, "key_vault")
    except GraphError:
        return None
    return None


# -- rotation -------------------------------------------------------------------------------------


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
        return {
            "outcome": self.outcome,
            "step": self.step,
            "detail": self.detail,
            "old_key_id": self.old_key_id,
            "new_key_id": self.new_key_id,
            "new_expires_at": iso(self.new_expires_at),
            "error": self.error,
            "warning": self.warning,
        }


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
    svc: Services,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    proof_timeout: float = PROOF_TIMEOUT,
    monotonic: Callable[[], float] = time.monotonic,
) -> RotationResult:
    """Replace the client secret: addPassword → Key Vault → proof → switch → removePassword.

    Needs ``ROTATION_ENABLED``, the secret in Key Vault and ``Application.ReadWrite.OwnedBy``.
    Whatever fails, the old secret stays registered, stays the one in use and stays the latest
    version in Key Vault (a stored but unproven one is superseded by the old value again).
    """
    settings = svc.settings
    source = svc.graph.tokens.credential
    if not settings.rotation_enabled or not isinstance(source, KeyVaultSecretCredential):
        return RotationResult(
            "skipped", "application", "rotation is off or the secret is not kept in Key Vault"
        )
    if not _rotation_lock.acquire(blocking=False):
        return RotationResult("skipped", "application", "a rotation is already running")
    try:
        return _rotate(svc, source, now or datetime.now(UTC), sleep, proof_timeout, monotonic)
    finally:
        _rotation_lock.release()


def _rotate(
    svc: Services,
    source: KeyVaultSecretCredential,
    now: datetime,
    sleep: Callable[[float], None],
    proof_timeout: float,
    monotonic: Callable[[], float],
) -> RotationResult:
    settings, graph = svc.settings, svc.graph
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


# -- the watch ----------------------------------------------------------------------------------


def _load_state(svc: Services) -> dict[str, Any]:
    return svc.tables.get(STATE_TABLE, *_STATE_KEY) or {}


def _save_state(svc: Services, state: dict[str, Any]) -> None:
    svc.tables.upsert(
        STATE_TABLE, {**state, "PartitionKey": _STATE_KEY[0], "RowKey": _STATE_KEY[1]}
    )


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
            at=datetime.now(UTC),
            resource_id=None,
            action=action,
            subject=subject,
            outcome=outcome,
            detail=detail,
            error=error,
        )
    )


def _should_rotate(settings: Settings, found: Assessment) -> bool:
    """A client secret in Key Vault with 30 days or less left, and Graph still reachable (a
    secret that expired minutes ago may still sign in from the token cache)."""
    if not settings.rotation_enabled or found.credential != "client_secret":
        return False
    if found.days_left is None or found.days_left > ROTATE_WITHIN_DAYS:
        return False
    return found.error is None or found.error.get("code") == "SecretExpired"


def watch(
    svc: Services,
    *,
    now: datetime | None = None,
    sleep: Callable[[float], None] = time.sleep,
    proof_timeout: float = PROOF_TIMEOUT,
) -> dict[str, Any]:
    """The daily ``credential_watch``: judge the credential, rotate where enabled, warn once per
    threshold (log, ``credential.expiring``, history). Returns the credential's status."""
    moment = now or datetime.now(UTC)
    settings = svc.settings
    found = assess(svc, moment)
    rotation: RotationResult | None = None
    if _should_rotate(settings, found):
        rotation = rotate_secret(svc, now=moment, sleep=sleep, proof_timeout=proof_timeout)
        _report_rotation(svc, found, rotation)

    state = _load_state(svc)
    _warn(svc, found, rotation, state)
    state["LastCheck"] = moment
    state["LastState"] = found.state
    if rotation is not None:
        state["Rotation"] = json.dumps({**rotation.to_json(), "at": iso(moment)})
    _save_state(svc, state)
    if rotation is not None and rotation.outcome == "rotated":
        return credential_status(svc, now=moment)
    return {
        **found.to_json(),
        "checked_at": iso(moment),
        "last_watch": iso(moment),
        "rotation": _rotation_view(settings, state),
    }


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
    expires_at = found.expiry.expires_at if found.expiry else None
    what = found.credential.replace("_", " ")
    rotated = rotation is not None and rotation.outcome == "rotated"
    if found.state == "ok":
        log.info("credential_watch: %s ok: %s", what, found.hint)
        return
    error = found.error or {}
    if rotated:
        pass  # reported as a rotation; the event below still tells the platform
    elif found.state in ("error", "unknown"):
        log.error(
            "credential_watch: %s %s: %s (%s). %s",
            what,
            found.state,
            error.get("message"),
            error.get("code"),
            found.hint,
        )
    else:
        left = "an unknown number of" if found.days_left is None else str(found.days_left)
        log.warning(
            "credential_watch: %s expires %s (%s days left). %s",
            what,
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


def _rotation_view(settings: Settings, state: dict[str, Any]) -> dict[str, Any]:
    last = state.get("Rotation")
    return {
        "enabled": settings.rotation_enabled,
        "last": json.loads(last) if isinstance(last, str) and last else None,
    }


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


def credential_status(svc: Services, now: datetime | None = None) -> dict[str, Any]:
    """The credential as status and the doctor show it, checked now (one sign-in, one Graph
    read, at most one Key Vault read):

    ``{credential, kind, mode, source, expires_at, days_left, expiry_source, state, message,
    hint, error, checked_at, last_watch, rotation: {enabled, last}}`` with ``state`` ``ok``,
    ``warning`` (30 days or less, or the expiry is unknown), ``error`` (refused, expired, Key
    Vault failing: ``error`` has code, message and hint) or ``unknown`` (could not be checked
    just now: Graph, Entra or Key Vault unreachable). ``credential`` (and its alias ``kind``) is
    ``client_secret``, ``certificate`` or ``federated_credential``; ``source`` is ``settings``,
    ``key_vault`` or ``managed_identity``; ``expiry_source`` is ``graph``, ``key_vault``,
    ``certificate`` or null.
    """
    moment = now or datetime.now(UTC)
    found = assess(svc, moment)
    try:
        state = _load_state(svc)
    except Exception:  # storage trouble shows elsewhere in status; the credential still shows
        log.warning("credential status: the watch's state could not be read", exc_info=True)
        state = {}
    last_check = state.get("LastCheck")
    return {
        **found.to_json(),
        "checked_at": iso(moment),
        "last_watch": iso(last_check) if isinstance(last_check, datetime) else None,
        "rotation": _rotation_view(svc.settings, state),
    }
