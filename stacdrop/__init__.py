"""stacdrop: rasters dropped into an inbox become Cloud Optimized GeoTIFFs and STAC items."""

__version__ = "0.1.0"
