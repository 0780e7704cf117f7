"""The credential each ``CREDENTIAL_MODE`` signs in with, a
:class:`~sync_core.graph.auth.CredentialSource` behind the Graph client's one
:class:`~sync_core.graph.auth.TokenProvider`:

- ``secret``: ``CLIENT_SECRET`` when set, else the latest version of the Key Vault secret
  ``KEY_VAULT_SECRET_NAME`` (re-read when Entra refuses it, so a rotation by another instance
  is picked up);
- ``certificate``: the Key Vault certificate ``KEY_VAULT_CERTIFICATE_NAME``, read as the secret
  of the same name (PEM or PKCS#12, as Key Vault keeps a certificate's private key), signed
  into MSAL as a certificate credential (SHA-256 thumbprint, PS256);
- ``managed_identity``: no secret at all. The user-assigned identity
  ``MANAGED_IDENTITY_CLIENT_ID`` gets a token for ``api://AzureADTokenExchange``, which MSAL
  sends as the client assertion; the callable is asked on every token request MSAL makes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, cast

from sync_core.config import Settings
from sync_core.credentials.errors import CredentialError, first_line
from sync_core.credentials.vault import LoadedCertificate, StoredSecret, Vault, load_certificate
from sync_core.graph.auth import CredentialSource, SecretCredential
from sync_core.graph.errors import ErrorKind

TOKEN_EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"  # noqa: S105 - a scope
REFRESH_INTERVAL = 60.0  # at most one Key Vault re-read a minute when Entra refuses a secret

CredentialKind = Literal["client_secret", "certificate", "federated_credential"]

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


class KeyVaultCertificateCredential(_VaultBacked[LoadedCertificate]):
    """``certificate`` mode: the Key Vault certificate's key and certificate, for MSAL."""

    kind: CredentialKind = "certificate"

    def _load(self) -> LoadedCertificate:
        return load_certificate(self.vault.get(self.name), self.name)

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
                detail=first_line(exc),
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


def kind_of(source: CredentialSource) -> CredentialKind:
    """What Entra knows the source as (a source that does not say is a client secret)."""
    return cast(CredentialKind, getattr(source, "kind", "client_secret"))


def source_name(source: CredentialSource) -> str:
    """Where the credential comes from: ``settings``, ``key_vault`` or ``managed_identity``."""
    return str(getattr(source, "source", "settings"))
