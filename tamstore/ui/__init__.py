"""The web UI: static files served at /ui/ (see api/ui.py)."""
