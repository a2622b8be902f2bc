"""A real ``tamstore serve`` process for tests that need one (restarts, crashes, CLI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.pgcluster import free_port


class LiveServer:
    def __init__(self, data_dir: Path, database_url: str | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, "TAMSTORE_DATA_DIR": str(data_dir), "TAMSTORE_PORT": str(self.port), **env}
        if database_url:
            self.env["TAMSTORE_DATABASE_URL"] = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_text = ""

    @classmethod
    def serving(cls, settings: Any, **env: str) -> LiveServer:
        """A server on the test's backends (its database and, for S3, its bucket)."""
        if settings.s3_bucket:
            env = {
                "TAMSTORE_S3_BUCKET": settings.s3_bucket,
                "TAMSTORE_S3_ENDPOINT_URL": settings.s3_endpoint_url,
                **env,
            }
        return cls(settings.data_dir, settings.database_url, **env).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> LiveServer:
        # A file, not a pipe: a pipe nobody reads fills up and stalls a server that logs.
        self.log_path = self.data_dir.parent / f"tamstore-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tamstore", "serve"], env=self.env, stdout=subprocess.DEVNULL, stderr=self._log
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text(errors="replace"))
            try:
                httpx.get(self.url + "/service", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("tamstore did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        if self.proc is not None and not self._log.closed:
            self._log.close()
            self.stderr_text = self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
