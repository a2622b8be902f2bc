"""Retention's queries: the Flows that carry a retention tag, the lease one worker at a time
holds to run a pass, and the counters of what retention deleted."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from tamstore.domain.retention import RETENTION_TAGS
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.base import Queries
from tamstore.store.metadata.rows import RetainedFlow

_RETAINED = (
    "SELECT flow_tags.flow_id, flow_tags.name, flow_tags.value, flows.seg_start, flows.read_only,"
    " flows.metadata_updated, flows.segments_updated FROM flow_tags JOIN flows ON flows.id = flow_tags.flow_id"
    " WHERE flow_tags.name IN (:segment, :flow)"
)


class RetentionQueries(Queries):
    async def retained_flows(self) -> list[RetainedFlow]:
        """Each Flow with a retention tag, once per tag, with what a pass decides on. Found
        through ``flow_tags``' (name, value, flow_id) index: Flows without the tags are not read.
        Plain driver rows: a pass reads one per retained Flow, tens of thousands of them."""
        rows = await self._driver_rows(_RETAINED, {"segment": RETENTION_TAGS[0], "flow": RETENTION_TAGS[1]})
        return [RetainedFlow(*r) for r in rows]

    async def count_retained_flows(self) -> int:
        ft = t.flow_tags
        stmt = select(func.count(func.distinct(ft.c.flow_id))).where(ft.c.name.in_(RETENTION_TAGS))
        return int((await self.conn.execute(stmt)).scalar_one())

    async def claim_lease(self, name: str, owner: str, now: int, until: int) -> bool:
        """Take (or keep) the named lease unless another owner holds it unexpired."""
        w = t.worker_leases
        stmt = (
            update(w)
            .where(w.c.name == name, (w.c.owner == owner) | (w.c.lease_until < now))
            .values(owner=owner, lease_until=until)
        )
        return bool((await self.conn.execute(stmt)).rowcount)

    async def add_to_counters(self, amounts: dict[str, int]) -> None:
        """Add to store-wide totals (whichever process counts), a counter made at its first use."""
        rows = [(name, amount) for name, amount in amounts.items() if amount]
        if rows:
            await self._add_on_conflict(t.counters, ["name"], ["value"], rows)

    async def counter_values(self) -> dict[str, Any]:
        return {r.name: int(r.value) for r in await self._all(select(t.counters))}
