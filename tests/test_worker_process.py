"""``tamstore serve``'s worker process: the background work (deletions, retention, GC,
checkpoints, webhook delivery) beside the server, started, replaced and stopped with it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import loader
from tamstore.config import Settings
from tamstore.startup import open_context
from tamstore.testing import app_client
from tamstore.workers import run_background
from tests.conftest import add_segments, put_flow, video_flow
from tests.live import LiveServer
from tests.receiver import Receiver

DELETE_IN_BACKGROUND = {"TAMSTORE_INLINE_DELETE_LIMIT": "10"}


def _worker_processes(server_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout
    pids = []
    for pid in out.split():
        try:
            if b"tamstore.worker_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except FileNotFoundError:
            pass
    return pids


def _wait_for(what: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _one_worker(server: LiveServer) -> int:
    assert server.proc is not None
    [pid] = _wait_for(lambda: _worker_processes(server.proc.pid))  # type: ignore[union-attr]
    return int(pid)


def _delete_in_background(server: LiveServer, segments: int = 50) -> dict[str, Any]:
    """A Flow of ``segments`` deleted by a flow-delete-request: its document once asked for."""
    flow_id = str(uuid.uuid4())
    loader.load_sqlite(server.data_dir / "tamstore.db", [(flow_id, segments, {})])
    r = httpx.delete(f"{server.url}/flows/{flow_id}", timeout=10)
    assert r.status_code == 202, r.text
    return dict(r.json())


def _status(server: LiveServer, request: dict[str, Any]) -> str:
    return str(httpx.get(f"{server.url}/flow-delete-requests/{request['id']}", timeout=10).json()["status"])


@pytest.mark.slow
def test_deletions_run_in_the_worker_process_and_stop_with_the_server(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", **DELETE_IN_BACKGROUND).start()
    try:
        worker = _one_worker(server)
        first = _delete_in_background(server)
        _wait_for(lambda: _status(server, first) == "done")
        # Held still, the worker process carries out nothing; the server does not stand in.
        os.kill(worker, signal.SIGSTOP)
        try:
            request = _delete_in_background(server)
            time.sleep(1.5)
            assert _status(server, request) in ("created", "started")
        finally:
            os.kill(worker, signal.SIGCONT)
        _wait_for(lambda: _status(server, request) == "done")
    finally:
        server.stop()
    _wait_for(lambda: not _running(worker), timeout=20)
    assert "Traceback" not in server.stderr_text
    # Stopped by its server on the way out, not left to find it gone (uvicorn ends a process it
    # shut down on SIGTERM by raising the signal again).
    assert "is gone" not in server.log_path.read_text(errors="replace")  # (the worker's log too)
    assert server.proc is not None and server.proc.returncode == -signal.SIGTERM


@pytest.mark.slow
def test_the_worker_process_delivers_webhooks_and_the_server_counts_them(tmp_path: Path, receiver: Receiver) -> None:
    server = LiveServer(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            hook = {"url": receiver.url + "/hook", "events": ["flows/created"]}
            assert c.post("/service/webhooks", json=hook).status_code == 201
            flow = video_flow()
            assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
            [body] = receiver.wait_for(1, "flows/created")
            assert body["event"]["flow"]["id"] == flow["id"]
            # Counted in the database with the delivery pass's last write, whichever process made it.
            _wait_for(lambda: 'tamstore_webhook_deliveries_total{outcome="ok"} 1.0' in c.get("/metrics").text)
    finally:
        server.stop()


@pytest.mark.slow
def test_a_worker_process_that_dies_is_replaced(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", **DELETE_IN_BACKGROUND).start()
    try:
        first = _one_worker(server)
        os.kill(first, signal.SIGKILL)
        second = _wait_for(lambda: [p for p in _worker_processes(server.proc.pid) if p != first])[0]  # type: ignore[union-attr]
        assert _running(second)
        request = _delete_in_background(server)
        _wait_for(lambda: _status(server, request) == "done")
    finally:
        server.stop()
    assert "starting another" in server.stderr_text


@pytest.mark.slow
def test_a_worker_process_stops_when_its_server_is_killed_outright(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data").start()
    worker = _one_worker(server)
    server.kill(signal.SIGKILL)
    _wait_for(lambda: not _running(worker), timeout=20)
    assert "is gone; stopping" in server.log_path.read_text(errors="replace")


@pytest.mark.slow
def test_without_a_worker_process_the_server_carries_out_deletions(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", TAMSTORE_WORKER_PROCESS="false", **DELETE_IN_BACKGROUND).start()
    try:
        assert server.proc is not None
        request = _delete_in_background(server)
        _wait_for(lambda: _status(server, request) == "done")
        assert _worker_processes(server.proc.pid) == []
    finally:
        server.stop()


async def test_a_deletion_asked_for_in_the_server_wakes_the_worker_process_at_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker process's side in process (its own store, and ``run_background`` as the worker
    process runs it), with a poll too slow to find the request; only the hub hearing the
    server's commit (PRAGMA data_version on SQLite, NOTIFY on PostgreSQL) wakes it in time."""
    from tamstore import workers as workers_module

    monkeypatch.setattr(workers_module, "POLL_SECONDS", 600.0)
    settings = dataclasses.replace(settings, inline_delete_limit=1)
    async with app_client(settings) as client:  # the server (workers off): migrates the store
        flow = await put_flow(client)
        await add_segments(client, flow["id"], [0, 1, 2])
        ctx = await open_context(dataclasses.replace(settings, migrate=False))
        stop = asyncio.Event()
        background = asyncio.create_task(run_background(ctx, stop.wait()))
        try:
            await asyncio.sleep(0.2)  # the deleter has looked once, found nothing, and waits
            r = await client.delete(f"/flows/{flow['id']}")
            assert r.status_code == 202, r.text
            path = f"/flow-delete-requests/{r.json()['id']}"
            deadline = time.monotonic() + 10
            while (await client.get(path)).json()["status"] != "done":
                assert time.monotonic() < deadline, "the worker process's deleter was not woken"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await background
            await ctx.store.close()


@pytest.mark.slow
def test_tamstore_worker_beside_api_only_servers_does_the_same_work_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The scale-out arrangement on one machine: ``serve --no-workers`` and ``tamstore worker``
    (``run_background`` too), which stops cleanly when told to."""
    server = LiveServer(tmp_path / "data", TAMSTORE_WORKERS="false", **DELETE_IN_BACKGROUND).start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "tamstore", "worker"], env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert server.proc is not None and _worker_processes(server.proc.pid) == []
        request = _delete_in_background(server)
        _wait_for(lambda: _status(server, request) == "done")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        assert b"Traceback" not in (worker.stderr.read() if worker.stderr else b"")
    finally:
        if worker.poll() is None:
            worker.kill()
        server.stop()
