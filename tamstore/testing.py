"""Test helpers for tamstore and for integrators: an in-process app client and spec checks.

``app_client(settings)`` runs the real app (lifespan included) behind an ``httpx.AsyncClient``
over ASGI, the same way tamstore's own behaviour suite does.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tamstore.app import create_app
from tamstore.config import Settings

__all__ = ["SpecSchemas", "app_client", "find_spec_dir"]

SPEC_ENV = "TAMSTORE_SPEC_DIR"


@contextlib.asynccontextmanager
async def app_client(settings: Settings, *, workers: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, workers=workers)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def find_spec_dir(start: Path | None = None) -> Path | None:
    """The official TAMS spec folder (bbc/tams ``api/``): ``$TAMSTORE_SPEC_DIR``, else
    ``../shared/tams-spec`` beside the project checkout."""
    if os.environ.get(SPEC_ENV):
        path = Path(os.environ[SPEC_ENV])
        return path if (path / "schemas").is_dir() else None
    here = start or Path(__file__).resolve().parent.parent
    candidate = here.parent / "shared" / "tams-spec"
    return candidate if (candidate / "schemas").is_dir() else None


class SpecSchemas:
    """Validates documents against the official JSON Schemas in a spec folder."""

    def __init__(self, spec_dir: Path) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.dir = spec_dir
        resources = [
            (p.name, Resource.from_contents(json.loads(p.read_text()), default_specification=DRAFT202012))
            for p in (spec_dir / "schemas").glob("*.json")
        ]
        self._registry = Registry().with_resources(resources)
        self._validators: dict[str, Any] = {}
        self._cls = Draft202012Validator

    def validator(self, name: str) -> Any:
        if name not in self._validators:
            schema = json.loads((self.dir / "schemas" / name).read_text())
            self._validators[name] = self._cls(schema, registry=self._registry, format_checker=self._cls.FORMAT_CHECKER)
        return self._validators[name]

    def check(self, name: str, document: Any) -> None:
        """Raise ``AssertionError`` listing every way ``document`` breaks schema ``name``."""
        errors = sorted(self.validator(name).iter_errors(document), key=lambda e: list(e.path))
        if errors:
            lines = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]
            raise AssertionError(f"response does not match {name}:\n" + "\n".join(lines[:10]))

    def check_items(self, name: str, documents: list[Any]) -> None:
        assert isinstance(documents, list), f"expected a JSON array of {name}"
        for doc in documents:
            self.check(name, doc)
