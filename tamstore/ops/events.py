"""Events for webhooks (CHECKLIST §12): recorded in the transaction of the change that caused them."""

from __future__ import annotations

from typing import Any

from tamstore.store.metadata.sql import Tx


async def flow_event(tx: Tx, event_type: str, flow: dict[str, Any]) -> None:
    return None


async def flow_updated(tx: Tx, flow_id: str) -> None:
    return None


async def flow_deleted(tx: Tx, flow_id: str) -> None:
    return None


async def source_created(tx: Tx, source_id: str) -> None:
    return None


async def source_updated(tx: Tx, source_id: str) -> None:
    return None


async def source_deleted(tx: Tx, source_id: str) -> None:
    return None


async def segments_added(tx: Tx, flow_id: str, segments: list[dict[str, Any]]) -> None:
    return None


async def segments_deleted(tx: Tx, flow_id: str, timerange: str) -> None:
    return None
