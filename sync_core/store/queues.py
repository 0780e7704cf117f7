"""Storage queues: the product's work items, in the encoding Azure Functions expects.

A queue-triggered function reads messages as base64 (host.json ``messageEncoding``); a plain-text
message would fail to decode and end up in the poison queue. Every message the product writes
goes through :func:`encode_message`, and every one it reads through :func:`decode_message`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any

from sync_core.config import StorageSettings

if TYPE_CHECKING:  # the SDK loads when a queue is first used, not when the app is indexed
    from azure.storage.queue import QueueClient, QueueServiceClient

# Queue names are part of the deployment contract (function bindings and alerts use them).
APPLY_BOOKING = "apply-booking"
SYNC_MAILBOX = "sync-mailbox"
DELIVER = "deliver"


def poison_queue(name: str) -> str:
    """Where the Functions host parks a message after its last failed try."""
    return f"{name}-poison"


def encode_message(payload: dict[str, Any] | str) -> str:
    """JSON (or text) → the base64 text a queue trigger decodes."""
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_message(content: str | bytes) -> bytes:
    """Base64 queue content → the bytes a queue trigger receives."""
    raw = content.encode("ascii") if isinstance(content, str) else content
    return base64.b64decode(raw, validate=True)


class QueueStore:
    """Queues of one storage account; each queue is created on first use."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._ready: dict[str, QueueClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, storage: StorageSettings) -> QueueStore:
        from azure.storage.queue import QueueServiceClient

        from sync_core.store.transport import storage_transport

        if storage.connection_string:
            return cls(
                QueueServiceClient.from_connection_string(
                    storage.connection_string, transport=storage_transport()
                )
            )
        from sync_core.identity import azure_credential

        assert storage.queue_endpoint
        return cls(
            QueueServiceClient(
                storage.queue_endpoint,
                credential=azure_credential(storage.client_id),
                transport=storage_transport(),
            )
        )

    def queue(self, name: str) -> QueueClient:
        client = self._ready.get(name)
        if client is None:
            with self._lock:
                client = self._ready.get(name)
                if client is None:
                    client = self._service.get_queue_client(name)
                    from azure.core.exceptions import ResourceExistsError

                    with contextlib.suppress(ResourceExistsError):
                        client.create_queue()
                    self._ready[name] = client
        return client

    def send(self, name: str, payload: dict[str, Any] | str, *, delay_seconds: int = 0) -> str:
        """Durably enqueue one message; returns its id. Raises if storage did not accept it."""
        message = self.queue(name).send_message(
            encode_message(payload), visibility_timeout=delay_seconds or None
        )
        return str(message.id)

    def depth(self, name: str) -> int:
        """Approximate number of messages waiting (for status and tests)."""
        return int(self.queue(name).get_queue_properties().approximate_message_count or 0)
