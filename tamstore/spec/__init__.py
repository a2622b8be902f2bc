"""The official TAMS 8.2 JSON Schemas (bbc/tams, Apache-2.0), used to validate request bodies.

The schemas ship inside the package (``tamstore/spec/schemas``) so that an installed tamstore
validates exactly what the spec says, with no hand-copied rules to drift.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tamstore.domain.errors import BadRequest

SCHEMA_DIR = Path(__file__).parent / "schemas"

__all__ = ["SCHEMA_DIR", "validate"]


@functools.cache
def _registry() -> Registry[Any]:
    resources = []
    for path in SCHEMA_DIR.glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(contents, default_specification=_spec())))
    return Registry().with_resources(resources)


def _spec() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text())
    return Draft202012Validator(schema, registry=_registry())


def validate(name: str, body: Any, what: str = "request body") -> None:
    """Raise ``BadRequest`` naming the first problem when ``body`` breaks schema ``name``."""
    error = next(iter(_validator(name).iter_errors(body)), None)
    if error is None:
        return
    best = _deepest(error)
    where = "/".join(str(p) for p in best.absolute_path) or "(root)"
    raise BadRequest(f"invalid {what} at {where}: {best.message[:300]}")


def _deepest(error: Any) -> Any:
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error
