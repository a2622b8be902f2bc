"""Operating tamstore: request logs, Prometheus metrics, health and readiness probes.

One log line per request (JSON, or a short human-readable line on a terminal) with method,
route, status, latency and request id; never the query string (it may hold an access_token)
or any header. Metrics are kept per app in their own registry.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tamstore.api.deps import context
from tamstore.api.responses import json_response
from tamstore.api.routing import api_router, get

__all__ = ["Metrics", "RequestLogMiddleware", "configure_logging", "router"]

log = logging.getLogger("tamstore.requests")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("tamstore_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "tamstore_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.segments = Counter("tamstore_segments_registered", "Segments registered", registry=r)
        pages = Counter(
            "tamstore_page_cache_lookups", "Segment pages looked for in the page cache", ["outcome"], registry=r
        )
        self.page_cache_hits, self.page_cache_misses = pages.labels("hit"), pages.labels("miss")
        self.deliveries = StoredDeliveries()  # counted where they are made, in any process
        r.register(self.deliveries)
        self.stored_bytes = Gauge("tamstore_stored_bytes", "Bytes stored", ["storage_id", "label"], registry=r)
        self.stored_objects = Gauge("tamstore_stored_objects", "Objects stored", ["storage_id", "label"], registry=r)
        self.deletion_backlog = Gauge("tamstore_deletion_backlog", "Flow delete requests not yet done", registry=r)
        self.pool_in_use = Gauge("tamstore_db_connections_in_use", "Database connections checked out", registry=r)
        self.pool_size = Gauge("tamstore_db_pool_size", "Database connection pool size", registry=r)
        # Retention (AppNote 0019): totals kept in the database, whichever process deleted.
        self.retained_flows = Gauge("tamstore_retained_flows", "Flows with a retention tag", registry=r)
        self.retention_deleted = Gauge(
            "tamstore_retention_deleted", "Deleted by retention since the store was made", ["kind"], registry=r
        )
        self.event_stream_clients = Gauge(
            "tamstore_event_stream_clients", "Event stream (/x-tamstore/events) connections open", registry=r
        )


class StoredDeliveries:
    """``tamstore_webhook_deliveries_total{outcome}``: totals the database keeps, for the work of
    every process (the worker process delivers webhooks, not the server answering /metrics),
    set from the database at each scrape."""

    def __init__(self) -> None:
        self.values = {"ok": 0, "failed": 0}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("tamstore_webhook_deliveries", "Webhook deliveries", labels=["outcome"])
        for outcome, count in self.values.items():
            family.add_metric([outcome], count)
        yield family


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
        request_id = request_id or new_request_id()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            requests, latency = self._metrics(scope["method"], route, status)
            requests.inc()
            latency.observe(elapsed)
            request_log.write(
                {
                    "method": scope["method"],
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(elapsed * 1000, 3),
                    "request_id": request_id,
                    "principal": scope.get("tamstore.principal"),
                }
            )

    def _metrics(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram for these labels, looked up once: the
        metrics' own lookup takes a lock and builds a key every time."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.latency.labels(method, route),
            )
        return children


PIPE_BUF = 4096  # POSIX: a write to a pipe of at most this many bytes is atomic
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count()


def new_request_id() -> str:
    """A request id unique across processes and restarts (a random prefix drawn when the
    process starts, then a counter), without a trip to the kernel for randomness per request."""
    return f"{_ID_PREFIX}{next(_ids):016x}"


class RequestLog:
    """The request log's writer: one line per request.

    It is the busiest log there is, and through ``logging`` it cost about a fifth of a request
    the page cache answers (a LogRecord, a formatter, a write and a flush for each line). Once
    ``serve`` has configured it, it formats each line itself and writes the lines of one
    event-loop turn together, at the end of that turn. Until then (tamstore used as a library)
    the lines go to the ``tamstore.requests`` logger like any other.
    """

    def __init__(self) -> None:
        self.stream: IO[bytes] | None = None
        self.json = True
        self._pending: list[bytes] = []
        self._second = -1
        self._stamp = ""

    def configure(self, stream: IO[bytes] | None, *, json: bool) -> None:
        """Write to ``stream`` (None: through ``logging``), as JSON lines or as text lines in
        the shape of tamstore's other text log lines (local time)."""
        self.flush()
        self.stream, self.json, self._second = stream, json, -1

    def write(self, fields: dict[str, Any]) -> None:
        if self.stream is None:
            self._to_logging(fields)
            return
        now = time.time()
        if self.json:
            entry = {"time": self._time(now, "T") + f".{int(now % 1 * 1000):03d}Z", "level": "info"}
            entry["logger"], entry["msg"] = "tamstore.requests", "request"
            entry.update((k, v) for k, v in fields.items() if v is not None)
            line = orjson.dumps(entry) + b"\n"
        else:
            stamp = self._time(now, " ") + f",{int(now % 1 * 1000):03d}"
            line = f"{stamp} INFO tamstore.requests: {_summary(fields)}\n".encode("utf-8", "backslashreplace")
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: write now
                self._pending.append(line)
                self.flush()
                return
        self._pending.append(line)

    def flush(self) -> None:
        """Write the pending lines, whole lines of at most ``PIPE_BUF`` bytes a write: on a pipe
        such a write is never interleaved with another process's (``serve --processes``)."""
        if not self._pending or self.stream is None:
            return
        lines, self._pending = self._pending, []
        try:
            chunk = b""
            for line in lines:
                if chunk and len(chunk) + len(line) > PIPE_BUF:
                    self._write(chunk)
                    chunk = b""
                chunk += line
            self._write(chunk)
        except (OSError, ValueError):  # the log's reader went away: requests go on
            pass

    def _write(self, data: bytes) -> None:
        assert self.stream is not None
        self.stream.write(data)
        self.stream.flush()

    def _time(self, now: float, sep: str) -> str:
        """``YYYY-MM-DD{sep}HH:MM:SS`` (UTC for JSON), formatted once a second."""
        second = int(now)
        if second != self._second:
            when = time.gmtime(second) if self.json else time.localtime(second)
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", when)
        return self._stamp.replace(" ", sep)

    @staticmethod
    def _to_logging(fields: dict[str, Any]) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(_summary(fields), extra=fields)


def _summary(fields: dict[str, Any]) -> str:
    """A request's text line: ``GET /flows 200 1.2ms``. A path may hold any character a client
    percent-encodes (``%0A``): unprintable ones are escaped, so that no request writes a line
    of its own into the log."""
    summary = f"{fields['method']} {fields['path']} {fields['status']} {fields['latency_ms']:.1f}ms"
    return summary if summary.isprintable() else summary.encode("unicode_escape").decode("ascii")


request_log = RequestLog()
atexit.register(request_log.flush)  # the last turn's lines, when the process ends


class JsonFormatter(logging.Formatter):
    FIELDS = ("method", "route", "path", "status", "latency_ms", "request_id", "principal")

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage() if record.name != "tamstore.requests" else "request",
        }
        for key in self.FIELDS:
            if hasattr(record, key) and getattr(record, key) is not None:
                out[key] = getattr(record, key)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(fmt: str, level: str = "INFO") -> None:
    """``json`` for machines, ``text`` for people; ``auto`` picks text on a terminal."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tamstore")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    request_log.configure(sys.stderr.buffer if log.isEnabledFor(logging.INFO) else None, json=fmt == "json")


router = api_router(tags=["operations"])


@get(router, "/healthz", summary="Liveness: the process answers")
async def healthz(request: Request) -> Response:
    return json_response(request, {"status": "ok"})


READY_WAIT = 5  # seconds each readiness check may take


def _reason(exc: Exception) -> str:
    """Why a readiness check failed, as /readyz (open to anyone) may say it: the checks' own
    words, which name states, not addresses or paths; a check that took too long, as such."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {READY_WAIT} s"
    return (str(exc) or type(exc).__name__)[:200]


@get(router, "/readyz", summary="Readiness: the database and every storage backend answer")
async def readyz(request: Request) -> Response:
    ctx = context(request)
    checks: dict[str, str] = {}
    try:
        async with ctx.store.read() as tx:
            await asyncio.wait_for(tx.service_info(), READY_WAIT)
        checks["database"] = "ok"
        if ctx.store.writes_blocked:
            checks["database"] = "unavailable: writes time out: the database is locked by another process"
    except Exception as exc:  # any failure means not ready; say which
        checks["database"] = f"unavailable: {_reason(exc)}"
    for backend in ctx.backends.values():
        try:
            await asyncio.wait_for(backend.check(), READY_WAIT)
            checks[f"storage:{backend.info.label}"] = "ok"
        except Exception as exc:
            checks[f"storage:{backend.info.label}"] = f"unavailable: {_reason(exc)}"
    ready = all(v == "ok" for v in checks.values())
    return json_response(request, {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


@get(router, "/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    ctx = context(request)
    m: Metrics = request.app.state.metrics
    async with ctx.store.read() as tx:
        usage = await tx.storage_usage()
        backlog = await tx.count_pending_deletions()
        retained = await tx.count_retained_flows()
        counters = await tx.counter_values()
    m.retained_flows.set(retained)
    m.retention_deleted.labels("segments").set(counters.get("retention_segments_deleted", 0))
    m.retention_deleted.labels("flows").set(counters.get("retention_flows_deleted", 0))
    m.deliveries.values = {outcome: counters.get(f"webhook_deliveries_{outcome}", 0) for outcome in m.deliveries.values}
    for sid, backend in ctx.backends.items():
        objects, size = usage.get(sid, (0, 0))
        m.stored_bytes.labels(sid, backend.info.label).set(size)
        m.stored_objects.labels(sid, backend.info.label).set(objects)
    m.deletion_backlog.set(backlog)
    pools = ctx.store.pools()
    m.pool_in_use.set(ctx.store.connections_in_use())
    m.pool_size.set(sum(getattr(p, "size", lambda: 0)() for p in pools))
    body = b"" if request.method == "HEAD" else generate_latest(m.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
