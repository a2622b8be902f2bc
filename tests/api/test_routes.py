"""Every route is a PlainRoute whose handler takes the Request and its path parameters as
strings: nothing else would be passed to it (``api/routing.py``)."""

from __future__ import annotations

import inspect
from pathlib import Path

from fastapi.routing import APIRoute

from tamstore.api.routing import PlainRoute
from tamstore.app import create_app
from tamstore.config import Settings


def test_every_handler_takes_the_request_and_its_path_parameters(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path), workers=False)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert len(routes) > 40
    for route in routes:
        assert isinstance(route, PlainRoute), route.path
        params = inspect.signature(route.endpoint).parameters
        assert list(params) == ["request", *route.param_convertors], route.path
        assert all(p.default is inspect.Parameter.empty for p in params.values()), route.path


def test_the_handlers_are_documented(tmp_path: Path) -> None:
    schema = create_app(Settings(data_dir=tmp_path), workers=False).openapi()
    assert "get" in schema["paths"]["/flows/{flow_id}/segments"]
    assert "post" in schema["paths"]["/flows/{flow_id}/segments"]
