"""``tamstore sync`` (issue 22) between real servers, each way between the embedded default and
the backend pairing under test (PostgreSQL + S3 in that run), losing nothing: every property,
every segment field, the bytes of every Object copied once (init Objects and edits by reference
included), resumable after a kill -9, verifiable, following through the event stream, and by
reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tamstore.client import TamsClient
from tamstore.config import Settings
from tamstore.domain.timerange import TimeRange, format_timestamp
from tests.live import LiveServer
from tests.media import make_media, placed_at
from tests.test_media import decoded

SERVER_MANAGED = {
    "created",
    "metadata_updated",
    "segments_updated",
    "created_by",
    "updated_by",
    "collected_by",
    "metadata_version",
    "updated",
}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("media") / "numbered.mp4", seconds=10)


@pytest.fixture
def servers(settings: Settings, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    a = LiveServer.serving(settings)
    b = LiveServer(tmp_path / "target" / "data", None).start()
    yield a, b
    b.stop()
    a.stop()


@pytest.fixture
def back(settings: Settings, tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """The other way: from an embedded server to one on the pairing under test."""
    a = LiveServer(tmp_path / "source" / "data", None).start()
    b = LiveServer.serving(settings)
    yield a, b
    b.stop()
    a.stop()


def same_bytes(a: str, b: str, flow_ids: list[str]) -> int:
    """Asserts that every segment's Object (and init Object) reads back the same on both
    servers; returns how many Objects were compared."""
    seen: set[str] = set()
    with TamsClient(a) as source, TamsClient(b) as target:
        for flow_id in flow_ids:
            theirs = {s["timerange"]: s for s in target.segments(flow_id)}
            for seg in source.segments(flow_id):
                other = theirs[seg["timerange"]]
                pairs = [(seg, other)]
                if seg.get("init_object"):
                    pairs.append((seg["init_object"], other["init_object"]))
                for x, y in pairs:
                    if x["object_id"] in seen:
                        continue
                    seen.add(x["object_id"])
                    one = source.download(x["get_urls"][0]["url"])
                    assert one == target.download(y["get_urls"][0]["url"]), (flow_id, x["object_id"])
    return len(seen)


def tamstore(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tamstore", *args], capture_output=True, text=True, timeout=300, env=os.environ
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _same(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in SERVER_MANAGED}


def _edit(tams: TamsClient, video_id: str) -> str:
    """A Flow made by reference: segments 1-2 of the video at 100 s (ts_offset), read-only."""
    source = tams.get_flow(video_id)
    edit_id = "2e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10"
    edit = {k: source[k] for k in ("format", "codec", "container", "essence_parameters")}
    edit.update(id=edit_id, source_id="3e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10", label="the edit", tags={"show": "news"})
    tams.put_flow(edit)
    used = list(tams.segments(video_id))[1:3]
    placed = [
        {**seg, "init_object_id": used[i]["init_object"]["object_id"], "key_frame_count": 1}
        for i, seg in enumerate(placed_at(used, 100 * 10**9))
    ]
    assert tams.post_segments(edit_id, placed) == []
    tams.request("PUT", f"/sources/{edit['source_id']}/description", json="an edit")
    tams.set_flow_property(edit_id, "read_only", True)
    return edit_id


def test_sync_copies_everything_once_and_again_changes_nothing(
    servers: tuple[LiveServer, LiveServer], media: Path, tmp_path: Path
) -> None:
    a, b = servers
    ingest = tamstore("ingest", str(media), "--server", a.url, "--json", "--container", "cmaf")
    ids = json.loads(ingest.stdout)
    with TamsClient(a.url) as tams:
        edit_id = _edit(tams, ids["flows"]["video"])
    state = tmp_path / "sync-state.json"
    both = ["--from", a.url, "--to", b.url, "--state", str(state)]
    # a dry run changes nothing
    dry = tamstore("sync", *both, "--all", "--dry-run")
    assert "would copy 12 segments of 4 Flows" in dry.stdout, dry.stdout
    with TamsClient(b.url) as target:
        assert list(target.flows()) == []
    # part of the timeline first (as a sync stopped halfway would have), then all of it
    tamstore("sync", *both, "--flow-id", ids["flow_id"], "--timerange", "[0:0_4:0)")
    done = tamstore("sync", *both, "--all")
    assert "segments already there" in done.stdout
    with TamsClient(a.url) as source, TamsClient(b.url) as target:
        for flow in source.flows():
            copied = target.get_flow(flow["id"])
            assert copied is not None and _same(copied) == _same(flow), flow["id"]
            assert _same(target.get_source(flow["source_id"])) == _same(source.get_source(flow["source_id"]))
            theirs = list(source.segments(flow["id"]))
            ours = list(target.segments(flow["id"]))
            assert len(ours) == len(theirs)
            for x, y in zip(theirs, ours, strict=True):
                for name in ("timerange", "ts_offset", "object_id", "sample_offset", "sample_count", "key_frame_count"):
                    assert x.get(name) == y.get(name), (flow["id"], name)
                assert (x.get("init_object") or {}).get("object_id") == (y.get("init_object") or {}).get("object_id")
        assert target.get_flow(edit_id)["read_only"] is True  # applied after its segments
    assert same_bytes(a.url, b.url, [edit_id, *ids["flows"].values()]) == 12  # 10 media, 2 init
    # the edit reuses the video's Objects: copied once, not twice
    out = tmp_path / "from-target.mp4"
    tamstore("export", "--server", b.url, "--flow-id", ids["flow_id"], "-o", str(out))
    assert decoded(out)[0] == list(range(250))
    edit_out = tmp_path / "edit.mp4"
    tamstore("export", "--server", b.url, "--flow-id", edit_id, "-o", str(edit_out))
    assert decoded(edit_out)[0] == list(range(50, 150))
    # again: nothing to do
    again = tamstore("sync", *both, "--all")
    assert again.stdout.startswith("copied 0 segments of 4 Flows (0 Objects"), again.stdout
    verified = tamstore("sync", *both, "--all", "--verify", "--bytes")
    assert "the two sides agree" in verified.stdout
    # a difference is found and named
    with TamsClient(b.url) as target:
        video = list(target.segments(ids["flows"]["audio"]))
        target.request(
            "DELETE", f"/flows/{ids['flows']['audio']}/segments", params={"timerange": video[-1]["timerange"]}
        )
    differs = tamstore("sync", *both, "--all", "--verify", check=False)
    assert differs.returncode == 1 and f"segment {video[-1]['timerange']} missing on the target" in differs.stdout
    # bytes altered in place, the size kept: only --bytes reads them
    video_id = ids["flows"]["video"]
    with TamsClient(b.url) as target:
        first = next(iter(target.segments(video_id)))
    [stored] = [f.with_suffix("") for f in (tmp_path / "target").rglob("*.id") if f.read_text() == first["object_id"]]
    data = stored.read_bytes()
    stored.write_bytes(bytes(255 - x for x in data[:64]) + data[64:])
    one = ["sync", *both, "--flow-id", video_id, "--verify"]
    assert "the two sides agree" in tamstore(*one).stdout
    differs = tamstore(*one, "--bytes", check=False)
    assert differs.returncode == 1, differs.stdout
    assert differs.stdout.strip() == f"Flow {video_id}: segment {first['timerange']}: its Object's bytes differ"


def test_a_copy_keeps_its_own_retention(servers: tuple[LiveServer, LiveServer], media: Path) -> None:
    """An archive of an edge store's loop recorder must not age out with it: the source's
    retention tags are not copied (unless asked), and the copy's own survive every sync."""
    a, b = servers
    ids = json.loads(tamstore("ingest", str(media), "--server", a.url, "--json", "--name", "aged").stdout)
    video = ids["flows"]["video"]
    both = ["--from", a.url, "--to", b.url, "--flow-id", video]
    with TamsClient(a.url) as source, TamsClient(b.url) as target:
        source.request("PUT", f"/flows/{video}/tags/segment_retention_offset", json="3600:0")
        source.request("PUT", f"/flows/{video}/tags/flow_retention_offset", json="7200:0")
        source.request("PUT", f"/flows/{video}/tags/genre", json="news")
        tamstore("sync", *both)
        assert target.get_flow(video)["tags"] == {"genre": "news"}
        target.request("PUT", f"/flows/{video}/tags/segment_retention_offset", json="31536000:0")  # a year
        source.set_flow_property(video, "label", "relabelled")
        tamstore("sync", *both)
        copied = target.get_flow(video)
        assert copied["label"] == "relabelled"
        assert copied["tags"] == {"genre": "news", "segment_retention_offset": "31536000:0"}
        assert "the two sides agree" in tamstore("sync", *both, "--verify").stdout
        tamstore("sync", *both, "--copy-retention")
        assert target.get_flow(video)["tags"] == source.get_flow(video)["tags"]


def test_sync_refusals_are_one_line(servers: tuple[LiveServer, LiveServer]) -> None:
    a, b = servers
    for args in (
        ["--from", a.url, "--to", b.url],
        ["--from", a.url, "--to", b.url, "--flow-id", "0b5c3a57-3d24-4d6b-a7b0-2f8c6fd0e5a1"],
        ["--from", "http://127.0.0.1:9", "--to", b.url, "--all"],
        ["--from", a.url, "--to", b.url, "--all", "--timerange", "junk"],
    ):
        done = tamstore("sync", *args, check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("tamstore: error:"), (args, done.stderr)


def test_sync_follows_new_segments_until_ctrl_c(servers: tuple[LiveServer, LiveServer], media: Path) -> None:
    import signal
    import time

    a, b = servers
    ids = json.loads(tamstore("ingest", str(media), "--server", a.url, "--json").stdout)
    video = ids["flows"]["video"]
    follow = subprocess.Popen(
        [sys.executable, "-m", "tamstore", "sync", "--from", a.url, "--to", b.url, "--flow-id", video]
        + ["--follow", "--interval", "600"],  # so only the source's event stream can say what is new
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with TamsClient(a.url) as source, TamsClient(b.url) as target:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(list(target.segments(video))) < 5:
                time.sleep(0.2)
            assert len(list(target.segments(video))) == 5
            segments = list(source.segments(video))
            end = TimeRange.from_str(segments[-1]["timerange"]).end
            assert end is not None
            more = placed_at(segments[:2], end)  # two more after the end, by reference: a Flow growing
            assert source.post_segments(video, more) == []
            source.set_flow_property(video, "label", "renamed while followed")
            deadline = time.monotonic() + 30
            # The two changes come as two events, copied one after the other: wait for both.
            while time.monotonic() < deadline and (
                len(list(target.segments(video))) < 7 or target.get_flow(video)["label"] != "renamed while followed"
            ):
                time.sleep(0.2)
            assert [s["timerange"] for s in target.segments(video)] == [s["timerange"] for s in source.segments(video)]
            assert target.get_flow(video)["label"] == "renamed while followed"
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=30)
        assert follow.returncode == 0, err[-2000:]
        assert "copied 7 segments" in out
    finally:
        if follow.poll() is None:
            follow.kill()


def test_sync_all_follows_flows_made_after_it_began(
    servers: tuple[LiveServer, LiveServer], media: Path, tmp_path: Path
) -> None:
    """A store kept in step with another (``--all --follow``) copies the recordings made after
    it began: the source's event stream says a Flow was made. Before, only the Flows there at
    the start were followed, and every later one was left behind for good."""
    import signal
    import time

    a, b = servers
    follow = subprocess.Popen(
        [sys.executable, "-m", "tamstore", "sync", "--from", a.url, "--to", b.url, "--all"]
        + ["--follow", "--interval", "600"],  # so only the source's event stream can say what is new
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        later = make_media(tmp_path / "later.mp4", seconds=4)
        ids = json.loads(tamstore("ingest", str(later), "--server", a.url, "--json").stdout)
        with TamsClient(a.url) as source, TamsClient(b.url) as target:

            def copied() -> bool:
                for flow_id in [ids["flow_id"], *ids["flows"].values()]:
                    if target.get_flow(flow_id) is None:
                        return False
                    theirs = [s["timerange"] for s in source.segments(flow_id)]
                    if [s["timerange"] for s in target.segments(flow_id)] != theirs:
                        return False
                return True

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not copied():
                time.sleep(0.2)
            assert copied()
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=30)
        assert follow.returncode == 0, err[-2000:]
    finally:
        if follow.poll() is None:
            follow.kill()


def test_a_flow_the_target_cannot_take_is_named_and_the_rest_goes_on(
    servers: tuple[LiveServer, LiveServer], media: Path
) -> None:
    a, b = servers
    ids = json.loads(tamstore("ingest", str(media), "--server", a.url, "--json").stdout)
    audio = ids["flows"]["audio"]
    with TamsClient(a.url) as source, TamsClient(b.url) as target:
        # the target already holds a segment of the audio Flow that overlaps the source's first
        doc = {k: v for k, v in source.get_flow(audio).items() if k not in SERVER_MANAGED}
        target.put_flow(doc)
        [obj] = target.allocate(audio, 1)
        target.upload(obj["put_url"], b"not the same media")
        assert target.post_segments(audio, [{"object_id": obj["object_id"], "timerange": "[0:0_0:500000000)"}]) == []
    done = tamstore("sync", "--from", a.url, "--to", b.url, "--all", check=False)
    assert done.returncode == 1
    assert f"tamstore: error: Flow {audio}: the target refused segment" in done.stderr, done.stderr
    with TamsClient(a.url) as source, TamsClient(b.url) as target:
        video = ids["flows"]["video"]
        assert len(list(target.segments(video))) == len(list(source.segments(video)))  # the rest went on


def test_a_sync_killed_mid_way_goes_on_when_run_again(back: tuple[LiveServer, LiveServer], tmp_path: Path) -> None:
    import signal
    import time

    a, b = back
    media = make_media(tmp_path / "short-gops.mp4", seconds=6, gop=5)
    ids = json.loads(tamstore("ingest", str(media), "--server", a.url, "--json", "--segment-duration", "0.2").stdout)
    flows = list(ids["flows"].values())
    state = tmp_path / "state.json"
    both = ["--from", a.url, "--to", b.url, "--all", "--state", str(state), "--jobs", "1"]
    killed = subprocess.Popen([sys.executable, "-m", "tamstore", "sync", *both], stdout=subprocess.PIPE, text=True)
    with TamsClient(b.url) as target:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            target.get_flow(f) and next(iter(target.segments(f)), None) for f in flows
        ):
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)  # after one Flow's segments, amid the next one's Objects
        killed.communicate(timeout=10)
        partly = sum(len(list(target.segments(f))) for f in flows if target.get_flow(f))
    with TamsClient(a.url) as source:
        total = sum(len(list(source.segments(f))) for f in flows)
    assert 0 < partly < total
    done = tamstore("sync", *both)
    assert f"copied {total - partly} segments" in done.stdout, done.stdout
    assert "the two sides agree" in tamstore("sync", *both, "--verify").stdout
    assert same_bytes(a.url, b.url, flows) == total


def test_sync_by_reference_registers_lasting_urls_of_the_source(
    back: tuple[LiveServer, LiveServer], media: Path, tmp_path: Path
) -> None:
    a, b = back
    ids = json.loads(tamstore("ingest", str(media), "--server", a.url, "--json", "--container", "cmaf").stdout)
    video = ids["flows"]["video"]
    done = tamstore("sync", "--from", a.url, "--to", b.url, "--flow-id", video, "--by-reference", "--label", "origin")
    assert "(1 Objects" in done.stdout, done.stdout  # only the init Object's bytes were copied
    with TamsClient(b.url) as target:
        segments = list(target.segments(video))
        assert len(segments) == 5
        for seg in segments:
            [url] = seg["get_urls"]
            assert url["label"] == "origin"
            assert url["url"] == f"{a.url}/x-tamstore/objects/{seg['object_id']}.m4s"
            assert seg["init_object"]["get_urls"][0]["url"] != url["url"]  # held by the target
    out = tmp_path / "by-reference.mp4"
    tamstore("export", "--server", b.url, "--flow-id", video, "-o", str(out))
    assert decoded(out)[0] == list(range(250))  # the bytes came from the source
    verified = tamstore("sync", "--from", a.url, "--to", b.url, "--flow-id", video, "--verify")
    assert "the two sides agree" in verified.stdout


def test_an_object_whose_bytes_are_gone_is_named_and_the_rest_goes_on(
    back: tuple[LiveServer, LiveServer], media: Path, tmp_path: Path
) -> None:
    a, b = back
    ids = json.loads(tamstore("ingest", str(media), "--server", a.url, "--json").stdout)
    audio, video = ids["flows"]["audio"], ids["flows"]["video"]
    with TamsClient(a.url) as source:
        lost = list(source.segments(audio))[2]["object_id"]
    [stored] = [f.with_suffix("") for f in (tmp_path / "source").rglob("*.id") if f.read_text() == lost]
    stored.unlink()
    done = tamstore("sync", "--from", a.url, "--to", b.url, "--all", check=False)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"tamstore: error: Flow {audio}: Object {lost}: its bytes could not be fetched"), line
    with TamsClient(a.url) as source, TamsClient(b.url) as target:
        assert len(list(target.segments(video))) == len(list(source.segments(video)))  # the rest went on
        assert list(target.segments(audio)) == []  # nothing half-registered: the batch never went


def test_an_edit_copied_before_the_flow_it_cuts_from_lets_that_flow_follow(
    servers: tuple[LiveServer, LiveServer], media: Path, tmp_path: Path
) -> None:
    """An edit using part of an Object, copied first, registers that Object on the target with
    all it holds; the Flow that uses all of it then copies too (it was refused: the edit had
    fixed the Object to its own part), and both export as they do on the source."""
    a, b = servers
    ids = json.loads(tamstore("ingest", str(media), "--server", a.url, "--json").stdout)
    video_id = ids["flows"]["video"]
    with TamsClient(a.url) as tams:
        video = tams.get_flow(video_id)
        edit = {k: video[k] for k in ("format", "codec", "container", "essence_parameters")}
        edit.update(id="2e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f11", source_id="3e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f11")
        tams.put_flow(edit)
        second = list(tams.segments(video_id))[1]
        start, end = TimeRange.from_str(second["timerange"]).start, TimeRange.from_str(second["timerange"]).end
        assert start is not None and end is not None
        half = (start + end) // 2  # the segment's second GOP (frames 75-99), placed at 0
        part = {"object_id": second["object_id"], "timerange": TimeRange(0, end - half).to_str()}
        assert tams.post_segments(edit["id"], [{**part, "ts_offset": format_timestamp(-half)}]) == []
    both = ["--from", a.url, "--to", b.url]
    tamstore("sync", *both, "--flow-id", edit["id"])
    tamstore("sync", *both, "--flow-id", video_id)
    assert "the two sides agree" in tamstore("sync", *both, "--flow-id", edit["id"], "--verify").stdout
    for flow_id, frames in ((edit["id"], list(range(75, 100))), (video_id, list(range(250)))):
        out = tmp_path / f"{flow_id}.ts"
        tamstore("export", "--server", b.url, "--flow-id", flow_id, "-o", str(out))
        assert decoded(out)[0] == frames, flow_id
