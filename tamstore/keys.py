"""Secret keys kept in the data dir: made once (0600), so signatures survive restarts."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["load_or_create_key"]


def load_or_create_key(data_dir: Path, name: str) -> bytes:
    path = data_dir / name
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()
