"""Access tokens for Graph through MSAL (client credentials), cached in process.

One interface, :class:`TokenProvider`, whatever the credential: the client credential MSAL gets is
produced by a :class:`CredentialSource`, so certificates and managed identities plug in beside
the client secret without the Graph client knowing. The sources for each ``CREDENTIAL_MODE``
(settings, Key Vault, managed identity) live in :mod:`sync_core.credentials.sources`; whoever
builds a Graph client hands it one.

A source that can be re-read (Key Vault) is asked to ``refresh()`` when Entra refuses it as
wrong or expired: another instance may have rotated the secret, and the new one is in the vault.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import msal
import requests

from sync_core.config import Settings
from sync_core.graph.errors import ErrorKind, GraphError, error_from_login

log = logging.getLogger(__name__)

# Entra refused the credential itself: worth re-reading a source that can change (Key Vault).
CREDENTIAL_REFUSED = frozenset(
    {ErrorKind.SECRET_INVALID, ErrorKind.SECRET_EXPIRED, ErrorKind.CERTIFICATE_INVALID}
)


class CredentialSource(Protocol):
    """What MSAL's ``client_credential`` becomes: a secret, a certificate dict, or an assertion."""

    def client_credential(self) -> str | dict[str, Any]: ...


class SecretCredential:
    """A client secret given directly (``CLIENT_SECRET``, or a value under test)."""

    kind = "client_secret"
    source = "settings"

    def __init__(self, secret: str | Callable[[], str]) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "SecretCredential(***)"

    def client_credential(self) -> str:
        return self._secret() if callable(self._secret) else self._secret


class TokenProvider:
    """Acquires and caches app-only tokens for the configured Graph endpoint."""

    def __init__(
        self, settings: Settings, credential: CredentialSource, session: requests.Session
    ) -> None:
        self.settings = settings
        self._credential = credential
        self._session = session
        self._app: msal.ConfidentialClientApplication | None = None
        self._built_with: object = None  # the client credential the MSAL app holds
        self._lock = threading.Lock()

    @property
    def credential(self) -> CredentialSource:
        """Where the client credential comes from (the credential watch and rotation use it)."""
        return self._credential

    def _client(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            credential = self._credential.client_credential()
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.settings.client_id,
                    client_credential=credential,
                    authority=self.settings.authority,
                    http_client=self._session,
                    # Off for hosts that are not Microsoft's, so nothing is sent to
                    # login.microsoftonline.com to validate a simulator's or proxy's authority.
                    instance_discovery=self.settings.authority_is_microsoft,
                    timeout=15,
                )
            except ValueError as exc:  # e.g. the authority's discovery document was refused
                raise GraphError(
                    kind=ErrorKind.LOGIN_FAILED, code="AuthorityUnreachable", detail=str(exc)
                ) from exc
            except requests.RequestException as exc:
                raise GraphError(
                    kind=ErrorKind.NETWORK, code=type(exc).__name__, detail=str(exc)
                ) from exc
            self._built_with = credential
        return self._app

    def token(self, *, force_refresh: bool = False) -> str:
        """A valid access token; ``force_refresh`` drops the cached one first (after a 401).

        When Entra refuses the credential (wrong, expired, unknown certificate) and its source
        has a newer one (rotated in Key Vault by another instance), signs in once more with it.
        """
        try:
            return self._acquire(force_refresh)
        except GraphError as error:
            if error.kind not in CREDENTIAL_REFUSED or not self._refresh_credential():
                raise
            log.info("the credential was replaced in Key Vault; signing in with the new one")
            return self._acquire(True)

    def _refresh_credential(self) -> bool:
        """True when the source now gives another credential than the MSAL app was built with
        (re-read from Key Vault here, or already by another provider sharing the source)."""
        refresh: Callable[[], bool] | None = getattr(self._credential, "refresh", None)
        if refresh is None:
            return False
        try:
            refresh()
            current = self._credential.client_credential()
        except GraphError as error:
            log.warning("could not re-read the credential: %s", error)
            return False
        with self._lock:
            if current == self._built_with:
                return False
            self._app = None
        return True

    def _acquire(self, force_refresh: bool) -> str:
        with self._lock:
            app = self._client()
            if force_refresh:
                app.remove_tokens_for_client()
            try:
                result = app.acquire_token_for_client(scopes=[self.settings.graph_scope])
            except requests.RequestException as exc:
                raise GraphError(
                    kind=ErrorKind.NETWORK, code=type(exc).__name__, detail=str(exc)
                ) from exc
        if "access_token" not in result:
            raise error_from_login(result)
        return str(result["access_token"])

    def reset(self) -> None:
        """Forget the MSAL client, so the next token uses a fresh credential (after rotation)."""
        with self._lock:
            self._app = None

    def claims(self) -> dict[str, Any]:
        """The current token's claims (unverified: only for showing ``roles`` to an admin)."""
        payload = self.token().split(".")[1]
        payload += "=" * (-len(payload) % 4)
        return dict(json.loads(base64.urlsafe_b64decode(payload)))
