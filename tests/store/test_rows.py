"""The declared row types match the tables they come from, column for column."""

from __future__ import annotations

from tamstore.store.metadata import rows, tables

ROWS = {
    "sources": rows.SourceRow,
    "flows": rows.FlowRow,
    "profiles": rows.ProfileRow,
    "objects": rows.ObjectRow,
    "object_instances": rows.InstanceRow,
    "flow_delete_requests": rows.DeleteRequestRow,
    "deleted_flows": rows.DeletedFlowRow,
    "deleted_segments": rows.DeletedSegmentRow,
    "deletion_batches": rows.BatchRow,
    "webhooks": rows.WebhookRow,
    "events": rows.EventRow,
    "usage_history": rows.UsageDayRow,
}


def test_every_row_type_is_its_tables_columns_in_order() -> None:
    for table, kind in ROWS.items():
        assert kind._fields == tuple(c.name for c in tables.metadata.tables[table].c), table


def test_rows_with_paging_keys_after_the_columns_convert() -> None:
    source = ("id", "fmt", None, "1", None, "{}", None, None, 1, 2)
    got = rows.row_as(rows.SourceRow, (*source, "key0", "key1"))
    assert got is not None and got.id == "id" and got.updated == 2 and rows.row_as(rows.SourceRow, None) is None
