"""Microsoft Graph and Entra ID: the only code that talks to either."""

from sync_core.graph.client import BatchRequest, BatchResponse, DeltaPage, GraphClient
from sync_core.graph.errors import DeltaReset, ErrorKind, GraphError

__all__ = [
    "BatchRequest",
    "BatchResponse",
    "DeltaPage",
    "DeltaReset",
    "ErrorKind",
    "GraphClient",
    "GraphError",
]
