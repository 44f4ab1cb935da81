"""Every error the processor stage raises of its own, in one place.

The errors the stages share (InvalidRaster, SourceNotFound, DiskFull, StoreError, ...) live in the kernel
(``stacdrop.errors``); the ones here are the processor's: how a fetch, a conversion, the output check or a
store key fails. Each names its ``ErrorClass`` member, so the ledger, the dead letters and docs/errors.md
speak of it by the same name. ``TiffStructureError`` is the TIFF reader's own (processor/tiff.py): the
callers turn it into an ``InvalidRaster`` or an ``OutputCheckFailed``, so it never reaches the ledger.
"""

from __future__ import annotations

from stacdrop.errors import ErrorClass, PermanentError, TransientError

__all__ = [
    "ConversionFailed", "InvalidStoreKey", "OutputCheckFailed", "SourceForbidden", "SourceTooLarge",
    "SourceUnavailable", "TiffStructureError",
]


# -- fetching the source (processor/fetch.py) ---------------------------------------------------------
class SourceForbidden(PermanentError):
    error_class = ErrorClass.SOURCE_FORBIDDEN


class SourceTooLarge(PermanentError):
    error_class = ErrorClass.SOURCE_TOO_LARGE


class SourceUnavailable(TransientError):
    """The source host (or S3 endpoint) did not serve the file after a few quick tries. When it did not
    answer at all, or said it is overloaded or down (502/503/504, 429, SlowDown), that is an outage of the
    host, not the job's fault: the runtime waits for it without spending attempts (stacdrop/runtime.py)."""

    error_class = ErrorClass.SOURCE_UNAVAILABLE
    outage_bounded = True

    def __init__(self, message: str, *, outage: bool = False) -> None:
        super().__init__(message)
        self.counts_attempt = not outage


# -- reading the TIFF structure (processor/tiff.py) -----------------------------------------------------
class TiffStructureError(Exception):
    """The TIFF directory structure is broken or points past the end of the file."""


# -- converting and checking the COG (processor/cogeo.py) ----------------------------------------------
class ConversionFailed(TransientError):
    """The conversion failed although the input reads: our bug, the disk, memory. Retrying may help."""

    error_class = ErrorClass.CONVERSION_FAILED


class OutputCheckFailed(TransientError):
    """The COG we wrote does not validate or read back: our bug or the disk, never the input's fault."""

    error_class = ErrorClass.COG_CHECK_FAILED


# -- storing it (processor/store.py) -------------------------------------------------------------------
class InvalidStoreKey(PermanentError):
    error_class = ErrorClass.INVALID_STORE_KEY
