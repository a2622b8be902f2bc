"""tamstore: a Time-addressable Media Store (TAMS 8.2) server."""

__version__ = "0.1.0"
