"""Fixtures: the app on every metadata backend, and the official spec schemas.

``TAMSTORE_TEST_BACKENDS`` picks metadata backends (default ``sqlite,postgres``). PostgreSQL is
a throwaway cluster started here, or ``TAMSTORE_TEST_DATABASE_URL`` when given. Outside CI a
missing PostgreSQL or spec folder skips the tests that need it, saying why; in CI it fails.
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
from tests.pgcluster import PgCluster, find_pg_bin

IN_CI = os.environ.get("CI") == "true"
BACKENDS = os.environ.get("TAMSTORE_TEST_BACKENDS", "sqlite,postgres").split(",")


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


async def _create_database(server: str) -> str:
    import asyncpg

    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(server + "/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"{server}/{name}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """None (SQLite in the data dir) or a fresh PostgreSQL database per test."""
    if request.param == "sqlite":
        return None
    server = request.getfixturevalue("pg_server")
    return asyncio.run(_create_database(server))


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        default_page_limit=100,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as c:
        yield c


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
