"""The publisher's own error classes, in one place.

The stage-independent errors (InvalidItem, UnknownCollection, DuplicateItem, CatalogUnavailable ...) live in
the kernel (stacdrop/errors.py) because the runtime and other stages name them too; these are the ones only
the publisher raises. Each carries a member of ``stacdrop.errors.ErrorClass``: the class an operator
filters failed jobs and dead letters by, and whether a retry may help.
"""

from __future__ import annotations

from stacdrop.errors import ErrorClass, InvalidItem, PermanentError, TransientError


class InvalidCollection(InvalidItem):
    """A collection document that cannot be published."""

    error_class = ErrorClass.INVALID_COLLECTION


class CatalogMismatch(TransientError):
    """The item read back from the STAC API is not the one sent.

    Transient: a concurrent writer in another process is the likely cause, and the runtime's "newer version
    already published" check decides on the retry."""

    error_class = ErrorClass.CATALOG_MISMATCH


class CatalogAuthError(PermanentError):
    """The STAC API refused the token (401/403): a setting to fix, not something a retry mends."""

    error_class = ErrorClass.CATALOG_AUTH


class CatalogRejected(PermanentError):
    """The STAC API answered a request with a 4xx that no more precise class explains."""

    error_class = ErrorClass.CATALOG_REJECTED
