"""Where COGs are kept. Keys are '/'-separated paths under the store root.

``put`` is atomic: the final name appears only when the object is complete (a temp name in the same
directory, fsync, ``os.replace``). It returns the size and the sha256 of what was stored.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import string
import threading
import uuid
from abc import ABC, abstractmethod
from pathlib import Path

from processor.errors import InvalidStoreKey
from stacdrop.errors import ConfigError, StoreError
from stacdrop.messages import StoredObject
from stacdrop.stac_terms import MediaType

_CHUNK = 4 << 20
_OVERLAP_MIN = 16 << 20  # below this, fsync then hash in the calling thread


class Store(ABC):
    remote = False  # True: the stage reads metadata from the local COG before the upload

    @abstractmethod
    def put(self, local_path: Path, key: str, *, content_type: str, move: bool = False) -> StoredObject:
        """Store ``local_path`` under ``key``, atomically; returns href, key, size and sha256.

        ``move=True`` hands the file over: the store may move it in (the caller must not use it after).
        ``move=False`` (default) never touches ``local_path``.
        """

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; no error when it is absent."""

    @abstractmethod
    def href(self, key: str) -> str:
        """What a STAC asset points at."""

    @abstractmethod
    def local_path_or_url(self, key: str) -> str:
        """What rasterio opens to read ``key``."""


def check_key(key: str) -> str:
    """Refuse keys that are absolute or escape the store root; returns the key."""
    if not isinstance(key, str) or not key:
        raise InvalidStoreKey(f"store key {key!r}: empty")
    if "\\" in key or "\x00" in key or any(ord(c) < 32 for c in key):
        raise InvalidStoreKey(f"store key {key!r}: contains a backslash or control characters")
    if key.startswith("/") or "://" in key or (len(key) > 1 and key[1] == ":"):
        raise InvalidStoreKey(f"store key {key!r}: must be relative to the store root")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidStoreKey(f"store key {key!r}: empty, '.' or '..' path segments are not allowed")
    return key


def store_key(template: str, *, collection: str, filename: str, item_id: str | None) -> str:
    """Render a store key template.

    Fields: ``{collection}``, ``{filename}`` (the original name, extension kept), ``{stem}``, ``{ext}``
    (with its dot), ``{id}``/``{item_id}`` (the sidecar id, else the file stem). The result must stay
    under the store root (no absolute path, no '..'): ``InvalidStoreKey`` (permanent) otherwise.
    """
    filename = posixpath.basename(filename.replace("\\", "/"))
    stem, ext = posixpath.splitext(filename)
    fields = {
        "collection": collection,
        "filename": filename,
        "stem": stem,
        "ext": ext,
        "id": item_id or stem,
        "item_id": item_id or stem,
    }
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"store_key template {template!r}: {exc}") from None
    unknown = names - fields.keys()
    if unknown:
        raise ConfigError(f"store_key template {template!r}: unknown field(s) {', '.join(sorted(unknown))}")
    key = template.format(**fields)
    try:
        return check_key(key)
    except InvalidStoreKey as exc:
        raise InvalidStoreKey(f"{filename}: {exc} (template {template!r})") from None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class LocalStore(Store):
    """A directory. href = absolute file path, or ``public_url.format(key=key)`` when set."""

    def __init__(self, root: str | os.PathLike[str], *, public_url: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.public_url = public_url

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self.root.joinpath(*key.split("/"))
        if not path.resolve().is_relative_to(self.root):  # a symlink inside the store pointing out
            raise InvalidStoreKey(f"store key {key!r}: resolves outside the store root")
        return path

    def href(self, key: str) -> str:
        if self.public_url:
            return self.public_url.format(key=key)
        return str(self._path(key))

    def local_path_or_url(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"{key}: cannot delete from the store: {exc.strerror}") from None  # noqa: S608 - a message, not SQL

    def put(self, local_path: Path, key: str, *, content_type: str = MediaType.COG, move: bool = False) -> StoredObject:
        final = self._path(key)
        local_path = Path(local_path)
        tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.part"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if move and os.stat(local_path).st_dev == os.stat(final.parent).st_dev:
                size, digest = self._move_in(local_path, final)
            else:
                size, digest = self._copy_in(local_path, tmp, final)
        except FileNotFoundError as exc:
            _unlink(tmp)
            if not local_path.exists():
                raise StoreError(f"{key}: the local file {local_path} is gone") from None
            raise StoreError(f"{key}: cannot store: {exc}") from None
        except OSError as exc:
            _unlink(tmp)
            raise StoreError(f"{key}: cannot store in {self.root}: {exc.strerror or exc}") from None
        _fsync_dir(final.parent)
        return StoredObject(href=self.href(key), key=key, size=size, sha256=digest, media_type=content_type)

    @staticmethod
    def _move_in(local_path: Path, final: Path) -> tuple[int, str]:
        size = os.path.getsize(local_path)
        if size <= _OVERLAP_MIN:
            # Small file: a thread would cost more than the overlap saves.
            with open(local_path, "rb+") as f:
                os.fsync(f.fileno())
            digest = sha256_file(local_path)
            os.replace(local_path, final)
            return size, digest
        # Hash (CPU, from the page cache) while fsync flushes (I/O): both release the GIL.
        errors: list[BaseException] = []

        def flush() -> None:
            try:
                with open(local_path, "rb+") as f:
                    os.fsync(f.fileno())
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        flusher = threading.Thread(target=flush, name="store-fsync")
        flusher.start()
        try:
            digest = sha256_file(local_path)
        finally:
            flusher.join()
        if errors:
            raise errors[0]
        os.replace(local_path, final)  # atomic on one filesystem; the file is complete and flushed
        return size, digest

    @staticmethod
    def _copy_in(local_path: Path, tmp: Path, final: Path) -> tuple[int, str]:
        h = hashlib.sha256()
        size = 0
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        with open(local_path, "rb", buffering=0) as src, open(tmp, "wb", buffering=0) as dst:
            while n := src.readinto(buf):
                h.update(view[:n])
                written = 0
                while written < n:
                    written += dst.write(view[written:n])
                size += n
            os.fsync(dst.fileno())
        os.replace(tmp, final)
        return size, h.hexdigest()


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
