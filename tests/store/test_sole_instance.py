"""``objects.sole_instance`` lets a segment page make an Object's URLs from its backend alone,
without reading object_instances. It must never say so of an Object that has any other instance:
after every kind of instance write the API offers, a page's URLs for each segment equal those of
the Object's own document (which always reads object_instances), and the flag is true only of
Objects whose one instance is the controlled one on their backend."""

from __future__ import annotations

import httpx
import orjson
from sqlalchemy import select

from tamstore.domain.objects import UrlFilter
from tamstore.ops.objects import UrlRenderer
from tamstore.store.metadata import tables as t
from tests.conftest import add_segments, new_id, put_flow, ts


async def test_a_page_shows_every_instance_after_each_kind_of_instance_write(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    fid = flow["id"]
    untouched, added, added_and_removed, controlled_removed, by_segment = await add_segments(
        client, fid, [0, 1, 2, 3, 4]
    )
    storage_id = (await client.get("/service/storage-backends")).json()[0]["id"]

    async def post_instance(oid: str, label: str) -> None:
        r = await client.post(f"/objects/{oid}/instances", json={"url": f"https://cdn/{oid}", "label": label})
        assert r.status_code == 201, r.text

    await post_instance(added, "cdn")
    await post_instance(added_and_removed, "cdn")
    assert (await client.delete(f"/objects/{added_and_removed}/instances?label=cdn")).status_code == 204
    await post_instance(controlled_removed, "cdn")
    r = await client.delete(f"/objects/{controlled_removed}/instances?storage_id={storage_id}")
    assert r.status_code == 204, r.text
    # A segment naming get_urls adds instances to the allocated Object it uses (a second use of it).
    again = {
        "object_id": by_segment,
        "timerange": f"[{ts(5)}_{ts(6)})",
        "ts_offset": "1:0",
        "get_urls": [{"url": "https://cdn/x", "label": "cdn"}],
    }
    # An Object never allocated, known only by its URL.
    by_url = new_id()
    url_only = {
        "object_id": by_url,
        "timerange": f"[{ts(6)}_{ts(7)})",
        "get_urls": [{"url": "https://cdn/y", "label": "cdn"}],
    }
    r = await client.post(f"/flows/{fid}/segments", json=[again, url_only])
    assert r.status_code == 201, r.text

    page = (await client.get(f"/flows/{fid}/segments", params={"verbose_storage": "true"})).json()
    assert len(page) == 7
    for seg in page:
        own = (await client.get(f"/objects/{seg['object_id']}", params={"verbose_storage": "true"})).json()
        assert seg["get_urls"] == own["get_urls"], seg["object_id"]
    assert [len(s["get_urls"]) for s in page] == [1, 2, 1, 1, 2, 2, 1]

    store = client._transport.app.state.ctx.store  # type: ignore[attr-defined]
    o, i = t.objects, t.object_instances
    async with store.engine.connect() as conn:
        flags = dict((await conn.execute(select(o.c.id, o.c.sole_instance))).all())
        instances = (await conn.execute(select(i.c.object_id, i.c.storage_id, i.c.controlled))).all()
    assert {oid for oid, sole in flags.items() if sole} == {untouched}
    assert [(r.storage_id, bool(r.controlled)) for r in instances if r.object_id == untouched] == [(storage_id, True)]


async def test_admin_check_reports_an_object_marked_sole_that_has_other_instances(client: httpx.AsyncClient) -> None:
    from sqlalchemy import update

    from tamstore.ops import check

    ctx = client._transport.app.state.ctx  # type: ignore[attr-defined]
    flow = await put_flow(client)
    sole, two = await add_segments(client, flow["id"], [0, 1])
    r = await client.post(f"/objects/{two}/instances", json={"url": "https://cdn/2", "label": "cdn"})
    assert r.status_code == 201, r.text
    assert (await check.check(ctx)).instance_drift == []
    async with ctx.store.write() as tx:
        await tx.conn.execute(update(t.objects).where(t.objects.c.id == two).values(sole_instance=True))
    report = await check.check(ctx)
    assert report.instance_drift == [f"Object {two} is marked as having only its controlled instance, and has others"]
    assert not report.ok


async def test_every_url_filter_renders_an_only_controlled_instance_as_the_object_document_does(
    client: httpx.AsyncClient,
) -> None:
    """A page renders an Object with only its controlled instance from its backend alone
    (``UrlRenderer.controlled_only``), the others from their instances: under every get_urls
    filter, each segment's URLs are still the Object's own document's."""
    flow = await put_flow(client)
    sole, two = await add_segments(client, flow["id"], [0, 1])
    r = await client.post(f"/objects/{two}/instances", json={"url": "https://cdn/two", "label": "cdn"})
    assert r.status_code == 201, r.text
    backend = (await client.get("/service/storage-backends")).json()[0]
    queries = [
        "",
        "accept_get_urls=",
        f"accept_get_urls={backend['label']}",
        "accept_get_urls=cdn",
        f"accept_storage_ids={backend['id']}",
        f"accept_storage_ids={new_id()}",
        "presigned=true",
        "presigned=false",
        "verbose_storage=true",
        "storage_backend_tag.x=1",
    ]
    seen = set()
    for query in queries:
        page = (await client.get(f"/flows/{flow['id']}/segments?{query}")).json()
        assert [s["object_id"] for s in page] == [sole, two]
        for seg in page:
            own = (await client.get(f"/objects/{seg['object_id']}?{query}")).json()
            assert seg["get_urls"] == own["get_urls"], (query, seg["object_id"])
        seen.add(len(page[0]["get_urls"]))
    assert seen == {0, 1}  # the filters both kept and dropped the controlled URL


async def test_an_only_controlled_instances_urls_as_json_are_its_urls_serialized(client: httpx.AsyncClient) -> None:
    """A page splices in ``UrlRenderer.controlled_json``'s JSON where ``controlled_only`` gives
    the same URLs as data (for playlists and Object documents): byte for byte the same."""
    ctx = client._transport.app.state.ctx  # type: ignore[attr-defined]
    oid = new_id()
    compared = []
    for filt in (UrlFilter(), UrlFilter(verbose=True), UrlFilter(accept_get_urls=())):
        renderer = UrlRenderer(ctx, filt, 'http://host:8000/"quoted"')
        made = renderer.controlled_json()
        assert set(made) == set(renderer.signers)
        for storage_id, as_json in made.items():
            assert orjson.dumps(as_json(oid)) == orjson.dumps(renderer.controlled_only(storage_id, oid))
            compared.append(filt.verbose)
    assert sorted(set(compared)) == [False, True]  # both plain and verbose entries were compared
