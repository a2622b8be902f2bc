"""Webhooks (CHECKLIST §12; ADR 0014, 0026, 0037, 0040), delivered to a real HTTP receiver."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator

from tamstore.config import Settings
from tamstore.testing import SpecSchemas, app_client
from tests.conftest import add_segments, allocate, new_id, put_flow
from tests.receiver import Receiver

ALL_EVENTS = [
    "flows/created",
    "flows/updated",
    "flows/deleted",
    "flows/segments_added",
    "flows/segments_deleted",
    "sources/created",
    "sources/updated",
    "sources/deleted",
]


@pytest.fixture
def fast_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_backoff_ms=20, webhook_max_attempts=3, worker_lease=2)


@pytest.fixture
async def hooked(fast_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(fast_settings, workers=True) as c:
        yield c


@pytest.fixture(scope="module")
def message_schemas() -> dict[str, Any]:
    """The request-body schema of each event in the spec's ``webhooks:`` section."""
    from tamstore.testing import find_spec_dir

    spec_dir = find_spec_dir()
    if spec_dir is None:
        pytest.skip("the TAMS spec folder (bbc/tams) is not available")
    doc = yaml.safe_load((spec_dir / "TimeAddressableMediaStore.yaml").read_text())
    schemas = SpecSchemas(spec_dir)
    out = {}
    for name, item in doc["webhooks"].items():
        raw = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        text = yaml.safe_dump(raw).replace("schemas/", "")
        out[name] = Draft202012Validator(yaml.safe_load(text), registry=schemas._registry)
    return out


def check_message(message_schemas: dict[str, Any], body: dict[str, Any]) -> None:
    errors = list(message_schemas[body["event_type"]].iter_errors(body))
    assert not errors, [e.message for e in errors]


async def register(client: httpx.AsyncClient, url: str, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "events": ALL_EVENTS, **extra}
    r = await client.post("/service/webhooks", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_registration_crud(client: httpx.AsyncClient, schemas: SpecSchemas) -> None:
    service = (await client.get("/service")).json()
    assert {"name": "webhooks"}.items() <= service["event_stream_mechanisms"][0].items()
    hook = await register(
        client, "http://b.example/hook", api_key_name="X-Key", api_key_value="secret", tags={"t": "1"}
    )
    schemas.check("webhook-get.json", hook)
    assert "api_key_value" not in hook and hook["status"] == "created"
    other = await register(client, "http://a.example/hook")
    listing = await client.get("/service/webhooks")
    schemas.check_items("webhook-get.json", listing.json())
    assert [h["id"] for h in listing.json()] == [other["id"], hook["id"]]  # by url
    assert all("api_key_value" not in h for h in listing.json())
    assert [h["id"] for h in (await client.get("/service/webhooks?tag.t=1")).json()] == [hook["id"]]
    got = await client.get(f"/service/webhooks/{hook['id']}")
    assert got.status_code == 200 and got.json() == hook
    put = {**{k: v for k, v in hook.items() if k != "tags"}, "status": "disabled", "events": ["flows/created"]}
    r = await client.put(f"/service/webhooks/{hook['id']}", json=put)
    assert r.status_code == 201 and r.json()["status"] == "disabled" and r.json()["events"] == ["flows/created"]
    assert "tags" not in r.json()  # a full replacement
    assert (await client.put(f"/service/webhooks/{new_id()}", json={**put, "id": new_id()})).status_code in (400, 404)
    missing = new_id()
    assert (await client.put(f"/service/webhooks/{missing}", json={**put, "id": missing})).status_code == 404
    assert (await client.put(f"/service/webhooks/{hook['id']}", json={**put, "id": other["id"]})).status_code == 400
    assert (await client.delete(f"/service/webhooks/{hook['id']}")).status_code == 204
    assert (await client.get(f"/service/webhooks/{hook['id']}")).status_code == 404
    assert (await client.delete(f"/service/webhooks/{hook['id']}")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"events": ["flows/created"]},
        {"url": "http://x/"},
        {"url": "http://x/", "events": ["flows/exploded"]},
        {"url": "http://x/", "events": [], "flow_ids": ["nope"]},
        {"url": "http://x/", "events": [], "status": "started"},
        {"url": "not a url", "events": []},
        {"url": "ftp://x/", "events": []},
    ],
)
async def test_bad_registrations(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert (await client.post("/service/webhooks", json=body)).status_code == 400


async def test_put_needs_status_and_id(client: httpx.AsyncClient) -> None:
    hook = await register(client, "http://x/")
    body = {k: v for k, v in hook.items() if k != "status"}
    assert (await client.put(f"/service/webhooks/{hook['id']}", json=body)).status_code == 400
    body = {**hook, "status": "error"}
    assert (await client.put(f"/service/webhooks/{hook['id']}", json=body)).status_code == 400


async def test_every_event_type_arrives_in_the_spec_shape(
    hooked: httpx.AsyncClient, receiver: Receiver, message_schemas: dict[str, Any]
) -> None:
    await register(hooked, receiver.url + "/all", api_key_name="X-Api-Key", api_key_value="s3cret")
    flow = await put_flow(hooked)
    await hooked.put(f"/flows/{flow['id']}/label", json="new label")
    await hooked.put(f"/sources/{flow['source_id']}/label", json="source label")
    await add_segments(hooked, flow["id"], [0, 1, 2])
    await hooked.delete(f"/flows/{flow['id']}/segments?timerange=[0:0_1:0)")
    await hooked.delete(f"/flows/{flow['id']}")
    await receiver.arrived(1, "sources/deleted")
    types = [b["event_type"] for b in receiver.bodies()]
    assert types == [
        "sources/created",
        "flows/created",
        "flows/updated",
        "sources/updated",
        "flows/segments_added",
        "flows/segments_deleted",
        "flows/segments_deleted",
        "flows/deleted",
        "sources/deleted",
    ]
    for body in receiver.bodies():
        check_message(message_schemas, body)
    assert all(r["headers"]["X-Api-Key"] == "s3cret" for r in receiver.received)
    added = receiver.bodies("flows/segments_added")[0]["event"]
    assert [s["timerange"] for s in added["segments"]] == ["[0:0_1:0)", "[1:0_2:0)", "[2:0_3:0)"]
    assert all(s["get_urls"] for s in added["segments"])
    deleted = [b["event"]["timerange"] for b in receiver.bodies("flows/segments_deleted")]
    assert deleted == ["[0:0_1:0)", "[1:0_3:0)"]
    assert receiver.bodies("flows/updated")[0]["event"]["flow"]["label"] == "new label"
    hook = (await hooked.get("/service/webhooks")).json()[0]
    assert hook["status"] == "started"


async def test_filters(hooked: httpx.AsyncClient, receiver: Receiver) -> None:
    member = await put_flow(hooked)
    loner = await put_flow(hooked)
    multi_id = new_id()
    multi = {
        "id": multi_id,
        "source_id": new_id(),
        "format": "urn:x-nmos:format:multi",
        "container": "video/mp2t",
        "flow_collection": [{"id": member["id"]}],
    }
    assert (await hooked.put(f"/flows/{multi_id}", json=multi)).status_code == 201
    for path, filters in {
        "/by_flow": {"flow_ids": [member["id"]]},
        "/by_source": {"source_ids": [loner["source_id"]]},
        "/collected": {"flow_collected_by_ids": [multi_id]},
        "/uncollected": {"flow_collected_by_ids": []},
        "/src_collected": {"source_collected_by_ids": [multi["source_id"]]},
        "/labels_only": {"events": ["flows/updated"]},
    }.items():
        await register(hooked, receiver.url + path, **filters)
    for f in (member, loner, {"id": multi_id}):
        await hooked.put(f"/flows/{f['id']}/description", json="d")
    await hooked.put(f"/sources/{loner['source_id']}/label", json="x")
    await receiver.arrived(3, "flows/updated")
    await asyncio.sleep(0.5)

    def seen(path: str) -> list[tuple[str, str]]:
        out = []
        for r in receiver.received:
            if r["path"] == path:
                ev = r["body"]["event"]
                out.append((r["body"]["event_type"], ev.get("flow", {}).get("id") or ev.get("source", {}).get("id")))
        return out

    # flow_ids and flow_collected_by_ids do not filter Source events (ADR 0026)
    assert seen("/by_flow") == [("flows/updated", member["id"]), ("sources/updated", loner["source_id"])]
    assert seen("/by_source") == [("flows/updated", loner["id"]), ("sources/updated", loner["source_id"])]
    assert seen("/collected") == [("flows/updated", member["id"]), ("sources/updated", loner["source_id"])]
    assert set(seen("/uncollected")) == {
        ("flows/updated", loner["id"]),
        ("flows/updated", multi_id),
        ("sources/updated", loner["source_id"]),
    }
    assert seen("/src_collected") == [("flows/updated", member["id"])]
    assert [e for e, _ in seen("/labels_only")] == ["flows/updated"] * 3


async def test_segment_urls_are_filtered_per_webhook(hooked: httpx.AsyncClient, receiver: Receiver) -> None:
    flow = await put_flow(hooked)
    await register(hooked, receiver.url + "/none", events=["flows/segments_added"], accept_get_urls=[])
    await register(hooked, receiver.url + "/plain", events=["flows/segments_added"], presigned=False)
    await register(
        hooked,
        receiver.url + "/verbose",
        events=["flows/segments_added"],
        verbose_storage=True,
        include_object_timerange=True,
    )
    await add_segments(hooked, flow["id"], [5])
    await receiver.arrived(3)
    by_path = {r["path"]: r["body"]["event"]["segments"][0] for r in receiver.received}
    assert by_path["/none"]["get_urls"] == []
    assert by_path["/plain"]["get_urls"] == []  # both backends hand out only presigned URLs
    [url] = by_path["/verbose"]["get_urls"]
    assert url["controlled"] is True and "storage_id" in url
    assert by_path["/verbose"]["object_timerange"] == "[5:0_6:0)"


async def test_segment_urls_in_an_event_are_the_objects_own(hooked: httpx.AsyncClient, receiver: Receiver) -> None:
    """The event's instances come from the Object rows the batch read when an Object's one
    instance is its controlled one, and from object_instances otherwise: either way each
    segment's URLs are those of its Object's own document."""
    flow = await put_flow(hooked)
    fid = flow["id"]
    [reused] = await add_segments(hooked, fid, [0])
    r = await hooked.post(f"/objects/{reused}/instances", json={"url": "https://cdn/r", "label": "cdn"})
    assert r.status_code == 201, r.text
    await register(hooked, receiver.url + "/v", events=["flows/segments_added"], verbose_storage=True)
    untouched, given_urls = (o["object_id"] for o in await allocate(hooked, fid, 2))
    body = [
        {"object_id": untouched, "timerange": "[1:0_2:0)"},
        {"object_id": given_urls, "timerange": "[2:0_3:0)", "get_urls": [{"url": "https://cdn/g", "label": "cdn"}]},
        {"object_id": reused, "timerange": "[3:0_4:0)", "ts_offset": "3:0"},
    ]
    r = await hooked.post(f"/flows/{fid}/segments", json=body)
    assert r.status_code == 201, r.text
    [event] = await receiver.arrived(1, "flows/segments_added")
    segments = event["event"]["segments"]
    assert [s["object_id"] for s in segments] == [untouched, given_urls, reused]
    for seg in segments:
        own = (await hooked.get(f"/objects/{seg['object_id']}", params={"verbose_storage": "true"})).json()
        assert _hostless(seg["get_urls"]) == _hostless(own["get_urls"]), seg["object_id"]
    assert [len(s["get_urls"]) for s in segments] == [1, 2, 2]


async def test_events_recorded_whole_before_the_compact_form_render_the_same(settings: Settings) -> None:
    """An event records each segment without its unset columns, and the Objects that have only
    their controlled instance by backend (``_sole``). Events recorded before that, with every
    column and every instance written out, still render exactly as the compact form does."""
    import orjson

    from tamstore.delivery import event_body
    from tamstore.domain.events import WebhookFilter

    async with app_client(settings) as client:  # the event stream records every event
        flow = await put_flow(client)
        fid = flow["id"]
        [reused] = await add_segments(client, fid, [0])
        r = await client.post(f"/objects/{reused}/instances", json={"url": "https://cdn/r", "label": "cdn"})
        assert r.status_code == 201, r.text
        plain, counted = (o["object_id"] for o in await allocate(client, fid, 2))
        body = [
            {"object_id": plain, "timerange": "[1:0_2:0)"},
            {"object_id": counted, "timerange": "[2:0_3:0)", "key_frame_count": 0, "sample_count": 25},
            {"object_id": reused, "timerange": "[3:0_4:0)", "ts_offset": "3:0", "last_duration": "0:40000000"},
        ]
        assert (await client.post(f"/flows/{fid}/segments", json=body)).status_code == 201
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        async with ctx.store.write() as tx:
            await tx.sequence_events()  # (PostgreSQL numbers events after they commit)
            [event] = [e for e in await tx.events_after(0, 100) if e.event_type == "flows/segments_added"][-1:]
        compact = orjson.loads(event.payload)
        assert [sorted(ids) for ids in compact["_sole"].values()] == [sorted([plain, counted])]
        assert set(compact["_instances"]) == {reused}
        assert compact["segments"][0] == {"object_id": plain, "timerange": "[1:0_2:0)"}
        # The same event as it was recorded before: every column, every instance written out.
        whole = {
            "flow_id": fid,
            "segments": [
                {
                    "flow_id": fid,
                    "ts_start": None,
                    "ts_end": None,
                    "ts_offset": 0,
                    "last_duration": None,
                    "object_timerange": None,
                    "key_frame_count": None,
                    "sample_offset": None,
                    "sample_count": None,
                    **seg,
                }
                for seg in compact["segments"]
            ],
            "_init_of": {seg["object_id"]: None for seg in compact["segments"]},
            "_instances": {
                **compact["_instances"],
                **{
                    oid: [{"storage_id": sid, "url": None, "label": None, "controlled": True}]
                    for sid, ids in compact["_sole"].items()
                    for oid in ids
                },
            },
        }
        older = event._replace(payload=orjson.dumps(whole).decode())
        for doc, urls in (
            ({"verbose_storage": True, "include_object_timerange": True}, [1, 1, 2]),
            ({"presigned": True}, [1, 1, 1]),
        ):
            filt = WebhookFilter.from_doc({"events": ["flows/segments_added"], **doc})
            rendered = orjson.loads(event_body(ctx, event, filt))
            assert orjson.loads(event_body(ctx, older, filt)) == rendered
            segments = rendered["event"]["segments"]
            assert [len(s["get_urls"]) for s in segments] == urls
            assert (segments[1]["key_frame_count"], segments[1]["sample_count"]) == (0, 25)
            assert (segments[2]["ts_offset"], segments[2]["last_duration"]) == ("3:0", "0:40000000")


def _hostless(urls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """URLs without the host they name (the webhook's base URL is not the test client's)."""
    return [{**u, "url": u["url"].split("/", 3)[-1]} for u in urls]


async def test_retries_keep_order_then_error_then_resume(hooked: httpx.AsyncClient, receiver: Receiver) -> None:
    hook = await register(hooked, receiver.url + "/r", events=["flows/updated"])
    flow = await put_flow(hooked)
    receiver.statuses = [500, 503]  # two failures, then success
    for label in ("one", "two"):
        await hooked.put(f"/flows/{flow['id']}/label", json=label)
    bodies = await receiver.arrived(2)
    assert [b["event"]["flow"]["label"] for b in bodies] == ["one", "two"]
    receiver.statuses = [500, 500, 500]  # max_attempts is 3
    await hooked.put(f"/flows/{flow['id']}/label", json="three")
    for _ in range(200):
        doc = (await hooked.get(f"/service/webhooks/{hook['id']}")).json()
        if doc["status"] == "error":
            break
        await asyncio.sleep(0.05)
    assert doc["status"] == "error" and "500" in doc["error"]["summary"]
    put = {**doc, "status": "disabled"}
    put.pop("error")
    assert (await hooked.put(f"/service/webhooks/{hook['id']}", json=put)).status_code == 400
    await hooked.put(f"/flows/{flow['id']}/label", json="four")
    r = await hooked.put(f"/service/webhooks/{hook['id']}", json={**put, "status": "created"})
    assert r.status_code == 201 and "error" not in r.json()
    bodies = await receiver.arrived(4)
    assert [b["event"]["flow"]["label"] for b in bodies] == ["one", "two", "three", "four"]


async def test_receiver_down_is_retried(hooked: httpx.AsyncClient) -> None:
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # nobody listening
    hook = await register(hooked, url + "/down", events=["flows/created"])
    await put_flow(hooked)
    for _ in range(200):
        doc = (await hooked.get(f"/service/webhooks/{hook['id']}")).json()
        if doc["status"] == "error":
            break
        await asyncio.sleep(0.05)
    assert doc["status"] == "error" and "no answer from the receiver" in doc["error"]["summary"]


async def test_no_event_for_a_change_that_did_not_happen(hooked: httpx.AsyncClient, receiver: Receiver) -> None:
    flow = await put_flow(hooked)
    await register(hooked, receiver.url + "/tx", events=["flows/segments_added", "flows/updated"])
    [obj] = await allocate(hooked, flow["id"])
    bad = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)", "init_object_id": "nope"}
    assert (await hooked.post(f"/flows/{flow['id']}/segments", json=bad)).status_code == 400
    assert (await hooked.put(f"/flows/{flow['id']}/label", json=5)).status_code == 400
    await hooked.put(f"/flows/{flow['id']}/label", json="real")
    bodies = await receiver.arrived(1)
    await asyncio.sleep(0.3)
    assert [b["event_type"] for b in receiver.bodies()] == ["flows/updated"]
    assert bodies[0]["event"]["flow"]["label"] == "real"


async def test_no_loss_across_a_restart(fast_settings: Settings, receiver: Receiver) -> None:
    settings = dataclasses.replace(fast_settings, webhook_max_attempts=1000)
    async with app_client(settings, workers=True) as c:
        await register(c, receiver.url + "/restart", events=["flows/created"])
        receiver.statuses = [500] * 1000
        flows = [await put_flow(c) for _ in range(3)]
        await asyncio.sleep(0.3)
    assert receiver.bodies() == []
    receiver.statuses = []
    async with app_client(settings, workers=True) as c:
        bodies = await receiver.arrived(3)
    assert [b["event"]["flow"]["id"] for b in bodies] == [f["id"] for f in flows]


async def test_two_workers_deliver_each_event_once_in_order(fast_settings: Settings, receiver: Receiver) -> None:
    """Two processes' workers on one database: the webhook's lease means one delivers at a time."""
    from tamstore.app import open_context
    from tamstore.workers import Workers

    async with app_client(fast_settings, workers=True) as c:
        await register(c, receiver.url + "/twice", events=["flows/created"])
        other_ctx = await open_context(fast_settings)
        other = Workers(other_ctx)
        other.start()
        try:
            flows = []
            for _ in range(30):
                flows.append(await put_flow(c))
                await asyncio.sleep(0.01)
            bodies = await receiver.arrived(30)
            await asyncio.sleep(1.0)  # time for any duplicate to show up
        finally:
            await other.stop()
            await other_ctx.store.close()
    ids = [b["event"]["flow"]["id"] for b in receiver.bodies()]
    assert ids == [f["id"] for f in flows] and len(bodies) >= 30
