"""Media in and out of a TAMS store: cutting input into segments (``segmenter``), ``ingest`` and
``export``. PyAV does the media work (its wheels carry FFmpeg's libraries)."""
