"""Segments, storage allocation and media round trips (CHECKLIST §7, §8, §10, §16)."""

from __future__ import annotations

import httpx
import pytest

from tamstore.testing import SpecSchemas
from tests.conftest import add_segments, allocate, media_request, new_id, put_flow, stored_bytes, video_flow


async def test_ingest_outgest_round_trip(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    flow = await put_flow(client)
    r = await client.post(f"/flows/{flow['id']}/storage", json={"limit": 3})
    assert r.status_code == 201
    schemas.check("flow-storage.json", r.json())
    objs = r.json()["media_objects"]
    payloads = [f"segment {i} ".encode() * 1000 for i in range(3)]
    for obj, data in zip(objs, payloads, strict=True):
        put = obj["put_url"]
        assert put["content-type"] == "video/mp2t"
        up = await media_request(client, "PUT", put["url"], content=data, headers={"content-type": put["content-type"]})
        assert up.status_code == 200
    segs = [{"object_id": o["object_id"], "timerange": f"[{i}:0_{i + 1}:0)"} for i, o in enumerate(objs)]
    r = await client.post(f"/flows/{flow['id']}/segments", json=segs)
    assert r.status_code == 201, r.text
    r = await client.get(f"/flows/{flow['id']}/segments")
    assert r.status_code == 200
    schemas.check_items("flow-segment.json", r.json())
    assert r.headers["x-paging-timerange"] == "[0:0_3:0)"
    for seg, data in zip(r.json(), payloads, strict=True):
        [url] = seg["get_urls"]
        got = await media_request(client, "GET", url["url"])
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == "video/mp2t"
        part = await media_request(client, "GET", url["url"], headers={"Range": "bytes=0-6"})
        assert part.status_code == 206 and part.content == data[:7]


OBJ = "<the allocated Object>"
BAD_SEGMENTS = [
    {"timerange": "[0:0_1:0)"},
    {"object_id": OBJ},
    {"object_id": OBJ, "timerange": "nope"},
    {"object_id": OBJ, "timerange": "_"},
    {"object_id": OBJ, "timerange": "()"},
    {"object_id": OBJ, "timerange": "[5:0_"},
    {"object_id": OBJ, "timerange": "[0:500000000_2:0)"},  # overlaps
    {"object_id": "unknown", "timerange": "[7:0_8:0)"},
    {"object_id": OBJ, "timerange": "[9:0_10:0)", "ts_offset": "1:05"},
    {"object_id": OBJ, "timerange": "[9:0_10:0)", "last_duration": "-1:0"},
]


@pytest.mark.parametrize("bad", BAD_SEGMENTS, ids=[str(i) for i in range(len(BAD_SEGMENTS))])
async def test_single_segment_post_errors(client: httpx.AsyncClient, bad: dict[str, str]) -> None:
    flow = await put_flow(client)
    [obj] = await allocate(client, flow["id"])
    url = f"/flows/{flow['id']}/segments"
    assert (await client.post(url, json={"object_id": obj["object_id"], "timerange": "[0:0_1:0)"})).status_code == 201
    body = {k: obj["object_id"] if v == OBJ else v for k, v in bad.items()}
    r = await client.post(url, json=body)
    assert r.status_code == 400, body
    assert r.json()["summary"]


async def test_segment_post_of_no_json_or_to_no_flow(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    url = f"/flows/{flow['id']}/segments"
    assert (
        await client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    ).status_code == 400
    assert (await client.post(f"/flows/{new_id()}/segments", json=BAD_SEGMENTS[0])).status_code == 404


async def test_overlap_boundaries(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    objs = await allocate(client, flow["id"], 4)
    url = f"/flows/{flow['id']}/segments"

    async def post(i: int, tr: str) -> int:
        return (await client.post(url, json={"object_id": objs[i]["object_id"], "timerange": tr})).status_code

    assert await post(0, "[1:0_2:0)") == 201
    assert await post(1, "[0:0_1:0)") == 201  # adjacent before
    assert await post(2, "[2:0_3:0]") == 201  # adjacent after, inclusive end
    assert await post(3, "[3:0_4:0)") == 400  # touches the inclusive end 3:0
    assert await post(3, "[-60:0_-30:0)") == 201  # negative times are fine
    r = await client.get(url)
    assert [s["timerange"] for s in r.json()] == ["[-60:0_-30:0)", "[0:0_1:0)", "[1:0_2:0)", "[2:0_3:0]"]
    r = await client.get(url + "?reverse_order=true")
    assert [s["timerange"] for s in r.json()][0] == "[2:0_3:0]"
    assert r.headers["x-paging-reverse-order"] == "true"


async def test_bulk_partial_failure(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    flow = await put_flow(client)
    objs = await allocate(client, flow["id"], 4)
    body = [
        {"object_id": objs[0]["object_id"], "timerange": "[0:0_1:0)"},
        {"object_id": objs[1]["object_id"], "timerange": "[0:500000000_1:500000000)"},  # overlaps the first
        {"object_id": objs[2]["object_id"], "timerange": "[2:0_3:0)"},
        {"object_id": "never-allocated", "timerange": "[4:0_5:0)"},
        {"object_id": objs[3]["object_id"], "timerange": "garbage"},
    ]
    r = await client.post(f"/flows/{flow['id']}/segments", json=body)
    assert r.status_code == 200
    schemas.check("flow-segment-bulk-failure.json", r.json())
    failed = {f["object_id"] for f in r.json()["failed_segments"]}
    assert failed == {objs[1]["object_id"], "never-allocated", objs[3]["object_id"]}
    kept = (await client.get(f"/flows/{flow['id']}/segments")).json()
    assert [s["object_id"] for s in kept] == [objs[0]["object_id"], objs[2]["object_id"]]


async def test_paging_segments(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    await add_segments(client, flow["id"], list(range(25)))
    url = f"/flows/{flow['id']}/segments?limit=10&timerange=[3:0_24:0)"
    seen = []
    while url:
        r = await client.get(url)
        seen += [s["timerange"] for s in r.json()]
        assert r.headers["x-paging-count"] == str(len(r.json()))
        url = r.links.get("next", {}).get("url")
    assert seen == [f"[{i}:0_{i + 1}:0)" for i in range(3, 24)]
    r = await client.get(f"/flows/{flow['id']}/segments?limit=5&reverse_order=true")
    assert r.headers["x-paging-timerange"] == "[20:0_25:0)"
    r2 = await client.get(r.links["next"]["url"])
    assert [s["timerange"] for s in r2.json()][0] == "[19:0_20:0)"
    r = await client.get(f"/flows/{flow['id']}/segments?timerange=[2:500000000_3:0)")
    assert [s["timerange"] for s in r.json()] == ["[2:0_3:0)"]  # partial overlap counts
    r = await client.get(f"/flows/{flow['id']}/segments?timerange=()")
    assert r.json() == [] and r.headers["x-paging-timerange"] == "()"


async def test_unknown_flow_segments_is_empty_list(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/flows/{new_id()}/segments")
    assert r.status_code == 200 and r.json() == []
    assert (await client.get("/flows/not-a-uuid/segments")).status_code == 404


@pytest.mark.parametrize(
    "q", ["timerange=x", "presigned=maybe", "accept_storage_ids=zz", "verbose_storage=1", "limit=1.5"]
)
async def test_bad_segment_queries(client: httpx.AsyncClient, q: str) -> None:
    assert (await client.get(f"/flows/{new_id()}/segments?{q}")).status_code == 400, q


async def test_get_url_filters(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    flow = await put_flow(client)
    [oid] = await add_segments(client, flow["id"], [0])
    backend = (await client.get("/service/storage-backends")).json()[0]
    assert (
        await client.post(f"/objects/{oid}/instances", json={"url": "https://cdn.example/x", "label": "cdn"})
    ).status_code == 201
    base = f"/flows/{flow['id']}/segments"

    async def urls(query: str) -> list[dict]:
        r = await client.get(f"{base}?{query}")
        assert r.status_code == 200, r.text
        schemas.check_items("flow-segment.json", r.json())
        return r.json()[0]["get_urls"]

    assert {u["label"] for u in await urls("")} == {backend["label"], "cdn"}
    assert await urls("accept_get_urls=") == []
    assert [u["label"] for u in await urls("accept_get_urls=cdn")] == ["cdn"]
    assert {u["label"] for u in await urls("accept_storage_ids=")} == {backend["label"], "cdn"}
    assert [u["label"] for u in await urls(f"accept_storage_ids={backend['id']}")] == [backend["label"]]
    assert await urls(f"accept_storage_ids={new_id()}") == []
    assert [u["label"] for u in await urls("presigned=true")] == [backend["label"]]
    assert [u["label"] for u in await urls("presigned=false")] == ["cdn"]
    verbose = await urls("verbose_storage=true")
    controlled = [u for u in verbose if u["label"] == backend["label"]][0]
    assert controlled["storage_id"] == backend["id"] and controlled["controlled"] is True
    assert [u for u in verbose if u["label"] == "cdn"][0]["controlled"] is False
    assert "storage_id" not in (await urls(""))[0]
    assert await urls("storage_backend_tag.x=1") == []


async def test_include_object_timerange_and_offsets(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    [obj] = await allocate(client, flow["id"])
    body = {
        "object_id": obj["object_id"],
        "timerange": "[100:0_101:0)",
        "ts_offset": "100:0",
        "last_duration": "0:40000000",
        "key_frame_count": 1,
        "sample_offset": 0,
        "sample_count": 25,
    }
    assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    [seg] = (await client.get(f"/flows/{flow['id']}/segments?include_object_timerange=true")).json()
    assert seg["object_timerange"] == "[0:0_1:0)"
    assert seg["ts_offset"] == "100:0" and seg["last_duration"] == "0:40000000"
    assert seg["key_frame_count"] == 1 and seg["sample_count"] == 25
    [plain] = (await client.get(f"/flows/{flow['id']}/segments")).json()
    assert "object_timerange" not in plain


async def test_object_reuse_across_flows(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    a = await put_flow(client)
    b = await put_flow(client)
    [oid] = await add_segments(client, a["id"], [10], length=10)
    ok = {"object_id": oid, "timerange": "[0:0_5:0)", "ts_offset": "-10:0"}  # uses [10,15) of the object
    assert (await client.post(f"/flows/{b['id']}/segments", json=ok)).status_code == 201
    # The reusing segment says what its Object holds, so a reader can tell it uses only part.
    [reused] = (await client.get(f"/flows/{b['id']}/segments?include_object_timerange=true")).json()
    assert reused["object_timerange"] == "[10:0_20:0)"
    outside = {"object_id": oid, "timerange": "[5:0_20:0)", "ts_offset": "-10:0"}
    assert (await client.post(f"/flows/{b['id']}/segments", json=outside)).status_code == 400
    conflict = {
        "object_id": oid,
        "timerange": "[30:0_31:0)",
        "ts_offset": "-10:0",
        "object_timerange": "[0:0_100:0)",
    }
    assert (await client.post(f"/flows/{b['id']}/segments", json=conflict)).status_code == 400
    r = await client.get(f"/objects/{oid}")
    assert r.status_code == 200
    schemas.check("object.json", r.json())
    assert set(r.json()["referenced_by_flows"]) == {a["id"], b["id"]}
    assert r.json()["first_referenced_by_flow"] == a["id"]
    assert r.json()["timerange"] == "[10:0_20:0)"


async def test_object_allocated_for_another_flow_is_refused(client: httpx.AsyncClient) -> None:
    a = await put_flow(client)
    b = await put_flow(client)
    [obj] = await allocate(client, a["id"])
    body = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
    assert (await client.post(f"/flows/{b['id']}/segments", json=body)).status_code == 400
    assert (await client.get(f"/objects/{obj['object_id']}")).status_code == 404  # allocated, not registered


async def test_external_objects_with_get_urls(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    body = {
        "object_id": "ext/1",
        "timerange": "[0:0_1:0)",
        "get_urls": [{"url": "https://x/1", "label": "ext"}],
    }
    assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    [seg] = (await client.get(f"/flows/{flow['id']}/segments")).json()
    assert seg["get_urls"] == [{"url": "https://x/1", "label": "ext", "presigned": False}]
    backend_label = (await client.get("/service/storage-backends")).json()[0]["label"]
    clash = {
        "object_id": "ext/2",
        "timerange": "[1:0_2:0)",
        "get_urls": [{"url": "https://x/2", "label": backend_label}],
    }
    assert (await client.post(f"/flows/{flow['id']}/segments", json=clash)).status_code == 400
    dup = {
        "object_id": "ext/3",
        "timerange": "[2:0_3:0)",
        "get_urls": [{"url": "a", "label": "l"}, {"url": "b", "label": "l"}],
    }
    assert (await client.post(f"/flows/{flow['id']}/segments", json=dup)).status_code == 400
    assert (await client.get("/objects/ext%2F1")).json()["id"] == "ext/1"


async def test_a_batch_mixing_objects_with_and_without_properties(client: httpx.AsyncClient) -> None:
    """Allocated and external Objects, some with key_frame_count and some without, in one
    batch: each records exactly what its first segment said."""
    flow = await put_flow(client)
    a, b = await allocate(client, flow["id"], 2)
    batch = [
        {"object_id": a["object_id"], "timerange": "[0:0_1:0)", "key_frame_count": 2},
        {"object_id": b["object_id"], "timerange": "[1:0_2:0)"},
        {
            "object_id": "ext/kf",
            "timerange": "[2:0_3:0)",
            "key_frame_count": 3,
            "get_urls": [{"url": "u1", "label": "x"}],
        },
        {"object_id": "ext/plain", "timerange": "[3:0_4:0)", "get_urls": [{"url": "u2", "label": "x"}]},
    ]
    r = await client.post(f"/flows/{flow['id']}/segments", json=batch)
    assert r.status_code == 201, r.text
    docs = {
        oid: (await client.get(f"/objects/{oid.replace('/', '%2F')}")).json() for oid in [s["object_id"] for s in batch]
    }
    assert [docs[s["object_id"]].get("key_frame_count") for s in batch] == [2, None, 3, None]
    assert [docs[s["object_id"]]["timerange"] for s in batch] == [s["timerange"] for s in batch]
    segs = (await client.get(f"/flows/{flow['id']}/segments")).json()
    assert [s.get("key_frame_count") for s in segs] == [2, None, 3, None]


async def test_init_segments(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    flow = video_flow(container="video/mp4")
    flow["essence_parameters"]["init_segments"] = True
    assert (await client.put(f"/flows/{flow['id']}", json=flow)).status_code == 201
    [init] = await allocate(client, flow["id"], content_type="video/mp4")
    media = await allocate(client, flow["id"], 2)
    url = f"/flows/{flow['id']}/segments"
    no_init = {"object_id": media[0]["object_id"], "timerange": "[0:0_1:0)"}
    assert (await client.post(url, json=no_init)).status_code == 400
    body = [
        {"object_id": m["object_id"], "timerange": f"[{i}:0_{i + 1}:0)", "init_object_id": init["object_id"]}
        for i, m in enumerate(media)
    ]
    assert (await client.post(url, json=body)).status_code == 201
    segs = (await client.get(url)).json()
    schemas.check_items("flow-segment.json", segs)
    assert {s["init_object"]["object_id"] for s in segs} == {init["object_id"]}
    obj = (await client.get(f"/objects/{media[0]['object_id']}")).json()
    schemas.check("object.json", obj)
    assert obj["init_object"]["id"] == init["object_id"]
    init_doc = (await client.get(f"/objects/{init['object_id']}")).json()
    assert "timerange" not in init_doc and init_doc["referenced_by_flows"] == [flow["id"]]
    misuse = {"object_id": init["object_id"], "timerange": "[5:0_6:0)", "init_object_id": init["object_id"]}
    assert (await client.post(url, json=misuse)).status_code == 400
    assert [f["id"] for f in (await client.get("/flows?init_segments=true")).json()] == [flow["id"]]
    plain = await put_flow(client)
    [o] = await allocate(client, plain["id"])
    wrong = {"object_id": o["object_id"], "timerange": "[0:0_1:0)", "init_object_id": init["object_id"]}
    assert (await client.post(f"/flows/{plain['id']}/segments", json=wrong)).status_code == 400


async def test_flow_without_container_refuses_segments_and_storage(client: httpx.AsyncClient) -> None:
    body = video_flow()
    del body["container"]
    assert (await client.put(f"/flows/{body['id']}", json=body)).status_code == 201
    assert (await client.post(f"/flows/{body['id']}/storage", json={})).status_code == 400
    seg = {"object_id": "x", "timerange": "[0:0_1:0)"}
    assert (await client.post(f"/flows/{body['id']}/segments", json=seg)).status_code == 400


async def test_storage_allocation_rules(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    url = f"/flows/{flow['id']}/storage"
    r = await client.post(url)  # no body: treated as {}
    assert r.status_code == 201 and len(r.json()["media_objects"]) == 100
    r = await client.post(url, json={"object_ids": ["mine/1", "mine/2"]})
    assert [o["object_id"] for o in r.json()["media_objects"]] == ["mine/1", "mine/2"]
    assert (await client.post(url, json={"object_ids": ["mine/1"]})).status_code == 400
    assert (await client.post(url, json={"limit": 1, "object_ids": ["z"]})).status_code == 400
    assert (await client.post(url, json={"storage_id": new_id()})).status_code == 400
    assert (await client.post(url, json={"content_type": "nonsense"})).status_code == 400
    assert (await client.post(url, json={"presigned": False})).status_code == 400
    assert (await client.post(f"/flows/{new_id()}/storage", json={})).status_code == 404
    r = await client.post(url, json={"limit": 1, "content_type": "video/mp4"})
    assert r.json()["media_objects"][0]["put_url"]["content-type"] == "video/mp4"


async def test_delete_segments_only_wholly_covered(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    oids = await add_segments(client, flow["id"], [0, 1, 2, 3])
    url = f"/flows/{flow['id']}/segments"
    assert (await client.delete(url + "?timerange=[0:500000000_3:0)")).status_code == 204
    left = [s["timerange"] for s in (await client.get(url)).json()]
    assert left == ["[0:0_1:0)", "[3:0_4:0)"]
    for oid in oids[1:3]:
        assert (await client.get(f"/objects/{oid}")).status_code == 404
    assert (await client.delete(url + f"?object_id={oids[3]}")).status_code == 204
    assert [s["timerange"] for s in (await client.get(url)).json()] == ["[0:0_1:0)"]
    assert (await client.get(f"/flows/{flow['id']}?include_timerange=true")).json()["timerange"] == "[0:0_1:0)"
    assert (await client.delete(url + "?timerange=bad")).status_code == 400
    assert (await client.delete(f"/flows/{new_id()}/segments")).status_code == 404


def _expired(client: httpx.AsyncClient, object_id: str, method: str) -> str:
    """A correctly signed URL for the Object whose validity ended an hour ago."""
    import time

    backend = next(iter(client.app.state.ctx.backends.values()))  # type: ignore[attr-defined]
    if hasattr(backend, "presigner"):
        return backend.presigner.presign(method, backend.key(object_id), 60, now=time.time() - 3600)  # type: ignore[no-any-return]
    from tamstore.store.media.filesystem import MEDIA_PREFIX, encode_id

    expires = int(time.time()) - 3600
    sig = backend._signature(method, object_id, expires)
    return f"http://testserver{MEDIA_PREFIX}/{encode_id(object_id)}?expires={expires}&signature={sig}"


async def test_media_urls_are_signed(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    [obj] = await allocate(client, flow["id"])
    put_url = obj["put_url"]["url"]
    assert obj["presigned"] is True
    tampered = put_url[:-6] + ("000000" if not put_url.endswith("000000") else "111111")
    assert (await media_request(client, "PUT", tampered, content=b"x")).status_code == 403
    assert (
        await media_request(client, "PUT", _expired(client, obj["object_id"], "PUT"), content=b"x")
    ).status_code == 403
    assert (await media_request(client, "GET", put_url)).status_code == 403  # a PUT URL cannot be used to GET
    assert (await media_request(client, "PUT", put_url, content=b"payload")).status_code == 200
    body = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
    assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    [seg] = (await client.get(f"/flows/{flow['id']}/segments")).json()
    get_url = seg["get_urls"][0]["url"]
    assert (await media_request(client, "GET", get_url)).content == b"payload"
    assert (await media_request(client, "GET", _expired(client, obj["object_id"], "GET"))).status_code == 403
    from tamstore.store.media.filesystem import encode_id

    other = get_url.replace(encode_id(obj["object_id"]), encode_id("someone-else"))
    assert (await media_request(client, "GET", other)).status_code == 403


def _url_expiry(url: str) -> int:
    """When a filesystem or S3 presigned URL stops working (Unix seconds)."""
    import calendar
    import time
    from urllib.parse import parse_qs, urlsplit

    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    if "expires" in q:
        return int(q["expires"])
    signed_at = calendar.timegm(time.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    return signed_at + int(q["X-Amz-Expires"])


async def test_a_page_read_twice_gives_the_same_urls_with_the_promised_lifetime(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET URLs are signed once per Object per minute: the same URL all minute long (stable for
    HTTP caches), and each still valid at least min_presigned_url_timeout when handed out."""
    import time
    import types

    from tamstore.store.media import base

    flow = await put_flow(client)
    await add_segments(client, flow["id"], [0, 1, 2])
    url = f"/flows/{flow['id']}/segments"
    now = int(time.time()) // 60 * 60 + 1.0  # a second into this minute
    monkeypatch.setattr(base, "time", types.SimpleNamespace(time=lambda: now))
    first = (await client.get(url)).json()
    now += 45  # later in the same minute
    again = (await client.get(url)).json()
    urls = [u["url"] for s in first for u in s["get_urls"]]
    assert len(set(urls)) == 3
    assert [u["url"] for s in again for u in s["get_urls"]] == urls
    promised = (await client.get("/service")).json()["min_presigned_url_timeout"]
    seconds = int(promised.split(":")[0])
    assert all(_url_expiry(u) >= now + seconds for u in urls)
    for u in urls:  # accepted (a bad signature is 403): the Objects were never uploaded
        assert (await media_request(client, "GET", u)).status_code == 404
    now += 15  # the next minute: new URLs
    assert (await client.get(url)).json()[0]["get_urls"][0]["url"] != urls[0]


async def test_each_host_gets_urls_that_point_back_at_it_and_are_kept_apart(client: httpx.AsyncClient) -> None:
    """The embedded store's URLs name the host the client asked; the URLs kept for one host
    are never handed to another (the window keeps them per base URL)."""
    flow = await put_flow(client)
    await add_segments(client, flow["id"], [0, 1])
    url = f"/flows/{flow['id']}/segments"
    if not (await client.get(url)).json()[0]["get_urls"][0]["url"].startswith(str(client.base_url)):
        pytest.skip("S3 URLs name the bucket, not the host asked")
    for _ in range(2):  # the second round is answered from the kept URLs
        for host in ("one.example", "two.example:8443"):
            page = (await client.get(url, headers={"host": host})).json()
            urls = [u["url"] for s in page for u in s["get_urls"]]
            assert len(urls) == 2
            assert all(u.startswith(f"http://{host}/") for u in urls), (host, urls)


@pytest.mark.parametrize("object_id", ["../../etc/passwd", "a/../../b", "%2F..%2F..", "/abs", "..", "."])
async def test_object_ids_cannot_escape_the_media_root(client: httpx.AsyncClient, object_id: str) -> None:
    flow = await put_flow(client)
    r = await client.post(f"/flows/{flow['id']}/storage", json={"object_ids": [object_id]})
    assert r.status_code == 201
    put = r.json()["media_objects"][0]["put_url"]["url"]
    assert (await media_request(client, "PUT", put, content=b"inside")).status_code == 200
    assert await stored_bytes(client, object_id) == b"inside"
    fs = client.app.state.ctx.filesystem  # type: ignore[attr-defined]
    if fs is not None:
        path = fs.path_for(object_id).resolve()
        assert path.is_relative_to(fs.root.resolve())


async def test_nul_characters_are_refused(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    r = await client.post(f"/flows/{flow['id']}/storage", json={"object_ids": ["x\x00y"]})
    assert r.status_code == 400
    assert (await client.get("/objects/x%00y")).status_code == 400
    assert (await client.get("/flows?label=a%00b")).status_code == 400


async def test_objects_endpoint_errors(client: httpx.AsyncClient) -> None:
    assert (await client.get("/objects/nothing")).status_code == 404
    flow = await put_flow(client)
    [oid] = await add_segments(client, flow["id"], [0])
    base = f"/objects/{oid}/instances"
    assert (await client.post(base, json={})).status_code == 400
    assert (await client.post(base, json={"url": "https://x"})).status_code == 400
    assert (await client.post(base, json={"url": "https://x", "label": "a", "storage_id": new_id()})).status_code == 400
    assert (await client.post(base, json={"storage_id": new_id()})).status_code == 400
    assert (await client.delete(base)).status_code == 400
    assert (await client.delete(base + "?label=nope")).status_code == 404
    backend = (await client.get("/service/storage-backends")).json()[0]
    assert (await client.delete(base + f"?storage_id={backend['id']}")).status_code == 400  # the last one
    assert (await client.post(base, json={"url": "https://x", "label": "a"})).status_code == 201
    assert (await client.post(base, json={"url": "https://y", "label": "a"})).status_code == 400
    assert (await client.delete(base + "?label=a")).status_code == 204
    assert (await client.get(f"/objects/{oid}?accept_storage_ids=bad")).status_code == 400
    assert (await client.get(f"/objects/{oid}?limit=x")).status_code == 400
    assert (await client.post("/objects/nothing/instances", json={"url": "u", "label": "l"})).status_code == 404
    assert (await client.put(f"/objects/{oid}")).status_code == 405


async def test_object_timerange_in_another_bracket_style_is_no_conflict(client: httpx.AsyncClient) -> None:
    """The same Object range written with an inclusive end is the same range (value equality)."""
    flow = await put_flow(client)
    [obj] = await allocate(client, flow["id"])
    body = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)", "object_timerange": "[0:0_2:0)"}
    assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    other = await put_flow(client)
    again = {**body, "timerange": "[0:0_1:0)", "object_timerange": "[0:0_1:999999999]"}
    r = await client.post(f"/flows/{other['id']}/segments", json=again)
    assert r.status_code == 201, r.text


async def test_an_array_larger_than_one_transaction_registers_whole(client: httpx.AsyncClient) -> None:
    """2,500 segments in one POST go 1,000 a transaction: all registered, and a segment refused
    in the last chunk is listed as failed without undoing the others."""
    flow = await put_flow(client)
    objects = []
    for _ in range(3):
        objects += await allocate(client, flow["id"], 1000)
    body = [{"object_id": o["object_id"], "timerange": f"[{i}:0_{i + 1}:0)"} for i, o in enumerate(objects[:2500])]
    body[2200]["timerange"] = body[2199]["timerange"]  # overlaps its neighbour
    r = await client.post(f"/flows/{flow['id']}/segments", json=body)
    assert r.status_code == 200, r.text
    [failed] = r.json()["failed_segments"]
    assert failed["object_id"] == body[2200]["object_id"]
    count = 0
    url: str | None = f"/flows/{flow['id']}/segments?limit=1000"
    while url:
        page = await client.get(url)
        count += len(page.json())
        link = page.headers.get("link")
        url = link[1 : link.index(">")] if link else None
    assert count == 2499
