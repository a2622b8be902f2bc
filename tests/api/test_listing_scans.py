"""Filtered listings on SQLite look at a bounded number of rows per page (``Queries._page``,
the setting ``listing_scan_rows``): a broad filter matching few Flows, or none, would otherwise
read the whole table for one page. Here the bound is made small (5 rows) so that a handful of
Flows shows it: pages may come short, even empty, with a next link, and following the links
finds every match once, in order. Lookups that name what they want (a Source, a label, a tag's
value) run whole."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from tamstore.config import Settings
from tamstore.store.metadata import base
from tests.conftest import audio_flow, put_flow


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, listing_scan_rows=5)


async def _all_pages(client: httpx.AsyncClient, url: str) -> tuple[list[str], list[int]]:
    """Every id a listing gives, following its next links, and the size of each page."""
    ids: list[str] = []
    sizes: list[int] = []
    while url:
        r = await client.get(url)
        assert r.status_code == 200, r.text
        ids += [item["id"] for item in r.json()]
        sizes.append(len(r.json()))
        assert r.headers["x-paging-count"] == str(len(r.json()))
        url = r.links.get("next", {}).get("url", "")
    return ids, sizes


async def test_a_broad_filter_pages_through_the_table_a_bounded_stretch_at_a_time(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    if settings.database_url:
        pytest.skip("SQLite only: on PostgreSQL a long statement holds a connection, not the event loop")
    flows: list[dict[str, Any]] = []
    for i in range(14):  # oldest first: audio at 1, 2 and 12
        body = audio_flow() if i in (1, 2, 12) else None
        if body is not None:
            assert (await client.put(f"/flows/{body['id']}", json=body)).status_code == 201
            flows.append(body)
        else:
            flows.append(await put_flow(client))
    audio = [f["id"] for f in flows if f["format"].endswith("audio")]
    newest_first = list(reversed(audio))
    ids, sizes = await _all_pages(client, "/flows?format=urn:x-nmos:format:audio&limit=10")
    assert ids == newest_first and len(sizes) > 1 and min(sizes) < 3  # short pages, all found once
    ids, _ = await _all_pages(client, "/flows?format=urn:x-nmos:format:audio&limit=1&reverse_order=true")
    assert ids == audio
    ids, _ = await _all_pages(client, "/flows?codec=video/none&limit=10")
    assert ids == []
    everything, sizes = await _all_pages(client, "/flows?limit=10")
    assert len(everything) == 14 and sizes == [10, 4]  # no filter: full pages, as before


async def test_lookups_run_whole(client: httpx.AsyncClient) -> None:
    flows = [await put_flow(client) for _ in range(12)]
    first = flows[0]
    assert (await client.put(f"/flows/{first['id']}/label", json="wanted")).status_code == 204
    assert (await client.put(f"/flows/{first['id']}/tags/programme", json="p-1")).status_code == 204
    for query in (f"source_id={first['source_id']}", "label=wanted", "tag.programme=p-1"):
        r = await client.get(f"/flows?{query}&limit=10")
        assert [f["id"] for f in r.json()] == [first["id"]] and "next" not in r.links, query
    # The oldest of 12 Sources, beyond the 5 rows a broad filter's page would look at.
    source = first["source_id"]
    assert (await client.put(f"/sources/{source}/tags/programme", json="p-1")).status_code == 204
    assert (await client.put(f"/sources/{source}/label", json="wanted")).status_code == 204
    for query in ("tag.programme=p-1", "label=wanted"):
        r = await client.get(f"/sources?{query}&limit=10")
        assert [s["id"] for s in r.json()] == [source] and "next" not in r.links, query


@pytest.mark.parametrize("few", [1, 1000], ids=["tested-row-by-row", "read-first"])
async def test_a_lookup_finds_the_same_whichever_way_it_reads(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    """A tag value or collection with fewer than FEW_IDS matches is read from its index first,
    one with more tested row by row in the listing's order (``Queries._member_of``)."""
    monkeypatch.setattr(base, "FEW_IDS", few)
    flows = [await put_flow(client) for _ in range(8)]
    tagged = [flows[1], flows[4], flows[6]]
    for flow in tagged:
        assert (await client.put(f"/flows/{flow['id']}/tags/programme", json="p-1")).status_code == 204
    collector = await put_flow(client, flow_collection=[{"id": f["id"], "role": f"r{i}"} for i, f in enumerate(tagged)])
    expected = [f["id"] for f in reversed(tagged)]
    for query in ("tag.programme=p-1", "tag.programme=p-1,p-2", f"collected_by_ids={collector['id']}"):
        ids, _ = await _all_pages(client, f"/flows?{query}&limit=2")
        assert ids == expected, query
    r = await client.get("/flows?tag.programme=p-2")
    assert r.json() == []
