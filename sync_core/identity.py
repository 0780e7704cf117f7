"""Azure credentials for Azure's own services (Table Storage, queues, Key Vault).

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
