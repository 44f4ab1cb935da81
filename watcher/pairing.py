"""Pairing rasters with their sidecars, independent of the file system and of any clock.

The caller reports files that are fully written (``file_ready``) and files that went away
(``file_gone``), and asks ``due(now)`` for what to submit:

* a raster is emitted with its sidecar as soon as both are ready, in either arrival order;
* a raster without a sidecar is emitted alone once ``sidecar_wait`` seconds have passed since it was
  ready (the processor decides whether key-only items are allowed, and fails the job otherwise);
* a sidecar without a raster waits for it, however long;
* a sidecar (re)written after its raster was emitted re-emits the pair (the intake drops unchanged content);
* a raster (re)written after emission is emitted again, paired or after a new wait;
* a raster that goes away before emission is forgotten;
* a collection file is emitted when ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from watcher.naming import classify, stem


@dataclass(frozen=True)
class EmitRaster:
    raster: str
    sidecar: str | None


@dataclass(frozen=True)
class EmitCollection:
    rel: str


Action = EmitRaster | EmitCollection


class Pairer:
    def __init__(self, sidecar_wait: float) -> None:
        self.sidecar_wait = max(0.0, float(sidecar_wait))
        self._pending: dict[str, float] = {}  # raster key -> when to stop waiting for its sidecar
        self._emitted: set[str] = set()  # raster keys emitted since they were last ready
        self._by_stem: dict[str, set[str]] = {}  # stem -> raster keys (pending or emitted)
        self._sidecars: dict[str, str] = {}  # stem -> sidecar key
        self._collections: list[str] = []

    def file_ready(self, rel_path: str, now: float) -> None:
        """A file is complete (new or rewritten)."""
        kind = classify(rel_path)
        if kind == "raster":
            self._emitted.discard(rel_path)
            self._pending[rel_path] = now + self.sidecar_wait
            self._by_stem.setdefault(stem(rel_path), set()).add(rel_path)
        elif kind == "sidecar":
            key = stem(rel_path)
            self._sidecars[key] = rel_path
            for raster in self._by_stem.get(key, ()):
                if raster in self._emitted:  # re-emit with the new sidecar
                    self._emitted.discard(raster)
                    self._pending[raster] = now
        elif kind == "collection" and rel_path not in self._collections:
            self._collections.append(rel_path)

    def file_gone(self, rel_path: str) -> None:
        """A file was deleted or moved away. Nothing already emitted is retracted."""
        kind = classify(rel_path)
        if kind == "raster":
            self._pending.pop(rel_path, None)
            self._emitted.discard(rel_path)
            key = stem(rel_path)
            rasters = self._by_stem.get(key)
            if rasters is not None:
                rasters.discard(rel_path)
                if not rasters:
                    del self._by_stem[key]
        elif kind == "sidecar":
            key = stem(rel_path)
            if self._sidecars.get(key) == rel_path:
                del self._sidecars[key]
        elif kind == "collection" and rel_path in self._collections:
            self._collections.remove(rel_path)

    def due(self, now: float) -> list[Action]:
        """What to submit now. Each action is returned once."""
        actions: list[Action] = [EmitCollection(rel) for rel in self._collections]
        self._collections.clear()
        for raster, deadline in list(self._pending.items()):
            sidecar = self._sidecars.get(stem(raster))
            if sidecar is not None or now >= deadline:
                del self._pending[raster]
                self._emitted.add(raster)
                actions.append(EmitRaster(raster, sidecar))
        return actions

    def next_deadline(self) -> float | None:
        """The earliest time ``due`` may return something new without any new file event."""
        if self._collections:
            return float("-inf")
        return min(self._pending.values()) if self._pending else None

    # -- for inboxes that cannot keep every file in memory (S3: a million keys) ------------------------
    def sidecar_of(self, raster: str) -> str | None:
        """The sidecar known for a raster's stem."""
        return self._sidecars.get(stem(raster))

    def tracks(self, rel_path: str) -> bool:
        """Whether this file is known: a raster pending or emitted, a sidecar, a collection file waiting."""
        kind = classify(rel_path)
        if kind == "raster":
            return rel_path in self._pending or rel_path in self._emitted
        if kind == "sidecar":
            return self._sidecars.get(stem(rel_path)) == rel_path
        return rel_path in self._collections

    def has_pending_raster(self, sidecar: str) -> bool:
        """Whether a raster of this sidecar's stem waits to be emitted."""
        return any(r in self._pending for r in self._by_stem.get(stem(sidecar), ()))

    def release(self, raster: str) -> list[str]:
        """Forget an emitted raster (unless it became pending again) and, when no raster of its stem is
        left, its sidecar. The caller must then look the other file up itself when either changes (the
        S3 inbox lists the stem's siblings). Returns the keys forgotten."""
        if raster in self._pending or raster not in self._emitted:
            return []
        self.file_gone(raster)
        gone = [raster]
        key = stem(raster)
        if key not in self._by_stem and key in self._sidecars:
            gone.append(self._sidecars.pop(key))
        return gone

    def waiting_sidecars(self) -> list[str]:
        """Sidecars with no raster known (for diagnostics)."""
        return sorted(rel for key, rel in self._sidecars.items() if key not in self._by_stem)
