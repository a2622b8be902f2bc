"""tamstore benchmarks: ``python -m bench [--backend sqlite|postgres] [--sizes ...] [--only ...]``.

Prints one table: each operation through tamstore's HTTP API beside the same work done
directly on the database or file system (the physical floor), and their ratio. See
bench/README.md; results are recorded in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench import capacity, floor, hostile, loader, media_bytes, media_io
from tamstore.config import Settings
from tamstore.domain.paging import PageRequest
from tamstore.domain.tags import TagFilter
from tamstore.store.media.backends import open_backends
from tamstore.store.metadata.sql import open_metadata_store

ROOT = Path(__file__).resolve().parent.parent
Row = tuple[str, str, str, str]
NS = 1_000_000_000


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def ms(v: float) -> str:
    return f"{v * 1000:.2f} ms"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b > 0 else "-"


def latency_row(label: str, times: list[float], floor_times: list[float] | None = None) -> Row:
    """``label (p50 / p99)``: tamstore's p50 and p99, beside the floor's p50 and their ratio
    when there is a floor."""
    floor_p50 = None if floor_times is None else pct(floor_times, 0.5)
    return percentile_row(label, pct(times, 0.5), pct(times, 0.99), floor_p50)


def percentile_row(label: str, p50: float, p99: float, floor_p50: float | None = None) -> Row:
    row = f"{label} (p50 / p99)", f"{ms(p50)} / {ms(p99)}"
    return (*row, "", "") if floor_p50 is None else (*row, ms(floor_p50), ratio(p50, floor_p50))


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class Server:
    """``tamstore serve`` in a subprocess, as an operator would run it."""

    def __init__(self, settings: Settings, processes: int = 1, *, page_cache: bool = True, **extra_env: str) -> None:
        self.settings = settings
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TAMSTORE_DATA_DIR": str(settings.data_dir), "TAMSTORE_PORT": str(self.port)}
        env.update(extra_env)
        env["TAMSTORE_PROCESSES"] = str(processes)
        if not page_cache:
            env["TAMSTORE_PAGE_CACHE_MIB"] = "0"
        if settings.database_url:
            env["TAMSTORE_DATABASE_URL"] = settings.database_url
        self.proc = subprocess.Popen([sys.executable, "-m", "tamstore", "serve"], env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(self.url + "/service", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("tamstore did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- scenarios ----------------------------------------------------------------------------------


def store_query_times(settings: Settings, query: Callable[[Any], Any], reps: int) -> list[float]:
    """Seconds per run of ``query(tx)`` in tamstore's own store (one read transaction each):
    the hot query as tamstore issues it, without HTTP or JSON, to set beside the raw driver."""

    async def run() -> list[float]:
        store = open_metadata_store(settings.sqlalchemy_url())
        times = []
        try:
            for _ in range(reps):
                t0 = time.perf_counter()
                async with store.read() as tx:
                    await query(tx)
                times.append(time.perf_counter() - t0)
        finally:
            await store.close()
        return times

    return asyncio.run(run())


def bench_pages(settings: Settings, sizes: list[int], reps: int, wrk_seconds: int) -> list[Row]:
    """Page latency by flow size and position, rendered every time (the page cache off: these
    rows are about the query), then what the page cache changes."""
    flows = [(str(uuid.uuid4()), n, {}) for n in sizes]
    took = loader.load(settings, flows)
    rows: list[Row] = [(f"bulk load {sum(sizes):,} segments (direct)", f"{took:.1f} s", "", "")]
    raw = floor.connect(settings)
    server = Server(settings, page_cache=False)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for flow_id, n, _ in flows:
                positions = {"start": 0, "middle": n // 2, "end": max(0, n - 100)}
                for where, at in positions.items():
                    url = f"/flows/{flow_id}/segments?limit=100&timerange=[{at}:0_{at + 100}:0)"
                    t = timed(lambda url=url: c.get(url).raise_for_status(), reps)
                    f = timed(lambda at=at, flow_id=flow_id: raw.page(flow_id, at, 100), reps)
                    rows.append(latency_row(f"100-segment page, {n:,}-segment flow, {where}", t, f))
                    q = store_query_times(
                        settings,
                        lambda tx, at=at, flow_id=flow_id: tx.list_segments(
                            flow_id, PageRequest(100), lo=at * NS, hi=(at + 100) * NS, object_id=None
                        ),
                        reps,
                    )
                    rows.append(latency_row(f"  its store query (no HTTP), {where}", q, f))
                    if where == "middle" and (c_client := _wrk_latency(server.url + url, min(wrk_seconds, 5))):
                        label = f"  the same page from wrk, one connection, {where}"
                        rows.append(percentile_row(label, *c_client, pct(f, 0.5)))
                        # What any request costs before a page's own work: beside the page's
                        # statement, it bounds how close to that statement a page can come.
                        fixed = _wrk_latency(f"{server.url}/flows/{flow_id}", min(wrk_seconds, 5))
                        assert fixed is not None
                        label = "  one Flow's document from wrk, one connection (any request's fixed cost)"
                        rows.append(percentile_row(label, *fixed, pct(f, 0.5)))
                url = f"/flows/{flow_id}/segments?limit=100&reverse_order=true"
                t = timed(lambda url=url: c.get(url).raise_for_status(), reps)
                rows.append(latency_row(f"100-segment page, {n:,}-segment flow, reverse from end", t))
        flow_id, n, _ = flows[-1]
        path = f"/flows/{flow_id}/segments?limit=100&timerange=[{n // 2}:0_{n // 2 + 100}:0)"
        rows += _throughput_rows(
            server.url,
            path,
            (flow_id, n),
            wrk_seconds,
            f"100-segment pages/s, 32 connections (wrk), {n:,}-segment flow, page cache off",
            "  random pages across the flow, page cache off",
        )
    finally:
        server.stop()
        raw.close()
    server = Server(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            t = timed(lambda: c.get(path).raise_for_status(), reps)
            rows.append(latency_row(f"100-segment page, {n:,}-segment flow, kept by the page cache", t))
        rows += _throughput_rows(
            server.url,
            path,
            (flow_id, n),
            wrk_seconds,
            "100-segment pages/s, 32 connections (wrk), one page, page cache on",
            "  random pages across the flow, page cache on",
        )
    finally:
        server.stop()
    if shutil.which("wrk"):
        server = Server(settings, processes=2)
        try:
            rows += _throughput_rows(
                server.url,
                path,
                (flow_id, n),
                wrk_seconds,
                "  one page, `serve --processes 2`",
                "  random pages, `serve --processes 2`",
            )
        finally:
            server.stop()
    return rows


def _throughput_rows(
    server: str, path: str, flow: tuple[str, int], seconds: int, one_page: str, random: str
) -> list[Row]:
    """Two rows, none without wrk: ``path`` asked for over and over, then random 100-segment
    pages of ``flow`` (its id and segment count), from the server at ``server``."""
    if not shutil.which("wrk"):
        return []
    return [
        (one_page, _wrk(server + path, seconds), "", ""),
        (random, _wrk(server, seconds, random_pages=flow), "", ""),
    ]


def _wrk_command(
    url: str, seconds: int, random_pages: tuple[str, int] | None, *, threads: int, connections: int
) -> list[str]:
    """wrk asking for ``url``, or for random 100-segment pages of ``random_pages`` (a flow id
    and its segment count; bench/random_pages.lua) at ``url``, for ``seconds``."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url]
    if random_pages is not None:
        cmd[4:4] = ["-s", str(ROOT / "bench" / "random_pages.lua")]
        cmd += ["--", random_pages[0], str(random_pages[1])]
    return cmd


def _wrk(url: str, seconds: int, random_pages: tuple[str, int] | None = None) -> str:
    """Requests/s at 32 connections for ``seconds`` (``_wrk_command``)."""
    cmd = _wrk_command(url, seconds, random_pages, threads=2, connections=32)
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    rps = next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec"))
    return f"{float(rps):,.0f}/s"


def _wrk_latency(url: str, seconds: int, random_pages: tuple[str, int] | None = None) -> tuple[float, float] | None:
    """The p50 and p99 (seconds) of requests over one connection by wrk for ``seconds``
    (``_wrk_command``); None without wrk. wrk is a C client costing microseconds a request:
    httpx, the Python client of the other latency rows, costs most of a millisecond on its own
    (see docs/performance.md), which those rows count as the server's."""
    if not shutil.which("wrk"):
        return None
    cmd = _wrk_command(url, seconds, random_pages, threads=1, connections=1)
    cmd.insert(1, "--latency")  # (before the script's own arguments)
    return wrk_percentiles(subprocess.run(cmd, capture_output=True, text=True).stdout)


def wrk_percentiles(out: str) -> tuple[float, float]:
    """The p50 and p99, in seconds, from the latency distribution ``wrk --latency`` prints
    (``50%  645.00us``, ``99%    1.46ms``)."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("50%", "99%"):
            number = parts[1].rstrip("mus")
            found[parts[0]] = float(number) * units[parts[1][len(number) :]]
    if len(found) < 2:
        raise RuntimeError(f"wrk printed no latency distribution:\n{out}")
    return found["50%"], found["99%"]


def bench_registration(settings: Settings, requests: int, per_request: int) -> list[Row]:
    asyncio.run(loader.prepare(settings))
    server = Server(settings)
    rows: list[Row] = []
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            flow_id = str(uuid.uuid4())
            body = {"id": flow_id, **loader.flow_doc(flow_id, str(uuid.uuid4()))}
            c.put(f"/flows/{flow_id}", json=body).raise_for_status()
            # single-segment POSTs
            objs = c.post(f"/flows/{flow_id}/storage", json={"limit": 200}).json()["media_objects"]
            singles = []
            for i, o in enumerate(objs):
                seg = {"object_id": o["object_id"], "timerange": f"[{i}:0_{i + 1}:0)"}
                t0 = time.perf_counter()
                c.post(f"/flows/{flow_id}/segments", json=seg).raise_for_status()
                singles.append(time.perf_counter() - t0)
            rows.append(latency_row("single segment POST", singles))
            # bulk
            base = 1000
            # Bodies are encoded before the clock starts: the figure is the server's, not the
            # client's JSON encoder's.
            bodies = []
            allocations = []
            for k in range(requests):
                t0 = time.perf_counter()
                allocated = c.post(f"/flows/{flow_id}/storage", json={"limit": per_request})
                allocations.append(time.perf_counter() - t0)
                objs = allocated.json()["media_objects"]
                segments = [
                    {
                        "object_id": o["object_id"],
                        "timerange": f"[{base + k * per_request + i}:0_{base + k * per_request + i + 1}:0)",
                    }
                    for i, o in enumerate(objs)
                ]
                bodies.append(json.dumps(segments).encode())
            t0 = time.perf_counter()
            for b in bodies:
                r = c.post(f"/flows/{flow_id}/segments", content=b, headers={"content-type": "application/json"})
                assert r.status_code == 201, r.text[:300]
            took = time.perf_counter() - t0
            rows.append(latency_row(f"allocate {per_request} Objects (POST /storage)", allocations))
    finally:
        server.stop()
    raw = floor.connect(settings)
    try:
        f = raw.bulk_insert(requests, per_request)
    finally:
        raw.close()
    n = requests * per_request
    rows.append(
        (
            f"bulk registration, {per_request} segments per POST",
            f"{n / took:,.0f} seg/s",
            f"{n / f:,.0f} seg/s",
            ratio(n / f, n / took),
        )
    )
    return rows


def bench_flows(settings: Settings, count: int, reps: int) -> list[Row]:
    flows = [
        (str(uuid.uuid4()), 0, {"tags": {"genre": ["news", "sport", "drama"][i % 3]}, "label": f"f{i}"})
        for i in range(count)
    ]
    took = loader.load(settings, flows)
    rows: list[Row] = [(f"bulk load {count:,} flows (direct)", f"{took:.1f} s", "", "")]
    raw = floor.connect(settings)
    server = Server(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for label, query in [
                ("GET /flows page (100)", "limit=100"),
                ("GET /flows?tag.genre=sport page (100)", "limit=100&tag.genre=sport"),
            ]:
                t = timed(lambda q=query: c.get(f"/flows?{q}").raise_for_status(), reps)
                tag = "sport" if "tag" in query else None
                f = timed(lambda tag=tag: raw.flows_page(100, tag), reps)
                rows.append(latency_row(f"{label}, {count:,} flows", t, f))
                tags = [TagFilter("genre", ("sport",))] if tag else []
                q = store_query_times(
                    settings,
                    lambda tx, tags=tags: tx.list_flows(
                        PageRequest(100),
                        sort_by="created",
                        filters={},
                        tags=tags,
                        collected_by_ids=None,
                        timerange=None,
                    ),
                    reps,
                )
                rows.append(latency_row("  its store query (no HTTP)", q, f))
            # Filters that match nothing: a page looks at listing_scan_rows rows at most (a broad
            # filter), or reads the few members of a tag value first; not the whole table.
            for label, query in [
                ("GET /flows?codec=<none> page, a filter matching nothing", "limit=100&codec=video/none"),
                ("GET /flows?tag.genre=<none> page, a tag value no Flow has", "limit=100&tag.genre=none"),
            ]:
                t = timed(lambda q=query: c.get(f"/flows?{q}").raise_for_status(), reps)
                rows.append(latency_row(f"{label}, {count:,} flows", t))
    finally:
        server.stop()
        raw.close()
    return rows


def bench_media(settings: Settings, megabytes: int) -> list[Row]:
    """Media GET and PUT through the embedded backend (bench/media_bytes.py)."""
    asyncio.run(loader.prepare(settings))
    server = Server(settings)
    try:
        return media_bytes.bench_media_bytes(server.url, Path(tempfile.mkdtemp(dir=settings.data_dir)), megabytes)
    finally:
        server.stop()


def bench_delete(settings: Settings, segments: int) -> list[Row]:
    """A Flow of ``segments`` deleted through the API (a flow-delete-request the server's worker
    carries out), beside the raw deletes. Then a second such Flow deleted while pages of another
    Flow are asked for, one after another, beside the same pages with nothing else going on
    (the deletion must not stall other requests)."""
    flow_id, second, third, other, warm_up = (str(uuid.uuid4()) for _ in range(5))
    flows = [(flow_id, segments, {}), (second, segments, {}), (other, 10_000, {}), (warm_up, 2_000, {})]
    if shutil.which("wrk"):
        flows.append((third, segments, {}))
    loader.load(settings, flows)
    server = Server(settings)
    stop = threading.Event()

    def pages(into: list[float], c: httpx.Client) -> None:
        i = 0
        while not (stop.is_set() and into):  # at least one, however quick the deletion
            at = (i * 97) % 9_900
            t0 = time.perf_counter()
            c.get(f"/flows/{other}/segments", params={"timerange": f"[{at}:0_{at + 100}:0)"}).raise_for_status()
            into.append(time.perf_counter() - t0)
            i += 1

    def delete(c: httpx.Client, flow: str) -> float:
        t0 = time.perf_counter()
        r = c.delete(f"/flows/{flow}")
        assert r.status_code in (202, 204), r.text
        while c.get(f"/flows/{flow}").status_code != 404:
            time.sleep(0.05)
        return time.perf_counter() - t0

    quiet: list[float] = []
    during: list[float] = []
    try:
        with httpx.Client(base_url=server.url, timeout=600) as c, httpx.Client(base_url=server.url) as reader:
            delete(c, warm_up)  # the worker process is up before the timing starts
            took = delete(c, flow_id)
            threading.Timer(2.0, stop.set).start()
            pages(quiet, reader)
            stop.clear()
            load = threading.Thread(target=pages, args=(during, reader))
            load.start()
            took_loaded = delete(c, second)
            stop.set()
            load.join()
            # The same from wrk (a C client: the Python client above shares the two cores with
            # the server and the worker process): random pages of the other Flow for two
            # seconds at rest, then for two seconds from the start of a third deletion.
            c_quiet = c_busy = None
            if shutil.which("wrk"):
                c_quiet = _wrk_latency(server.url, 2, (other, 10_000))
                with ThreadPoolExecutor(1) as pool:
                    busy = pool.submit(_wrk_latency, server.url, 2, (other, 10_000))
                    delete(c, third)
                    c_busy = busy.result()
    finally:
        stop.set()
        server.stop()
    f, unlinks = raw_delete_of_a_fresh_flow(settings, segments)
    rows: list[Row] = [
        (f"delete a flow of {segments:,} segments and objects", f"{took:.2f} s", f"{f:.2f} s", ratio(took, f)),
        (
            "same, beside the raw SQL and the raw unlinks of its Objects' files (two each, as tamstore's; the"
            " loader writes none, so both find nothing)",
            f"{took:.2f} s",
            f"{f:.2f} + {unlinks:.2f} s",
            ratio(took, f + unlinks),
        ),
        (
            f"100-segment pages of another flow during a second such deletion ({took_loaded:.1f} s),"
            " p50 / p99 (beside: with nothing else going on)",
            f"{ms(pct(during, 0.5))} / {ms(pct(during, 0.99))}",
            f"{ms(pct(quiet, 0.5))} / {ms(pct(quiet, 0.99))}",
            ratio(pct(during, 0.99), pct(quiet, 0.99)),
        ),
    ]
    if c_quiet is not None and c_busy is not None:
        rows.append(
            (
                "  the same from wrk over one connection, for 2 s of a third deletion, p50 / p99 (beside: at rest)",
                f"{ms(c_busy[0])} / {ms(c_busy[1])}",
                f"{ms(c_quiet[0])} / {ms(c_quiet[1])}",
                ratio(c_busy[1], c_quiet[1]),
            )
        )
    return rows


def raw_delete_of_a_fresh_flow(settings: Settings, segments: int) -> tuple[float, float]:
    """The floor of deleting ``segments`` segments and their Objects: a Flow of that many
    loaded, then deleted by the raw driver in one transaction; and the unlink calls that remove
    its Objects' bytes from the embedded backend (the file and the id beside it: what tamstore
    calls), their paths worked out beforehand. Seconds, each."""
    other = str(uuid.uuid4())
    loader.load(settings, [(other, segments, {})])
    raw = floor.connect(settings)
    try:
        sql = float(raw.delete_flow(other))
    finally:
        raw.close()
    media = open_backends(settings)[loader.STORAGE_ID["id"]]
    paths = [str(media.path_for(loader.object_id(other, i))) for i in range(segments)]  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for path in paths:
        for name in (path, path + ".id"):
            try:  # noqa: SIM105 (a floor: no context manager around each call)
                os.unlink(name)
            except FileNotFoundError:
                pass
    return sql, time.perf_counter() - t0


def bench_presign(count: int) -> list[Row]:
    """Presigned S3 URLs per second: tamstore's SigV4 presigner beside botocore's (the floor
    here is the library it replaces; no S3 server is contacted to sign)."""
    import boto3
    from botocore.config import Config

    from tamstore.store.media.sigv4 import Presigner

    p = Presigner("http://127.0.0.1:9000", "bench", "us-east-1", "AK", "SK")
    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9000",
        region_name="us-east-1",
        aws_access_key_id="AK",
        aws_secret_access_key="SK",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    t0 = time.perf_counter()
    for i in range(count):
        p.presign("GET", f"media/{i}", 900)
    ours = time.perf_counter() - t0
    n = max(1, count // 10)
    t0 = time.perf_counter()
    for i in range(n):
        client.generate_presigned_url("get_object", Params={"Bucket": "bench", "Key": f"media/{i}"}, ExpiresIn=900)
    theirs = (time.perf_counter() - t0) * count / n
    return [
        (
            "presigned S3 URLs (lean SigV4 vs botocore)",
            f"{count / ours:,.0f}/s",
            f"{count / theirs:,.0f}/s (botocore)",
            f"{theirs / ours:.1f}x faster",
        )
    ]


def bench_presigned_pages(scratch: Path, reps: int) -> list[Row]:
    """A 100-segment page with and without presigned S3 URLs (SeaweedFS started here)."""
    from tamstore.store.media.backends import open_backends
    from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3

    s3 = SeaweedS3().start()
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
    data = Path(tempfile.mkdtemp(dir=scratch))
    settings = Settings(data_dir=data, s3_bucket=s3.new_bucket(), s3_endpoint_url=s3.endpoint)
    [backend_id] = open_backends(settings)
    flow_id = str(uuid.uuid4())
    loader.STORAGE_ID["id"] = backend_id
    try:
        loader.load(settings, [(flow_id, 10_000, {})])
    finally:
        loader.STORAGE_ID["id"] = loader.FILESYSTEM_BACKEND_ID
    env = {"TAMSTORE_S3_BUCKET": settings.s3_bucket or "", "TAMSTORE_S3_ENDPOINT_URL": s3.endpoint}
    os.environ.update(env)
    rows: list[Row] = []
    try:
        server = Server(settings)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                base = f"/flows/{flow_id}/segments?limit=100&timerange=[5000:0_5100:0)"
                signed = timed(lambda: c.get(base + "&presigned=true").raise_for_status(), reps)
                bare = timed(lambda: c.get(base + "&presigned=false").raise_for_status(), reps)
        finally:
            server.stop()
        # Every page of the Flow once, the page cache off: each URL is signed for the first
        # time in its window (the pages are read without URLs first, so both walks find the
        # database warm).
        server = Server(settings, page_cache=False)
        try:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                walk = [
                    f"/flows/{flow_id}/segments?limit=100&timerange=[{at}:0_{at + 100}:0)"
                    for at in range(0, 10_000, 100)
                ]
                fresh_bare = [timed(lambda p=p: c.get(p + "&presigned=false").raise_for_status(), 1)[0] for p in walk]
                fresh = [timed(lambda p=p: c.get(p + "&presigned=true").raise_for_status(), 1)[0] for p in walk]
        finally:
            server.stop()
        for label, times, floor_times in (
            ("100-segment page on S3, presigned=true (p50 / p99)", signed, bare),
            ("  every page of the Flow once, page cache off: each URL signed anew", fresh, fresh_bare),
        ):
            rows.append(
                (
                    label,
                    f"{ms(pct(times, 0.5))} / {ms(pct(times, 0.99))}",
                    f"{ms(pct(floor_times, 0.5))} (presigned=false)",
                    ratio(pct(times, 0.5), pct(floor_times, 0.5)),
                )
            )
    finally:
        for k in env:
            os.environ.pop(k, None)
        s3.stop()
    return rows


def bench_webhooks(settings: Settings, receivers: int, events: int) -> list[Row]:
    """Events delivered per second to several receivers, and the delay from commit to arrival."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    arrivals: list[float] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                arrivals.append(time.time())
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(receivers)]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    asyncio.run(loader.prepare(settings))
    server = Server(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for srv in servers:
                url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
                c.post("/service/webhooks", json={"url": url, "events": ["flows/updated"]}).raise_for_status()
            flow_id = str(uuid.uuid4())
            c.put(
                f"/flows/{flow_id}", json={"id": flow_id, **loader.flow_doc(flow_id, str(uuid.uuid4()))}
            ).raise_for_status()
            committed = []
            t0 = time.time()
            for i in range(events):
                c.put(f"/flows/{flow_id}/label", json=f"l{i}").raise_for_status()
                committed.append(time.time())
            deadline = time.time() + 120
            while len(arrivals) < receivers * events and time.time() < deadline:
                time.sleep(0.05)
            took = max(arrivals) - t0
    finally:
        server.stop()
        for srv in servers:
            srv.shutdown()
    delays = sorted(a - committed[min(events - 1, i // receivers)] for i, a in enumerate(sorted(arrivals)))
    return [
        (f"webhook deliveries, {receivers} receivers x {events} events", f"{len(arrivals) / took:,.0f}/s", "", ""),
        latency_row("webhook delay, commit to arrival", delays),
    ]


def bench_events(settings: Settings, receivers: int, rate: int, seconds: float, split: bool) -> list[Row]:
    """Commit -> arrival of every event, by webhook and by the event stream, with ``receivers``
    of each (in a process of their own: bench/event_sink.py), while changes are made at
    ``rate`` per second. ``split``: the changes go through an API-only replica
    (``--no-workers``) and a separate ``tamstore worker`` delivers the webhooks (the stream
    clients are on the replica)."""
    import threading

    total = int(rate * seconds)
    committed: dict[int, float] = {}
    asyncio.run(loader.prepare(settings))
    server = Server(settings, **({"TAMSTORE_WORKERS": "false"} if split else {}))
    worker = sink = None
    out = settings.data_dir.parent / "arrivals.json"
    if split:
        env = {**os.environ, "TAMSTORE_DATA_DIR": str(settings.data_dir)}
        if settings.database_url:
            env["TAMSTORE_DATABASE_URL"] = settings.database_url
        worker = subprocess.Popen([sys.executable, "-m", "tamstore", "worker"], env=env, stdout=subprocess.DEVNULL)
    try:
        sink = subprocess.Popen(
            [sys.executable, "-m", "bench.event_sink", "--hooks", str(receivers), "--streams", str(receivers)]
            + ["--stream-url", server.url + "/x-tamstore/events?events=flows/updated"]
            + ["--expect", str(total), "--out", str(out)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert sink.stdout is not None
        ports = sink.stdout.readline().split()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for port in ports:
                url = f"http://127.0.0.1:{port}/hook"
                c.post("/service/webhooks", json={"url": url, "events": ["flows/updated"]}).raise_for_status()
            flow_id = str(uuid.uuid4())
            c.put(
                f"/flows/{flow_id}", json={"id": flow_id, **loader.flow_doc(flow_id, str(uuid.uuid4()))}
            ).raise_for_status()
        time.sleep(1.0)  # streams connected, the worker past its first pass
        counter = iter(range(total))
        start = time.monotonic()

        def produce() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                for i in counter:
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    c.put(f"/flows/{flow_id}/label", json=f"e{i}").raise_for_status()
                    committed[i] = time.monotonic()

        producers = [threading.Thread(target=produce) for _ in range(8)]
        for p in producers:
            p.start()
        for p in producers:
            p.join()
        produced = total / (max(committed.values()) - start)
        try:
            sink.wait(timeout=120)
        except subprocess.TimeoutExpired:
            sink.terminate()
            sink.wait(timeout=10)
        arrivals = json.loads(out.read_text())
    finally:
        if sink is not None and sink.poll() is None:
            sink.kill()
        server.stop()
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
    where = "API replica + separate worker" if split else "one process"
    rows: list[Row] = [
        (f"events made, {where} (asked {rate:,}/s for {seconds:g} s)", f"{produced:,.0f}/s", "", ""),
    ]
    for kind, key in (("webhook", "hooks"), ("event stream", "streams")):
        got = arrivals[key]
        delays = sorted(at - committed[i] for i, at in got if i in committed)
        span = max(at for _, at in got) - start if got else 0.0
        lost = total * receivers - len(got)
        label = f"  {kind}: commit to arrival, {receivers} receivers, {len(got) / span:,.0f} arrivals/s, {lost} lost"
        rows.append(latency_row(label, delays) if delays else (label, "none arrived", "", ""))
    return rows


def bench_analytics(settings: Settings, size: int, reps: int) -> list[Row]:
    flow_id = str(uuid.uuid4())
    loader.load(settings, [(flow_id, size, {})])
    server = Server(settings)
    rows: list[Row] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for label, url in [
                ("flow usage by format", "/x-tamstore/analytics/flows?group_by=format"),
                ("storage usage", "/x-tamstore/analytics/storage"),
                (
                    "flow timeline, one hour",
                    f"/x-tamstore/analytics/flows/{flow_id}/timeline?timerange=[{size // 2}:0_{size // 2 + 3600}:0)",
                ),
            ]:
                t = timed(lambda url=url: c.get(url).raise_for_status(), reps)
                rows.append(latency_row(f"analytics: {label}, {size:,}-segment store", t))
    finally:
        server.stop()
    return rows


def bench_playback(settings: Settings, size: int, reps: int, wrk_seconds: int) -> list[Row]:
    """HLS playlists of a Flow of ``size`` one-second segments (86,400: a day), rendered over
    HTTP, beside the raw segment query for the same segments (the floor); then live window
    reloads per second."""
    flow_id = str(uuid.uuid4())
    loader.load(settings, [(flow_id, size, {})])
    raw = floor.connect(settings)
    server = Server(settings)
    hour = min(3600, size)
    rows: list[Row] = []
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            base = f"/x-tamstore/hls/{flow_id}.m3u8"
            mid = max(0, size // 2 - hour // 2)
            for label, query, at, n in (
                (
                    f"HLS playlist, a {hour:,}-segment hour of a {size:,}-segment flow",
                    f"[{mid}:0_{mid + hour}:0)",
                    mid,
                    hour,
                ),
                (f"HLS playlist, all {size:,} segments", f"[0:0_{size}:0)", 0, size),
            ):
                t = timed(lambda q=query: c.get(f"{base}?timerange={q}").raise_for_status(), max(3, reps // 10))
                f = timed(lambda at=at, n=n: raw.page(flow_id, at, n), max(3, reps // 10))
                rows.append(latency_row(label, t, f))
            live = f"{base}?timerange=[0:0_&window=12"
            t = timed(lambda: c.get(live).raise_for_status(), reps)
            f = timed(lambda: raw.page(flow_id, size - 12, 12), reps)
            rows.append(latency_row(f"HLS live window reload (12 s), {size:,}-segment flow", t, f))
        if shutil.which("wrk"):
            rows.append(("  live window reloads/s, 32 connections (wrk)", _wrk(server.url + live, wrk_seconds), "", ""))
    finally:
        server.stop()
        raw.close()
    return rows


# -- main ---------------------------------------------------------------------------------------


def bench_hostile(settings: Settings, which: str, reps: int, quick: bool, slow_clients: int = 5000) -> list[Row]:
    """Password guessing (``auth``) or slow clients (``slowloris``) against a served tamstore."""
    from tamstore.auth import hash_secret

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if which == "auth":
        path = hostile.auth_file(settings.data_dir, hash_secret)
        env = {"TAMSTORE_AUTH": "basic,bearer", "TAMSTORE_AUTH_FILE": str(path)}
        server = Server(settings, **env, TAMSTORE_AUTH_FAILURES_PER_MINUTE="1000000000")
        try:
            return hostile.bench_auth(server.url, reps, 1 if quick else 3)
        finally:
            server.stop()
    server = Server(settings, TAMSTORE_HEADER_TIMEOUT="2")
    try:
        return hostile.bench_slowloris(server.url, server.port, 50 if quick else slow_clients, reps, 2)
    finally:
        server.stop()


def bench_media_io(settings: Settings, seconds: int) -> list[Row]:
    """``tamstore ingest`` and ``export`` of generated H.264 + AAC against a served tamstore."""
    from tests.media import make_media

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    source = make_media(
        settings.data_dir.parent / "bench-input.mp4", seconds=seconds, width=640, height=360, noise=True
    )
    server = Server(settings)
    try:
        return media_io.bench_ingest_export(server.url, source, settings.data_dir.parent)
    finally:
        server.stop()


def bench_sync(settings: Settings, scratch: Path, seconds: int) -> list[Row]:
    """``tamstore sync`` from an embedded store to one on the chosen backend."""
    from tests.media import make_media

    source_settings = Settings(data_dir=Path(tempfile.mkdtemp(dir=scratch)))
    media = make_media(scratch / "bench-sync-input.mp4", seconds=seconds, width=640, height=360, noise=True)
    source, target = Server(source_settings), Server(settings)
    try:
        return media_io.bench_sync(source.url, source_settings.data_dir / "media", target.url, media, scratch)
    finally:
        target.stop()
        source.stop()


def bench_ui(settings: Settings, flows: int, segments: int, reps: int) -> list[Row]:
    """The web UI in Debian's Chromium: from navigation to a usable Flow list (its first 50 rows)
    over ``flows`` Flows, and to a drawn timeline of a ``segments``-segment Flow, beside the API
    calls those pages wait for, timed alone."""
    import shutil

    from playwright.sync_api import sync_playwright

    big = str(uuid.uuid4())
    docs = [(big, segments, {"label": "big"})] + [(str(uuid.uuid4()), 0, {"label": f"f{i}"}) for i in range(flows - 1)]
    took = loader.load(settings, docs)
    rows: list[Row] = [(f"bulk load {flows:,} flows, one of {segments:,} segments (direct)", f"{took:.1f} s", "", "")]
    server = Server(settings)
    calls: list[str] = []
    try:
        with sync_playwright() as p, httpx.Client(base_url=server.url, timeout=60) as c:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "chromium")
            # (the UI's Content-Security-Policy forbids evaluating strings, which Playwright's
            # wait_for_function does: the bench times the UI's own work, so it lets them through)
            page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
            page.on("request", lambda r: calls.append(r.url.removeprefix(server.url)))

            def visit(path: str, ready: str) -> None:
                page.goto("about:blank")
                calls.clear()
                page.goto(server.url + path)
                page.wait_for_function(ready, timeout=120_000)

            usable = "document.querySelectorAll('table tbody tr').length >= 50"
            ui = timed(lambda: visit("/ui/#/flows", usable), reps)
            [listing] = [u for u in calls if u.startswith("/flows?")]
            api = timed(lambda: c.get(listing).raise_for_status(), reps)
            label = f"UI: usable Flow list (50 rows), {flows:,} Flows; beside: its GET /flows"
            rows.append(latency_row(label, ui, api))
            drawn = "document.querySelector('canvas#timeline[data-segments]') !== null"
            ui = timed(lambda: visit(f"/ui/#/flows/{big}", drawn), reps)
            waited = [u for u in calls if u.startswith(f"/flows/{big}?") or "/analytics/" in u]
            api = timed(lambda: [c.get(u).raise_for_status() for u in waited], reps)
            label = f"UI: drawn timeline, {segments:,}-segment Flow; beside: its {len(waited)} API calls"
            rows.append(latency_row(label, ui, api))
            browser.close()
    finally:
        server.stop()
    return rows


def bench_auth_classes(settings: Settings, count: int, reps: int) -> list[Row]:
    """``GET /flows`` for a principal who may read 10% of ``count`` Flows (auth_classes, issue
    23) beside the same listing for an admin, whom no classes filter."""
    from tamstore.auth import hash_secret

    flows = [
        (str(uuid.uuid4()), 0, {"tags": {"auth_classes": "news" if i % 10 == 0 else "sport"}, "label": f"f{i}"})
        for i in range(count)
    ]
    loader.load(settings, flows)
    auth_file = settings.data_dir / "auth.toml"
    users = [("root", ["tams-api/admin"], []), ("newsdesk", ["tams-api/read"], ["news"])]
    auth_file.write_text(
        "".join(
            f'[[users]]\nname = "{n}"\npassword = "{hash_secret("pw")}"\nscopes = {s!r}\ngroups = {g!r}\n\n'
            for n, s, g in users
        ).replace("'", '"')
        + '[policy]\n[[policy.grants]]\ngroup = "news"\nclasses = ["news"]\nactions = ["read"]\n'
    )
    server = Server(settings, TAMSTORE_AUTH="basic", TAMSTORE_AUTH_FILE=str(auth_file))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:

            def page(who: str) -> None:
                r = c.get("/flows?limit=100", auth=(who, "pw"))
                r.raise_for_status()
                assert len(r.json()) == min(100, count if who == "root" else count // 10)

            admin = timed(lambda: page("root"), reps)
            news = timed(lambda: page("newsdesk"), reps)
    finally:
        server.stop()
    label = f"GET /flows page (100), {count:,} flows, 10% readable by auth_classes; beside: an admin's page"
    return [latency_row(label, news, admin)]


def bench_retention(settings: Settings, flows: int, backlog: int, reps: int) -> list[Row]:
    """Retention (issue 24): a pass over ``flows`` Flows with a retention tag and nothing
    expired, beside the raw query that reads them; then a Flow whose ``backlog`` segments have
    all expired, worked off pass after pass, beside raw SQL deleting the same rows at once."""
    from tamstore.ops import retention
    from tamstore.testing import app_client

    keep = {"tags": {"segment_retention_offset": "2000000000:0"}}  # 63 years: nothing has expired
    loader.load(settings, [(str(uuid.uuid4()), 10, keep) for _ in range(flows)])

    async def passes(until_done: bool) -> tuple[list[float], int]:
        times, deleted = [], 0
        async with app_client(settings) as client:
            ctx = client.app.state.ctx  # type: ignore[attr-defined]
            for _ in range(reps if not until_done else 1_000_000):
                t0 = time.perf_counter()
                done = await retention.retention_pass(ctx, "bench")
                times.append(time.perf_counter() - t0)
                assert done is not None
                deleted += done.segments_deleted
                if until_done and not done.backlog:
                    break
        return times, deleted

    quiet, deleted = asyncio.run(passes(False))
    assert deleted == 0
    raw = floor.connect(settings)
    try:
        direct = timed(raw.retained_flows, reps)
    finally:
        raw.close()
    rows = [latency_row(f"retention pass, {flows:,} retained Flows, nothing expired; beside: its query", quiet, direct)]

    expired = str(uuid.uuid4())
    loader.load(settings, [(expired, backlog, {"tags": {"segment_retention_offset": "0:0"}})])
    steps, deleted = asyncio.run(passes(True))
    assert deleted == backlog, deleted
    took = sum(steps)
    f, _ = raw_delete_of_a_fresh_flow(settings, backlog)  # (the SQL; its unlinks are not counted here)
    rows.append(
        (
            f"retention: expired backlog of {backlog:,} segments, {len(steps)} passes (worst {max(steps):.2f} s)",
            f"{backlog / took:,.0f} seg/s",
            f"{backlog / f:,.0f} seg/s (one raw delete)",
            ratio(took, f),
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--database-url", help="PostgreSQL server URL without a database (default: a throwaway cluster)")
    p.add_argument("--sizes", default="10000,1000000,10000000", help="segment counts of the page-latency flows")
    p.add_argument("--flows", type=int, default=100_000, help="flow count for the /flows listing")
    p.add_argument("--bulk", default="100x1000", help="bulk registration: REQUESTSxSEGMENTS")
    p.add_argument("--delete", type=int, default=86_400, help="segments in the flow to delete")
    p.add_argument("--capacity", type=int, default=10_000_000, help="segments in the capacity store (PostgreSQL)")
    p.add_argument("--media-mib", type=int, default=256)
    p.add_argument("--reps", type=int, default=200, help="requests per latency figure")
    p.add_argument("--webhooks", default="10x200", help="webhook delivery: RECEIVERSxEVENTS")
    p.add_argument("--events", default="10x1000", help="events: RECEIVERSxRATE (per second, for 2 s)")
    p.add_argument(
        "--only",
        default="pages,register,flows,media,delete,presign,s3pages,webhooks,events,events-split,analytics,ingest,"
        "sync,ui,retention,auth-classes,playback,auth,slowloris",
    )
    p.add_argument("--retained", type=int, default=10_000, help="Flows with retention tags in a quiet pass")
    p.add_argument("--backlog", type=int, default=1_000_000, help="expired segments retention works off")
    p.add_argument("--slow-clients", type=int, default=5000, help="connections of the slowloris scenario")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    args = p.parse_args(argv)
    if args.quick:
        args.events = "2x50"
        args.sizes, args.flows, args.bulk, args.delete = "300", 300, "2x100", 500
        args.retained, args.backlog = 100, 2000
        args.media_mib, args.reps, args.webhooks = 1, 5, "2x5"
    only = set(args.only.split(","))
    receivers, rate = (int(x) for x in args.events.split("x"))
    events_load = (receivers, rate, 2.0)
    sizes = [int(s) for s in args.sizes.split(",")]
    requests, per_request = (int(x) for x in args.bulk.split("x"))

    cluster = None
    if args.backend == "postgres" and not args.database_url:
        from tests.pgcluster import PgCluster, find_pg_bin

        cluster = PgCluster(find_pg_bin())  # type: ignore[arg-type]
        cluster.start()
        args.database_url = cluster.url
    rows: list[Row] = []
    # Every store the run builds lives under one directory, removed at the end: a 10M-segment
    # store is ~10 GB, and a few forgotten runs fill a disk.
    scratch = Path(tempfile.mkdtemp(prefix="tamstore-bench-"))
    try:

        def fresh() -> Settings:
            data = Path(tempfile.mkdtemp(dir=scratch))
            url = floor.create_database(args.database_url) if args.backend == "postgres" else None
            return Settings(data_dir=data, database_url=url)

        for name, run in [
            ("pages", lambda: bench_pages(fresh(), sizes, args.reps, 1 if args.quick else 10)),
            ("register", lambda: bench_registration(fresh(), requests, per_request)),
            ("flows", lambda: bench_flows(fresh(), args.flows, args.reps)),
            ("media", lambda: bench_media(fresh(), args.media_mib)),
            ("delete", lambda: bench_delete(fresh(), args.delete)),
            ("capacity", lambda: capacity.bench_capacity(fresh(), args.capacity)),
            ("presign", lambda: bench_presign(2000 if args.quick else 100_000)),
            ("s3pages", lambda: bench_presigned_pages(scratch, args.reps)),
            ("webhooks", lambda: bench_webhooks(fresh(), *(int(x) for x in args.webhooks.split("x")))),
            ("events", lambda: bench_events(fresh(), *events_load, False)),
            ("events-split", lambda: bench_events(fresh(), *events_load, True)),
            ("analytics", lambda: bench_analytics(fresh(), max(sizes), args.reps)),
            ("ingest", lambda: bench_media_io(fresh(), 4 if args.quick else 60)),
            ("sync", lambda: bench_sync(fresh(), scratch, 4 if args.quick else 60)),
            ("ui", lambda: bench_ui(fresh(), args.flows, max(sizes), min(args.reps, 20))),
            ("auth-classes", lambda: bench_auth_classes(fresh(), args.flows, args.reps)),
            ("retention", lambda: bench_retention(fresh(), args.retained, args.backlog, min(args.reps, 20))),
            (
                "playback",
                lambda: bench_playback(fresh(), 600 if args.quick else 86_400, args.reps, 1 if args.quick else 5),
            ),
            ("auth", lambda: bench_hostile(fresh(), "auth", args.reps, args.quick)),
            ("slowloris", lambda: bench_hostile(fresh(), "slowloris", args.reps, args.quick, args.slow_clients)),
        ]:
            if name in only:
                rows += run()
                print(f"# {name} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if cluster is not None:
            cluster.destroy()
    print(
        f"\ntamstore benchmarks: {args.backend}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores, {platform.machine()}\n"
    )
    print("| operation | tamstore | floor (direct) | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
