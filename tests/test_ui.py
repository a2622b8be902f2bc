"""The web UI (issue 20) in real headless Chromium (Debian's ``chromium``, driven by Playwright
through ``executable_path``: no browser download), against a real server with media ingested
in the run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tamstore.auth import hash_secret
from tamstore.client import TamsClient
from tamstore.config import Settings
from tests.conftest import video_flow
from tests.live import LiveServer
from tests.media import make_media, placed_at

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (CI installs it)"
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("media") / "numbered.mp4", seconds=12)


@pytest.fixture
def browser(settings: Settings) -> Iterator[Any]:
    """Per test, and after the test's database exists: Playwright's sync API runs an event loop
    in this thread while it is open, where the database fixtures need ``asyncio.run``."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "CI must install Debian's chromium"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield chromium
        chromium.close()


def ingest(server: LiveServer, media: Path, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tamstore", "ingest", str(media), "--server", server.url, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_browsers_are_sent_to_the_ui_and_its_files_come_from_the_package(server: LiveServer) -> None:
    r = httpx.get(server.url + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 302 and r.headers["location"] == "/ui/"
    assert httpx.get(server.url + "/", headers={"Accept": "application/json"}).json()[0] == "service"
    assert httpx.get(server.url + "/").json()[0] == "service"  # */*: an API client
    page = httpx.get(server.url + "/ui/")
    assert page.status_code == 200 and "<title>tamstore</title>" in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("app.js", "api.js", "time.js", "timeline.js", "style.css", "vendor/hls.min.js"):
        assert httpx.get(f"{server.url}/ui/{asset}").status_code == 200, asset
    assert "Apache License" in httpx.get(server.url + "/ui/vendor/hls.js-LICENSE.txt").text


def test_browse_play_edit_and_watch_a_flow_grow(server: LiveServer, media: Path, browser: Any) -> None:
    ids = ingest(server, media, "--label", "News at ten")
    with TamsClient(server.url) as tams:
        tams.put_flow(
            {
                "id": "3f1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b",
                "source_id": "4f1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b",
                "format": "urn:x-nmos:format:audio",
                "codec": "audio/aac",
                "label": "Sport",
                "essence_parameters": {"sample_rate": 48000, "channels": 2},
            }
        )
    page = browser.new_page(bypass_csp=True)  # (Playwright's wait_for_function evaluates strings)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    assert page.url.endswith("/ui/")
    page.wait_for_selector("table tbody tr")
    assert page.locator("text=News at ten (video)").count() == 1
    assert page.locator("p.count").inner_text() == "4 of 4 shown"  # video, audio, multi and Sport
    # search by label and format
    page.fill("input[name=label]", "Sport")
    page.click("button:has-text('Search')")
    page.wait_for_function("document.querySelectorAll('table tbody tr').length === 1")
    assert "Sport" in page.locator("table tbody").inner_text()
    page.goto(server.url + "/ui/#/flows?format=urn:x-nmos:format:video")
    page.wait_for_selector("text=News at ten (video)")
    assert page.locator("table tbody tr").count() == 1
    # the video Flow: timeline from the analytics, player, segments of the selected range
    page.click("text=News at ten (video)")
    page.wait_for_selector("canvas#timeline[data-segments]")
    assert int(page.get_attribute("canvas#timeline", "data-segments") or 0) == 6
    _plays(page)
    page.wait_for_selector("#segments table tbody tr")
    # stills along the timeline, made by the server from the segments
    page.wait_for_function(
        "[...document.querySelectorAll('img.thumb')].filter(i => i.complete && i.naturalWidth === 160).length >= 4",
        timeout=20_000,
    )
    assert page.locator("#segments table tbody tr").count() >= 5  # the first 10 s
    # edit the label (with auth off, everyone may write)
    page.fill("form.edit input[name=label]", "News at ten, edited")
    page.click("form.edit button")
    page.wait_for_selector("h1:has-text('News at ten, edited')")
    page.wait_for_selector("#live-status[data-live=open]", state="attached")
    with TamsClient(server.url) as tams:
        assert tams.get_flow(ids["flows"]["video"])["label"] == "News at ten, edited"
        # live: segments registered while the page is open arrive through the event stream
        video = list(tams.segments(ids["flows"]["video"]))
        placed = placed_at(video[:3], 100 * 10**9)
        for seg in placed:
            assert tams.post_segments(ids["flows"]["video"], [seg]) == []
            time.sleep(0.2)
    page.wait_for_function("document.querySelector('#live-status').dataset.added === '3'", timeout=10_000)
    # the view moved on with the new segments, its span kept: [100 s, 106 s) at its end
    page.wait_for_function("document.querySelector('canvas#timeline').dataset.view.endsWith('_106:0)')", timeout=10_000)
    assert page.get_attribute("canvas#timeline", "data-segments") == "3"
    assert errors == []
    page.close()


def _plays(page: Any) -> None:
    """The player plays: past 2 s, at the Flow's picture size (320x240)."""
    page.wait_for_selector("video#player[data-loaded]", timeout=20_000)
    page.wait_for_function("document.querySelector('video#player').currentTime > 2", timeout=30_000)
    assert page.evaluate(
        "[document.querySelector('video#player').videoWidth, document.querySelector('video#player').videoHeight]"
    ) == [320, 240]
    assert page.get_attribute("video#player", "data-error") is None


@contextlib.contextmanager
def screenshots(page: Any, where: Path) -> Iterator[None]:
    """A screenshot of the page when what runs inside fails (kept beside the test's files)."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(where / "failure.png"), full_page=True)
        raise


def test_a_multi_essence_flow_plays_and_a_gap_shows(
    server: LiveServer, media: Path, browser: Any, tmp_path: Path
) -> None:
    ids = ingest(server, media)
    gapped = "5c1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b"
    with TamsClient(server.url) as tams:
        video = tams.get_flow(ids["flows"]["video"])
        edit = {k: video[k] for k in ("format", "codec", "container", "essence_parameters")}
        tams.put_flow({**edit, "id": gapped, "source_id": "6c1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b", "label": "Gapped"})
        segments = list(tams.segments(ids["flows"]["video"]))
        assert tams.post_segments(gapped, placed_at(segments[:2], 0) + placed_at(segments[3:5], 10 * 10**9)) == []
    page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    with screenshots(page, tmp_path):
        page.goto(f"{server.url}/ui/#/flows/{ids['flow_id']}")
        _plays(page)  # video with its audio
        page.goto(f"{server.url}/ui/#/flows/{gapped}")
        page.wait_for_selector("h1:has-text('Gapped')")
        page.wait_for_selector("canvas#timeline[data-gaps]")
        assert page.get_attribute("canvas#timeline", "data-gaps") == "1"  # [4.0 s, 10.0 s)
        assert page.locator(".thumb.gap").count() >= 1
        # keyboard: the timeline takes focus, + zooms in, Enter plays the middle of the view
        before = page.get_attribute("canvas#timeline", "data-view")
        page.focus("canvas#timeline")
        page.keyboard.press("+")
        page.wait_for_function(f"document.querySelector('canvas#timeline').dataset.view !== '{before}'")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelector('#selected-range').textContent !== ''")
        # a phone's width: nothing wider than the screen but the tables, which scroll
        page.set_viewport_size({"width": 390, "height": 844})
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.close()


def test_stills_come_from_an_image_flow_beside_the_video_and_a_source_is_edited(
    server: LiveServer, media: Path, browser: Any, tmp_path: Path
) -> None:
    ids = ingest(server, media)
    video = ids["flows"]["video"]
    stills, together = "7d1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b", "8d1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b"
    with TamsClient(server.url) as tams:
        # an image Flow of JPEG stills, one per video segment (pictures the server extracts)
        tams.put_flow(
            {
                "id": stills,
                "source_id": "7e1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b",
                "format": "urn:x-tam:format:image",
                "codec": "image/jpeg",
                "container": "image/jpeg",
                "label": "Stills",
                "essence_parameters": {"frame_width": 160, "frame_height": 120},
            }
        )
        segments = list(tams.segments(video))
        objects = tams.allocate(stills, len(segments))
        for seg, obj in zip(segments, objects, strict=True):
            start = seg["timerange"][1:].split("_")[0]
            jpeg = httpx.get(f"{server.url}/x-tamstore/frames/{video}.jpg", params={"at": start, "width": 160})
            assert jpeg.headers["content-type"] == "image/jpeg"
            tams.upload(obj["put_url"], jpeg.content)
        pairs = zip(segments, objects, strict=True)
        placed = [{"object_id": o["object_id"], "timerange": s["timerange"]} for s, o in pairs]
        assert tams.post_segments(stills, placed) == []
        tams.put_flow(
            {
                "id": together,
                "source_id": "8e1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b",
                "format": "urn:x-nmos:format:multi",
                "label": "With stills",
                "flow_collection": [{"id": video, "role": "video"}, {"id": stills, "role": "stills"}],
            }
        )
    page = browser.new_page(bypass_csp=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with screenshots(page, tmp_path):
        # the video Flow's page: collected with the stills, so its thumbnails are those pictures
        page.goto(f"{server.url}/ui/#/flows/{video}")
        page.wait_for_function(
            "[...document.querySelectorAll('img.thumb.still')]"
            ".filter(i => i.complete && i.naturalWidth === 160 && !i.src.includes('/x-tamstore/frames/')).length >= 4",
            timeout=20_000,
        )
        assert page.locator("img.thumb:not(.still)").count() == 0  # no frames extracted
        # a Source edited: label, description and a tag, kept
        source_id = ids["sources"]["video"]
        page.goto(f"{server.url}/ui/#/sources/{source_id}")
        page.wait_for_selector("h2:has-text('Collection')")  # the Source's page, not the Flow's still showing
        page.fill("form.edit input[name=label]", "Camera 1")
        page.fill("form.edit input[name=description]", "the main camera")
        page.fill("form.edit input[name=tag_name]", "location")
        page.fill("form.edit input[name=tag_value]", "studio B")
        page.click("form.edit button")
        page.wait_for_selector("h1:has-text('Camera 1')")
    with TamsClient(server.url) as tams:
        source = tams.get_source(source_id)
        assert (source["label"], source["description"], source["tags"]["location"]) == (
            "Camera 1",
            "the main camera",
            "studio B",
        )
    assert errors == []
    page.close()


def test_the_other_pages(server: LiveServer, media: Path, browser: Any) -> None:
    """Under the UI's Content-Security-Policy, as a browser has it (the other tests let
    Playwright's string predicates through): no page, nor the player, trips it."""
    ids = ingest(server, media)
    httpx.post(
        server.url + "/service/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["flows/created"]}
    ).raise_for_status()
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server.url + "/ui/#/webhooks")
    page.wait_for_selector("text=http://127.0.0.1:9/hook")
    page.goto(server.url + "/ui/#/storage")
    page.wait_for_selector("canvas#usage-chart")
    assert page.locator("table").count() == 2
    page.goto(server.url + "/ui/#/service")
    page.wait_for_selector("text=api_version")
    page.goto(server.url + "/ui/#/delete-requests")
    page.wait_for_selector("h1:has-text('Delete requests')")
    page.goto(server.url + "/ui/#/sources")
    page.wait_for_selector("table tbody tr")
    page.click("table tbody tr:first-child a")
    page.wait_for_selector("h2:has-text('Collection')")
    page.goto(f"{server.url}/ui/#/flows/{ids['flows']['video']}")
    page.wait_for_selector("video#player[data-loaded]", timeout=20_000)
    deadline = time.monotonic() + 30
    while page.evaluate("document.querySelector('video#player').currentTime") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert page.evaluate("document.querySelector('video#player').currentTime") >= 1, "plays under the policy"
    assert errors == []
    # A writer's get_url that is no http(s) URL is shown as text, never as a link to follow; the
    # player's fetch of it (it is in the Flow's playlist) is stopped by the policy.
    hostile = "6c1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b"
    with TamsClient(server.url) as tams:
        video = tams.get_flow(ids["flows"]["video"])
        edit = {k: video[k] for k in ("format", "codec", "container", "essence_parameters")}
        tams.put_flow({**edit, "id": hostile, "source_id": "7c1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b", "label": "Hostile"})
        url = {"url": "javascript:document.title='owned'", "label": "click me"}
        segment = {"object_id": "hostile-1", "timerange": "[0:0_1:0)", "get_urls": [url]}
        assert tams.post_segments(hostile, [segment]) == []
    page.goto(f"{server.url}/ui/#/flows/{hostile}")
    page.wait_for_selector("#segments table tbody tr")
    assert page.locator("#segments span:has-text('click me')").count() == 1
    assert page.locator("a[href^='javascript']").count() == 0
    assert all("javascript:document.title" in e and "Content Security Policy" in e for e in errors), errors
    assert page.title() == "tamstore"
    # A Flow of WAV segments (uncompressed audio) is not offered to the player, which cannot
    # play it: the page says how to export it instead.
    wav = "8c1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b"
    httpx.put(
        f"{server.url}/flows/{wav}",
        json={
            "id": wav,
            "source_id": "9c1e8a52-3c5d-4a0e-9a1b-2c3d4e5f6a7b",
            "format": "urn:x-nmos:format:audio",
            "codec": "audio/x-raw-int",
            "container": "audio/wav",
            "essence_parameters": {"sample_rate": 48000, "channels": 2, "bit_depth": 24},
        },
    ).raise_for_status()
    page.goto(f"{server.url}/ui/#/flows/{wav}")
    page.wait_for_selector("#not-playable")
    assert f"--flow-id {wav}" in page.inner_text("#not-playable")
    assert page.locator("video#player").count() == 0
    page.close()


def test_signing_in_when_auth_is_on(settings: Settings, media: Path, browser: Any, tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.toml"
    auth_file.write_text(
        f'[[users]]\nname = "editor"\npassword = "{hash_secret("pw")}"\n'
        f'[[clients]]\nclient_id = "viewer"\nclient_secret = "{hash_secret("s3")}"\nscopes = ["tams-api/read"]\n'
    )
    live = LiveServer.serving(settings, TAMSTORE_AUTH="basic,bearer", TAMSTORE_AUTH_FILE=str(auth_file))
    try:
        ingest(live, media, "--username", "editor", "--password", "pw", "--label", "Secret")
        for kind, user, secret in (("basic", "editor", "pw"), ("client", "viewer", "s3")):
            page = browser.new_page()
            page.goto(live.url + "/ui/#/flows")
            page.wait_for_selector("dialog#login[open]")
            page.fill("input[name=user]", user)
            page.fill("input[name=secret]", "wrong")
            page.check(f"input[name=kind][value={kind}]")
            page.click("dialog button[type=submit]")
            page.wait_for_selector("#login-error:not(:empty)")
            page.fill("input[name=secret]", secret)
            page.click("dialog button[type=submit]")
            page.wait_for_selector("text=Secret (video)")
            assert f"signed in as {user}" in page.locator("#who").inner_text()
            page.click("text=Secret (video)")
            page.wait_for_selector("h2:has-text('Properties')")
            if kind == "basic":  # an editor: may change the Flow
                assert page.locator("form.edit").count() == 1
            else:  # read only: no edit controls
                assert page.locator("form.edit").count() == 0 and page.locator("#read-only").count() == 1
            page.close()
    finally:
        live.stop()


def test_a_filtered_listing_reads_on_past_empty_pages(settings: Settings, browser: Any) -> None:
    """On SQLite a broad filter's page looks at ``listing_scan_rows`` rows at most, and may come
    back empty with a next link. The Flows page reads on by itself until it has something to
    show: here five rows a page, and the three matches behind twenty-seven newer Flows (five
    empty pages first)."""
    server = LiveServer.serving(settings, TAMSTORE_LISTING_SCAN_ROWS="5")
    try:
        bodies = [video_flow(codec="video/rare", label=f"rare {i}") for i in range(3)]
        bodies += [video_flow(label=f"common {i}") for i in range(27)]
        for body in bodies:  # in this order: the rare ones are the oldest
            httpx.put(f"{server.url}/flows/{body['id']}", json=body).raise_for_status()
        first = httpx.get(f"{server.url}/flows", params={"codec": "video/rare", "limit": 50})
        if settings.database_url is None:  # the bound is SQLite's
            assert first.json() == [] and "next" in first.links
        page = browser.new_page()
        page.goto(f"{server.url}/ui/#/flows?codec=video%2Frare")
        page.wait_for_selector("p.count")
        labels = page.locator("table tbody tr td:first-child a").all_inner_texts()
        assert sorted(labels) == ["rare 0", "rare 1", "rare 2"]
        assert page.locator("p.count").inner_text().startswith("3 ")
        page.close()
    finally:
        server.stop()
