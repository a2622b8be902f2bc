"""SQLAlchemy Core tables: the metadata schema, and Alembic's target metadata.

Conventions: every TAMS timestamp is a BIGINT of nanoseconds; a segment is the half-open
``[ts_start, ts_end)`` so ordering and overlap are integer comparisons on indexed columns.
Wall-clock times (created, updated, ...) are BIGINT microseconds since the Unix epoch, so that
"newest first" is an integer sort too. Documents that the API returns whole (a Flow's technical
metadata, a Profile) are kept as JSON text beside the columns that queries filter on.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

service_info = Table(
    "service_info",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("format", String, nullable=False),
    Column("label", String),
    # Sort key for sort_by=label: labelled first (A-Z), unlabelled after (ADR 0052).
    Column("label_key", String, nullable=False, server_default="1"),
    Column("description", Text),
    Column("tags", Text, nullable=False, server_default="{}"),
    Column("created_by", String),
    Column("updated_by", String),
    Column("created", BigInteger, nullable=False),
    Column("updated", BigInteger, nullable=False),
    Column("auth_key", Text),  # its auth classes as one key (see auth_keys)
    Index("ix_sources_created", "created", "id"),
    Index("ix_sources_updated", "updated", "id"),
    Index("ix_sources_label", "label_key", "id"),
    Index("ix_sources_label_exact", "label"),
)

source_tags = Table(
    "source_tags",
    metadata,
    Column("source_id", String(36), ForeignKey("sources.id", ondelete="CASCADE"), nullable=False),
    Column("name", String, nullable=False),
    Column("value", String, nullable=False),
    Index("ix_source_tags_lookup", "name", "value", "source_id"),
    Index("ix_source_tags_source", "source_id"),
)

flows = Table(
    "flows",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("source_id", String(36), ForeignKey("sources.id"), nullable=False),
    Column("format", String, nullable=False),
    Column("codec", String),
    Column("container", String),
    Column("label", String),
    Column("label_key", String, nullable=False, server_default="1"),
    Column("status", String),
    Column("profile_id", String(36)),
    Column("frame_width", Integer),
    Column("frame_height", Integer),
    Column("init_segments", Boolean, nullable=False, server_default="0"),
    Column("read_only", Boolean, nullable=False, server_default="0"),
    Column("doc", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("metadata_updated", BigInteger, nullable=False),
    Column("segments_updated", BigInteger),
    # The span of the Flow's segments, kept up to date by every segment write, so that
    # /flows?timerange= never looks at segments. NULL when the Flow has none.
    Column("seg_start", BigInteger),
    Column("seg_end", BigInteger),
    # Usage counters kept by every segment write (analytics never count segments).
    Column("seg_count", BigInteger, nullable=False, server_default="0"),
    Column("seg_duration", BigInteger, nullable=False, server_default="0"),  # nanoseconds
    Column("seg_bytes", BigInteger, nullable=False, server_default="0"),
    # A fresh random value in every transaction that changes what a segment page of the Flow
    # shows (its segments, or the instances of an Object they use): rendered pages kept by any
    # process are reused only while it is unchanged (tamstore/api/page_cache.py).
    Column("pages_token", BigInteger, nullable=False, server_default="0"),
    # Counters that only grow, for live playlists (ops/playback): segments removed from the
    # Flow ever, and breaks (domain.playlists.is_break) between segments appended at its end.
    # A playlist window holds every segment from its first to the Flow's end, so its first
    # segment's media sequence number is seg_count + seg_removed - (segments in the window),
    # and its discontinuity sequence number seg_breaks - (breaks inside the window): both
    # stable across reloads without reading the Flow's past.
    Column("seg_removed", BigInteger, nullable=False, server_default="0"),
    Column("seg_breaks", BigInteger, nullable=False, server_default="0"),
    # The Flow's auth classes as one key (see auth_keys): listings filter on it row by row.
    Column("auth_key", Text),
    Index("ix_flows_source", "source_id", "created", "id"),
    Index("ix_flows_created", "created", "id"),
    Index("ix_flows_updated", "metadata_updated", "id"),
    Index("ix_flows_label", "label_key", "id"),
    Index("ix_flows_label_exact", "label", "created", "id"),
    Index("ix_flows_profile", "profile_id"),
)

flow_tags = Table(
    "flow_tags",
    metadata,
    Column("flow_id", String(36), ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    Column("name", String, nullable=False),
    Column("value", String, nullable=False),
    Index("ix_flow_tags_lookup", "name", "value", "flow_id"),
    Index("ix_flow_tags_flow", "flow_id"),
)

flow_collections = Table(
    "flow_collections",
    metadata,
    Column("collector_id", String(36), ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    Column("member_id", String(36), nullable=False),
    Column("position", Integer, nullable=False),
    Column("role", String),
    Column("container_mapping", Text),
    PrimaryKeyConstraint("collector_id", "position"),
    Index("ix_flow_collections_member", "member_id"),
)

profiles = Table(
    "profiles",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("format", String, nullable=False),
    Column("codec", String),
    Column("label", String),
    Column("doc", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
)

objects = Table(
    "objects",
    metadata,
    Column("id", String, primary_key=True),
    Column("allocated_for_flow", String(36)),
    Column("storage_id", String(36)),
    Column("content_type", String),
    Column("allocated_at", BigInteger, nullable=False),
    Column("registered", Boolean, nullable=False, server_default="0"),
    Column("is_init", Boolean, nullable=False, server_default="0"),
    Column("first_referenced_by_flow", String(36)),
    Column("timerange", String),
    Column("key_frame_count", Integer),
    Column("init_object_id", String),
    Column("size", BigInteger),  # bytes, when known (uploads through tamstore)
    # True when the Object's one instance is the controlled one on ``storage_id``, as an Object
    # allocated by tamstore starts out: a page of segments then makes its URLs without reading
    # object_instances (a third of the page's statement). False says nothing: look there. Every
    # write of an Object's instances sets it false (``Queries._instances_changed``).
    Column("sole_instance", Boolean, nullable=False, server_default="0"),
    Index("ix_objects_init", "init_object_id"),
)
# Allocations not (yet) used by a segment, oldest first, for their collection. Partial: an Object
# leaves the index when it is registered instead of moving to another part of it, which made the
# registration UPDATE of a 1,000-segment batch ~20% slower, and registered Objects (nearly all of
# them) take no room in it.
Index(
    "ix_objects_unregistered",
    objects.c.allocated_at,
    sqlite_where=objects.c.registered == false(),
    postgresql_where=objects.c.registered == false(),
)

object_instances = Table(
    "object_instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("object_id", String, ForeignKey("objects.id", ondelete="CASCADE"), nullable=False),
    Column("storage_id", String(36)),
    Column("url", Text),
    Column("label", String),
    Column("controlled", Boolean, nullable=False),
    UniqueConstraint("object_id", "storage_id", name="uq_instance_storage"),
    UniqueConstraint("object_id", "label", name="uq_instance_label"),
    Index("ix_instances_object", "object_id"),
)

# Reference counts: how many segments of each Flow use each Object, counting an init Object
# once for every segment whose media Object uses it. Objects with no row here are unreferenced.
object_refs = Table(
    "object_refs",
    metadata,
    Column("object_id", String, nullable=False),
    Column("flow_id", String(36), nullable=False),
    Column("segments", BigInteger, nullable=False),
    PrimaryKeyConstraint("object_id", "flow_id"),
    Index("ix_object_refs_flow", "flow_id"),
)

segments = Table(
    "segments",
    metadata,
    Column("flow_id", String(36), ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    Column("ts_start", BigInteger, nullable=False),
    Column("ts_end", BigInteger, nullable=False),
    Column("timerange", String, nullable=False),
    Column("object_id", String, ForeignKey("objects.id"), nullable=False),
    Column("ts_offset", BigInteger, nullable=False, server_default="0"),
    Column("last_duration", BigInteger),
    Column("object_timerange", String),
    Column("key_frame_count", Integer),
    Column("sample_offset", Integer),
    Column("sample_count", Integer),
    PrimaryKeyConstraint("flow_id", "ts_start"),
    Index("ix_segments_end", "flow_id", "ts_end"),
    Index("ix_segments_object", "object_id", "flow_id"),
)

# Per minute and per hour of each Flow's timeline, the segments starting there: their count,
# total, shortest and longest duration (ns), kept by every segment write, so that a long range's
# coverage and statistics read blocks, not segments (tamstore.domain.coverage).
coverage_blocks = Table(
    "coverage_blocks",
    metadata,
    Column("flow_id", String(36), ForeignKey("flows.id", ondelete="CASCADE"), nullable=False),
    Column("seconds", Integer, nullable=False),  # the block size
    Column("block", BigInteger, nullable=False),  # ts_start // (seconds * 10**9)
    Column("segments", BigInteger, nullable=False),
    Column("covered", BigInteger, nullable=False),
    Column("shortest", BigInteger, nullable=False),
    Column("longest", BigInteger, nullable=False),
    PrimaryKeyConstraint("flow_id", "seconds", "block"),
)

# Asynchronous deletions (CHECKLIST §11): the API's flow-delete-requests, plus the lease a
# worker holds while it works on one, so that several workers never do the same one at once
# and a worker that dies leaves a request the next one resumes.
flow_delete_requests = Table(
    "flow_delete_requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("flow_id", String(36), nullable=False),
    Column("timerange_to_delete", String, nullable=False),
    Column("timerange_remaining", String),
    Column("object_id", String),
    Column("delete_flow", Boolean, nullable=False),
    Column("status", String, nullable=False),
    Column("error", Text),
    Column("created", BigInteger, nullable=False),
    Column("created_by", String),
    Column("updated", BigInteger, nullable=False),
    Column("expiry", BigInteger),
    Column("expiry_key", BigInteger, nullable=False, server_default="0"),  # expiry, 0 if unset
    Column("lease_owner", String),
    Column("lease_until", BigInteger),
    Index("ix_delete_requests_created", "created", "id"),
    Index("ix_delete_requests_expiry", "expiry_key", "id"),
    Index("ix_delete_requests_pending", "status", "lease_until"),
    Index("ix_delete_requests_flow", "flow_id"),
)

# The recovery window: what a deletion removed, kept until the window closes so that an
# operator can restore it. A batch is one deletion (inline or asynchronous).
deleted_flows = Table(
    "deleted_flows",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    Column("flow_id", String(36), nullable=False),
    Column("deleted_at", BigInteger, nullable=False),
    Column("flow", Text, nullable=False),
    Column("tags", Text, nullable=False),
    Column("collection", Text, nullable=False),
    Column("source", Text),
    Index("ix_deleted_flows_flow", "flow_id"),
)

deleted_segments = Table(
    "deleted_segments",
    metadata,
    Column("batch_id", String(36), nullable=False),
    Column("deleted_at", BigInteger, nullable=False),
    Column("flow_id", String(36), nullable=False),
    Column("ts_start", BigInteger, nullable=False),
    Column("ts_end", BigInteger, nullable=False),
    Column("timerange", String, nullable=False),
    Column("object_id", String, nullable=False),
    Column("ts_offset", BigInteger, nullable=False),
    Column("last_duration", BigInteger),
    Column("object_timerange", String),
    Column("key_frame_count", Integer),
    Column("sample_offset", Integer),
    Column("sample_count", Integer),
    PrimaryKeyConstraint("batch_id", "ts_start"),
    Index("ix_deleted_segments_object", "object_id"),
    Index("ix_deleted_segments_time", "deleted_at"),
)

# Recovery-window batches, one row per deletion, for `tamstore admin deleted` and the purge.
deletion_batches = Table(
    "deletion_batches",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("flow_id", String(36), nullable=False),
    Column("timerange", String, nullable=False),
    Column("whole_flow", Boolean, nullable=False),
    Column("segments", BigInteger, nullable=False, server_default="0"),
    Column("deleted_at", BigInteger, nullable=False),
    Index("ix_deletion_batches_time", "deleted_at", "id"),
)

# Webhooks (CHECKLIST §12). ``cursor`` is the ``seq`` of the last event this webhook has dealt
# with; a worker holding the lease delivers the following ones, in order.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("url", Text, nullable=False),
    Column("doc", Text, nullable=False),
    Column("api_key_value", Text),
    Column("status", String, nullable=False),
    Column("error", Text),
    Column("cursor", BigInteger, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt", BigInteger, nullable=False, server_default="0"),
    Column("lease_owner", String),
    Column("lease_until", BigInteger),
    Column("created", BigInteger, nullable=False),
    Column("created_by", String),  # the principal that registered it: only it (or an admin) may change it
    # Its groups (from its token) and admin scope when it registered or last replaced the
    # webhook: events go out only if they may read the event's subject (domain/access.py).
    Column("owner_groups", Text),
    Column("owner_admin", Boolean, nullable=False, server_default=false()),
    Column("auth_key", Text),  # its auth classes as one key (see auth_keys)
    Index("ix_webhooks_url", "url", "id"),
    Index("ix_webhooks_status", "status"),
    Index("ix_webhooks_created_by", "created_by"),  # each owner's are counted (max_webhooks)
)

webhook_tags = Table(
    "webhook_tags",
    metadata,
    Column("webhook_id", String(36), ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("name", String, nullable=False),
    Column("value", String, nullable=False),
    Index("ix_webhook_tags_lookup", "name", "value", "webhook_id"),
    Index("ix_webhook_tags_webhook", "webhook_id"),
)

# The transactional outbox: an event row is written in the transaction of the change it
# reports. ``seq`` is given by the webhook worker in the order rows become visible (committed),
# so a transaction that commits late can never be skipped by a cursor.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, unique=True),
    Column("event_type", String, nullable=False),
    Column("flow_id", String(36)),
    Column("source_id", String(36)),
    Column("meta", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Index("ix_events_unsequenced", "seq", "id"),
    Index("ix_events_created", "created"),
)

# Objects and bytes per Storage Backend, kept by every change to controlled instances. Each
# change adds to one of a few shards picked at random, so concurrent writers rarely touch the
# same row; readers add the shards up.
usage_counters = Table(
    "usage_counters",
    metadata,
    Column("storage_id", String(36), nullable=False),
    Column("shard", Integer, nullable=False),
    Column("objects", BigInteger, nullable=False, server_default="0"),
    Column("bytes", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("storage_id", "shard"),
)

# One row per day and backend: the counters as they stood, for growth over time.
usage_history = Table(
    "usage_history",
    metadata,
    Column("day", String(10), nullable=False),
    Column("storage_id", String(36), nullable=False),
    Column("objects", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    PrimaryKeyConstraint("day", "storage_id"),
)

# Background jobs that one worker at a time should run (the retention pass): whoever holds a
# row's unexpired lease runs it; a worker that dies lets the lease run out.
worker_leases = Table(
    "worker_leases",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String),
    Column("lease_until", BigInteger, nullable=False, server_default="0"),
)

# Totals kept across processes and restarts (segments and Flows deleted by retention).
counters = Table(
    "counters",
    metadata,
    Column("name", String, primary_key=True),
    Column("value", BigInteger, nullable=False, server_default="0"),
)

# Each distinct set of auth classes in use, as the key the resources' ``auth_key`` column holds
# (their ``auth_classes`` tag: the sorted classes joined by U+001F; NULL: untagged). A filtered
# listing reads this small table, picks the keys that grant the caller, and tests
# ``auth_key IN (...)`` on the row it reads anyway, where a look-up per row in a table of
# (resource, class) rows cost ten times the page (docs/performance.md).
auth_keys = Table(
    "auth_keys",
    metadata,
    Column("kind", String(8), nullable=False),
    Column("auth_key", Text, nullable=False),
    PrimaryKeyConstraint("kind", "auth_key"),
)
