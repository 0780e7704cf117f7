"""Credentials for Azure's own services, and the pooled HTTP session of the outbound clients.

Imported lazily: local runs use connection strings and never load azure-identity.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

_PROXY_SETTINGS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def azure_credential(client_id: str | None) -> Any:
    """A user-assigned managed identity when its client id is given, else the default chain."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def uses_proxy() -> bool:
    """Whether the environment names a proxy (which only requests knows how to use)."""
    return any(name.lower() in _PROXY_SETTINGS for name in os.environ)


def pooled_session(pool_size: int = 32) -> requests.Session:
    """A session whose connection pool fits the worker threads (requests keeps 10).

    Without proxy settings the environment is read once, here: requests would otherwise scan
    every environment variable for proxies on each call, which costs about as much CPU as the
    call itself. TLS verification still honours REQUESTS_CA_BUNDLE.
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if not uses_proxy():
        session.trust_env = False
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
    return session
