"""The local-inbox watcher: finds GeoTIFFs, sidecars and collection files and submits ingest jobs."""

from watcher.inbox import LocalInbox
from watcher.pairing import EmitCollection, EmitRaster, Pairer
from watcher.s3 import S3Inbox

__all__ = ["EmitCollection", "EmitRaster", "LocalInbox", "Pairer", "S3Inbox"]
