"""kill -9 in the middle of bulk registrations: each request is all or nothing after restart."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.live import LiveServer

REQUESTS = 24
PER_REQUEST = 1000


@pytest.mark.slow
def test_kill_during_bulk_registration_leaves_whole_requests(tmp_path: Path, database_url: str | None) -> None:
    server = LiveServer(tmp_path / "data", database_url).start()
    flow_id = str(uuid.uuid4())
    flow = {
        "id": flow_id,
        "source_id": str(uuid.uuid4()),
        "format": "urn:x-nmos:format:data",
        "codec": "text/plain",
        "container": "text/plain",
        "essence_parameters": {},
    }
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.put(f"/flows/{flow_id}", json=flow).status_code == 201
        bodies = []
        for k in range(REQUESTS):
            objs = c.post(f"/flows/{flow_id}/storage", json={"limit": PER_REQUEST}).json()["media_objects"]
            bodies.append(
                [
                    {
                        "object_id": o["object_id"],
                        "timerange": f"[{k * PER_REQUEST + i}:0_{k * PER_REQUEST + i + 1}:0)",
                    }
                    for i, o in enumerate(objs)
                ]
            )

    answered: list[int] = []

    def post_all(part: list[int]) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for k in part:
                try:
                    r = c.post(f"/flows/{flow_id}/segments", json=bodies[k])
                except httpx.TransportError:
                    return
                if r.status_code == 201:
                    answered.append(k)

    threads = [threading.Thread(target=post_all, args=(list(range(t, REQUESTS, 3)),)) for t in range(3)]
    for t in threads:
        t.start()
    while len(answered) < 3:
        time.sleep(0.01)
    server.kill(signal.SIGKILL)
    for t in threads:
        t.join()
    assert len(answered) < REQUESTS, "the server finished everything before it was killed; grow the test"

    server = LiveServer(tmp_path / "data", database_url).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            counts = [0] * REQUESTS
            url: str | None = f"/flows/{flow_id}/segments?limit=1000"
            while url:
                r = c.get(url)
                assert r.status_code == 200
                for seg in r.json():
                    start = int(seg["timerange"][1:].split(":")[0])
                    counts[start // PER_REQUEST] += 1
                url = r.links.get("next", {}).get("url")
            assert all(n in (0, PER_REQUEST) for n in counts), counts
            for k in answered:  # every request acknowledged with 201 is there in full
                assert counts[k] == PER_REQUEST
            done = [k for k in range(REQUESTS) if counts[k]]
            if done:
                oid = bodies[done[0]][0]["object_id"]
                assert c.get(f"/objects/{oid}").json()["referenced_by_flows"] == [flow_id]
    finally:
        server.stop()
