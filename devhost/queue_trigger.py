"""Queue triggers: poll a storage queue (Azurite locally) the way the Functions host does.

Per function: fetch up to ``batchSize`` messages, run them on a pool, fetch again when the number
in flight falls to ``newBatchThreshold``; when the queue is empty, poll less often (from 100 ms,
doubling, up to ``maxPollingInterval``). A message that succeeds is deleted; one that fails
becomes visible again after ``visibilityTimeout``, and after ``maxDequeueCount`` tries it moves
to ``<queue>-poison``.
"""

from __future__ import annotations

import binascii
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from devhost.functions import Function, Invoker, log
from devhost.hostjson import QueueOptions
from sync_core.store.queues import QueueStore, decode_message, poison_queue

# How long a fetched message stays invisible to other readers while the function runs.
PROCESSING_VISIBILITY = 600
MIN_POLL = 0.1


def trigger_message(message: StorageMessage, body: bytes) -> QueueMessage:
    return QueueMessage(  # type: ignore[no-untyped-call]
        id=message.id,
        body=body,
        dequeue_count=message.dequeue_count,
        pop_receipt=message.pop_receipt,
        insertion_time=message.inserted_on,
        expiration_time=message.expires_on,
        time_next_visible=message.next_visible_on,
    )


class QueuePoller(threading.Thread):
    def __init__(
        self,
        fn: Function,
        store: QueueStore,
        options: QueueOptions,
        invoker: Invoker,
        stop: threading.Event,
    ) -> None:
        super().__init__(name=f"queue-{fn.name}", daemon=True)
        self.fn = fn
        self.store = store
        self.options = options
        self.invoker = invoker
        self.stop = stop
        self.pool = ThreadPoolExecutor(
            max_workers=options.batch_size + options.new_batch_threshold,
            thread_name_prefix=f"queue-{fn.name}",
        )
        self._in_flight = 0
        self._changed = threading.Condition()
        self._pending: dict[Future[None], StorageMessage] = {}

    # The poller ---------------------------------------------------------------------------------

    def run(self) -> None:
        client: QueueClient | None = None
        delay = MIN_POLL
        failing = False
        while not self.stop.is_set():
            with self._changed:
                if self._in_flight > self.options.new_batch_threshold:
                    self._changed.wait(timeout=0.5)
                    continue
            try:
                if client is None:
                    client = self.store.queue(self.fn.queue)  # created when missing
                batch = list(
                    client.receive_messages(
                        messages_per_page=self.options.batch_size,
                        max_messages=self.options.batch_size,
                        visibility_timeout=PROCESSING_VISIBILITY,
                    )
                )
                if failing:
                    log.info("queue %s: reachable again", self.fn.queue)
                failing = False
            except Exception as exc:  # storage down: say so once, keep trying
                if not failing:
                    log.warning("queue %s: cannot poll (%s); retrying", self.fn.queue, exc)
                failing = True
                batch = []
            if batch:
                delay = MIN_POLL
                assert client is not None
                for message in batch:
                    self._submit(client, message)
                continue
            self.stop.wait(delay)
            delay = min(delay * 2, self.options.max_polling_interval)
        self._release_unstarted(client)
        self.pool.shutdown(wait=False)

    def _submit(self, client: QueueClient, message: StorageMessage) -> None:
        with self._changed:
            self._in_flight += 1
        future = self.pool.submit(self._process, client, message)
        with self._changed:
            self._pending[future] = message
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._changed:
            self._in_flight -= 1
            self._pending.pop(future, None)
            self._changed.notify_all()

    def _release_unstarted(self, client: QueueClient | None) -> None:
        """At shutdown, make fetched-but-not-started messages visible again at once."""
        with self._changed:
            pending = list(self._pending.items())
        for future, message in pending:
            if client is not None and future.cancel():
                try:
                    client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
                except Exception as exc:
                    log.warning(
                        "queue %s: message %s not released: %s", self.fn.queue, message.id, exc
                    )

    # One message --------------------------------------------------------------------------------

    def _process(self, client: QueueClient, message: StorageMessage) -> None:
        # Counted until the message is settled, so that shutdown does not cut a delete short.
        with self.invoker.inflight.track():
            self._settle(client, message)

    def _settle(self, client: QueueClient, message: StorageMessage) -> None:
        try:
            body = self._body(message.content)
        except (binascii.Error, ValueError):
            log.warning(
                "queue %s: message %s is not valid %s; moved to %s",
                self.fn.queue,
                message.id,
                self.options.message_encoding,
                poison_queue(self.fn.queue),
            )
            self._poison(client, message)
            return
        error = self.invoker.run(self.fn, trigger_message(message, body))
        try:
            if error is None:
                client.delete_message(message.id, message.pop_receipt)
            elif (message.dequeue_count or 0) >= self.options.max_dequeue_count:
                log.warning(
                    "queue %s: message %s failed %s times; moved to %s",
                    self.fn.queue,
                    message.id,
                    message.dequeue_count,
                    poison_queue(self.fn.queue),
                )
                self._poison(client, message)
            else:
                client.update_message(
                    message.id,
                    message.pop_receipt,
                    visibility_timeout=int(self.options.visibility_timeout),
                )
        except Exception as exc:  # the message comes back after its visibility timeout
            log.warning("queue %s: message %s not settled: %s", self.fn.queue, message.id, exc)

    def _body(self, content: Any) -> bytes:
        if self.options.message_encoding == "base64":
            return decode_message(content)
        return content.encode("utf-8") if isinstance(content, str) else bytes(content)

    def _poison(self, client: QueueClient, message: StorageMessage) -> None:
        """Send the original content, unchanged, to ``<queue>-poison``; then delete it here."""
        try:
            self.store.queue(poison_queue(self.fn.queue)).send_message(message.content)
            client.delete_message(message.id, message.pop_receipt)
        except Exception as exc:
            log.warning(
                "queue %s: message %s not moved to poison: %s", self.fn.queue, message.id, exc
            )
