"""The TIFF structure of a file, read from its header and IFDs with ``struct`` (no pixel is decoded).

Every IFD and every strip/tile (offset + byte count) must lie inside the file: that is what catches a
truncated upload without reading the pixels. The layout also feeds the resource limits (blocks shared by
many tiles, the stored-to-declared ratio: processor/limits.py) and the COG check's tiling judgement
(processor/cogeo.py), which read it from the file's own tags.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from processor.errors import TiffStructureError

# TIFF tags
_STRIP_OFFSETS, _STRIP_BYTE_COUNTS = 273, 279
_TILE_OFFSETS, _TILE_BYTE_COUNTS = 324, 325
_COMPRESSION, _PREDICTOR, _SUBFILE_TYPE = 259, 317, 254
_WIDTH, _LENGTH, _BITS, _SAMPLES = 256, 257, 258, 277
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_INT_DTYPES = {1: "u1", 3: "u2", 4: "u4", 13: "u4", 16: "u8", 18: "u8"}
_MAX_IFDS = 4096


@dataclass
class TiffIfd:
    offset: int
    tiled: bool
    blocks: int
    compression: int | None
    predictor: int | None
    subfile_type: int
    data_end: int = 0  # end of the last strip/tile
    width: int = 0
    height: int = 0
    samples: int = 1
    bits: int = 0  # BitsPerSample of the first sample (0 when the tag is missing)
    present_blocks: int = 0  # blocks with a byte count > 0 (sparse blocks excluded)
    stored_bytes: int = 0  # sum of the byte counts of the present blocks
    shared_blocks: int = 0  # present blocks whose offset another present block also uses

    @property
    def declared_bytes(self) -> int:
        """Uncompressed size of the present blocks (sparse blocks decode to nodata without bytes)."""
        if not self.blocks:
            return 0
        full = self.width * self.height * self.samples * max(self.bits, 1) // 8
        return full * self.present_blocks // self.blocks


@dataclass
class TiffLayout:
    size: int
    bigtiff: bool
    ifds: list[TiffIfd] = field(default_factory=list)


def tiff_layout(path: str | os.PathLike[str], size: int | None = None) -> TiffLayout:
    """Walk the IFD chain of a (Big)TIFF and check every strip/tile lies inside the file.

    Reads only the headers and the offset/byte-count arrays (a few kB to a few hundred kB for a huge
    striped file). Raises ``TiffStructureError`` with the reason.
    """
    if size is None:
        size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) < 8:
            raise TiffStructureError(f"file too short for a TIFF header ({size} bytes)")
        if head[:2] == b"II":
            end = "<"
        elif head[:2] == b"MM":
            end = ">"
        else:
            raise TiffStructureError("no TIFF byte-order mark")
        (magic,) = struct.unpack(end + "H", head[2:4])
        if magic == 42:
            bigtiff = False
            (next_ifd,) = struct.unpack(end + "I", head[4:8])
            count_fmt, count_len, entry_len, off_fmt, inline = "H", 2, 12, "I", 4
        elif magic == 43:
            bigtiff = True
            if len(head) < 16:
                raise TiffStructureError("file too short for a BigTIFF header")
            (next_ifd,) = struct.unpack(end + "Q", head[8:16])
            count_fmt, count_len, entry_len, off_fmt, inline = "Q", 8, 20, "Q", 8
        else:
            raise TiffStructureError(f"bad TIFF magic number {magic}")
        entry_fmt = end + "HH" + ("Q" if bigtiff else "I") + str(inline) + "s"
        layout = TiffLayout(size=size, bigtiff=bigtiff)
        seen: set[int] = set()

        def read_at(offset: int, length: int, what: str) -> bytes:
            if offset < 0 or offset + length > size:
                raise TiffStructureError(
                    f"{what} at bytes {offset}..{offset + length} lies beyond the end of the file ({size} bytes)"
                )
            f.seek(offset)
            data = f.read(length)
            if len(data) != length:
                raise TiffStructureError(f"short read of {what} at byte {offset}")
            return data

        def values(ftype: int, count: int, raw: bytes, what: str) -> np.ndarray:
            if ftype not in _INT_DTYPES:
                raise TiffStructureError(f"{what} has unexpected TIFF type {ftype}")
            width = _TYPE_SIZES[ftype]
            nbytes = width * count
            if nbytes <= inline:
                buf = raw[:nbytes]
            else:
                (pointer,) = struct.unpack(end + off_fmt, raw[: struct.calcsize(off_fmt)])
                buf = read_at(pointer, nbytes, what)
            return np.frombuffer(buf, dtype=end + _INT_DTYPES[ftype], count=count).astype(np.uint64)

        while next_ifd:
            if next_ifd in seen:
                raise TiffStructureError(f"IFD chain loops at byte {next_ifd}")
            if len(seen) >= _MAX_IFDS:
                raise TiffStructureError(f"more than {_MAX_IFDS} IFDs")
            seen.add(next_ifd)
            ifd_off = next_ifd
            (n,) = struct.unpack(end + count_fmt, read_at(ifd_off, count_len, "IFD"))
            body = read_at(ifd_off + count_len, n * entry_len + (8 if bigtiff else 4), "IFD entries")
            entries: dict[int, tuple[int, int, bytes]] = {}
            for i in range(n):
                tag, ftype, count, raw = struct.unpack(entry_fmt, body[i * entry_len : (i + 1) * entry_len])
                entries[tag] = (ftype, count, raw)
            (next_ifd,) = struct.unpack(end + off_fmt, body[n * entry_len :])

            def scalar(tag: int, entries: dict[int, tuple[int, int, bytes]] = entries) -> int | None:
                if tag not in entries:
                    return None
                ftype, count, raw = entries[tag]
                if ftype not in _INT_DTYPES or count < 1:
                    return None
                if _TYPE_SIZES[ftype] * count > inline:  # e.g. BitsPerSample of many bands: an array elsewhere
                    return int(values(ftype, count, raw, f"tag {tag}")[0])
                return int(np.frombuffer(raw, dtype=end + _INT_DTYPES[ftype], count=1)[0])

            tiled = _TILE_OFFSETS in entries
            off_tag, cnt_tag = (_TILE_OFFSETS, _TILE_BYTE_COUNTS) if tiled else (_STRIP_OFFSETS, _STRIP_BYTE_COUNTS)
            if off_tag not in entries or cnt_tag not in entries:
                raise TiffStructureError(f"IFD at byte {ifd_off} has no strip/tile offsets")
            oft, ocount, oraw = entries[off_tag]
            cft, ccount, craw = entries[cnt_tag]
            if ocount != ccount:
                raise TiffStructureError(f"{ocount} block offsets but {ccount} byte counts")
            offsets = values(oft, ocount, oraw, "block offsets")
            counts = values(cft, ccount, craw, "block byte counts")
            present = counts > 0  # sparse files: offset 0 / count 0 for blocks never written
            present_offsets = offsets[present]
            shared = int(present_offsets.size - np.unique(present_offsets).size)
            data_end = int((offsets[present] + counts[present]).max()) if present.any() else 0
            if data_end > size:
                missing = int(np.count_nonzero(present & (offsets + counts > size)))
                raise TiffStructureError(
                    f"{missing} of {ocount} {'tiles' if tiled else 'strips'} end beyond the end of the file "
                    f"(data needs {data_end} bytes, the file has {size})"
                )
            layout.ifds.append(
                TiffIfd(
                    offset=ifd_off,
                    tiled=tiled,
                    blocks=ocount,
                    compression=scalar(_COMPRESSION),
                    predictor=scalar(_PREDICTOR),
                    subfile_type=scalar(_SUBFILE_TYPE) or 0,
                    data_end=data_end,
                    width=scalar(_WIDTH) or 0,
                    height=scalar(_LENGTH) or 0,
                    samples=scalar(_SAMPLES) or 1,
                    bits=scalar(_BITS) or 0,
                    present_blocks=int(np.count_nonzero(present)),
                    stored_bytes=int(counts[present].sum()),
                    shared_blocks=shared,
                )
            )
        if not layout.ifds:
            raise TiffStructureError("no image directory (IFD)")
        return layout
