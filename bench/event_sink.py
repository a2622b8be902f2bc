"""The receiving end of the events benchmark, in a process of its own so that it never waits for
the one making the changes: ``hooks`` webhook receivers (keep-alive HTTP/1.1) and ``streams``
event stream clients, on one asyncio loop, noting when each event arrives (CLOCK_MONOTONIC,
the same clock in every process). Events are told apart by the Flow label they carry (``e<n>``).

    python -m bench.event_sink --hooks 10 --streams 10 --stream-url URL --expect N --out FILE

prints the receivers' ports on its first line, then writes ``{"hooks": [[n, t], ...],
"streams": [[n, t], ...]}`` to FILE once every event has arrived everywhere (or on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from urllib.parse import urlsplit

LABEL = re.compile(rb'"label":"e(\d+)"')


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--hooks", type=int, required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--stream-url", required=True)
    p.add_argument("--expect", type=int, required=True, help="events each receiver should get")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    hooks: list[tuple[int, float]] = []
    streams: list[tuple[int, float]] = []
    done = asyncio.Event()

    def check() -> None:
        if len(hooks) >= args.expect * args.hooks and len(streams) >= args.expect * args.streams:
            done.set()

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
                at = time.monotonic()
                found = LABEL.search(body)
                if found:
                    hooks.append((int(found.group(1)), at))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                check()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def follow(url: str) -> None:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        while not done.is_set():
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                at = time.monotonic()
                found = LABEL.search(line)
                if found:
                    streams.append((int(found.group(1)), at))
                    check()

    servers = [await asyncio.start_server(receive, "127.0.0.1", 0) for _ in range(args.hooks)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    followers = [asyncio.create_task(follow(args.stream_url)) for _ in range(args.streams)]
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    await done.wait()
    for task in followers:
        task.cancel()
    with open(args.out, "w") as f:
        json.dump({"hooks": hooks, "streams": streams}, f)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
