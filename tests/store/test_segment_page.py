"""The segment page query runs as SQL text on the raw driver (tamstore/store/metadata/segment_page.py).
It must return exactly what its SQLAlchemy form returns, for every shape, on every database."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from sqlalchemy import bindparam, select

from tamstore.store.metadata import tables as t
from tamstore.store.metadata.segment_page import SegmentRow, Shape
from tamstore.store.metadata.sql import segment_range_clause
from tests.conftest import add_segments, put_flow

NS = 1_000_000_000


def reference_statement(shape: Shape) -> Any:
    """The page query in SQLAlchemy, from the range clause every other segment query uses."""
    s, o = t.segments, t.objects
    where = segment_range_clause(
        bindparam("flow_id"), bindparam("lo") if shape.lo else None, bindparam("hi") if shape.hi else None
    )
    query = (
        select(*[s.c[name] for name in SegmentRow._fields[:-3]], o.c.init_object_id, o.c.storage_id, o.c.sole_instance)
        .select_from(s.join(o, o.c.id == s.c.object_id))
        .where(where)
    )
    if shape.object_id:
        query = query.where(s.c.object_id == bindparam("object_id"))
    if shape.after:
        query = query.where(s.c.ts_start < bindparam("after") if shape.reverse else s.c.ts_start > bindparam("after"))
    order = s.c.ts_start.desc() if shape.reverse else s.c.ts_start.asc()
    return query.order_by(order).limit(bindparam("limit"))


async def test_raw_page_query_matches_the_sqlalchemy_form(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    oids = await add_segments(client, flow["id"], [0, 1, 2, 4, 5, 7, 8, 9, 10, 11])
    # A second instance on one Object: it no longer has a sole instance.
    assert (await client.post(f"/objects/{oids[3]}/instances", json={"url": "https://x/3", "label": "cdn"})).is_success
    store = client._transport.app.state.ctx.store  # type: ignore[attr-defined]
    compared = 0
    for shape in itertools.starmap(Shape, itertools.product((False, True), repeat=5)):
        params: dict[str, Any] = {"flow_id": flow["id"], "limit": 4}
        if shape.lo:
            params["lo"] = 3 * NS  # where a segment ends: the half-open boundary
        if shape.hi:
            params["hi"] = 10 * NS
        if shape.object_id:
            params["object_id"] = oids[3]
        if shape.after:
            params["after"] = 5 * NS if not shape.reverse else 9 * NS
        async with store.read() as tx:
            raw = [tuple(r) for r in await tx._segment_page_rows(shape, params)]
        async with store.engine.connect() as conn:
            reference = [tuple(r) for r in (await conn.execute(reference_statement(shape), params)).all()]
        reference = [(*r[:-1], None if r[-1] is None else bool(r[-1])) for r in reference]
        raw = [(*r[:-1], None if r[-1] is None else bool(r[-1])) for r in raw]
        assert raw == reference, shape
        compared += bool(raw)
    assert compared >= 16  # most shapes found rows: the comparison was not of empty lists


async def test_an_object_with_two_instances_keeps_both_in_the_page(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    oids = await add_segments(client, flow["id"], [0, 1, 2])
    await client.post(f"/objects/{oids[1]}/instances", json={"url": "https://cdn/1", "label": "cdn"})
    page = (await client.get(f"/flows/{flow['id']}/segments?limit=2")).json()
    assert [len(s["get_urls"]) for s in page] == [1, 2]
    assert page[1]["get_urls"][1] == {"url": "https://cdn/1", "presigned": False, "label": "cdn"}
    assert len((await client.get(f"/flows/{flow['id']}/segments?limit=2&reverse_order=true")).json()) == 2
