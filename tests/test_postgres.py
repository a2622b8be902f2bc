"""The scale-out configuration: several tamstore processes on one PostgreSQL.

Overlapping segments posted at the same moment through two processes: exactly one of each
overlapping pair survives and every client gets a correct answer. A PostgreSQL restart under a
running tamstore: clean 503s during the outage, normal service after it, no tamstore restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tamstore.domain.errors import Unavailable
from tamstore.store.metadata.sql import open_metadata_store
from tamstore.store.migrate import upgrade
from tests.conftest import _unavailable
from tests.live import LiveServer
from tests.pgcluster import PgCluster, create_database, find_pg_bin

pytestmark = pytest.mark.postgres


def _flow_body(flow_id: str) -> dict[str, Any]:
    return {
        "id": flow_id,
        "source_id": str(uuid.uuid4()),
        "format": "urn:x-nmos:format:data",
        "codec": "text/plain",
        "container": "text/plain",
        "essence_parameters": {},
    }


@pytest.mark.slow
def test_concurrent_overlapping_posts_through_two_processes(tmp_path: Path, pg_server: str) -> None:
    db = asyncio.run(create_database(pg_server))
    servers = [LiveServer(tmp_path / f"data{i}", db).start() for i in range(2)]
    flow_id = str(uuid.uuid4())
    try:
        with httpx.Client(base_url=servers[0].url, timeout=60) as c:
            assert c.put(f"/flows/{flow_id}", json=_flow_body(flow_id)).status_code == 201
            objs = c.post(f"/flows/{flow_id}/storage", json={"limit": 400}).json()["media_objects"]
        rng = random.Random(7)
        # 400 one-second segments at random starts in [0, 200): many collide.
        wanted = [(o["object_id"], rng.randrange(0, 200)) for o in objs]
        results: list[tuple[str, int, int, Any]] = []
        lock = threading.Lock()

        def client(worker: int) -> None:
            mine = wanted[worker::8]
            with httpx.Client(base_url=servers[worker % 2].url, timeout=60) as c:
                i = 0
                while i < len(mine):
                    if worker % 4 == 0:  # some clients post arrays of three
                        batch = mine[i : i + 3]
                        body = [{"object_id": o, "timerange": f"[{s}:0_{s + 1}:0)"} for o, s in batch]
                        r = c.post(f"/flows/{flow_id}/segments", json=body)
                        i += 3
                    else:
                        o, s = mine[i]
                        batch = [mine[i]]
                        r = c.post(
                            f"/flows/{flow_id}/segments",
                            json={"object_id": o, "timerange": f"[{s}:0_{s + 1}:0)"},
                        )
                        i += 1
                    with lock:
                        for o, s in batch:
                            results.append((o, s, r.status_code, r.json() if r.content else None))

        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        accepted = set()
        for o, s, status, body in results:
            assert status in (200, 201, 400), (status, body)
            if status == 201:
                accepted.add((o, s))
            elif status == 200:
                failed = {f["object_id"] for f in body["failed_segments"]}
                if o not in failed:
                    accepted.add((o, s))
        with httpx.Client(base_url=servers[1].url, timeout=60) as c:
            stored = c.get(f"/flows/{flow_id}/segments?limit=1000").json()
        got = {(seg["object_id"], int(seg["timerange"][1:].split(":")[0])) for seg in stored}
        assert got == accepted
        starts = sorted(s for _, s in got)
        assert len(starts) == len(set(starts))  # no two survivors overlap
        assert len(got) == len({s for _, s in wanted})  # every free second got exactly one segment
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster for one test alone, which it may stop and start."""
    if os.environ.get("TAMSTORE_TEST_DATABASE_URL"):
        pytest.skip("needs a PostgreSQL cluster of its own to stop and start")
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PgCluster(bin_dir)  # type: ignore[arg-type]
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.mark.slow
def test_database_restart_gives_503_then_recovers(tmp_path: Path, own_cluster: PgCluster) -> None:
    server = None
    try:
        db = asyncio.run(create_database(own_cluster.url))
        server = LiveServer(tmp_path / "data", db).start()
        flow_id = str(uuid.uuid4())
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.put(f"/flows/{flow_id}", json=_flow_body(flow_id)).status_code == 201
            own_cluster.stop()
            for path in ("/flows", f"/flows/{flow_id}", f"/flows/{flow_id}/segments"):
                r = c.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert "database" in r.json()["summary"]
                assert str(own_cluster.port) not in r.text, "the database's address is the service's business"
            r = c.put(f"/flows/{flow_id}/label", json="x")
            assert r.status_code == 503
            assert c.get("/healthz").status_code == 200  # the process is alive ...
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"  # ... but not ready
            own_cluster.start_server()
            deadline = time.monotonic() + 20
            while True:
                r = c.get(f"/flows/{flow_id}")
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert r.status_code == 200, r.text
            assert c.put(f"/flows/{flow_id}/label", json="after").status_code == 204
            assert c.get("/readyz").status_code == 200
    finally:
        if server:
            server.stop()


@pytest.mark.slow
def test_database_shutting_down_under_load_gives_only_503s(tmp_path: Path, own_cluster: PgCluster) -> None:
    """Requests in flight while PostgreSQL shuts down ("database system is shutting down",
    connections cut mid-statement, idle ones sent their parting error) each get a 503 with
    Retry-After, never a 500: Flow writes and reads, segment pages and segment registration."""
    server = None
    try:
        db = asyncio.run(create_database(own_cluster.url))
        server = LiveServer(tmp_path / "data", db).start()
        flow_id = str(uuid.uuid4())
        statuses: list[tuple[int, str]] = []
        stop = threading.Event()

        def load(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                objects = [o["object_id"] for o in allocated[n * 400 : (n + 1) * 400]]
                i = 0
                while not stop.is_set() and i < 2000:
                    i += 1
                    if i % 5 == 1:
                        r = c.put(f"/flows/{flow_id}/label", json=f"{n}-{i}")
                    elif i % 5 == 2:
                        r = c.get("/flows", params={"limit": 50})
                    elif i % 5 == 3:
                        r = c.get(f"/flows/{flow_id}/segments", params={"timerange": f"[{i}:0_{i + 10}:0)"})
                    elif i % 5 == 4:
                        at = n * 10_000 + i
                        segment = {"object_id": objects.pop(), "timerange": f"[{at}:0_{at + 1}:0)"}
                        r = c.post(f"/flows/{flow_id}/segments", json=segment)
                    else:
                        r = c.get(f"/flows/{flow_id}")
                    statuses.append((r.status_code, r.headers.get("retry-after", "")))

        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.put(f"/flows/{flow_id}", json=_flow_body(flow_id)).status_code == 201
            allocated = []  # an Object for each segment posted (400 a thread at most)
            for _ in range(6):
                allocated += c.post(f"/flows/{flow_id}/storage", json={"limit": 400}).json()["media_objects"]
        threads = [threading.Thread(target=load, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        own_cluster.stop("fast")
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(60)
        codes = {code for code, _ in statuses}
        assert codes <= {200, 201, 204, 503}, sorted(codes)
        assert 503 in codes
        assert all(retry for code, retry in statuses if code == 503)
    finally:
        if server:
            server.stop()


@pytest.mark.slow
def test_a_worker_process_started_while_the_database_is_away_waits(tmp_path: Path, own_cluster: PgCluster) -> None:
    """The worker process replaced during an outage starts without the database (it does not
    exit and restart every second) and takes up its work when the database is back."""
    from tests.test_worker_process import _one_worker, _running, _wait_for, _worker_processes

    server = None
    try:
        db = asyncio.run(create_database(own_cluster.url))
        server = LiveServer(tmp_path / "data", db).start()
        first = _one_worker(server)
        own_cluster.stop("fast")
        os.kill(first, signal.SIGKILL)
        replaced = _wait_for(lambda: [p for p in _worker_processes(server.proc.pid) if p != first])  # type: ignore[union-attr]
        time.sleep(3)  # long enough for a replacement that fails at start to exit and be replaced again
        assert _running(replaced[0])
        log = server.log_path.read_text(errors="replace")
        assert log.count("starting another") == 1
        # Its jobs meet the outage at every wake-up: one line each, not a traceback.
        assert "flow deletion failed, will try again: metadata database unavailable" in log
        assert not [line for line in log.splitlines() if "Traceback" in line and "database unavailable" in line]
        own_cluster.start_server()
        flow_id = str(uuid.uuid4())
        with httpx.Client(base_url=server.url, timeout=30) as c:
            deadline = time.monotonic() + 20
            while c.put(f"/flows/{flow_id}", json=_flow_body(flow_id)).status_code == 503:
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        if server:
            server.stop()


@contextlib.contextmanager
def _frozen(cluster: PgCluster) -> Iterator[None]:
    """The cluster's processes stopped (SIGSTOP): its sockets stay open and nothing answers, as
    with a frozen host or a partition. They go on when the block ends."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout
    processes = [postmaster, *map(int, children.split())]
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in processes:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.slow
def test_a_database_that_hangs_gives_503s_within_the_statement_timeout(tmp_path: Path, own_cluster: PgCluster) -> None:
    """A PostgreSQL that stops answering without closing its connections (a frozen host, a
    partition) costs each request the statement timeout and a 503, not a hang nor twice the
    timeout; when it answers again, so does tamstore."""
    server = None
    try:
        db = asyncio.run(create_database(own_cluster.url))
        server = LiveServer(tmp_path / "data", db, TAMSTORE_DB_STATEMENT_TIMEOUT="2").start()
        flow_id = str(uuid.uuid4())
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.put(f"/flows/{flow_id}", json=_flow_body(flow_id)).status_code == 201
            with _frozen(own_cluster):
                for method, path, body in (("GET", "/flows", None), ("PUT", f"/flows/{flow_id}/label", "x")):
                    started = time.monotonic()
                    r = c.request(method, path, json=body)
                    assert r.status_code == 503 and r.headers["retry-after"], (method, r.status_code, r.text)
                    assert "statement timeout" in r.json()["summary"]
                    assert time.monotonic() - started < 2 + 1.5  # the timeout, not twice it or more
            assert c.get(f"/flows/{flow_id}").status_code == 200
            assert c.put(f"/flows/{flow_id}/label", json="after").status_code == 204
    finally:
        if server:
            server.stop()


@pytest.mark.slow
async def test_a_statement_on_the_driver_itself_is_bounded_by_the_timeout_alone(own_cluster: PgCluster) -> None:
    """The store's raw driver statements (no SQLAlchemy around them, so none of its error
    handling) time out the same way: a 503 after the timeout, and a sound connection after."""
    url = (await create_database(own_cluster.url)).replace("postgresql://", "postgresql+asyncpg://")
    store = open_metadata_store(url, statement_timeout=1)
    try:
        await upgrade(store.engine)
        async with store.read() as tx:
            await tx.collected_by(["x"])  # (kept: the next read runs on the same connection)
        with _frozen(own_cluster):
            started = time.monotonic()
            with pytest.raises(Unavailable, match="statement timeout"):
                async with store.read() as tx:
                    await tx.collected_by(["x"])
            assert time.monotonic() - started < 1 + 0.8
        async with store.read() as tx:
            assert await tx.collected_by(["x"]) == {"x": []}
    finally:
        await store.close()
