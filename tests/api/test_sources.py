"""Sources (CHECKLIST §5): created by Flows, read-mostly, label/description/tags writable."""

from __future__ import annotations

import httpx
import pytest

from tamstore.testing import SpecSchemas
from tests.conftest import new_id, put_flow


async def test_sources_are_listed_and_filtered(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    a = await put_flow(client)
    b = await put_flow(client)
    r = await client.get("/sources")
    assert r.status_code == 200
    schemas.check_items("source.json", r.json())
    assert [s["id"] for s in r.json()] == [b["source_id"], a["source_id"]]  # newest first
    await client.put(f"/sources/{a['source_id']}/label", json="studio")
    await client.put(f"/sources/{a['source_id']}/tags/genre", json="news")
    assert [s["id"] for s in (await client.get("/sources?label=studio")).json()] == [a["source_id"]]
    assert [s["id"] for s in (await client.get("/sources?tag.genre=news")).json()] == [a["source_id"]]
    assert [s["id"] for s in (await client.get("/sources?tag_exists.genre=false")).json()] == [b["source_id"]]
    assert (await client.get("/sources?format=urn:x-nmos:format:audio")).json() == []
    by_label = [s["id"] for s in (await client.get("/sources?sort_by=label")).json()]
    assert by_label == [a["source_id"], b["source_id"]]  # labelled first, then the rest
    r = await client.get("/sources?limit=1")
    assert r.links["next"] and len(r.json()) == 1
    assert [s["id"] for s in (await client.get(r.links["next"]["url"])).json()] == [a["source_id"]]


@pytest.mark.parametrize("query", ["sort_by=name", "format=x", "collected_by_ids=1", "reverse_order=2", "limit=a"])
async def test_bad_source_queries(client: httpx.AsyncClient, query: str) -> None:
    assert (await client.get(f"/sources?{query}")).status_code == 400


async def test_source_sub_resources(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    base = f"/sources/{flow['source_id']}"
    before = (await client.get(base)).json()["updated"]
    for prop in ("label", "description"):
        assert (await client.get(f"{base}/{prop}")).status_code == 404
        assert (await client.put(f"{base}/{prop}", json="v")).status_code == 204
        assert (await client.get(f"{base}/{prop}")).json() == "v"
        assert (await client.put(f"{base}/{prop}", json=["v"])).status_code == 400
        assert (await client.delete(f"{base}/{prop}")).status_code == 204
    assert (await client.get(base)).json()["updated"] >= before
    assert (await client.put(f"{base}/tags/a", json=["x", "y"])).status_code == 204
    assert (await client.get(f"{base}/tags")).json() == {"a": ["x", "y"]}
    assert (await client.get(f"{base}/tags/a")).json() == ["x", "y"]
    assert (await client.put(f"{base}/tags/a", json={"no": 1})).status_code == 400
    assert (await client.delete(f"{base}/tags/a")).status_code == 204
    assert (await client.get(f"{base}/tags/a")).status_code == 404
    assert (await client.delete(f"{base}/tags/a")).status_code == 404


async def test_sources_cannot_be_written_directly(client: httpx.AsyncClient) -> None:
    sid = new_id()
    assert (await client.get(f"/sources/{sid}")).status_code == 404
    assert (await client.get(f"/sources/{sid}/tags")).status_code == 404
    assert (await client.put(f"/sources/{sid}/label", json="x")).status_code == 404
    assert (await client.put(f"/sources/{sid}", json={"id": sid})).status_code == 405
    assert (await client.get("/sources/nope")).status_code == 404


async def test_deleting_the_last_flow_removes_the_source(client: httpx.AsyncClient) -> None:
    a = await put_flow(client)
    b = await put_flow(client, source_id=a["source_id"])
    assert (await client.delete(f"/flows/{a['id']}")).status_code == 204
    assert (await client.get(f"/sources/{a['source_id']}")).status_code == 200
    assert (await client.delete(f"/flows/{b['id']}")).status_code == 204
    assert (await client.get(f"/sources/{a['source_id']}")).status_code == 404
    assert (await client.get(f"/flows/{a['id']}")).status_code == 404
    assert (await client.delete(f"/flows/{a['id']}")).status_code == 404
