"""Fine-grained authorisation by ``auth_classes`` (issue 23; AppNote 0016, ADR 0035, 0055),
enforced inside tamstore.

The store holds news content (a Source, Flows with segments and Objects, a webhook, a delete
request), and a Flow shared with sport read-only. ``newsdesk`` may do everything with news;
``sportsdesk`` everything with sport and only read ``sport_ro``. Every route the app has is
classified below: a route about a classed resource must answer ``sportsdesk``'s request about
news content exactly as it answers a request about something that does not exist, and answer
``newsdesk`` otherwise. A new route cannot slip through unclassified.
"""

from __future__ import annotations

import base64
import dataclasses
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tamstore.auth import hash_secret
from tamstore.config import Settings
from tamstore.testing import app_client
from tests.conftest import multi_flow, video_flow
from tests.live import LiveServer
from tests.receiver import Receiver
from tests.sse import SseClient
from tests.test_auth import ANSWERS_405, EXPECTED, PUBLIC, app_routes

ROOT = ("root", "root-secret")
NEWS = ("newsdesk", "news-secret")
SPORT = ("sportsdesk", "sport-secret")
ALL = ["tams-api/read", "tams-api/write", "tams-api/delete"]

POLICY = """
[policy]
untagged = "open"

[[policy.grants]]
group = "news"
classes = ["news"]
actions = ["read", "write", "delete"]

[[policy.grants]]
group = "sport"
classes = ["sport"]
actions = ["read", "write", "delete"]

[[policy.grants]]
group = "sport"
classes = ["sport_ro"]
actions = ["read"]
"""

# Which classed resource each route is about ("listing": it lists them); the rest are "open".
ABOUT: dict[str, str] = {
    "/flows": "listing",
    "/sources": "listing",
    "/service/webhooks": "listing",
    "/flow-delete-requests": "listing",
    "/x-tamstore/analytics/flows": "listing",
    "/service/storage-backends": "listing",
    "/flows/{flow_id}": "flow",
    "/flows/{flow_id}/segments": "flow",
    "/flows/{flow_id}/storage": "flow",
    "/flows/{flow_id}/tags": "flow",
    "/flows/{flow_id}/tags/{name:path}": "flow",
    "/flows/{flow_id}/label": "flow",
    "/flows/{flow_id}/description": "flow",
    "/flows/{flow_id}/max_bit_rate": "flow",
    "/flows/{flow_id}/avg_bit_rate": "flow",
    "/flows/{flow_id}/flow_collection": "flow",
    "/flows/{flow_id}/read_only": "flow",
    "/x-tamstore/analytics/flows/{flow_id}/timeline": "flow",
    "/x-tamstore/hls/{flow_id}.m3u8": "flow",
    "/x-tamstore/dash/{flow_id}.mpd": "flow",
    "/x-tamstore/frames/{flow_id}.jpg": "flow",
    "/sources/{source_id}": "source",
    "/sources/{source_id}/tags": "source",
    "/sources/{source_id}/tags/{name:path}": "source",
    "/sources/{source_id}/label": "source",
    "/sources/{source_id}/description": "source",
    "/objects/{object_path:path}": "object",
    "/x-tamstore/objects/{object_id}.{ext}": "object",
    "/service/webhooks/{webhook_id}": "webhook",
    "/flow-delete-requests/{request_id}": "request",
    "/x-tamstore/events": "events",  # tested on its own below
}
OPEN = {
    "/",
    "/service",
    "/service/profiles",
    "/service/profiles/{profile_id}",
    "/x-tamstore/analytics/storage",
    "/metrics",
    "/x-tamstore/whoami",
}


def auth_toml(path: Path) -> Path:
    users = [
        ("root", "root-secret", ["tams-api/admin"], []),
        ("newsdesk", "news-secret", ALL, ["news"]),
        ("sportsdesk", "sport-secret", ALL, ["sport"]),
    ]
    lines = []
    for name, secret, scopes, groups in users:
        lines.append(
            f'[[users]]\nname = "{name}"\npassword = "{hash_secret(secret)}"\n'
            f"scopes = {scopes!r}\ngroups = {groups!r}\n".replace("'", '"')
        )
    path.write_text("\n".join(lines) + POLICY)
    return path


@pytest.fixture
def classed(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(
        settings,
        auth="basic",
        auth_file=auth_toml(tmp_path / "auth.toml"),
        auth_failures_per_minute=10**6,
        inline_delete_limit=1,
    )


@dataclass
class Store:
    flow: dict[str, Any]  # news
    source_id: str
    object_id: str
    webhook_id: str
    request_id: str
    shared: dict[str, Any]  # news and sport_ro
    sport: dict[str, Any]


async def put(client: httpx.AsyncClient, who: tuple[str, str], body: dict[str, Any]) -> httpx.Response:
    return await client.put(f"/flows/{body['id']}", json=body, auth=who)


async def record(client: httpx.AsyncClient, who: tuple[str, str], flow_id: str, n: int) -> list[str]:
    """``n`` one-second segments from 0, each with an Object of its own."""
    r = await client.post(f"/flows/{flow_id}/storage", json={"limit": n}, auth=who)
    assert r.status_code == 201, r.text
    ids = [o["object_id"] for o in r.json()["media_objects"]]
    body = [{"object_id": o, "timerange": f"[{i}:0_{i + 1}:0)"} for i, o in enumerate(ids)]
    assert (await client.post(f"/flows/{flow_id}/segments", json=body, auth=who)).status_code == 201
    return ids


async def build(client: httpx.AsyncClient) -> Store:
    flow = video_flow(label="news at ten", description="the bulletin", max_bit_rate=5000, avg_bit_rate=4000)
    flow["tags"] = {"auth_classes": ["news"]}
    assert (await put(client, NEWS, flow)).status_code == 201
    r = await client.put(f"/sources/{flow['source_id']}/tags/auth_classes", json=["news"], auth=NEWS)
    assert r.status_code == 204, r.text
    assert (await client.put(f"/sources/{flow['source_id']}/label", json="bulletin", auth=NEWS)).status_code == 204
    desc = await client.put(f"/sources/{flow['source_id']}/description", json="news", auth=NEWS)
    assert desc.status_code == 204
    objects = await record(client, NEWS, flow["id"], 2)
    hook = {"url": "http://127.0.0.1:9/news", "events": ["flows/created"], "tags": {"auth_classes": "news"}}
    r = await client.post("/service/webhooks", json=hook, auth=NEWS)
    assert r.status_code == 201, r.text
    shared = video_flow(label="shared", tags={"auth_classes": "news, sport_ro"})
    assert (await put(client, NEWS, shared)).status_code == 403  # news holds no write on sport_ro
    assert (await put(client, ROOT, shared)).status_code == 201
    doomed = video_flow(label="to be deleted", tags={"auth_classes": "news"})
    assert (await put(client, NEWS, doomed)).status_code == 201
    await record(client, NEWS, doomed["id"], 3)
    r = await client.delete(f"/flows/{doomed['id']}/segments", auth=NEWS)  # 3 > inline_delete_limit
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]
    sport = video_flow(label="sport", tags={"auth_classes": ["sport"]})
    assert (await put(client, SPORT, sport)).status_code == 201
    webhook_id = (await client.get("/service/webhooks", auth=NEWS)).json()[0]["id"]
    return Store(flow, flow["source_id"], objects[0], webhook_id, request_id, shared, sport)


@pytest.fixture
async def store(classed: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    async with app_client(classed) as client:
        yield client, await build(client)


def fill(path: str, method: str, ids: dict[str, str]) -> str:
    url = (
        path.replace("{flow_id}", ids["flow"])
        .replace("{source_id}", ids["source"])
        .replace("{webhook_id}", ids["webhook"])
        .replace("{request_id}", ids["request"])
        .replace("{name:path}", "auth_classes")
        .replace("{object_path:path}", ids["object"] + ("/instances" if method in ("POST", "DELETE") else ""))
        .replace("{object_id}", ids["object"])
        .replace("{ext}", "ts")
    )
    if path.startswith("/objects/") and method == "DELETE":
        url += "?label=mirror"
    if path.endswith(".jpg"):
        url += "?at=0:500000000"
    return url


def body_for(method: str, path: str, ids: dict[str, str]) -> Any:
    if method not in ("PUT", "POST"):
        return None
    last = path.rsplit("/", 1)[-1]
    if path == "/flows/{flow_id}":
        return {**video_flow(ids["flow"]), "tags": {"auth_classes": "sport"}}
    if path == "/service/webhooks/{webhook_id}":
        return {"id": ids["webhook"], "url": "http://127.0.0.1:9/x", "events": ["flows/created"], "status": "created"}
    return {
        "segments": {"object_id": str(uuid.uuid4()), "timerange": "[100:0_101:0)", "get_urls": []},
        "storage": {"limit": 1},
        "{object_path:path}": {"label": "mirror", "url": "http://example.com/o"},
        "max_bit_rate": 100,
        "avg_bit_rate": 100,
        "flow_collection": [],
        "read_only": True,
    }.get(last, "sport")


def same_words(a: httpx.Response, b: httpx.Response, hidden: dict[str, str], missing: dict[str, str]) -> bool:
    """The two answers say the same once the ids in them are swapped (timestamps aside)."""
    if a.status_code != b.status_code:
        return False
    if not a.content or "json" not in a.headers.get("content-type", ""):
        return a.content == b.content
    one, other = a.json(), b.json()
    if isinstance(one, dict) and "summary" in one:
        text = one["summary"]
        for kind, value in hidden.items():
            text = text.replace(value, missing[kind])
        return bool(text == other.get("summary"))
    return bool(one == other)


async def test_every_route_hides_news_from_sport_as_if_it_did_not_exist(
    store: tuple[httpx.AsyncClient, Store],
) -> None:
    client, built = store
    routes = app_routes(client.app)  # type: ignore[attr-defined]
    unclassified = {p for _, p in routes if p not in ABOUT and p not in OPEN and p not in PUBLIC}
    assert not unclassified, f"classify these routes for auth_classes: {sorted(unclassified)}"
    hidden = {
        "flow": built.flow["id"],
        "source": built.source_id,
        "object": built.object_id,
        "webhook": built.webhook_id,
        "request": built.request_id,
    }
    missing = {k: str(uuid.uuid4()) for k in hidden}
    checked = 0
    for method, path in sorted(EXPECTED):
        about = ABOUT.get(path)
        if about in (None, "listing", "events") or (method, path) in ANSWERS_405 or (method, path) not in routes:
            continue
        if (method, path) == ("PUT", "/flows/{flow_id}"):
            # Creating a Flow with a hidden Flow's id cannot succeed: refused as not found.
            r = await client.put(fill(path, method, hidden), json=body_for(method, path, hidden), auth=SPORT)
            assert r.status_code == 404, r.text
            continue
        for m in [method, "HEAD"] if method == "GET" else [method]:
            a = await client.request(m, fill(path, m, hidden), json=body_for(m, path, hidden), auth=SPORT)
            b = await client.request(m, fill(path, m, missing), json=body_for(m, path, missing), auth=SPORT)
            assert same_words(a, b, hidden, missing), (m, path, a.status_code, a.text, b.status_code, b.text)
            assert a.status_code >= 400 or not a.content.strip(b"[]"), (m, path, a.text)
            checked += 1
            if m in ("GET", "HEAD"):
                ok = await client.request(m, fill(path, m, hidden), auth=NEWS)
                assert ok.status_code not in (403, 404) or path.endswith(".jpg"), (m, path, ok.status_code, ok.text)
    assert checked > 40
    # nothing sport asked for changed news content
    got = (await client.get(f"/flows/{built.flow['id']}", auth=NEWS)).json()
    assert got["tags"]["auth_classes"] == ["news"] and got["label"] == "news at ten" and not got.get("read_only")


async def test_listings_show_only_what_the_principal_may_read(store: tuple[httpx.AsyncClient, Store]) -> None:
    client, built = store
    news_ids = {built.flow["id"], built.source_id, built.webhook_id, built.request_id}
    for path in ("/flows", "/sources", "/service/webhooks"):  # (listing delete requests is for admins)
        as_sport = (await client.get(path, auth=SPORT)).text
        as_news = (await client.get(path, auth=NEWS)).text
        assert not any(i in as_sport for i in news_ids), path
        assert any(i in as_news for i in news_ids), path
    flows = {f["id"] for f in (await client.get("/flows", auth=SPORT)).json()}
    assert flows == {built.shared["id"], built.sport["id"]}  # sport_ro reads the shared Flow
    usage = (await client.get("/x-tamstore/analytics/flows", auth=SPORT)).json()
    assert usage["totals"]["flows"] == 2
    assert (await client.get("/x-tamstore/analytics/flows", auth=ROOT)).json()["totals"]["flows"] == 4
    # an Object lists only the Flows the caller may read
    obj = (await client.get(f"/objects/{built.object_id}", auth=NEWS)).json()
    assert obj["referenced_by_flows"] == [built.flow["id"]]


async def test_paging_through_a_store_where_most_flows_are_hidden(classed: Settings) -> None:
    async with app_client(classed) as client:
        visible = []
        for i in range(40):
            body = video_flow(label=f"f{i}", tags={"auth_classes": "news" if i % 10 == 3 else "sport"})
            who = NEWS if i % 10 == 3 else SPORT
            assert (await put(client, who, body)).status_code == 201
            if i % 10 == 3:
                visible.append(body["id"])
        seen: list[str] = []
        url: str | None = "/flows?limit=2"
        pages = []
        while url:
            r = await client.get(url, auth=NEWS)
            assert r.status_code == 200
            pages.append(len(r.json()))
            assert r.headers["X-Paging-Count"] == str(len(r.json()))
            seen += [f["id"] for f in r.json()]
            url = r.links.get("next", {}).get("url")
        assert sorted(seen) == sorted(visible) and pages[:-1] == [2] * (len(pages) - 1)


async def test_changing_classes_needs_write_on_each_class_added_or_removed(
    store: tuple[httpx.AsyncClient, Store],
) -> None:
    client, built = store
    shared, sport = built.shared["id"], built.sport["id"]
    # sport reads the shared Flow but may not change it, nor its tags
    assert (await client.get(f"/flows/{shared}", auth=SPORT)).status_code == 200
    assert (await client.put(f"/flows/{shared}/label", json="mine", auth=SPORT)).status_code == 403
    r = await client.put(f"/flows/{shared}/tags/auth_classes", json="sport", auth=SPORT)
    assert r.status_code == 403
    # no granting a class one does not hold, nor taking one away
    r = await client.put(f"/flows/{sport}/tags/auth_classes", json=["sport", "news"], auth=SPORT)
    assert r.status_code == 403 and "news" in r.json()["summary"]
    r = await client.put(f"/flows/{shared}/tags/auth_classes", json="news", auth=NEWS)
    assert r.status_code == 403 and "sport_ro" in r.json()["summary"]
    body = {**video_flow(), "tags": {"auth_classes": "news"}}
    assert (await put(client, SPORT, body)).status_code == 403  # creating content for another desk
    r = await client.put(f"/flows/{sport}", json={**built.sport, "tags": {"auth_classes": "news"}}, auth=SPORT)
    assert r.status_code == 403
    # an admin may; and then sport loses the Flow at once
    r = await client.put(f"/flows/{shared}/tags/auth_classes", json="news", auth=ROOT)
    assert r.status_code == 204
    assert (await client.get(f"/flows/{shared}", auth=SPORT)).status_code == 404
    bad = await client.put(f"/flows/{sport}/tags/auth_classes", json=["x" * 200], auth=SPORT)
    assert bad.status_code == 400 and "auth_classes" in bad.json()["summary"]


async def test_a_hidden_object_cannot_be_reused_and_changes_propagate_to_collected_flows(
    store: tuple[httpx.AsyncClient, Store],
) -> None:
    client, built = store
    sport = built.sport["id"]
    seg = {"object_id": built.object_id, "timerange": "[0:0_1:0)"}
    r = await client.post(f"/flows/{sport}/segments", json=seg, auth=SPORT)
    assert r.status_code == 400 and "unknown" in r.json()["summary"]
    # a multi-essence Flow re-classed takes the Flows it collects with it
    member = video_flow(label="member", tags={"auth_classes": "sport"})
    assert (await put(client, SPORT, member)).status_code == 201
    multi = multi_flow([(member["id"], "video")], tags={"auth_classes": "sport"})
    assert (await put(client, SPORT, multi)).status_code == 201
    r = await client.put(f"/flows/{multi['id']}/tags/auth_classes", json=["sport", "sport_ro"], auth=ROOT)
    assert r.status_code == 204
    got = (await client.get(f"/flows/{member['id']}/tags/auth_classes", auth=SPORT)).json()
    assert got == ["sport", "sport_ro"]


def test_events_reach_only_those_who_may_read_their_subject(
    settings: Settings, tmp_path: Path, receiver: Receiver
) -> None:
    auth_file = auth_toml(tmp_path / "auth.toml")
    live = LiveServer.serving(settings, TAMSTORE_AUTH="basic", TAMSTORE_AUTH_FILE=str(auth_file))
    basic = "Basic " + base64.b64encode(b"sportsdesk:sport-secret").decode()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as c:
            events = ["flows/created", "flows/updated", "flows/segments_added"]
            hook = {"url": receiver.url + "/sport", "events": events}
            assert c.post("/service/webhooks", json=hook, auth=SPORT).status_code == 201

            def add_segment(flow: dict[str, Any], auth: tuple[str, str], start: int) -> None:
                made = c.post(f"/flows/{flow['id']}/storage", json={"limit": 1}, auth=auth)
                seg = {
                    "object_id": made.json()["media_objects"][0]["object_id"],
                    "timerange": f"[{start}:0_{start + 1}:0)",
                }
                assert c.post(f"/flows/{flow['id']}/segments", json=seg, auth=auth).status_code == 201

            stream = SseClient(live.url + "/x-tamstore/events?events=flows/created", {"Authorization": basic})
            news = video_flow(label="news only", tags={"auth_classes": "news"})
            sport = video_flow(label="sport", tags={"auth_classes": "sport"})
            assert c.put(f"/flows/{news['id']}", json=news, auth=NEWS).status_code == 201
            assert c.put(f"/flows/{sport['id']}", json=sport, auth=SPORT).status_code == 201
            [heard] = stream.wait_for(1)
            receiver.wait_for(1, "flows/created")
            # segment events carry their Flow's classes too (taken from the row the write read)
            add_segment(news, NEWS, 0)
            add_segment(sport, SPORT, 0)
            receiver.wait_for(1, "flows/segments_added")
            # the class withdrawn from the Flow: sport hears nothing more of it
            assert c.put(f"/flows/{sport['id']}/tags/auth_classes", json="news", auth=ROOT).status_code == 204
            assert c.put(f"/flows/{sport['id']}/label", json="renamed", auth=ROOT).status_code == 204
            add_segment(sport, ROOT, 1)
            # a marker sport may hear, delivered after the others: nothing hidden came before it
            marker = video_flow(label="marker", tags={"auth_classes": "sport"})
            assert c.put(f"/flows/{marker['id']}", json=marker, auth=SPORT).status_code == 201
            receiver.wait_for(2, "flows/created")
            stream.wait_for(2)
            stream.close()
        assert heard.data["event"]["flow"]["id"] == sport["id"]
        created = [b["event"]["flow"]["id"] for b in receiver.bodies("flows/created")]
        assert created == [sport["id"], marker["id"]]
        assert [e.data["event"]["flow"]["id"] for e in stream.events] == [sport["id"], marker["id"]]
        assert receiver.bodies("flows/updated") == []  # both updates came after the class went
        added = [
            (b["event"]["flow_id"], b["event"]["segments"][0]["timerange"])
            for b in receiver.bodies("flows/segments_added")
        ]
        assert added == [(sport["id"], "[0:0_1:0)")]  # not news's, nor the one after the class went
    finally:
        live.stop()


async def test_sources_inherit_and_pass_on_their_classes(store: tuple[httpx.AsyncClient, Store]) -> None:
    client, built = store
    # a new Source takes the classes of the Flow that made it
    sport = built.sport
    got = (await client.get(f"/sources/{sport['source_id']}/tags/auth_classes", auth=SPORT)).json()
    assert got == ["sport"]
    # joining another desk's Source needs write on it: news's Source is as missing to sport
    intruder = video_flow(source_id=built.source_id, tags={"auth_classes": "sport"})
    assert (await put(client, SPORT, intruder)).status_code == 404
    # a Source re-classed passes it on to its Flows
    r = await client.put(f"/sources/{sport['source_id']}/tags/auth_classes", json=["sport", "sport_ro"], auth=ROOT)
    assert r.status_code == 204
    assert (await client.get(f"/flows/{sport['id']}/tags/auth_classes", auth=SPORT)).json() == ["sport", "sport_ro"]
    # the policy shows in the service document
    service = (await client.get("/service", auth=SPORT)).json()
    assert service["x-tamstore-authorisation"]["untagged"] == "open"
    assert {"group": "sport", "classes": ["sport_ro"], "actions": ["read"]} in service["x-tamstore-authorisation"][
        "grants"
    ]


def test_config_show_prints_the_policy(tmp_path: Path) -> None:
    auth_file = auth_toml(tmp_path / "auth.toml")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tamstore",
            "config",
            "show",
            "--data-dir",
            str(tmp_path / "d"),
            "--auth-file",
            str(auth_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"groups_claim": "groups"' in done.stdout and '"sport_ro"' in done.stdout


async def test_documents_do_not_name_what_the_caller_may_not_see(store: tuple[httpx.AsyncClient, Store]) -> None:
    client, built = store
    sport = built.sport
    # (read-only, so that the news multi-essence Flow does not pass its classes on to it)
    assert (await client.put(f"/flows/{sport['id']}/read_only", json=True, auth=SPORT)).status_code == 204
    multi = multi_flow([(sport["id"], "video")], tags={"auth_classes": "news"})
    assert (await put(client, ROOT, multi)).status_code == 201
    assert (await client.get(f"/flows/{sport['id']}", auth=ROOT)).json()["collected_by"] == [multi["id"]]
    mine = await client.get(f"/flows/{sport['id']}", auth=SPORT)
    assert mine.status_code == 200 and "collected_by" not in mine.json()
    source = await client.get(f"/sources/{sport['source_id']}", auth=SPORT)
    assert source.status_code == 200 and "collected_by" not in source.json()
    assert (await client.get(f"/sources/{sport['source_id']}", auth=ROOT)).json()["collected_by"]


async def test_a_kept_segment_page_is_not_served_to_those_who_may_not_read_it(
    store: tuple[httpx.AsyncClient, Store],
) -> None:
    client, built = store
    url = f"/flows/{built.flow['id']}/segments"
    for _ in range(3):  # asked again: the page cache keeps it
        kept = await client.get(url, auth=NEWS)
        assert kept.status_code == 200 and len(kept.json()) == 2
    hidden = await client.get(url, auth=SPORT)
    missing = await client.get(f"/flows/{uuid.uuid4()}/segments", auth=SPORT)
    assert (hidden.status_code, hidden.json()) == (missing.status_code, missing.json()) == (200, [])


async def test_groups_come_in_tokens_too(settings: Settings, tmp_path: Path) -> None:
    """A built-in client's groups ride in its token (the policy's groups_claim), as an identity
    provider's would."""
    auth_file = auth_toml(tmp_path / "auth.toml")
    client_entry = (
        f'[[clients]]\nclient_id = "sport-ingest"\nclient_secret = "{hash_secret("c-secret")}"\n'
        f'scopes = ["tams-api/read", "tams-api/write"]\ngroups = ["sport"]\n\n'
    )
    auth_file.write_text(client_entry + auth_file.read_text())
    s = dataclasses.replace(settings, auth="basic,bearer", auth_file=auth_file, auth_failures_per_minute=10**6)
    async with app_client(s) as client:
        news = video_flow(tags={"auth_classes": "news"})
        sport = video_flow(tags={"auth_classes": "sport"})
        assert (await put(client, NEWS, news)).status_code == 201
        assert (await put(client, SPORT, sport)).status_code == 201
        r = await client.post(
            "/x-tamstore/oauth2/token", data={"grant_type": "client_credentials"}, auth=("sport-ingest", "c-secret")
        )
        token = r.json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert [f["id"] for f in (await client.get("/flows", headers=bearer)).json()] == [sport["id"]]
        assert (await client.get(f"/flows/{news['id']}", headers=bearer)).status_code == 404
        me = (await client.get("/x-tamstore/whoami", headers=bearer)).json()
        assert me["groups"] == ["sport"]


async def test_a_storage_backend_with_classes_is_for_those_they_allow(tmp_path: Path) -> None:
    config = tmp_path / "storage.toml"
    config.write_text(
        f"""
[[backends]]
kind = "filesystem"
id = "{uuid.uuid4()}"
label = "news disk"
default = true
tags = {{ auth_classes = ["news"] }}
"""
    )
    s = Settings(
        data_dir=tmp_path / "data",
        storage_config=config,
        auth="basic",
        auth_file=auth_toml(tmp_path / "auth.toml"),
        auth_failures_per_minute=10**6,
    )
    async with app_client(s) as client:
        assert len((await client.get("/service/storage-backends", auth=NEWS)).json()) == 1
        assert (await client.get("/service/storage-backends", auth=SPORT)).json() == []
        sport = video_flow(tags={"auth_classes": "sport"})
        assert (await put(client, SPORT, sport)).status_code == 201
        r = await client.post(f"/flows/{sport['id']}/storage", json={"limit": 1}, auth=SPORT)
        assert r.status_code == 400 and "no default backend" in r.json()["summary"]
        news = video_flow(tags={"auth_classes": "news"})
        assert (await put(client, NEWS, news)).status_code == 201
        assert (await client.post(f"/flows/{news['id']}/storage", json={"limit": 1}, auth=NEWS)).status_code == 201


async def test_distinct_class_sets_are_bounded(classed: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every filtered listing reads the distinct sets of classes in use: their number is
    bounded, and a new set past the bound is refused, naming the tag."""
    from tamstore.store.metadata import base

    monkeypatch.setattr(base, "MAX_CLASS_SETS", 2)
    async with app_client(classed) as client:
        for classes in (["news"], ["news", "sport"], ["news"]):
            assert (await put(client, ROOT, video_flow(tags={"auth_classes": classes}))).status_code == 201
        r = await put(client, ROOT, video_flow(tags={"auth_classes": ["sport"]}))
        assert r.status_code == 400 and "auth_classes" in r.json()["summary"]
        assert len((await client.get("/flows", auth=ROOT)).json()) == 3  # nothing half-made


async def test_where_untagged_content_is_closed_it_is_for_admins_only(classed: Settings) -> None:
    assert classed.auth_file is not None
    classed.auth_file.write_text(classed.auth_file.read_text().replace('untagged = "open"', 'untagged = "closed"'))
    async with app_client(classed) as client:
        untagged = video_flow(label="nobody's")
        assert (await put(client, NEWS, untagged)).status_code == 403  # nobody but admins would see it
        assert (await put(client, ROOT, untagged)).status_code == 201
        news = video_flow(tags={"auth_classes": "news"})
        assert (await put(client, NEWS, news)).status_code == 201
        assert [f["id"] for f in (await client.get("/flows", auth=NEWS)).json()] == [news["id"]]
        assert (await client.get(f"/flows/{untagged['id']}", auth=NEWS)).status_code == 404
        r = await client.delete(f"/flows/{news['id']}/tags/auth_classes", auth=NEWS)
        assert r.status_code == 403 and "admins only" in r.json()["summary"]
