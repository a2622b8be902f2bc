"""/, /service, /service/storage-backends, /service/profiles (CHECKLIST §1.1, §4.1, §4.2, ADR 0047)."""

from __future__ import annotations

import json

import httpx
import pytest

from tamstore.testing import SpecSchemas
from tests.conftest import new_id


async def test_root_lists_the_resources(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert {"service", "flows", "sources", "flow-delete-requests"} <= set(r.json())
    assert r.headers["content-type"] == "application/json"


async def test_service_describes_tams_8_2(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    r = await client.get("/service")
    assert r.status_code == 200
    body = r.json()
    schemas.check("service.json", body)
    assert body["api_version"] == "8.2"
    assert body["type"].startswith("urn:x-tams:service")
    assert body["min_object_timeout"] == "3600:0"


async def test_head_mirrors_get_without_body(client: httpx.AsyncClient) -> None:
    get = await client.get("/service")
    head = await client.head("/service")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


async def test_post_service_updates_name_and_description(client: httpx.AsyncClient) -> None:
    r = await client.post("/service", json={"name": "archive", "description": "the archive"})
    assert r.status_code == 200
    body = (await client.get("/service")).json()
    assert body["name"] == "archive"
    assert body["description"] == "the archive"


@pytest.mark.parametrize("payload", [b"not json", b'{"name": 5}', b"[1]"])
async def test_post_service_rejects_bad_bodies(client: httpx.AsyncClient, payload: bytes) -> None:
    r = await client.post("/service", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert set(r.json()) >= {"type", "summary", "time"}


async def test_storage_backends_lists_the_filesystem_backend(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    r = await client.get("/service/storage-backends")
    assert r.status_code == 200
    schemas.check("storage-backends-list.json", r.json())
    [backend] = r.json()
    assert backend["default_storage"] is True
    assert backend["store_type"] == "http_object_store"
    again = await client.get("/service/storage-backends")
    assert again.json()[0]["id"] == backend["id"]  # a stable UUID
    assert r.headers["x-paging-count"] == "1"
    r = await client.get("/service/storage-backends?tag.nothing=x")
    assert r.json() == []


PROFILE = {
    "label": "HD h264",
    "flow_metadata": {
        "format": "urn:x-nmos:format:video",
        "codec": "video/h264",
        "container": "video/mp2t",
        "avg_bit_rate": 5000,
        "essence_parameters": {
            "frame_width": 1920,
            "frame_height": 1080,
            "frame_rate": {"numerator": 50, "denominator": 1},
        },
    },
}


async def test_profiles_are_created_once_and_read_back(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    pid = new_id()
    r = await client.post(f"/service/profiles/{pid}", json={"id": pid, **PROFILE})
    assert r.status_code == 201, r.text
    schemas.check("profile.json", r.json())
    r = await client.post(f"/service/profiles/{pid}", json={"id": pid, **PROFILE})
    assert r.status_code == 400  # Profiles are immutable
    r = await client.get(f"/service/profiles/{pid}")
    assert r.status_code == 200
    assert r.json()["flow_metadata"] == PROFILE["flow_metadata"]
    listing = await client.get("/service/profiles?format=urn:x-nmos:format:video")
    assert [p["id"] for p in listing.json()] == [pid]
    assert "x-paging-limit" in listing.headers
    assert (await client.get("/service/profiles?format=urn:x-nmos:format:audio")).json() == []
    assert (await client.get("/service/profiles?format=bogus")).status_code == 400
    assert (await client.get("/service/profiles?codec=nonsense")).status_code == 400


async def test_profile_errors(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/service/profiles/{new_id()}")).status_code == 404
    pid = new_id()
    multi = {"id": pid, "flow_metadata": {"format": "urn:x-nmos:format:multi"}}
    assert (await client.post(f"/service/profiles/{pid}", json=multi)).status_code == 400
    assert (
        await client.post(f"/service/profiles/{pid}", content=b"{", headers={"content-type": "application/json"})
    ).status_code == 400
    assert (await client.post(f"/service/profiles/{new_id()}", json={"id": pid, **PROFILE})).status_code == 400


async def test_spec_examples_for_service_validate(schemas: SpecSchemas) -> None:
    """Guard for the checker itself: the spec's own example must pass, a broken one must not."""
    example = json.loads((schemas.dir / "examples" / "service-get-200.json").read_text())
    schemas.check("service.json", example)
    with pytest.raises(AssertionError):
        schemas.check("service.json", {"type": "x"})
