"""``serve --processes N``: one port, N server processes sharing one store."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tamstore.config import Settings
from tests.conftest import ts, video_flow
from tests.live import LiveServer


def test_settings_travel_to_other_processes_as_json(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", port=9001, auth_file=None, storage_config=tmp_path / "s.toml")
    assert Settings.from_json(settings.to_json()) == settings


def _server_processes(pid: int) -> list[int]:
    """Children of ``pid`` started by multiprocessing to serve (not its resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split() if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]


def test_two_processes_serve_one_store(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", TAMSTORE_PROCESSES="2").start()
    try:
        assert server.proc is not None
        deadline = time.monotonic() + 20
        while len(_server_processes(server.proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_server_processes(server.proc.pid)) == 2
        with httpx.Client(base_url=server.url, timeout=10) as c:
            flow = video_flow()
            assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
            # Writes from either process land in the one store; reads from either see them.
            for i in range(20):
                objects = c.post(f"/flows/{flow['id']}/storage", json={"limit": 1}).json()["media_objects"]
                seg = {"object_id": objects[0]["object_id"], "timerange": f"[{ts(i)}_{ts(i + 1)})"}
                assert c.post(f"/flows/{flow['id']}/segments", json=seg).status_code == 201
            for _ in range(10):
                assert len(c.get(f"/flows/{flow['id']}/segments", headers={"Connection": "close"}).json()) == 20
    finally:
        server.stop()
    assert "Traceback" not in server.stderr_text
