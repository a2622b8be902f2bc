"""Kept segment pages (tamstore/api/page_cache.py): reused byte for byte while nothing they show
has changed, and never once something has, whichever process changed it.

Each test first shows that the page *is* kept (``kept``: read again, it is a hit), then makes one
change and shows the next read has it: without the first half, these tests would pass with no
cache. (That authentication comes before kept pages is in tests/test_auth.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

import httpx

from tamstore.api.page_cache import KeptPage, PageCache
from tamstore.config import Settings
from tamstore.ops import deletion
from tamstore.store.media import base
from tamstore.testing import app_client
from tests.conftest import Clock, add_segments, allocate, put_flow, video_flow

HITS = re.compile(rb'^tamstore_page_cache_lookups_total\{outcome="hit"\} (\S+)$', re.M)


async def hits(client: httpx.AsyncClient) -> int:
    found = HITS.search((await client.get("/metrics")).content)
    return int(float(found.group(1))) if found else 0


async def kept(client: httpx.AsyncClient, url: str) -> httpx.Response:
    """Read ``url`` until it is kept (a page is kept from its second read on); one more read
    must then come from the cache, unchanged."""
    await client.get(url)
    rendered = await client.get(url)
    assert rendered.status_code == 200, rendered.text
    before = await hits(client)
    again = await client.get(url)
    assert await hits(client) == before + 1, "a page read again, unchanged, was not a hit"
    assert again.content == rendered.content
    return again


async def test_a_kept_page_is_what_rendering_it_again_gives(settings: Settings, clock: Clock) -> None:
    async with app_client(settings) as client, app_client(dataclasses.replace(settings, page_cache_mib=0)) as fresh:
        flow = await put_flow(client)
        await add_segments(client, flow["id"], list(range(5)))
        url = f"/flows/{flow['id']}/segments?limit=2&timerange=[1:0_5:0)"
        hit = await kept(client, url)
        again = await fresh.get(url)
        assert again.content == hit.content
        assert hit.headers["link"] and hit.headers["x-paging-count"] == "2"
        drop = {"x-request-id"}
        assert {k: v for k, v in hit.headers.items() if k not in drop} == {
            k: v for k, v in again.headers.items() if k not in drop
        }
        assert hit.headers["x-request-id"] != (await client.get(url)).headers["x-request-id"]
        head = await client.head(url)
        assert head.content == b"" and head.headers["content-length"] == str(len(hit.content))


async def test_segment_writes_and_flow_deletion_renew_the_page(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    url = f"/flows/{flow['id']}/segments"
    await add_segments(client, flow["id"], [0, 1, 2])
    await kept(client, url)
    await add_segments(client, flow["id"], [3])
    assert [s["timerange"] for s in (await kept(client, url)).json()][-1] == "[3:0_4:0)"
    assert (await client.delete(f"{url}?timerange=[0:0_1:0)")).status_code == 204
    assert len((await kept(client, url)).json()) == 3
    assert (await client.delete(f"/flows/{flow['id']}")).status_code == 204
    assert (await client.get(url)).json() == []
    assert (await client.put(f"/flows/{flow['id']}", json=flow)).status_code == 201  # the same id again
    assert (await client.get(url)).json() == []


async def test_instance_writes_renew_the_pages_of_every_flow_using_the_object(client: httpx.AsyncClient) -> None:
    a, b = await put_flow(client), await put_flow(client)
    [oid] = await add_segments(client, a["id"], [0])
    seg = {"object_id": oid, "timerange": "[0:0_1:0)"}
    assert (await client.post(f"/flows/{b['id']}/segments", json=seg)).status_code == 201
    urls = [f"/flows/{f['id']}/segments" for f in (a, b)]

    def labels(page: httpx.Response) -> list[str]:
        return [u["label"] for u in page.json()[0]["get_urls"]]

    for url in urls:
        await kept(client, url)
    added = {"url": "https://cdn.example/a", "label": "cdn"}
    assert (await client.post(f"/objects/{oid}/instances", json=added)).status_code == 201
    for url in urls:
        assert "cdn" in labels(await kept(client, url))
    assert (await client.delete(f"/objects/{oid}/instances?label=cdn")).status_code == 204
    for url in urls:
        assert "cdn" not in labels(await kept(client, url))
    # a segment registered in a third Flow may add an instance to the Object through its get_urls
    c = await put_flow(client)
    seg["get_urls"] = [{"url": "https://mirror.example/a", "label": "mirror"}]
    assert (await client.post(f"/flows/{c['id']}/segments", json=seg)).status_code == 201
    for url in urls:
        assert "mirror" in labels(await client.get(url))


async def test_instances_of_an_init_object_renew_the_page(client: httpx.AsyncClient) -> None:
    flow = video_flow(container="video/mp4")
    flow["essence_parameters"]["init_segments"] = True
    assert (await client.put(f"/flows/{flow['id']}", json=flow)).status_code == 201
    [init] = await allocate(client, flow["id"], content_type="video/mp4")
    [media] = await allocate(client, flow["id"])
    seg = {"object_id": media["object_id"], "timerange": "[0:0_1:0)", "init_object_id": init["object_id"]}
    url = f"/flows/{flow['id']}/segments"
    assert (await client.post(url, json=seg)).status_code == 201
    await kept(client, url)
    added = {"url": "https://cdn.example/init", "label": "cdn"}
    assert (await client.post(f"/objects/{init['object_id']}/instances", json=added)).status_code == 201
    [page] = (await client.get(url)).json()
    assert "https://cdn.example/init" in [u["url"] for u in page["init_object"]["get_urls"]]


async def test_a_write_by_another_process_is_seen_at_once(settings: Settings) -> None:
    """Two apps on one database stand for two processes or replicas: each keeps its own pages."""
    async with app_client(settings) as reader, app_client(settings) as writer:
        flow = await put_flow(writer)
        await add_segments(writer, flow["id"], [0])
        url = f"/flows/{flow['id']}/segments"
        [seg] = (await kept(reader, url)).json()
        await add_segments(writer, flow["id"], [1])
        assert len((await kept(reader, url)).json()) == 2
        added = {"url": "https://cdn.example/x", "label": "cdn"}
        assert (await writer.post(f"/objects/{seg['object_id']}/instances", json=added)).status_code == 201
        assert "cdn" in [u["label"] for u in (await reader.get(url)).json()[0]["get_urls"]]


async def test_an_asynchronous_deletion_renews_the_page(settings: Settings) -> None:
    async with app_client(dataclasses.replace(settings, inline_delete_limit=2), workers=True) as client:
        flow = await put_flow(client)
        await add_segments(client, flow["id"], list(range(6)))
        url = f"/flows/{flow['id']}/segments"
        await kept(client, url)
        assert (await client.delete(f"{url}?timerange=[2:0_")).status_code == 202
        for _ in range(200):
            if len((await client.get(url)).json()) == 2:
                break
            await asyncio.sleep(0.05)
        assert [s["timerange"] for s in (await client.get(url)).json()] == ["[0:0_1:0)", "[1:0_2:0)"]


async def test_a_restore_from_the_recovery_window_renews_the_page(settings: Settings) -> None:
    async with app_client(dataclasses.replace(settings, recovery_window=3600)) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        flow = await put_flow(client)
        await add_segments(client, flow["id"], [0, 1, 2])
        url = f"/flows/{flow['id']}/segments"
        await kept(client, url)
        assert (await client.delete(f"{url}?timerange=[1:0_3:0)")).status_code == 204
        assert len((await kept(client, url)).json()) == 1
        [deleted] = await deletion.list_deleted(ctx)
        await deletion.restore(ctx, deleted["id"])
        assert len((await client.get(url)).json()) == 3


async def test_a_page_is_not_reused_past_its_url_window(client: httpx.AsyncClient, clock: Clock) -> None:
    flow = await put_flow(client)
    await add_segments(client, flow["id"], [0])
    url = f"/flows/{flow['id']}/segments"
    old = (await kept(client, url)).json()[0]["get_urls"][0]["url"]
    clock.now += base.URL_WINDOW_SECONDS
    before = await hits(client)
    new = (await client.get(url)).json()[0]["get_urls"][0]["url"]
    assert await hits(client) == before
    assert new != old  # signed again for the new window, valid for longer


async def test_a_page_asked_for_once_is_not_kept(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    await add_segments(client, flow["id"], [0])
    before = await hits(client)
    for i in range(3):  # three different pages, once each: nothing to reuse, nothing kept
        assert (await client.get(f"/flows/{flow['id']}/segments?limit={i + 1}")).status_code == 200
    assert await hits(client) == before
    url = f"/flows/{flow['id']}/segments?limit=1"
    await client.get(url)  # the second time: rendered, and kept
    assert await hits(client) == before
    await client.get(url)
    assert await hits(client) == before + 1


def test_the_cache_keeps_to_its_byte_budget_dropping_the_least_recently_used() -> None:
    def page(size: int, token: int = 1) -> KeptPage:
        return KeptPage(token, 0, [], b"x" * size)

    cache = PageCache(max_bytes=400)
    for key in "abcd":
        cache.put(key, page(100))
    assert len(cache) == 4 and cache.bytes == 400
    assert cache.get("a", 1, 0) is not None  # now the most recently used
    cache.put("e", page(100))
    assert cache.get("b", 1, 0) is None and cache.get("a", 1, 0) is not None
    assert cache.get("a", 2, 0) is None and cache.get("a", 1, 1) is None  # another token, another window
    cache.put("a", page(100, token=2))  # kept again at a new token: replaces, not adds
    assert cache.bytes == 400 and cache.get("a", 2, 0) is not None
    cache.put("big", page(101))  # over a quarter of the budget: not kept
    assert cache.get("big", 1, 0) is None and cache.bytes == 400


def test_keys_are_remembered_once_asked_for_within_a_bound() -> None:
    cache = PageCache(max_bytes=400, remembered=2)
    assert [cache.asked_before(k) for k in "aab"] == [False, True, False]
    assert cache.asked_before("c") is False  # "a" is forgotten now
    assert cache.asked_before("a") is False and cache.asked_before("c") is True
    cache.put("z", KeptPage(1, 0, [], b""))
    assert cache.asked_before("z") is True  # a kept page is asked for again by definition
