"""Access tokens for Graph through MSAL (client credentials), cached in process.

One interface, :class:`TokenProvider`, whatever the credential: the client credential MSAL gets is
produced by a :class:`CredentialSource`, so certificates and managed identities plug in beside
the client secret without the Graph client knowing.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any, Protocol

import msal
import requests

from sync_core.config import Settings
from sync_core.graph.errors import ErrorKind, GraphError, error_from_login


class CredentialSource(Protocol):
    """What MSAL's ``client_credential`` becomes: a secret, a certificate dict, or an assertion."""

    def client_credential(self) -> str | dict[str, Any]: ...


class SecretCredential:
    def __init__(self, secret: str | Callable[[], str]) -> None:
        self._secret = secret

    def client_credential(self) -> str:
        return self._secret() if callable(self._secret) else self._secret


def credential_from_settings(settings: Settings) -> CredentialSource:
    if settings.credential_mode == "secret" and settings.client_secret:
        return SecretCredential(settings.client_secret)
    raise GraphError(
        kind=ErrorKind.LOGIN_FAILED,
        code="CredentialUnavailable",
        detail=f"credential mode {settings.credential_mode!r} needs Key Vault support",
    )


class TokenProvider:
    """Acquires and caches app-only tokens for the configured Graph endpoint."""

    def __init__(
        self, settings: Settings, credential: CredentialSource, session: requests.Session
    ) -> None:
        self.settings = settings
        self._credential = credential
        self._session = session
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def _client(self) -> msal.ConfidentialClientApplication:
        if self._app is None:
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.settings.client_id,
                    client_credential=self._credential.client_credential(),
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
        return self._app

    def token(self, *, force_refresh: bool = False) -> str:
        """A valid access token; ``force_refresh`` drops the cached one first (after a 401)."""
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
