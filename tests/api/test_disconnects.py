"""A client that goes away mid-request is one info line in the log, not an ERROR traceback
(issue 16, item 17): under a slow-client flood those tracebacks were the log."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tests.live import LiveServer


def test_a_client_leaving_mid_body_logs_one_info_line(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", TAMSTORE_LOG_FORMAT="json").start()
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(
                    b"PUT /flows/0b5c3a57-3d24-4d6b-a7b0-2f8c6fd0e5a1/label HTTP/1.1\r\nHost: x\r\n"
                    b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"partial'
                )
                time.sleep(0.1)
        time.sleep(0.3)
        assert httpx.get(server.url + "/healthz").status_code == 200
    finally:
        server.stop()
    logs = server.stderr_text
    assert "Traceback" not in logs and '"level":"error"' not in logs, logs
    assert logs.count("client disconnected") == 3, logs
