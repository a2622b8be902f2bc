"""The composition root: builds the stores from settings and mounts the routes.

This is the only module that chooses backends. The lifespan opens the metadata database
(migrating it unless told not to), the media backends, and the background workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from tamstore import __version__
from tamstore.api import (
    analytics,
    delete_requests,
    errors,
    events,
    flows,
    media,
    objects,
    observability,
    playback,
    security,
    segments,
    service,
    sources,
    webhooks,
)
from tamstore.api.limits import BodyLimitMiddleware
from tamstore.api.observability import Metrics, RequestLogMiddleware
from tamstore.api.page_cache import PageCache, PageCacheMiddleware
from tamstore.api.security import AuthMiddleware
from tamstore.api.ui import BrowserRedirectMiddleware, ui_files
from tamstore.config import Settings
from tamstore.startup import load_auth, open_context
from tamstore.streaming import EventHub
from tamstore.workers import Workers

__all__ = ["app_from_environment", "create_app", "load_auth", "open_context"]

log = logging.getLogger("tamstore")


PROCESS_SETTINGS_ENV = "TAMSTORE_PROCESS_SETTINGS"


def app_from_environment() -> FastAPI:
    """The app of each process of ``serve --processes N`` (a uvicorn factory): the parent
    checked the settings and migrated the database, and hands the settings down as JSON."""
    from tamstore.api.connections import configure
    from tamstore.api.observability import configure_logging

    settings = dataclasses.replace(Settings.from_json(os.environ[PROCESS_SETTINGS_ENV]), migrate=False)
    configure_logging(settings.log_format)
    configure(settings)
    return create_app(settings, workers=not settings.worker_process)  # (serve started the worker process)


def create_app(settings: Settings | None = None, *, workers: bool = True) -> FastAPI:
    """The app. ``workers``: run the background work in this process too (with
    ``settings.workers``); ``tamstore serve`` runs it in a worker process instead
    (``tamstore.worker_process``)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await open_context(settings)
        app.state.ctx = ctx
        # What start-up built (modules, the app, the stores) lives as long as the process: keep
        # it out of the garbage collector's sight, so that collecting the many short-lived
        # objects of a 1,000-segment request does not walk it all again (~10% of its time).
        gc.freeze()
        hub = app.state.hub = EventHub(ctx)
        await hub.start()
        background = Workers(ctx) if workers and settings.workers else None
        if background is not None:
            background.start()
        try:
            yield
        finally:
            if background is not None:
                await background.stop()
            await hub.stop()
            await ctx.store.close()

    auth = load_auth(settings)
    app = FastAPI(
        title="tamstore",
        version=__version__,
        summary="A Time-addressable Media Store (TAMS 8.2) server",
        lifespan=lifespan,
        # tamstore's own metrics and logs are its observability (docs/operating.md). FastAPI's
        # native OpenTelemetry checks for a configured provider on every request (~10% of a
        # kept segment page, reading the environment each time) and finds none.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.auth = auth
    app.state.metrics = metrics = Metrics()
    # Innermost first: kept segment pages are answered after authentication, inside the request
    # log, before routing.
    app.add_middleware(
        PageCacheMiddleware,
        cache=PageCache(settings.page_cache_mib * 2**20),
        metrics=metrics,
        route=next(r for r in segments.router.routes if getattr(r, "name", None) == "list_segments"),
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_kib * 1024, timeout=settings.body_timeout)
    app.add_middleware(AuthMiddleware, config=auth)
    app.add_middleware(BrowserRedirectMiddleware)
    app.add_middleware(RequestLogMiddleware, metrics=metrics)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:  # off unless asked for: no web page elsewhere may call the API (docs/operating.md)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=[
                "Link",
                "Location",
                "X-Paging-Limit",
                "X-Paging-NextKey",
                "X-Paging-Count",
                "X-Paging-Reverse-Order",
                "X-Request-ID",
            ],
            max_age=600,
        )
    errors.install_error_handlers(app)
    # Each module's routes go straight into the app's own route list, hot ones (segments, then
    # flows) first: the router tries them in order. (FastAPI's include_router keeps each router
    # as a nested matcher, which cost ~0.08 ms a request here: /healthz 3,060 -> 4,030 req/s.)
    for module in (
        segments,
        flows,
        service,
        webhooks,
        sources,
        objects,
        delete_requests,
        analytics,
        observability,
        media,
        playback,
        events,
        security,
    ):
        app.router.routes.extend(module.router.routes)
    app.mount("/ui", ui_files(), name="ui")
    return app
