"""Benchmarks of tamstore under hostile load: password guessing and slow clients.

Each figure is set beside its floor: the same request when nobody is attacking (``/healthz``
latency), or the cheapest credential (a Bearer token) for the cost of a valid Basic one.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

Row = tuple[str, str, str, str]


def _ms(v: float) -> str:
    return f"{v * 1000:.2f} ms"


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def _latencies(client: httpx.Client, path: str, n: int, **kwargs: Any) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get(path, **kwargs)
        out.append(time.perf_counter() - t0)
    return out


def _rate(url: str, path: str, seconds: float, threads: int, **kwargs: Any) -> float:
    """Requests per second answered (any status) by ``threads`` keep-alive clients."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < stop:
                c.get(path, **kwargs)
                counts[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def _during(load: Callable[[threading.Event], None], threads: int, measure: Callable[[], Any]) -> Any:
    stop = threading.Event()
    workers = [threading.Thread(target=load, args=(stop,)) for _ in range(threads)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    try:
        return measure()
    finally:
        stop.set()
        for w in workers:
            w.join()


def auth_file(directory: Path, hash_secret: Callable[[str], str]) -> Path:
    path = directory / "auth.toml"
    path.write_text(
        f'[[users]]\nname = "alice"\npassword = "{hash_secret("wonderland")}"\nscopes = ["tams-api/read"]\n'
        f'[[clients]]\nclient_id = "reader"\nclient_secret = "{hash_secret("s")}"\nscopes = ["tams-api/read"]\n'
    )
    return path


def bench_auth(url: str, reps: int, seconds: float) -> list[Row]:
    """Against a server with ``auth basic,bearer`` whose failure limit is off (set very high):
    what password checks cost the server and the clients that are not guessing."""
    with httpx.Client(base_url=url, timeout=30) as c:
        token = c.post(
            "/x-tamstore/oauth2/token", data={"grant_type": "client_credentials"}, auth=("reader", "s")
        ).json()["access_token"]
        bearer = {"headers": {"Authorization": f"Bearer {token}"}}
        basic = _rate(url, "/flows?limit=1", seconds, 4, auth=("alice", "wonderland"))
        bearer_rate = _rate(url, "/flows?limit=1", seconds, 4, **bearer)
        unknown = _latencies(c, "/flows", reps // 4 or 1, auth=("nobody", "x"))
        wrong = _latencies(c, "/flows", reps // 4 or 1, auth=("alice", "x"))
        quiet = _latencies(c, "/healthz", reps)

    def guess(stop: threading.Event) -> None:
        with httpx.Client(base_url=url, timeout=30) as g:
            while not stop.is_set():
                g.get("/flows", auth=("alice", "guess"))

    with httpx.Client(base_url=url, timeout=30) as c:
        attacked = _during(guess, 8, lambda: _latencies(c, "/healthz", reps))
    return [
        ("valid Basic requests/s (4 clients; floor: Bearer)", f"{basic:.0f}/s", f"{bearer_rate:.0f}/s", ""),
        (
            "401 for an unknown user / a wrong password (p50)",
            f"{_ms(_pct(unknown, 0.5))} / {_ms(_pct(wrong, 0.5))}",
            "",
            "",
        ),
        (
            "/healthz while 8 clients guess passwords (p50 / p99; floor: unattacked)",
            f"{_ms(_pct(attacked, 0.5))} / {_ms(_pct(attacked, 0.99))}",
            f"{_ms(_pct(quiet, 0.5))} / {_ms(_pct(quiet, 0.99))}",
            "",
        ),
    ]


def bench_slowloris(url: str, port: int, connections: int, reps: int, header_timeout: float) -> list[Row]:
    """``connections`` clients that send a request line and then a header every few seconds,
    never finishing: /healthz latency among them, and how many are still open after the header
    deadline (a server without one keeps them all)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with httpx.Client(base_url=url, timeout=30) as c:
        quiet = _latencies(c, "/flows?limit=1", reps)
    slow: list[socket.socket] = []
    try:
        for _ in range(connections):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(b"GET /flows HTTP/1.1\r\nHost: x\r\n")
                slow.append(s)
            except OSError:
                break
        opened = len(slow)
        for s in slow[: opened // 2]:
            with contextlib.suppress(OSError):
                s.sendall(b"X-Slow: 1\r\n")
        with httpx.Client(base_url=url, timeout=30) as c:
            loaded: list[float] = []
            try:
                loaded = _latencies(c, "/flows?limit=1", reps)
                answered = f"{_ms(_pct(loaded, 0.5))} / {_ms(_pct(loaded, 0.99))}"
            except httpx.HTTPError as exc:
                answered = f"no answer ({type(exc).__name__})"
            if loaded and (status := c.get("/flows?limit=1").status_code) != 200:
                answered += f" (status {status})"
        time.sleep(header_timeout + 1)
        still_open = 0
        for s in slow:
            s.setblocking(False)
            try:
                still_open += s.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
    finally:
        for s in slow:
            with contextlib.suppress(OSError):
                s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return [
        (
            f"GET /flows?limit=1 among {opened} slow-header clients (p50 / p99; floor: without them)",
            answered,
            f"{_ms(_pct(quiet, 0.5))} / {_ms(_pct(quiet, 0.99))}",
            "",
        ),
        (f"slow clients still connected {header_timeout + 1:g} s later", f"{still_open} of {opened}", "0", ""),
    ]
