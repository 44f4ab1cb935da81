"""Per-key locks inside one process: serialise writes of the same item or collection between threads.

Concurrent PUTs of one item race in pgstac (spurious 404s), and a collection's extent is a
read-modify-write; threads of one publisher (the bulk chunks in flight) take these locks, and a lock shared
across processes (the ledger's) covers the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any


class KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[Any, list[Any]] = {}  # key -> [lock, users]

    @contextmanager
    def hold(self, keys: Iterable[Any]) -> Iterator[None]:
        ordered = sorted(set(keys))  # one global order: no deadlock between overlapping batches
        entries = []
        with self._mutex:
            for key in ordered:
                entry = self._locks.setdefault(key, [threading.Lock(), 0])
                entry[1] += 1
                entries.append((key, entry))
        acquired = []
        try:
            for _, entry in entries:
                entry[0].acquire()
                acquired.append(entry)
            yield
        finally:
            for entry in reversed(acquired):
                entry[0].release()
            with self._mutex:
                for key, entry in entries:
                    entry[1] -= 1
                    if entry[1] == 0:
                        self._locks.pop(key, None)
