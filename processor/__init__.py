"""The processor stage: IngestRequest -> validated input -> COG in the store -> RasterReady."""

from processor.stage import process_raster

__all__ = ["process_raster"]
