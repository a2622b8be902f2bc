"""The Alembic history builds exactly the schema tables.py describes, on every backend."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tamstore.config import Settings
from tamstore.store.metadata.sql import open_metadata_store
from tamstore.store.metadata.tables import metadata
from tamstore.store.migrate import upgrade


async def test_migrations_match_the_table_definitions(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine)
        await upgrade(store.engine)  # running it again is harmless

        def diff(sync_conn: Any) -> list[Any]:
            return compare_metadata(MigrationContext.configure(sync_conn), metadata)  # type: ignore[no-any-return]

        async with store.engine.connect() as conn:
            differences = await conn.run_sync(diff)
    finally:
        await store.close()
    assert differences == []


async def test_unregistered_allocations_have_a_partial_index_the_collector_uses(settings: Settings) -> None:
    """Registering an Object only removes it from ix_objects_unregistered (migration 0002)."""
    from sqlalchemy import false, select, text

    from tamstore.store.metadata import tables as t

    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine)
        o = t.objects
        query = select(o.c.id).where(o.c.registered == false(), o.c.allocated_at < 5).order_by(o.c.allocated_at)
        async with store.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                ddl = (
                    await conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'ix_objects_unregistered'"))
                ).scalar()
                compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                plan = " ".join(r[-1] for r in await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
                assert "USING INDEX ix_objects_unregistered" in plan
            else:
                ddl = (
                    await conn.execute(
                        text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_objects_unregistered'")
                    )
                ).scalar()
    finally:
        await store.close()
    assert "(allocated_at) WHERE" in ddl and "registered = " in ddl, ddl


async def test_auth_classes_tagged_before_the_upgrade_are_enforced_after_it(settings: Settings) -> None:
    """0007 fills the classes (and each row's key) from the tags stored under 0006."""
    from sqlalchemy import text

    from tamstore.domain.access import Policy
    from tamstore.domain.paging import PageRequest

    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine, "0006")
        async with store.engine.begin() as conn:
            for n, tag in enumerate(["news", "sport", None]):
                await conn.execute(
                    text(
                        "INSERT INTO sources (id, format, label_key, tags, created, updated) "
                        "VALUES (:id, 'urn:x-nmos:format:video', '1', '{}', 1, 1)"
                    ),
                    {"id": f"s{n}"},
                )
                await conn.execute(
                    text(
                        "INSERT INTO flows (id, source_id, format, label_key, doc, created, metadata_updated) "
                        "VALUES (:id, :s, 'urn:x-nmos:format:video', '1', '{}', :n, :n)"
                    ),
                    {"id": f"f{n}", "s": f"s{n}", "n": n},
                )
                if tag:
                    await conn.execute(
                        text("INSERT INTO flow_tags (flow_id, name, value) VALUES (:f, 'auth_classes', :v)"),
                        {"f": f"f{n}", "v": f"{tag}, shared"},
                    )
        await upgrade(store.engine)
        policy = Policy.from_toml({"grants": [{"group": "g", "classes": ["news"], "actions": ["read"]}]})
        async with store.read() as tx:
            page = await tx.list_flows(
                PageRequest(10),
                sort_by="created",
                filters={},
                tags=[],
                collected_by_ids=None,
                timerange=None,
                access=policy.access_for(["g"], admin=False),
            )
            assert sorted(r.id for r in page.items) == ["f0", "f2"]  # news, and the untagged one
            assert await tx.classes_of("flow", "f1") == {"sport", "shared"}
    finally:
        await store.close()


async def test_coverage_blocks_are_filled_from_the_segments_stored_before_the_upgrade(settings: Settings) -> None:
    """0008 sums the segments already stored into their blocks, negative timestamps rounded down
    as the store rounds them (floor division, where SQL's integer division rounds towards zero)."""
    from sqlalchemy import text

    from tamstore.domain.coverage import block_sums

    s = 10**9
    spans = [(-3601 * s, -3600 * s), (-61 * s, -59 * s), (-1, 0), (0, s), (59 * s, 61 * s), (7200 * s, 7205 * s)]
    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine, "0007")
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO sources (id, format, label_key, tags, created, updated) "
                    "VALUES ('s', 'urn:x-nmos:format:video', '1', '{}', 1, 1)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO flows (id, source_id, format, label_key, doc, created, metadata_updated) "
                    "VALUES ('f', 's', 'urn:x-nmos:format:video', '1', '{}', 1, 1)"
                )
            )
            await conn.execute(text("INSERT INTO objects (id, allocated_at) VALUES ('o', 1)"))
            for a, b in spans:
                await conn.execute(
                    text(
                        "INSERT INTO segments (flow_id, ts_start, ts_end, timerange, object_id) "
                        "VALUES ('f', :a, :b, '', 'o')"
                    ),
                    {"a": a, "b": b},
                )
        await upgrade(store.engine)
        async with store.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT seconds, block, segments, covered, shortest, longest FROM coverage_blocks")
            )
            blocks = {tuple(r) for r in rows}
    finally:
        await store.close()
    assert blocks == {tuple(b) for b in block_sums(spans)}


async def test_objects_stored_before_the_upgrade_say_whether_their_one_instance_is_controlled(
    settings: Settings,
) -> None:
    """0009 marks ``sole_instance`` only where an Object's one instance is the controlled one on
    its own backend: not with a second instance, nor an uncontrolled one, nor one elsewhere."""
    from sqlalchemy import text

    settings.data_dir.mkdir(parents=True)
    store = open_metadata_store(settings.sqlalchemy_url())
    instances = {
        "sole": [("b", True)],
        "two": [("b", True), (None, False)],
        "uncontrolled": [(None, False)],
        "elsewhere": [("c", True)],
        "none": [],
    }
    try:
        await upgrade(store.engine, "0008")
        async with store.engine.begin() as conn:
            for oid, insts in instances.items():
                await conn.execute(
                    text("INSERT INTO objects (id, storage_id, allocated_at) VALUES (:id, 'b', 1)"), {"id": oid}
                )
                for n, (storage_id, controlled) in enumerate(insts):
                    await conn.execute(
                        text(
                            "INSERT INTO object_instances (object_id, storage_id, url, label, controlled)"
                            " VALUES (:o, :s, :u, :l, :c)"
                        ),
                        {
                            "o": oid,
                            "s": storage_id,
                            "u": None if controlled else "https://x",
                            "l": str(n),
                            "c": controlled,
                        },
                    )
        await upgrade(store.engine)
        async with store.engine.connect() as conn:
            marked = {r[0] for r in await conn.execute(text("SELECT id FROM objects WHERE sole_instance"))}
    finally:
        await store.close()
    assert marked == {"sole"}
