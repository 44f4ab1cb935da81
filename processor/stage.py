"""The processor stage: one IngestRequest in, one RasterReady out.

Bad input fails fast and permanently (a refusal the intake recorded, the sidecar, then a cheap validation,
before any conversion); failures of our own (disk, a COG that does not read back) are transient.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
from collections.abc import Callable
from pathlib import Path

from stacdrop.config import CollectionSettings
from stacdrop.errors import DiskFull, InvalidSidecar, MissingSidecar, NameTooLong, permanent_error
from stacdrop.messages import IngestRequest, RasterReady
from stacdrop.sidecar import Sidecar, check_id, parse_sidecar

from processor.cogeo import check_output, convert_to_cog, is_valid_cog
from processor.fetch import fetch_source
from processor.metadata import read_raster_metadata
from processor.settings import ProcessorSettings
from processor.store import Store, store_key
from processor.validate import check_blocks_readable, validate_input
from processor.workdir import cog_prefix
from stacdrop.stac_terms import MediaType


def expected_sidecar_name(raster_key: str) -> str:
    """``a/b/NAME.tif`` -> ``a/b/NAME.json``."""
    stem, _ext = posixpath.splitext(raster_key)
    return stem + ".json"


def _remove_prefixed(folder: Path, prefix: str) -> None:
    """Remove the files in ``folder`` whose names start with ``prefix`` (a failed or moved conversion's)."""
    try:
        names = [e.name for e in os.scandir(folder) if e.name.startswith(prefix)]
    except FileNotFoundError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(folder, name))
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def conversion_threads(workers: int) -> str:
    """Several workers on few cores: single-threaded conversions beat oversubscribed threaded ones."""
    return "ALL_CPUS" if workers < (os.cpu_count() or 1) else "1"


def process_raster(
    request: IngestRequest,
    settings: ProcessorSettings,
    store: Store,
    *,
    workdir: Path,
    on_step: Callable[[str], None] = lambda _step: None,
) -> RasterReady:
    key = request.source.key
    filename = posixpath.basename(key)

    # (0) what the intake refused (a file outside the inbox, an invalid sidecar): fail at once, read nothing
    if request.refused is not None:
        raise permanent_error(request.refused.error_class, request.refused.error)

    # (1) sidecar, before any I/O on the raster
    sidecar: Sidecar | None = None
    sidecar_name = request.sidecar_name
    if request.sidecar_text is None and sidecar_name:
        # A sidecar without its text (messages of older versions for a sidecar that was not UTF-8): never
        # fall back to key-only metadata.
        raise InvalidSidecar(f"{sidecar_name}: the sidecar is not valid UTF-8 text")
    if request.sidecar_text is None:
        if not settings.collections.get(request.collection).allow_key_only:
            raise MissingSidecar(
                f"{key}: no sidecar {expected_sidecar_name(key)} next to the raster, and collection "
                f"{request.collection!r} does not allow rasters without one (allow_key_only)"
            )
    else:
        sidecar_name = sidecar_name or expected_sidecar_name(key)
        sidecar = parse_sidecar(request.sidecar_text, sidecar_name, settings.collections, request.collection)
    collection = (sidecar.collection if sidecar else None) or request.collection
    if not collection:
        raise InvalidSidecar(
            f"{key}: no collection: drop rasters into inbox/<collection-id>/, or name the collection in the sidecar"
        )
    check_id(collection, "collection", sidecar_name or key)
    coll = settings.collections.get(collection)
    cog_key = store_key(
        coll.store_key, collection=collection, filename=filename, item_id=sidecar.id if sidecar else None
    )

    workdir = Path(workdir)
    if not workdir.is_dir():
        workdir.mkdir(parents=True, exist_ok=True)
    _check_name_length(key, filename, [workdir, getattr(store, "root", None)])
    try:
        return _process(request, settings, store, workdir, on_step, key, sidecar, sidecar_name,
                        collection, coll, cog_key)
    except OSError as exc:
        # Our own file operations (temp names, the local store): classify the two that are not bugs.
        if exc.errno == errno.ENAMETOOLONG:
            raise NameTooLong(
                f"{key}: the file name is too long for the file system of the work directory or the store "
                f"({len(filename.encode())} bytes): rename it"
            ) from None
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"{key}: no space left on device ({exc.filename or workdir})") from None
        raise


# The longest suffix our own file operations add to a file name: the local store writes
# ``.<name>.<12 hex>.part`` next to the final file before the rename (19 bytes).
_NAME_RESERVE = 24


def _check_name_length(key: str, filename: str, folders: list) -> None:
    """A file name that cannot be written where we write it is the input's problem: say so at once."""
    length = len(filename.encode("utf-8", "surrogateescape"))
    for folder in folders:
        if folder is None:
            continue
        try:
            name_max = os.pathconf(folder, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
        if length + _NAME_RESERVE > name_max:
            raise NameTooLong(
                f"{key}: the file name is {length} bytes, too long for the file system of {folder} "
                f"(at most {name_max - _NAME_RESERVE} bytes here): rename the file"
            )


def _process(request: IngestRequest, settings: ProcessorSettings, store: Store, workdir: Path,
             on_step: Callable[[str], None], key: str, sidecar: Sidecar | None,
             sidecar_name: str | None, collection: str, coll: CollectionSettings, cog_key: str) -> RasterReady:
    on_step("fetch")
    with fetch_source(request.source.url, workdir, settings.access, name=key) as local:
        on_step("validate")
        validate_input(local, key, coll)

        on_step("convert")
        # A unique file name in the workdir instead of a temporary directory per file: GDAL's side files
        # (``NAME.ovr.tmp`` ...) share its prefix, and whatever is left under the prefix is removed below.
        # The prefix holds our pid, so a process that starts later can tell a dead process's leftovers from
        # a live sibling's (``processor.workdir.remove_stale``). The name does not hold the original file
        # name: a name near the file system's limit would not fit with a prefix.
        prefix = cog_prefix()
        try:
            if not coll.target_crs and is_valid_cog(local, resampling=coll.resampling):
                # No conversion reads this input: decode it all once (cheaper than a conversion).
                check_blocks_readable(local, key)
                cog_path, converted, move = local, False, False
            else:
                cog_path = os.path.join(workdir, prefix + "cog.tif")
                convert_to_cog(
                    local,
                    cog_path,
                    resampling=coll.resampling,
                    target_crs=coll.target_crs,
                    threads=conversion_threads(settings.workers),
                    name=key,
                )
                check_output(cog_path)
                converted, move = True, True

            # A remote store: read the metadata from the local COG (the same bytes) instead of over the network.
            metadata = read_raster_metadata(cog_path) if store.remote else None
            on_step("store")
            stored = store.put(Path(cog_path), cog_key, content_type=MediaType.COG, move=move)
        finally:
            _remove_prefixed(workdir, prefix)

    on_step("metadata")
    if metadata is None:
        metadata = read_raster_metadata(store.local_path_or_url(cog_key))
    return RasterReady(
        source=request.source,
        collection=collection,
        sidecar=sidecar,
        sidecar_name=sidecar_name,
        cog=stored,
        raster=metadata,
        converted=converted,
    )
