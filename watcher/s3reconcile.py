"""The S3 inbox's reconciler, pure part: a sorted listing merge-joined with the ledger's fingerprints.

Both sides are streams in binary (code point) key order: ListObjectsV2 returns keys in UTF-8 byte order,
and ``Ledger.iter_fingerprints`` reads its table in batches in the same order (``COLLATE "C"`` on
PostgreSQL, BINARY on SQLite). One pass, no per-key database round trip, memory independent of the
number of keys.

``group_siblings`` then turns the diff into pairing groups: a changed sidecar needs its (unchanged)
raster and a changed raster its (unchanged) sidecar. All keys of one stem ``S`` start with ``S.``, so
they are contiguous in the sorted listing: an entry is held only while the listing is still inside
``S.``, which keeps the window to a handful of entries whatever the bucket holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from watcher.naming import classify, stem


class Obj(NamedTuple):
    """One object of the inbox: key relative to the inbox prefix, ETag (no quotes), size.

    A named tuple, not a dataclass: a reconcile pass makes one per listed key (a million of them), and a
    tuple is built several times faster than a frozen dataclass."""

    rel: str
    etag: str
    size: int

    @property
    def fingerprint(self) -> str:
        return f"{self.etag}:{self.size}"


@dataclass(frozen=True)
class Group:
    """Objects to report: ``changed`` are new or changed; ``siblings`` are unchanged files of the same
    stem (a raster's sidecar, a sidecar's rasters) that pairing needs."""

    changed: tuple[Obj, ...]
    siblings: tuple[Obj, ...] = ()


class OrderError(RuntimeError):
    """A side of the merge-join was not sorted (a database collation that is not binary)."""


def merge_diff(
    listing: Iterable[Obj], known: Iterable[tuple[str, str]]
) -> Iterator[tuple[str, Obj | None, str]]:
    """``("new" | "changed" | "same", obj, rel)`` for each listed object and ``("gone", None, rel)`` for
    each known key no longer listed. Both inputs sorted by key; raises ``OrderError`` otherwise."""
    # The hot loop of a reconcile pass (once per key of a million): plain string comparisons on local
    # names, the fingerprint built inline, no per-key helper calls.
    known_it = iter(known)
    k_rel, k_fp = next(known_it, (None, ""))
    last_listed: str | None = None
    for obj in listing:
        rel = obj[0]
        if last_listed is not None and rel <= last_listed:
            raise OrderError(f"listing not sorted at {rel!r}")
        last_listed = rel
        while k_rel is not None and k_rel < rel:
            yield "gone", None, k_rel
            last_known = k_rel
            k_rel, k_fp = next(known_it, (None, ""))
            if k_rel is not None and k_rel <= last_known:
                raise OrderError(f"ledger fingerprints not in binary order at {k_rel!r}")
        if k_rel == rel:
            yield ("same" if k_fp == f"{obj[1]}:{obj[2]}" else "changed"), obj, rel
            k_rel, k_fp = next(known_it, (None, ""))
            if k_rel is not None and k_rel <= rel:
                raise OrderError(f"ledger fingerprints not in binary order at {k_rel!r}")
        else:
            yield "new", obj, rel
    while k_rel is not None:
        yield "gone", None, k_rel
        k_rel, k_fp = next(known_it, (None, ""))


def kind_and_stem(rel: str) -> tuple[str | None, str]:
    """``(classify(rel), stem(rel))``, fast for ordinary keys (one pass per key of a million)."""
    slash = rel.rfind("/")
    dot = rel.rfind(".")
    # An ordinary key: a dot inside the last name (not its first character), no leading "/", "." or "~",
    # no empty segment, no hidden segment. Everything else goes to watcher.naming, the one definition.
    if dot > slash + 1 and rel[0] not in "./~" and "//" not in rel and "/." not in rel and "/~" not in rel:
        ext = rel[dot:].lower()
        if ext == ".tif" or ext == ".tiff":
            return "raster", rel[:dot]
        if ext == ".json":
            # a collection.json is the collection file at depth 0 or 1
            if rel.count("/") <= 1 and rel[slash + 1:].lower() == "collection.json":
                return "collection", rel[:dot]
            return "sidecar", rel[:dot]
    if dot == -1 or dot < slash:  # no dot in the name: never an inbox file
        return None, stem(rel)
    return classify(rel), stem(rel)


def group_siblings(diff: Iterable[tuple[str, Obj | None, str]]) -> Iterator[Group | str]:
    """Groups of changed objects (with the unchanged siblings pairing needs), and the keys that are
    gone (as plain strings), from a ``merge_diff`` stream. Unclassified keys are skipped."""
    window: list[tuple[str, Obj, bool]] = []  # (stem + ".", obj, changed): rasters and sidecars of open stems

    def close(before: str | None) -> Iterator[Group]:
        keep: list[tuple[str, Obj, bool]] = []
        closing: dict[str, list[tuple[Obj, bool]]] = {}
        for prefix, obj, changed in window:
            if before is not None and before.startswith(prefix):
                keep.append((prefix, obj, changed))
            else:
                closing.setdefault(prefix, []).append((obj, changed))
        window[:] = keep
        for entries in closing.values():
            changed_objs = tuple(o for o, c in entries if c)
            if changed_objs:
                yield Group(changed_objs, tuple(o for o, c in entries if not c))

    changed_open = 0  # changed entries in the window: without any, closing is a plain filter
    for status, obj, rel in diff:
        if window:
            for entry in window:
                if not rel.startswith(entry[0]):
                    if changed_open:
                        yield from close(rel)
                        changed_open = sum(1 for e in window if e[2])
                    else:
                        window[:] = [e for e in window if rel.startswith(e[0])]
                    break
        if status == "gone":
            if classify(rel) is not None:
                yield rel
            continue
        kind, key = kind_and_stem(rel)
        if kind is None:
            continue
        if kind == "collection":
            if status != "same":
                yield Group((obj,))  # type: ignore[arg-type]
            continue
        window.append((key + ".", obj, status != "same"))  # type: ignore[arg-type]
        if status != "same":
            changed_open += 1
    if window:
        yield from close(None)
