"""A per-process memory of recent reads, for hot-path lookups that tolerate being up to
``max_age`` old. Writes made through the same owner forget the key at once; other instances'
writes are seen after ``max_age`` at most."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._values: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], V | None], max_age: float | None = None) -> V | None:
        """The remembered value if young enough (``max_age`` if given, else the owner's), else
        ``load()`` (remembered unless None)."""
        now = time.monotonic()
        limit = self.max_age if max_age is None else min(max_age, self.max_age)
        with self._lock:
            known = self._values.get(key)
        if known is not None and now - known[0] < limit:
            return known[1]
        value = load()
        with self._lock:
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = (now, value)
        return value

    def peek(self, key: K) -> V | None:
        """The remembered value if young enough, without loading."""
        with self._lock:
            known = self._values.get(key)
        if known is not None and time.monotonic() - known[0] < self.max_age:
            return known[1]
        return None

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` as read just now."""
        with self._lock:
            self._values[key] = (time.monotonic(), value)

    def forget(self, key: K) -> None:
        with self._lock:
            self._values.pop(key, None)
