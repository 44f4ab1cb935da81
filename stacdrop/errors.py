"""Error classes shared by every stage.

The retry policy only needs to know one thing about an error: can trying again help?
``TransientError`` says yes (network, 5xx, a busy broker), ``PermanentError`` says no (bad input).
Every error carries an ``error_class``, a short stable name that operators filter dead letters by.
Messages must name the file and the reason, and must never contain secrets.
"""

from __future__ import annotations


class StacdropError(Exception):
    """Base of every error stacdrop raises on purpose."""

    error_class = "error"
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

    def __init__(self, message: str, *, error_class: str | None = None) -> None:
        super().__init__(message)
        if error_class is not None:
            self.error_class = error_class

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(StacdropError):
    """Trying again cannot help: the input, the sidecar or the settings are wrong."""

    error_class = "permanent"
    transient = False


class TransientError(StacdropError):
    """Trying again later may help: a network hiccup, a 5xx, a restarting server."""

    error_class = "transient"
    transient = True


class InvalidRaster(PermanentError):
    error_class = "invalid_raster"


class RasterTooLarge(PermanentError):
    """Over a resource limit (pixels per band, bands, estimated output size) that a setting can raise."""

    error_class = "raster_too_large"


class SuspiciousRaster(PermanentError):
    """A file whose declared size is out of all proportion to its bytes (a decompression bomb)."""

    error_class = "suspicious_raster"


class NameTooLong(PermanentError):
    """A file name longer than the work directory's or the store's file system allows."""

    error_class = "name_too_long"


class DiskFull(TransientError):
    """No space left on the device of the work directory or the store: retrying after cleanup may help."""

    error_class = "disk_full"


class InvalidSidecar(PermanentError):
    """A sidecar (or an HTTP submission's fields) that is not a valid sidecar: syntax, depth, size, encoding,
    values JSON cannot carry, unknown fields, bad ids or datetimes. The message never holds its content."""

    error_class = "invalid_sidecar"


class OutsideInbox(PermanentError):
    """A raster or sidecar whose real path leads out of the inbox (a symlink, or a symlinked folder)."""

    error_class = "outside_inbox"


class NotRegularFile(PermanentError):
    """An inbox entry that is not a regular file (a FIFO, a device): reading it could block or never end."""

    error_class = "not_regular_file"


class MissingSidecar(PermanentError):
    error_class = "missing_sidecar"


class InvalidItem(PermanentError):
    error_class = "invalid_item"


class UnknownCollection(PermanentError):
    error_class = "unknown_collection"


class DuplicateItem(PermanentError):
    error_class = "duplicate_item"


class SourceNotFound(PermanentError):
    error_class = "source_not_found"


class UnsafeURL(PermanentError):
    """A source URL the URL policy refuses (stacdrop/urls.py): scheme, ambiguous authority, a host off
    ``allowed_hosts``, an internal address; at any redirect hop. The message is redacted (no user info, no
    query string)."""

    error_class = "unsafe_url"


class TooManyRedirects(PermanentError):
    error_class = "source_error"


class HostUnreachable(TransientError):
    """No checked address of a source host accepted the connection, or it did not answer in time."""

    error_class = "source_unavailable"

    def __init__(self, message: str, *, reason: str = "", error_class: str | None = None) -> None:
        super().__init__(message, error_class=error_class)
        self.reason = reason or message  # without the URL, for a caller that names it itself


class ConfigError(PermanentError):
    error_class = "config"


class MissingCredentials(ConfigError):
    """A backend needs credentials that no setting provides (S3 without a key pair)."""

    error_class = "missing_credentials"


class StoreError(TransientError):
    error_class = "store"
    dependency = "store"


class ClaimedElsewhere(TransientError):
    """Another live worker is converting this job (its claim's heartbeat is fresh): try again later,
    uncounted, and find the job done, or the claim stale and free to take over."""

    error_class = "claimed_elsewhere"
    counts_attempt = False
    retry_in = 15.0


class CatalogUnavailable(TransientError):
    error_class = "catalog_unavailable"
    dependency = "stac_api"


def permanent_error(error_class: str, message: str) -> PermanentError:
    """The permanent error of this class (a refusal recorded on a message, raised again by the stage)."""
    for cls in (InvalidSidecar, OutsideInbox, NotRegularFile, MissingSidecar, InvalidRaster):
        if cls.error_class == error_class:
            return cls(message)
    return PermanentError(message, error_class=error_class)


def classify(exc: BaseException) -> tuple[str, bool]:
    """Return ``(error_class, transient)`` for any exception.

    Unknown exceptions count as transient: a bug or an unforeseen outage is retried a few times and then
    dead-lettered with its type name, which is safer than throwing the work away on the first try.
    """
    if isinstance(exc, StacdropError):
        return exc.error_class, exc.transient
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "network", True
    if isinstance(exc, MemoryError):
        return "resources", True
    return type(exc).__name__, True
