"""Rules for Flows and Sources that need no I/O (CHECKLIST §5, §6; ADR 0025, 0047)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tamstore.domain.errors import BadRequest
from tamstore.domain.limits import INT32_MAX, MAX_LABEL_BYTES, check_int, check_text
from tamstore.domain.retention import check_retention_tags
from tamstore.domain.tags import check_tags

__all__ = [
    "check_flow_limits",
    "FORMATS",
    "PROFILE_FIELDS",
    "SERVER_MANAGED",
    "check_uuid",
    "columns_of",
    "label_key",
    "new_metadata_version",
]

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

FORMATS = (
    "urn:x-nmos:format:video",
    "urn:x-tam:format:image",
    "urn:x-nmos:format:audio",
    "urn:x-nmos:format:data",
    "urn:x-nmos:format:multi",
)
FLOW_STATUSES = ("awaiting_content", "ingesting", "replication_in_progress", "closed_complete")

# Fields a Profile supplies; a Flow linked to a Profile may not set them itself (ADR 0047).
PROFILE_FIELDS = (
    "format",
    "codec",
    "container",
    "avg_bit_rate",
    "segment_duration",
    "container_mapping",
    "essence_parameters",
)

# Fields the service manages; values a client sends are ignored (ADR 0003, CHECKLIST §6.1).
SERVER_MANAGED = ("created", "metadata_updated", "segments_updated", "collected_by", "timerange")


def check_uuid(value: str, what: str) -> str:
    if not UUID_RE.match(value):
        raise BadRequest(f"{what} {value!r} is not a valid TAMS UUID (lower-case, version 1-5)")
    return value


def new_metadata_version() -> str:
    return uuid.uuid4().hex


def label_key(label: str | None) -> str:
    """Sort key for ``sort_by=label``: labelled items A-Z, then the unlabelled (ADR 0052)."""
    return "1" if label is None else "0" + label


def columns_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns of the flows table, projected from a Flow document."""
    essence = doc.get("essence_parameters") or {}
    is_video = doc.get("format") == "urn:x-nmos:format:video"
    return {
        "source_id": doc["source_id"],
        "format": doc["format"],
        "codec": doc.get("codec"),
        "container": doc.get("container"),
        "label": doc.get("label"),
        "label_key": label_key(doc.get("label")),
        "status": doc.get("status"),
        "profile_id": doc.get("profile_id"),
        "frame_width": essence.get("frame_width") if is_video else None,
        "frame_height": essence.get("frame_height") if is_video else None,
        "init_segments": bool(essence.get("init_segments", False)),
        "read_only": bool(doc.get("read_only", False)),
    }


def check_flow_limits(doc: dict[str, Any]) -> None:
    """What the schema leaves open but the store cannot hold: indexed strings of bounded length
    and 32-bit picture sizes (domain/limits.py)."""
    check_retention_tags(check_tags(doc.get("tags", {})))
    if isinstance(doc.get("label"), str):
        check_text(doc["label"], MAX_LABEL_BYTES, "label")
    for name in ("codec", "container"):
        if isinstance(doc.get(name), str):
            check_text(doc[name], MAX_LABEL_BYTES, name)
    essence = doc.get("essence_parameters")
    if isinstance(essence, dict):
        for name in ("frame_width", "frame_height"):
            if isinstance(essence.get(name), int):
                check_int(essence[name], f"essence_parameters.{name}", INT32_MAX, 0)


def check_collection(flow_id: str, collection: list[dict[str, Any]], existing: set[str]) -> None:
    """Members must be existing Flows other than the collector itself, each listed once."""
    seen: set[str] = set()
    for item in collection:
        member = item["id"]
        if member == flow_id:
            raise BadRequest("a Flow cannot collect itself")
        if member in seen:
            raise BadRequest(f"Flow {member} appears twice in flow_collection")
        if member not in existing:
            raise BadRequest(f"flow_collection member {member} does not exist")
        seen.add(member)
