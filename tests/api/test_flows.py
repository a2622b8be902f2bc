"""Flows (CHECKLIST §6, §16): create/replace, read, filters, sub-resources, read_only, profiles."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tamstore.testing import SpecSchemas
from tests.conftest import add_segments, audio_flow, new_id, put_flow, video_flow


async def test_put_creates_with_201_and_replaces_with_204(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    body = video_flow(label="one", tags={"a": "1"})
    r = await client.put(f"/flows/{body['id']}", json=body)
    assert r.status_code == 201
    schemas.check("flow-get.json", r.json())
    assert r.json()["label"] == "one"
    body.pop("tags")
    r = await client.put(f"/flows/{body['id']}", json=body)
    assert r.status_code == 204 and r.content == b""
    got = (await client.get(f"/flows/{body['id']}")).json()
    schemas.check("flow-get.json", got)
    assert got["tags"] == {}  # a PUT without tags wipes them
    assert got["created"] and got["metadata_updated"]


async def test_flow_creates_its_source(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    flow = await put_flow(client)
    r = await client.get(f"/sources/{flow['source_id']}")
    assert r.status_code == 200
    schemas.check("source.json", r.json())
    assert r.json()["format"] == flow["format"]


async def test_format_clash_with_source_is_400(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    audio = audio_flow(source_id=flow["source_id"])
    assert (await client.put(f"/flows/{audio['id']}", json=audio)).status_code == 400


@pytest.mark.parametrize(
    "change",
    [
        {"source_id": None},
        {"source_id": "not-a-uuid"},
        {"format": "urn:x-nmos:format:nonsense"},
        {"essence_parameters": {"frame_width": 1920, "frame_height": 1080}},  # no frame_rate, no vfr
        {
            "essence_parameters": {
                "frame_width": 1,
                "frame_height": 1,
                "vfr": True,
                "frame_rate": {"numerator": 1},
            }
        },
        {"essence_parameters": {"frame_width": 1, "frame_height": 1, "vfr": True, "bogus": 1}},
        {"max_bit_rate": -1},
        {"id": "00000000-0000-4000-8000-000000000000"},
    ],
)
async def test_put_rejects_invalid_flows(client: httpx.AsyncClient, change: dict) -> None:
    body = video_flow()
    flow_id = body["id"]
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    r = await client.put(f"/flows/{flow_id}", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["summary"]


async def test_changing_format_is_400(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    flow["format"] = "urn:x-nmos:format:data"
    flow["essence_parameters"] = {}
    assert (await client.put(f"/flows/{flow['id']}", json=flow)).status_code == 400


async def test_missing_and_malformed_ids(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/flows/{new_id()}")).status_code == 404
    assert (await client.get("/flows/NOT-A-UUID")).status_code == 404
    assert (await client.head(f"/flows/{new_id()}")).status_code == 404
    assert (await client.get(f"/flows/{new_id()}/label")).status_code == 404


@pytest.mark.parametrize(
    "example",
    sorted(
        [
            "flow-get-200-audio-aac.json",
            "flow-get-200-audio-wav.json",
            "flow-get-200-data-ttml.json",
            "flow-get-200-image-jpeg.json",
            "flow-get-200-multi.json",
            "flow-get-200-video-h264.json",
            "flow-get-200-video-h264-fmp4.json",
            "flow-get-200-video-h264-vfr.json",
            "flow-get-200-video-raw.json",
            "flow-get-200-video-jpeg-mxf.json",
            "flow-get-200-video-h264-cleanfeed.json",
            "flow-get-200-video-h264-mxf.json",
            "flow-get-200-video-jpeg-jp2.json",
            "flow-get-200-audio-aac-multi.json",
            "flow-get-200-multi-container-map.json",
        ]
    ),
)
async def test_spec_example_flows_round_trip(client: httpx.AsyncClient, schemas: SpecSchemas, example: str) -> None:
    doc = json.loads((schemas.dir / "examples" / example).read_text())
    managed = {
        "created",
        "metadata_updated",
        "segments_updated",
        "collected_by",
        "timerange",
        "flow_collection",
        "metadata_version",
        "read_only",
    }
    body = {k: v for k, v in doc.items() if k not in managed}
    r = await client.put(f"/flows/{doc['id']}", json=body)
    assert r.status_code == 201, r.text
    got = (await client.get(f"/flows/{doc['id']}")).json()
    schemas.check("flow-get.json", got)
    assert {k: v for k, v in got.items() if k in body} == body


async def test_listing_filters(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    a = await put_flow(client, label="alpha", tags={"genre": ["news", "sport"]})
    b = await put_flow(client, label="beta", tags={"genre": "drama"}, status="ingesting")
    audio = audio_flow()
    audio_id = audio["id"]
    assert (await client.put(f"/flows/{audio_id}", json=audio)).status_code == 201

    async def ids(query: str) -> set[str]:
        r = await client.get(f"/flows?{query}")
        assert r.status_code == 200, r.text
        schemas.check_items("flow-get.json", r.json())
        return {f["id"] for f in r.json()}

    assert await ids("label=alpha") == {a["id"]}
    assert await ids("tag.genre=news") == {a["id"]}
    assert await ids("tag.genre=drama,sport") == {a["id"], b["id"]}
    assert await ids("tag_exists.genre=false") == {audio_id}
    assert await ids("format=urn:x-nmos:format:audio") == {audio_id}
    assert await ids("codec=video/h264&frame_width=1920") == {a["id"], b["id"]}
    assert await ids("frame_height=720") == set()
    assert await ids("status=ingesting") == {b["id"]}
    assert await ids(f"source_id={a['source_id']}") == {a["id"]}
    assert await ids("init_segments=false") == {a["id"], b["id"], audio_id}


@pytest.mark.parametrize(
    "query",
    [
        "timerange=bad",
        "reverse_order=yes",
        "limit=ten",
        "format=video",
        "status=done",
        "sort_by=timerange",
        "codec=nonsense",
        "source_id=123",
        "frame_width=x",
        "init_segments=1",
        "collected_by_ids=abc",
        "tag_exists.x=maybe",
        "page=%%%",
        "page=bm90IGEgY3Vyc29y",
    ],
)
async def test_listing_rejects_bad_queries(client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/flows?{query}")
    assert r.status_code == 400, query
    assert r.json()["type"]
    head = await client.head(f"/flows?{query}")
    assert head.status_code == 400 and head.content == b""


async def test_paging_by_keyset_cursor(client: httpx.AsyncClient) -> None:
    made = [(await put_flow(client, label=f"f{i:02d}"))["id"] for i in range(7)]
    seen: list[str] = []
    url = "/flows?limit=3&label_unused=1"
    while url:
        r = await client.get(url)
        assert r.headers["x-paging-limit"] == "3"
        assert int(r.headers["x-paging-count"]) == len(r.json())
        seen += [f["id"] for f in r.json()]
        link = r.links.get("next")
        if link:
            assert "label_unused=1" in link["url"]  # other parameters are kept
            assert r.headers["x-paging-nextkey"] in link["url"]
        url = link["url"] if link else None
    assert seen == list(reversed(made))  # newest first
    r = await client.get("/flows?limit=3&reverse_order=true")
    assert [f["id"] for f in r.json()] == made[:3]
    assert r.headers["x-paging-reverse-order"] == "true"
    head = await client.head("/flows?limit=3")
    assert head.headers["link"] and head.content == b""
    by_label = await client.get("/flows?sort_by=label&limit=100")
    assert [f["label"] for f in by_label.json()] == sorted(f"f{i:02d}" for i in range(7))


async def test_sub_resources(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    base = f"/flows/{flow['id']}"
    for prop, value in [("label", "L"), ("description", "D"), ("max_bit_rate", 8000), ("avg_bit_rate", 5000)]:
        assert (await client.put(f"{base}/{prop}", json=value)).status_code == 204
        r = await client.get(f"{base}/{prop}")
        assert r.status_code == 200 and r.json() == value
        assert (await client.delete(f"{base}/{prop}")).status_code == 204
        assert (await client.get(f"{base}/{prop}")).status_code == 404
    json_type = {"content-type": "application/json"}
    assert (await client.put(f"{base}/label", content=b"unquoted", headers=json_type)).status_code == 400
    assert (
        await client.put(f"{base}/label", content=b'"plain"', headers={"content-type": "text/plain"})
    ).status_code == 415
    assert (await client.put(f"{base}/label", json=5)).status_code == 400
    assert (await client.put(f"{base}/max_bit_rate", json=-5)).status_code == 400
    assert (await client.put(f"{base}/max_bit_rate", json=1.5)).status_code == 400
    assert (await client.put(f"{base}/read_only", json="yes")).status_code == 400
    assert (await client.delete(f"{base}/read_only")).status_code == 405


async def test_tags(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    base = f"/flows/{flow['id']}/tags"
    assert (await client.put(f"{base}/genre", json=["a", "b"])).status_code == 204
    assert (await client.put(f"{base}/odd%2Fname", json="x")).status_code == 204
    assert (await client.get(base)).json() == {"genre": ["a", "b"], "odd/name": "x"}
    assert (await client.get(f"{base}/odd%2Fname")).json() == "x"
    assert (await client.put(f"{base}/bad", json=5)).status_code == 400
    assert (await client.delete(f"{base}/genre")).status_code == 204
    assert (await client.delete(f"{base}/genre")).status_code == 404
    assert (await client.get(f"{base}/genre")).status_code == 404
    assert [f["id"] for f in (await client.get("/flows?tag.odd%2Fname=x")).json()] == [flow["id"]]


FLOW = "<the Flow's own document>"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "", FLOW),
        ("PUT", "/label", "x"),
        ("DELETE", "/label", None),
        ("PUT", "/tags/a", "b"),
        ("PUT", "/max_bit_rate", 5),
        ("POST", "/storage", {"limit": 1}),
        ("POST", "/segments", {"object_id": "x", "timerange": "[0:0_1:0)"}),
        ("DELETE", "/segments", None),
        ("DELETE", "", None),
    ],
)
async def test_read_only_flows_refuse_writes(client: httpx.AsyncClient, method: str, path: str, body: Any) -> None:
    flow = await put_flow(client)
    base = f"/flows/{flow['id']}"
    assert (await client.put(f"{base}/read_only", json=True)).status_code == 204
    assert (await client.get(f"{base}/read_only")).json() is True
    r = await client.request(method, base + path, json=flow if body == FLOW else body)
    assert r.status_code == 403, (method, path, r.text)
    assert (await client.put(f"{base}/read_only", json=False)).status_code == 204
    assert (await client.put(f"{base}/label", json="x")).status_code == 204


async def test_flow_collections_and_collected_by(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    video = await put_flow(client)
    audio = await put_flow(client)
    multi_id = new_id()
    multi = {
        "id": multi_id,
        "source_id": new_id(),
        "format": "urn:x-nmos:format:multi",
        "container": "video/mp2t",
        "flow_collection": [{"id": video["id"], "role": "video"}, {"id": audio["id"], "role": "audio"}],
    }
    assert (await client.put(f"/flows/{multi_id}", json=multi)).status_code == 201
    got = (await client.get(f"/flows/{video['id']}")).json()
    assert got["collected_by"] == [multi_id]
    assert (await client.get(f"/flows/{multi_id}/flow_collection")).json() == multi["flow_collection"]
    source = (await client.get(f"/sources/{multi['source_id']}")).json()
    schemas.check("source.json", source)
    assert [c["id"] for c in source["source_collection"]] == [video["source_id"], audio["source_id"]]
    assert (await client.get(f"/sources/{video['source_id']}")).json()["collected_by"] == [multi["source_id"]]
    top = {f["id"] for f in (await client.get("/flows?collected_by_ids=")).json()}
    assert top == {multi_id}
    members = {f["id"] for f in (await client.get(f"/flows?collected_by_ids={multi_id}")).json()}
    assert members == {video["id"], audio["id"]}
    srcs = {s["id"] for s in (await client.get("/sources?collected_by_ids=")).json()}
    assert srcs == {multi["source_id"]}
    bad = [{"id": new_id()}]
    assert (await client.put(f"/flows/{multi_id}/flow_collection", json=bad)).status_code == 400
    assert (await client.put(f"/flows/{multi_id}/flow_collection", json=[{"id": multi_id}])).status_code == 400
    assert (await client.put(f"/flows/{multi_id}/flow_collection", json={"id": 1})).status_code == 400
    assert (await client.delete(f"/flows/{multi_id}/flow_collection")).status_code == 204
    assert "collected_by" not in (await client.get(f"/flows/{video['id']}")).json()


async def test_a_listing_names_each_flows_collectors_across_id_lists(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's collections are read in IN lists of IN_CHUNK ids (here 2, so a page of five
    Flows takes three): every listed Flow names its collectors as its own document does."""
    import tamstore.store.metadata.base as base

    monkeypatch.setattr(base, "IN_CHUNK", 2)
    monkeypatch.setattr(base, "IN_CHUNK_POSTGRESQL", 2)
    members = [await put_flow(client) for _ in range(3)]
    collectors = sorted(new_id() for _ in range(2))
    for n, collector_id in enumerate(collectors):
        body = {
            "id": collector_id,
            "source_id": new_id(),
            "format": "urn:x-nmos:format:multi",
            "container": "video/mp2t",
            "flow_collection": [{"id": m["id"], "role": f"r{k}"} for k, m in enumerate(members[n:])],
        }
        assert (await client.put(f"/flows/{collector_id}", json=body)).status_code == 201
    listed = {f["id"]: f for f in (await client.get("/flows?limit=10")).json()}
    assert len(listed) == 5
    assert listed[members[0]["id"]]["collected_by"] == collectors[:1]
    assert listed[members[1]["id"]]["collected_by"] == collectors
    assert listed[members[2]["id"]]["collected_by"] == collectors
    for flow_id, doc in listed.items():
        assert doc == (await client.get(f"/flows/{flow_id}")).json()


async def test_profiles_on_flows(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    pid = new_id()
    profile = {
        "id": pid,
        "flow_metadata": {
            "format": "urn:x-nmos:format:video",
            "codec": "video/h264",
            "container": "video/mp2t",
            "avg_bit_rate": 5000,
            "essence_parameters": {
                "frame_width": 1280,
                "frame_height": 720,
                "frame_rate": {"numerator": 50, "denominator": 1},
            },
        },
    }
    assert (await client.post(f"/service/profiles/{pid}", json=profile)).status_code == 201
    flow_id = new_id()
    body = {"id": flow_id, "source_id": new_id(), "profile_id": pid, "label": "from profile"}
    r = await client.put(f"/flows/{flow_id}", json=body)
    assert r.status_code == 201, r.text
    schemas.check("flow-get.json", r.json())
    assert r.json()["essence_parameters"]["frame_width"] == 1280
    assert [f["id"] for f in (await client.get(f"/flows?profile_id={pid}")).json()] == [flow_id]
    assert (await client.put(f"/flows/{flow_id}/avg_bit_rate", json=1)).status_code == 400
    assert (await client.put(f"/flows/{flow_id}/max_bit_rate", json=1)).status_code == 204
    clash = {**body, "codec": "video/h264"}
    assert (await client.put(f"/flows/{flow_id}", json=clash)).status_code == 400
    unknown = {**body, "profile_id": new_id()}
    assert (await client.put(f"/flows/{flow_id}", json=unknown)).status_code == 400
    unlinked = video_flow(flow_id, body["source_id"], profile_id="")
    assert (await client.put(f"/flows/{flow_id}", json=unlinked)).status_code == 204
    assert (await client.get(f"/flows?profile_id={pid}")).json() == []


async def test_flow_timerange_and_filter(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    empty = await put_flow(client)
    await add_segments(client, flow["id"], [10, 11, 12])
    got = (await client.get(f"/flows/{flow['id']}?include_timerange=true")).json()
    assert got["timerange"] == "[10:0_13:0)"
    assert "timerange" not in (await client.get(f"/flows/{flow['id']}")).json()
    part = (await client.get(f"/flows/{flow['id']}?include_timerange=true&timerange=[11:500000000_12:0)")).json()
    assert part["timerange"] == "[11:0_12:0)"
    assert (await client.get(f"/flows/{empty['id']}?include_timerange=true")).json()["timerange"] == "()"
    assert {f["id"] for f in (await client.get("/flows?timerange=()")).json()} == {empty["id"]}
    assert {f["id"] for f in (await client.get("/flows?timerange=[12:0_20:0)")).json()} == {flow["id"]}
    assert (await client.get("/flows?timerange=[13:0_20:0)")).json() == []
    assert {f["id"] for f in (await client.get("/flows?timerange=_")).json()} == {flow["id"]}


async def test_flow_survives_restart(settings) -> None:  # type: ignore[no-untyped-def]
    from tamstore.testing import app_client

    async with app_client(settings) as c:
        flow = await put_flow(c, label="kept")
    async with app_client(settings) as c:
        assert (await c.get(f"/flows/{flow['id']}")).json()["label"] == "kept"


async def test_limit_is_clamped_and_reported(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await put_flow(client)
    r = await client.get("/flows?limit=0")
    assert r.headers["x-paging-limit"] == "1" and len(r.json()) == 1
    r = await client.get("/flows?limit=100000")
    assert r.headers["x-paging-limit"] == "1000"
    r = await client.get("/flows?page=")
    assert len(r.json()) == 3


async def test_405_lists_every_allowed_method(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    r = await client.post(f"/flows/{flow['id']}/label")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}
    r = await client.options("/service")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_a_replacing_put_keeps_created_by_and_created(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client, created_by="ingest-7")
    before = (await client.get(f"/flows/{flow['id']}")).json()
    replacement = {k: v for k, v in flow.items() if k != "created_by"}
    assert (await client.put(f"/flows/{flow['id']}", json={**replacement, "label": "new"})).status_code == 204
    after = (await client.get(f"/flows/{flow['id']}")).json()
    assert after["created_by"] == "ingest-7" and after["created"] == before["created"]
