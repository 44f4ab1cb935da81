"""The watcher stage: the local inbox and the S3 bucket inbox find rasters, sidecars and collection files
and submit ingest jobs."""

from watcher.inbox import LocalInbox
from watcher.pairing import EmitCollection, EmitRaster, Pairer
from watcher.s3 import S3Inbox
from watcher.settings import WatcherSettings

__all__ = ["EmitCollection", "EmitRaster", "LocalInbox", "Pairer", "S3Inbox", "WatcherSettings"]
