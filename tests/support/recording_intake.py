"""A recorder in place of the intake for the inbox tests (local and S3): the watcher's part ends at the intake
call, so these tests check which calls it made, with what, and how often (and they can make one fail)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stacdrop.messages import Refusal, Source
from stacdrop.sidecar import SidecarDocument


@dataclass
class RecordingIntake:
    """A small stand-in for stacdrop.intake.Intake: records calls, dedups, remembers fingerprints."""

    rasters: list[dict[str, Any]] = field(default_factory=list)
    collections: list[dict[str, Any]] = field(default_factory=list)
    removals: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)
    fail_keys: set[str] = field(default_factory=set)
    seen: set[tuple[Any, ...]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit_raster(self, *, source: Source, collection: str, sidecar: SidecarDocument | None, origin: str,
                      priority: int, refused: Refusal | None = None) -> tuple[str, bool]:
        if source.key in self.fail_keys:
            self.fail_keys.discard(source.key)
            raise RuntimeError("intake exploded")
        with self.lock:
            self.rasters.append(dict(source=source, collection=collection,
                                     sidecar_text=sidecar.text if sidecar else None,
                                     sidecar_name=sidecar.name if sidecar else None,
                                     sidecar_error=sidecar.error if sidecar else None,
                                     refused=refused, origin=origin, priority=priority))
            dedup = (source.key, source.content_key, sidecar.sha256 if sidecar else None)
            if dedup in self.seen:
                return "job-earlier", False
            self.seen.add(dedup)
            return f"job-{len(self.rasters)}", True

    def submit_collection(self, *, source: Source, collection: str, text: str, origin: str) -> str | None:
        with self.lock:
            self.collections.append(dict(source=source, collection=collection, text=text, origin=origin))
            return f"col-{len(self.collections)}"

    def fingerprint(self, key: str) -> str | None:
        with self.lock:
            return self.fingerprints.get(key)

    def remember_fingerprint(self, key: str, fingerprint: str) -> None:
        with self.lock:
            self.fingerprints[key] = fingerprint

    def forget_fingerprint(self, key: str) -> None:
        with self.lock:
            self.fingerprints.pop(key, None)

    def iter_fingerprints(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        """The remembered fingerprints under ``prefix`` in key order (what the S3 inbox's reconciler reads)."""
        with self.lock:
            items = sorted((k, v) for k, v in self.fingerprints.items() if k.startswith(prefix))
        yield from items

    def submit_removal(self, *, url: str, key: str, collection: str, origin: str) -> str | None:
        with self.lock:
            self.removals.append(dict(url=url, key=key, collection=collection, origin=origin))
            return f"removal-{len(self.removals)}"

    def keys(self) -> list[str]:
        with self.lock:
            return [r["source"].key for r in self.rasters]
