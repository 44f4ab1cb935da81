"""Error classes shared by every stage.

The retry policy only needs to know one thing about an error: can trying again help?
``TransientError`` says yes (network, 5xx, a busy broker), ``PermanentError`` says no (bad input).
Every error carries an ``error_class``, a short stable name that operators filter dead letters by.
Messages must name the file and the reason, and must never contain secrets.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """Every error class an operator can filter jobs and dead letters by (``--error-class``,
    ``?error_class=``), with whether a retry may help and what it means. docs/errors.md is generated from
    this list (``python -m stacdrop.errors``); tests/unit/kernel/test_errors.py fails when the two differ, and when a
    raised error's class is missing here.

    An error no one foresaw (a bug) is recorded under its Python type name (``KeyError``) and retried a few
    times: that is safer than throwing work away on the first try, and the name tells a developer where to
    look.
    """

    def __new__(cls, value: str, transient: bool, meaning: str) -> ErrorClass:
        member = str.__new__(cls, value)
        member._value_ = value
        member.transient = transient
        member.meaning = meaning
        return member

    transient: bool
    meaning: str

    @classmethod
    def of(cls, value: str) -> ErrorClass:
        """The member whose text is ``value``; ValueError for a text that is not an error class."""
        for member in cls:
            if member.value == value:
                return member
        raise ValueError(f"{value!r} is not an error class")

    # Generic classes, when nothing more precise applies
    ERROR = "error", False, "an error stacdrop raised on purpose without a more precise class"
    PERMANENT = "permanent", False, "bad input or settings, no more precise class"
    TRANSIENT = "transient", True, "a passing failure, no more precise class"
    NETWORK = "network", True, "a connection refused, reset or timed out"
    RESOURCES = "resources", True, "the process ran out of memory"
    # The source: the raster, its sidecar, its URL
    INVALID_RASTER = "invalid_raster", False, "GDAL cannot read the raster, or it has no georeferencing"
    RASTER_TOO_LARGE = "raster_too_large", False, "over max_pixels_per_band, max_bands or max_output_bytes"
    SUSPICIOUS_RASTER = (
        "suspicious_raster", False, "a decompression bomb: declared size out of proportion, shared blocks"
    )
    NAME_TOO_LONG = "name_too_long", False, "a file name longer than the work directory or store allows"
    INVALID_SIDECAR = (
        "invalid_sidecar", False, "the sidecar (or submitted fields) is not valid: syntax, size, fields, values"
    )
    MISSING_SIDECAR = "missing_sidecar", False, "no sidecar arrived within sidecar_wait and allow_key_only is off"
    OUTSIDE_INBOX = "outside_inbox", False, "the file's real path leads out of the inbox (a symlink)"
    NOT_REGULAR_FILE = "not_regular_file", False, "an inbox entry that is a FIFO, a device or a socket"
    SOURCE_NOT_FOUND = "source_not_found", False, "the source URL or object does not exist (404)"
    SOURCE_FORBIDDEN = "source_forbidden", False, "the source host refused access (401/403)"
    SOURCE_TOO_LARGE = "source_too_large", False, "the source is larger than max_source_bytes"
    SOURCE_ERROR = "source_error", False, "the source host answered with an unexpected status, or too many redirects"
    SOURCE_UNAVAILABLE = (
        "source_unavailable", True, "the source host is unreachable or overloaded (uncounted for a while)"
    )
    UNSAFE_URL = "unsafe_url", False, "the URL policy refuses the source URL (scheme, host, internal address)"
    # The conversion and the store
    CONVERSION_FAILED = "conversion_failed", True, "GDAL failed while writing the COG"
    COG_CHECK_FAILED = "cog_check_failed", True, "the written file is not a valid COG"
    DISK_FULL = "disk_full", True, "no space left in the work directory or the store"
    STORE = "store", True, "the COG store failed (S3 5xx, a file system error)"
    STORE_ACCESS_DENIED = (
        "store_access_denied", True, "the S3 store refused the credentials or the bucket policy denies"
    )
    STORE_NO_BUCKET = "store_no_bucket", True, "the S3 store's bucket does not exist"
    STORE_CHECKSUM = "store_checksum", True, "the stored COG's size or checksum differs from what was sent"
    INVALID_STORE_KEY = "invalid_store_key", False, "the store_key template makes a key the store cannot hold"
    CLAIMED_ELSEWHERE = "claimed_elsewhere", True, "another live worker is converting this job (uncounted)"
    # The item and the catalog
    INVALID_ITEM = "invalid_item", False, "the derived item is not valid STAC"
    INVALID_COLLECTION = "invalid_collection", False, "a collection.json that is not a valid STAC collection"
    UNKNOWN_COLLECTION = (
        "unknown_collection", False, "the item's collection does not exist and create_if_missing is off"
    )
    DUPLICATE_ITEM = "duplicate_item", False, "the item exists and duplicate_policy is error"
    CATALOG_UNAVAILABLE = "catalog_unavailable", True, "the STAC API is down or answered 5xx"
    CATALOG_MISMATCH = "catalog_mismatch", True, "the STAC API's copy differs from what was written (read-back check)"
    CATALOG_AUTH = "catalog_auth", False, "the STAC API refused the token (401/403)"
    CATALOG_REJECTED = "catalog_rejected", False, "the STAC API refused the item with a 4xx"
    # Settings and operations
    CONFIG = "config", False, "the settings are invalid"
    MISSING_CREDENTIALS = "missing_credentials", False, "S3 is needed but no credentials are configured"
    UNKNOWN_JOB = "unknown_job", False, "a message whose job is not in the ledger"
    BACKUP = "backup", False, "stacdrop backup or restore failed"



class StacdropError(Exception):
    """Base of every error stacdrop raises on purpose."""

    error_class = ErrorClass.ERROR
    transient = False
    # The dependency whose outage this error can mean ("stac_api", "store"), or None. The runtime probes a
    # named dependency before it counts the attempt: an outage is not the job's fault (stacdrop/runtime.py).
    dependency: str | None = None
    # False for a failure the job does not cause (another worker holds it, its source host is down): the
    # runtime puts the message back without spending one of the job's attempts, after ``retry_in`` seconds
    # or, when None, with the policy's backoff. ``outage_bounded``: the cause may never end (a host gone for
    # good), so the uncounted run is limited to RetryPolicy.outage_patience and counted after that.
    counts_attempt = True
    retry_in: float | None = None
    outage_bounded = False

    def __init__(self, message: str, *, error_class: ErrorClass | None = None) -> None:
        super().__init__(message)
        if error_class is not None:
            self.error_class = ErrorClass.of(error_class)

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(StacdropError):
    """Trying again cannot help: the input, the sidecar or the settings are wrong."""

    error_class = ErrorClass.PERMANENT
    transient = False


class TransientError(StacdropError):
    """Trying again later may help: a network hiccup, a 5xx, a restarting server."""

    error_class = ErrorClass.TRANSIENT
    transient = True


class InvalidRaster(PermanentError):
    error_class = ErrorClass.INVALID_RASTER


class RasterTooLarge(PermanentError):
    """Over a resource limit (pixels per band, bands, estimated output size) that a setting can raise."""

    error_class = ErrorClass.RASTER_TOO_LARGE


class SuspiciousRaster(PermanentError):
    """A file whose declared size is out of all proportion to its bytes (a decompression bomb)."""

    error_class = ErrorClass.SUSPICIOUS_RASTER


class NameTooLong(PermanentError):
    """A file name longer than the work directory's or the store's file system allows."""

    error_class = ErrorClass.NAME_TOO_LONG


class DiskFull(TransientError):
    """No space left on the device of the work directory or the store: retrying after cleanup may help."""

    error_class = ErrorClass.DISK_FULL


class InvalidSidecar(PermanentError):
    """A sidecar (or an HTTP submission's fields) that is not a valid sidecar: syntax, depth, size, encoding,
    values JSON cannot carry, unknown fields, bad ids or datetimes. The message never holds its content."""

    error_class = ErrorClass.INVALID_SIDECAR


class OutsideInbox(PermanentError):
    """A raster or sidecar whose real path leads out of the inbox (a symlink, or a symlinked folder)."""

    error_class = ErrorClass.OUTSIDE_INBOX


class NotRegularFile(PermanentError):
    """An inbox entry that is not a regular file (a FIFO, a device): reading it could block or never end."""

    error_class = ErrorClass.NOT_REGULAR_FILE


class MissingSidecar(PermanentError):
    error_class = ErrorClass.MISSING_SIDECAR


class InvalidItem(PermanentError):
    error_class = ErrorClass.INVALID_ITEM


class UnknownCollection(PermanentError):
    error_class = ErrorClass.UNKNOWN_COLLECTION


class DuplicateItem(PermanentError):
    error_class = ErrorClass.DUPLICATE_ITEM


class SourceNotFound(PermanentError):
    error_class = ErrorClass.SOURCE_NOT_FOUND


class UnsafeURL(PermanentError):
    """A source URL the URL policy refuses (stacdrop/urls.py): scheme, ambiguous authority, a host off
    ``allowed_hosts``, an internal address; at any redirect hop. The message is redacted (no user info, no
    query string)."""

    error_class = ErrorClass.UNSAFE_URL


class TooManyRedirects(PermanentError):
    error_class = ErrorClass.SOURCE_ERROR


class HostUnreachable(TransientError):
    """No checked address of a source host accepted the connection, or it did not answer in time."""

    error_class = ErrorClass.SOURCE_UNAVAILABLE

    def __init__(self, message: str, *, reason: str = "", error_class: ErrorClass | None = None) -> None:
        super().__init__(message, error_class=error_class)
        self.reason = reason or message  # without the URL, for a caller that names it itself


class ConfigError(PermanentError):
    error_class = ErrorClass.CONFIG


class MissingCredentials(ConfigError):
    """A backend needs credentials that no setting provides (S3 without a key pair)."""

    error_class = ErrorClass.MISSING_CREDENTIALS


class StoreError(TransientError):
    error_class = ErrorClass.STORE
    dependency = "store"


class ClaimedElsewhere(TransientError):
    """Another live worker is converting this job (its claim's heartbeat is fresh): try again later,
    uncounted, and find the job done, or the claim stale and free to take over."""

    error_class = ErrorClass.CLAIMED_ELSEWHERE
    counts_attempt = False
    retry_in = 15.0


class CatalogUnavailable(TransientError):
    error_class = ErrorClass.CATALOG_UNAVAILABLE
    dependency = "stac_api"


def permanent_error(error_class: str, message: str) -> PermanentError:
    """The permanent error of this class (a refusal recorded on a message, raised again by the stage)."""
    for cls in (InvalidSidecar, OutsideInbox, NotRegularFile, MissingSidecar, InvalidRaster):
        if cls.error_class == error_class:
            return cls(message)
    known = error_class in ErrorClass.__members__.values()
    return PermanentError(message, error_class=ErrorClass.of(error_class) if known else ErrorClass.PERMANENT)


def classify(exc: BaseException) -> tuple[str, bool]:
    """Return ``(error_class, transient)`` for any exception.

    Unknown exceptions count as transient: a bug or an unforeseen outage is retried a few times and then
    dead-lettered with its type name, which is safer than throwing the work away on the first try.
    """
    if isinstance(exc, StacdropError):
        return str(exc.error_class), exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return ErrorClass.NETWORK.value, True
    if isinstance(exc, MemoryError):
        return ErrorClass.RESOURCES.value, True
    return type(exc).__name__, True


def error_classes_markdown() -> str:
    """docs/errors.md: the table of every error class, generated from ``ErrorClass``."""
    lines = [
        "# Error classes",
        "",
        "<!-- generated by `python -m stacdrop.errors > docs/errors.md`: edit stacdrop/errors.py, not this file -->",
        "",
        "Every failed job and dead letter carries one of these classes. Filter by it with",
        "`stacdrop jobs --error-class X`, `stacdrop dlq list --error-class X`, `GET /jobs?error_class=X` and",
        "`GET /dead-letters?error_class=X`. A *transient* class is retried with backoff (`max_retries`); a",
        "permanent one dead-letters at once: fix the input and drop it again, or fix the settings and",
        "`stacdrop dlq replay`. An error no one foresaw (a bug) is recorded under its Python type name",
        "(`KeyError`) and retried like a transient one.",
        "",
        "| class | retried | meaning |",
        "|---|---|---|",
    ]
    for member in ErrorClass:
        lines.append(f"| `{member.value}` | {'yes' if member.transient else 'no'} | {member.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(error_classes_markdown(), end="")
