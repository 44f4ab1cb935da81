"""The processor stage: IngestRequest -> validated input -> COG in the store -> RasterReady."""

from processor.handler import make_process_handler
from processor.metadata import read_raster_metadata
from processor.settings import ProcessorSettings, SourceAccess
from processor.stage import process_raster
from processor.store import Store
from processor.stores import open_store

__all__ = [
    "ProcessorSettings",
    "SourceAccess",
    "Store",
    "make_process_handler",
    "open_store",
    "process_raster",
    "read_raster_metadata",
]
