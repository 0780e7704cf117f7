"""Credentials and HTTP transport for Azure's own services (Table Storage, queues, Key Vault).

Imported lazily: local runs use connection strings and never load azure-identity.
"""

from __future__ import annotations

from typing import Any


def azure_credential(client_id: str | None) -> Any:
    """A user-assigned managed identity when its client id is given, else the default chain."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def pooled_transport(pool_size: int = 64) -> Any:
    """An HTTP transport whose connection pool fits the worker threads (requests keeps 10)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return RequestsTransport(session=session, session_owner=False)
