"""Key Vault: the secrets of ``KEY_VAULT_URL`` (read, written, listed), and a certificate with its
private key read from the secret of the same name, as Key Vault keeps it (PEM or PKCS#12).

Key Vault is read with the managed identity ``MANAGED_IDENTITY_CLIENT_ID`` when it is set, else
with the default Azure credential chain (the app's system-assigned identity in Azure).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sync_core.config import Settings
from sync_core.credentials.errors import CredentialError, first_line
from sync_core.graph.errors import ErrorKind

if TYPE_CHECKING:
    from azure.keyvault.secrets import KeyVaultSecret

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


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
        with self._asking("read", name):
            secret = self.client.get_secret(name, version)
        return _stored(secret, secret.value or "")

    def set(
        self,
        name: str,
        value: str,
        *,
        expires_on: datetime | None,
        content_type: str | None,
        tags: dict[str, str],
    ) -> StoredSecret:
        with self._asking("write", name):
            secret = self.client.set_secret(
                name, value, expires_on=expires_on, content_type=content_type, tags=tags
            )
        return _stored(secret, value)

    def ping(self) -> None:
        """Raise :class:`CredentialError` unless the vault answers (for the doctor)."""
        with self._asking("list", ""):
            next(iter(self.client.list_properties_of_secrets(max_page_size=1)), None)

    @contextmanager
    def _asking(self, action: str, name: str) -> Iterator[None]:
        """The SDK's errors as :class:`CredentialError` (what failed and the admin's fix)."""
        from azure.core.exceptions import AzureError

        try:
            yield
        except (AzureError, ValueError) as exc:
            raise self._error(exc, action, name) from exc

    def _error(self, exc: Exception, action: str, name: str) -> CredentialError:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        def error(
            kind: ErrorKind, code: str, problem: str, fix: str, status: int | None = None
        ) -> CredentialError:
            return CredentialError(
                kind=kind,
                code=code,
                detail=first_line(exc),
                status=status,
                problem=problem,
                fix=fix,
            )

        login = ErrorKind.LOGIN_FAILED
        role = "Key Vault Secrets Officer" if action == "write" else "Key Vault Secrets User"
        if isinstance(exc, ResourceNotFoundError):
            return error(
                login,
                "KeyVaultSecretNotFound",
                f"Key Vault {self.url} has no secret {name!r}",
                f"Store the credential in the vault as secret {name!r}, or set "
                "KEY_VAULT_SECRET_NAME / KEY_VAULT_CERTIFICATE_NAME to its name.",
                404,
            )
        if isinstance(exc, ClientAuthenticationError):
            return error(
                login,
                "KeyVaultSignInFailed",
                f"could not sign in to Key Vault {self.url}",
                "Check the function app's managed identity (MANAGED_IDENTITY_CLIENT_ID for a "
                f"user-assigned one) and give it the role {role!r} on the vault.",
            )
        if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
            return error(
                ErrorKind.NETWORK,
                "KeyVaultUnreachable",
                f"could not reach Key Vault {self.url}",
                "Nothing to do if it passes; otherwise check KEY_VAULT_URL and outbound "
                "network access (private endpoint, firewall) to the vault.",
            )
        if not isinstance(exc, HttpResponseError):
            return error(
                login,
                "KeyVaultError",
                f"Key Vault {self.url} could not {action} secret {name!r}: {first_line(exc)}",
                "Check KEY_VAULT_URL: it must be the vault's URI from its overview page.",
            )
        status = exc.status_code or 0
        if status == 403 and _inner_code(exc) == "SecretDisabled":
            return error(
                login,
                "KeyVaultSecretDisabled",
                f"the latest version of Key Vault secret {name!r} is disabled",
                "Enable it in the vault, or store a new version of the secret.",
                403,
            )
        if status == 403:
            return error(
                login,
                "KeyVaultForbidden",
                f"Key Vault {self.url} refused to {action} secret {name!r}",
                f"Give the function app's identity the role {role!r} on the vault "
                "(Access control (IAM)); role assignments take a few minutes to apply.",
                403,
            )
        code = str(getattr(exc.error, "code", "") or "") if exc.error else ""
        retryable = status == 429 or status >= 500
        return error(
            ErrorKind.NETWORK if retryable else login,
            f"KeyVault{code or status}",
            f"Key Vault {self.url} could not {action} secret {name!r} ({status} {code})".rstrip(),
            "Nothing to do if it passes; otherwise see the vault's diagnostics."
            if retryable
            else "See the detail in the function log and the vault's diagnostics.",
            status or None,
        )


def _stored(secret: KeyVaultSecret, value: str) -> StoredSecret:
    props = secret.properties
    return StoredSecret(
        value=value,
        version=props.version or "",
        expires_on=props.expires_on,
        content_type=props.content_type,
        tags=dict(props.tags or {}),
    )


def _inner_code(exc: Any) -> str:
    response = getattr(exc, "response", None)
    try:
        body = json.loads(response.text()) if response is not None else {}
    except (ValueError, TypeError, AttributeError):
        return ""
    inner = (body.get("error") or {}).get("innererror") or {}
    return str(inner.get("code") or "") if isinstance(inner, dict) else ""


# -- a certificate kept in Key Vault -----------------------------------------------------------

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class LoadedCertificate:
    private_key_pem: str = field(repr=False)
    certificate_pem: str
    sha1: str  # hex, upper case: the thumbprint the portal shows
    not_after: datetime
    version: str


def load_certificate(stored: StoredSecret, name: str) -> LoadedCertificate:
    """The certificate and private key of the Key Vault secret ``name`` (PEM or PKCS#12)."""
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

    def public_der(public_key: Any) -> bytes:
        return bytes(
            public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
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
        raise unreadable(first_line(exc)) from None
    if key is None or not certificates:
        raise unreadable("the certificate or its private key is missing")
    public = public_der(key.public_key())
    leaf = next((c for c in certificates if public_der(c.public_key()) == public), None)
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
