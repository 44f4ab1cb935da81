"""Resource limits on an input raster, checked from its headers before any conversion work.

Each limit is a ``CollectionSettings`` field (default there, override per collection) and each refusal
is permanent and names the limit and the setting that raises it. What they guard against:

- ``max_pixels_per_band`` / ``max_bands``: a small file declaring a huge raster (the sparse
  200000 x 200000 TIFF of 1.2 MB that held the worker for 7.5 minutes, 5000 bands of 1 x 1);
- ``max_output_bytes``: the COG we would write (uncompressed size x 1.34 for the overviews: the worst case
  of incompressible data) filling the store or the work directory;
- decompression bombs: blocks that share bytes (every tile pointing at one incompressible tile becomes
  a COG of the declared size) and, for DEFLATE, a declared/stored ratio beyond what the codec can reach
  (~1032:1 for its longest matches). Sparse blocks (offset 0 / byte count 0) decode to nodata without
  bytes and are legitimate: they count neither as shared nor in the ratio.
"""

from __future__ import annotations

from typing import Protocol

from stacdrop.errors import RasterTooLarge, SuspiciousRaster

from processor.tiff import TiffLayout

OVERVIEW_FACTOR = 1.34  # a full pyramid of /2 overviews adds 1/3 of the full resolution
_DEFLATE = (8, 32946)


class Limits(Protocol):
    max_pixels_per_band: int
    max_bands: int
    max_output_bytes: int
    max_compression_ratio: float
    allow_shared_blocks: bool


def check_limits(name: str, layout: TiffLayout, *, width: int, height: int, count: int, itemsize: int,
                 limits: Limits) -> None:
    """Raise ``RasterTooLarge`` or ``SuspiciousRaster`` naming ``name``, the limit and its setting."""
    pixels = width * height
    if pixels > limits.max_pixels_per_band:
        raise RasterTooLarge(
            f"{name}: {width} x {height} = {pixels} pixels per band is over the limit of "
            f"{limits.max_pixels_per_band} (collection setting max_pixels_per_band)"
        )
    if count > limits.max_bands:
        raise RasterTooLarge(
            f"{name}: {count} bands is over the limit of {limits.max_bands} (collection setting max_bands)"
        )
    estimate = int(pixels * count * itemsize * OVERVIEW_FACTOR)
    if estimate > limits.max_output_bytes:
        raise RasterTooLarge(
            f"{name}: the COG would take up to {estimate} bytes ({width} x {height} x {count} bands x {itemsize} "
            f"bytes x {OVERVIEW_FACTOR} for overviews), over the limit of {limits.max_output_bytes} "
            "(collection setting max_output_bytes)"
        )
    for ifd in layout.ifds:
        if ifd.shared_blocks and not limits.allow_shared_blocks:
            raise SuspiciousRaster(
                f"{name}: {ifd.shared_blocks} of {ifd.present_blocks} {'tiles' if ifd.tiled else 'strips'} point at "
                "bytes that another block already uses (a decompression bomb's trick); refused before conversion "
                "(collection setting allow_shared_blocks accepts such files)"
            )
        if ifd.compression in _DEFLATE and ifd.stored_bytes:
            ratio = ifd.declared_bytes / ifd.stored_bytes
            if ratio > limits.max_compression_ratio:
                raise SuspiciousRaster(
                    f"{name}: declares {ifd.declared_bytes} uncompressed bytes in {ifd.stored_bytes} DEFLATE bytes "
                    f"(ratio {ratio:.0f}, DEFLATE cannot reach more than ~1032); refused before conversion "
                    f"(collection setting max_compression_ratio, now {limits.max_compression_ratio:g})"
                )
