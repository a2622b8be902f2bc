"""What every part of a transaction shares: its connection, the three ways a statement runs, keyset
pages, tag rows, and the pages tokens every segment or instance write renews.

Query styles, one per purpose: SQLAlchemy Core for everything whose cost is the database's
(lookups, listings, filters built from a request); SQL text on the raw driver where building
rows through SQLAlchemy cost more than the query (``_executemany`` for batch writes,
``_driver_rows`` for the segment page and the pages token). Raw SQL is written with ``?`` or
``:name`` placeholders and translated for asyncpg in one place (``driver.for_asyncpg``)."""

from __future__ import annotations

import itertools
import operator
import re
import secrets
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tamstore.domain.access import READ, Access, auth_key, classes_of, key_classes
from tamstore.domain.errors import BadRequest
from tamstore.domain.paging import Page, PageRequest
from tamstore.domain.tags import TagFilter
from tamstore.store.metadata import tables as t
from tamstore.store.metadata.driver import InlineConnection, for_asyncpg, is_integrity_error
from tamstore.store.metadata.rows import R, all_equal, rows_as


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def tag_rows(owner_col: str, owner_id: str, tags: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, value in tags.items():
        for v in value if isinstance(value, list) else [value]:
            rows.append({owner_col: owner_id, "name": name, "value": v})
    return rows


_CLASS_KINDS = {"flow_tags": "flow", "source_tags": "source", "webhook_tags": "webhook"}
_CLASSED_TABLES = {"flow": t.flows, "source": t.sources, "webhook": t.webhooks}
MAX_CLASS_SETS = 1000  # distinct auth_classes sets per kind: the keys a filtered listing reads

PAGES_TOKEN = "SELECT pages_token FROM flows WHERE id = ?"  # read before every segment page


def new_pages_token() -> int:
    """A random non-negative 63-bit value: it fits BIGINT on both databases, and the chance
    that a Flow's new token equals an old one a kept page was rendered at is nil in practice."""
    return secrets.randbits(63)


# Ids per IN list on SQLite, whose statements run on the event loop: deleting 1,000 Objects (or
# their instances) in one statement held it 10-14 ms, 250 at a time about 3 ms with a turn for
# other requests between (a deletion's page p99 elsewhere 33 -> 12 ms, the deletion as fast);
# 100 at a time, with turns every 2 ms (``InlineConnection.SLICE``), 10-11 -> 7 ms.
IN_CHUNK = 100
IN_CHUNK_POSTGRESQL = 10_000  # ids per array parameter (one round trip each)


# "column is one of the ids in $1" on PostgreSQL, as a join with the list (see _rows_for_ids).
PG_IN_IDS = "IN (SELECT unnest($1::varchar[]))"

_SQL_CONSTANT = {None: "NULL", True: "true", False: "false"}

# Rows a filtered listing's page looks at, at most, by default (``Queries._page``; the setting
# ``listing_scan_rows``): 4-5 ms on SQLite.
SCAN_ROWS = 10_000
# Matches below which a lookup reads its matches first (``Queries._member_of``). Counting
# them costs 0.12 ms on SQLite at 1,000, 1.2 ms at 10,000: every lookup pays it.
FEW_IDS = 1000

# PostgreSQL LISTEN/NOTIFY channel on which a transaction tells other processes, as it commits,
# that there is work for them: events to deliver or stream, a deletion to carry out.
EVENTS_CHANNEL = "tamstore_events"


def _scan_edge(
    keys: list[ColumnElement[Any]], desc: bool, after: Sequence[Any] | None, scan_rows: int
) -> tuple[str, list[Any]]:
    """SQL for the keys of the row ``scan_rows`` on from ``after`` in the listing's order, read
    from the keys' own index (the keys are columns of one table)."""
    names = [k.name for k in keys]
    columns = ", ".join(names)
    where = ""
    if after is not None:
        where = f" WHERE ({columns}) {'<' if desc else '>'} ({', '.join('?' * len(names))})"
    order = ", ".join(f"{n} {'DESC' if desc else 'ASC'}" for n in names)
    table = keys[0].table.name
    return f"SELECT {columns} FROM {table}{where} ORDER BY {order} LIMIT 1 OFFSET {scan_rows - 1}", list(after or ())


class Lookup(NamedTuple):
    """A listing's condition, and whether it names few enough rows (fewer than FEW_IDS) that
    they are read first: then the listing runs whole, never cut short (``Queries._page``)."""

    clause: Any
    few: bool


class Queries:
    """The connection of one transaction and the helpers every aggregate's queries use."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.wrote_events = False
        self.record_all_events = False  # set by the store: events recorded with no webhook listening

    async def _notify(self) -> None:
        """PostgreSQL: tell every process listening (``streaming.EventHub``) that there is new
        work; the notification is sent when, and only if, this transaction commits."""
        if self.conn.dialect.name == "postgresql":
            await self.conn.exec_driver_sql(f"NOTIFY {EVENTS_CHANNEL}")

    async def _all(self, stmt: Any, params: dict[str, Any] | None = None) -> Sequence[Any]:
        return (await self.conn.execute(stmt, params)).all()

    async def _insert_many(self, table: Any, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (each naming the same columns) with one statement on the driver. A
        column that is None, or the same bool, in every row is written as a constant: Python's
        sqlite3 binds None and bools by way of its adapter lookup, about 0.7 µs each against 0.3
        for an integer, and the five unset columns of a plain 1,000-segment batch took 3.6 ms of
        its insert that way."""
        if not rows:
            return
        first = rows[0]
        constants = {c: v for c, v in first.items() if (v is None or type(v) is bool) and all_equal(rows, c, v)}
        params = [c for c in first if c not in constants]
        marks = [_SQL_CONSTANT[constants[c]] if c in constants else "?" for c in first]
        values: Any = operator.itemgetter(*params) if len(params) > 1 else (lambda r: tuple(r[c] for c in params))
        await self._executemany(
            f"INSERT INTO {table.name} ({', '.join(first)}) VALUES ({', '.join(marks)})", list(map(values, rows))
        )

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """One statement (``?`` placeholders) for many rows, on the driver's own executemany.
        For the 1,000-row writes of a segment batch, SQLAlchemy's per-row parameter handling cost
        more than the database's work (docs/performance.md). Integrity errors come out as
        SQLAlchemy's ``IntegrityError``, as from any other statement."""
        try:
            if isinstance(self.conn, InlineConnection):  # SQLite
                await self.conn.driver_executemany(sql, rows)
            else:  # PostgreSQL
                raw = await self.conn.get_raw_connection()
                await raw.driver_connection.executemany(for_asyncpg(sql)[0], rows)  # type: ignore[union-attr]
        except Exception as exc:
            if is_integrity_error(exc):
                raise IntegrityError(sql, None, exc) from exc
            raise

    async def _driver_rows(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any],
        *,
        postgresql: tuple[str, Sequence[Any]] | None = None,
    ) -> Sequence[Sequence[Any]]:
        """Rows as plain tuples from the driver underneath, past SQLAlchemy's Row objects. ``sql``
        has ``?`` placeholders (``params`` a sequence) or ``:name`` ones (``params`` a dict).
        ``postgresql`` is a statement of PostgreSQL's own (``$n`` placeholders) to run there
        instead, where the two dialects need different SQL (an array for a long IN list)."""
        if isinstance(self.conn, InlineConnection):
            return await self.conn.driver_rows(sql, params)
        if postgresql is not None:
            pg_sql, args = postgresql
        else:
            pg_sql, names = for_asyncpg(sql)
            args = [params[n] for n in names] if isinstance(params, dict) else params
        raw = await self.conn.get_raw_connection()
        return await raw.driver_connection.fetch(pg_sql, *args)  # type: ignore[no-any-return, union-attr]

    async def _rows_for_ids(
        self, sql: str, column: str, ids: list[str], tail: str = "", params: Sequence[Any] = ()
    ) -> list[Sequence[Any]]:
        """``sql`` (a statement up to its WHERE) for the rows whose ``column`` is one of
        ``ids``, on the driver: an ``IN`` list of up to IN_CHUNK on SQLite, an array parameter
        of up to IN_CHUNK_POSTGRESQL on PostgreSQL. SQLAlchemy's expanding ``IN`` renders a
        bind per id, which for the tens of thousands of Objects of a deleted Flow cost more
        than the statements. ``tail`` follows the condition (more conditions, ``RETURNING``,
        ``ORDER BY``); its ``?`` take ``params``.

        On PostgreSQL the list is joined in (``PG_IN_IDS``: a nested loop of index probes, or a
        hash join), never tested row by row with ``= ANY($1)``. That form went wrong two ways:
        seeing 1,000 ids, each connection's first five plans of a statement (custom plans)
        scanned the whole table of a store of 170,000 Objects (14 ms against 2 ms by index);
        and a connection that had settled on a generic plan while the table was small kept
        scanning it as it grew, comparing every row with every id: 350 ms a statement at
        30,000 Objects, until the next ANALYZE.

        The ids go in their sort order, so that each list is a run of neighbouring index
        entries: a deletion's thousand Objects in ten lists taken in hash order spent a tenth
        more on its statements (each list's lookups spread over the whole run's pages)."""
        ids = sorted(ids)
        counter = itertools.count(2)
        pg_tail = re.sub(r"\?", lambda _: f"${next(counter)}", tail)
        out: list[Sequence[Any]] = []
        size = IN_CHUNK if isinstance(self.conn, InlineConnection) else IN_CHUNK_POSTGRESQL
        for at in range(0, len(ids), size):
            chunk = ids[at : at + size]
            marks = ", ".join("?" * len(chunk))
            out += await self._driver_rows(
                f"{sql} WHERE {column} IN ({marks}){tail}",
                [*chunk, *params],
                postgresql=(f"{sql} WHERE {column} {PG_IN_IDS}{pg_tail}", [chunk, *params]),
            )
        return out

    async def _one(self, stmt: Any) -> Any:
        return (await self.conn.execute(stmt)).first()

    # -- paging -------------------------------------------------------------------------------

    async def _page(
        self,
        stmt: Select[Any],
        keys: list[ColumnElement[Any]],
        page: PageRequest,
        *,
        descending: bool,
        row: type[R],
        filtered: bool = False,
    ) -> Page[R]:
        """Run ``stmt`` as one keyset page ordered by ``keys`` (all in one direction).

        A ``filtered`` listing (``stmt`` has conditions beyond the keys) looks at no more than
        ``listing_scan_rows`` rows (SCAN_ROWS by default) in key order: a filter that matches
        few rows, or none, would otherwise read the whole table for one page, on SQLite on the
        event loop (a codec no Flow has: 80 ms at 200,000 Flows). Where the rows looked at run
        out before the page is full, the page ends there, short or even empty, with a cursor to
        go on from: as DynamoDB pages a filtered query, and ADR 0010 allows (only a missing
        next link ends a listing).

        SQLite only. PostgreSQL's planner chooses with statistics, and a long statement there
        holds a connection, not the event loop (``db_statement_timeout`` bounds it). Measured at
        100,000 Flows there: the bound with its edge found first saved a filter matching nothing
        28-34 -> 8-10 ms but cost every dense page the edge; the rows looked at as a subquery,
        the edge read only after a short page, saved 22 -> 5-6 ms but cost a dense page 0.9 ms
        more and turned a tag value no Flow has from 0.7 ms (a semi-join from the tag index)
        into 23 ms once the prepared statement's plan went generic."""
        desc = descending != page.reverse
        cursor = tuple_(*keys)

        def key(values: Sequence[Any]) -> Any:
            return tuple_(*[literal(v) for v in values])

        if page.after is not None:
            stmt = stmt.where(cursor < key(page.after) if desc else cursor > key(page.after))
        order = [k.desc() if desc else k.asc() for k in keys]
        last_looked_at = None
        if filtered and isinstance(self.conn, InlineConnection):  # SQLite only (above)
            edge = await self._driver_rows(*_scan_edge(keys, desc, page.after, self.conn.scan_rows))
            if edge:  # more rows than that are left: look at these alone
                last_looked_at = tuple(edge[0])
                stmt = stmt.where(cursor >= key(last_looked_at) if desc else cursor <= key(last_looked_at))
        rows = list(await self._all(stmt.order_by(*order).limit(page.limit + 1)))
        next_key = last_looked_at
        if len(rows) > page.limit:
            rows = rows[: page.limit]
            next_key = tuple(rows[-1]._mapping[f"_k{i}"] for i in range(len(keys)))
        return Page(rows_as(row, rows), page.limit, next_key, page.reverse)

    @staticmethod
    def _with_keys(stmt: Select[Any], keys: list[ColumnElement[Any]]) -> Select[Any]:
        return stmt.add_columns(*[k.label(f"_k{i}") for i, k in enumerate(keys)])

    async def _tag_clause(self, tag_table: Any, owner_col: Any, owner_id_col: Any, f: TagFilter) -> Lookup:
        if f.values is not None:
            if not f.values:  # ``tag.name=`` names no value: nothing matches
                return Lookup(false(), few=True)
            owners = select(owner_col).where(tag_table.c.name == f.name, tag_table.c.value.in_(f.values))
            marks = ", ".join("?" * len(f.values))
            rows = f"SELECT 1 FROM {tag_table.name} WHERE name = ? AND value IN ({marks})"
            return await self._member_of(owner_id_col, owners, (rows, [f.name, *f.values]))
        clause = exists(select(literal(1)).where(owner_col == owner_id_col, tag_table.c.name == f.name))
        return Lookup(clause if f.exists else not_(clause), few=False)

    async def _member_of(self, id_col: Any, ids: Select[Any], rows: tuple[str, list[Any]] | None = None) -> Lookup:
        """``id_col`` is one of ``ids`` (a lookup on an index: a tag's value, a collection).

        On SQLite, written as ``EXISTS`` (tested row by row, in the listing's order), it reads
        the whole listing when the value is rare or absent: 30-35 ms for a tag value no Flow of
        200,000 has. Written as ``IN`` (the ids first, then their rows, sorted), it reads as
        many rows as the value has: best when few do, worst when most do. So the ids are
        counted first, up to FEW_IDS (a short index range): fewer take ``IN``, and the lookup
        is ``few`` (its listing reads no more rows than that); more take ``EXISTS``. ``rows``,
        the same rows as SQL text and its parameters, counts them on the driver (every lookup
        counts: SQLAlchemy's statement cost five times SQLite's work)."""
        column = ids.selected_columns[0]
        tested = Lookup(exists(ids.with_only_columns(literal(1)).where(column == id_col)), few=False)
        if not isinstance(self.conn, InlineConnection):
            # PostgreSQL plans EXISTS as a semi-join, from the index when its statistics say
            # the value is rare (1.5-2.7 ms for a value no Flow of 100,000 has), where ``IN``
            # scanned the listing (11-13 ms). Its listings run whole (``_page``).
            return tested
        if rows is not None:
            sql, params = rows
            [(count,)] = await self._driver_rows(f"SELECT count(*) FROM ({sql} LIMIT {FEW_IDS}) AS few", params)
        else:
            count = (await self.conn.execute(select(func.count()).select_from(ids.limit(FEW_IDS).subquery()))).scalar()
        if count < FEW_IDS:
            return Lookup(id_col.in_(ids), few=True)
        return tested

    # -- tags (shared by sources and flows) -----------------------------------------------------

    async def _replace_tags(self, table: Any, owner: str, owner_id: str, tags: dict[str, Any]) -> None:
        await self.conn.execute(delete(table).where(table.c[owner] == owner_id))
        rows = tag_rows(owner, owner_id, tags)
        if rows:
            await self.conn.execute(insert(table), rows)
        await self._replace_classes(_CLASS_KINDS[table.name], owner_id, classes_of(tags))

    async def _replace_classes(self, kind: str, resource_id: str, classes: frozenset[str]) -> None:
        """Keep the resource's ``auth_key`` (its class set as one string) and the kind's list of
        distinct keys. A new class set past MAX_CLASS_SETS is refused: every listing by a
        principal that auth_classes filter reads that list."""
        key = auth_key(classes)
        table = _CLASSED_TABLES[kind]
        await self.conn.execute(update(table).where(table.c.id == resource_id).values(auth_key=key))
        if key is None:
            return
        dialect_insert = pg_insert if self.conn.dialect.name == "postgresql" else sqlite_insert
        added = await self.conn.execute(
            dialect_insert(t.auth_keys).values(kind=kind, auth_key=key).on_conflict_do_nothing()
        )
        if added.rowcount:
            ak = t.auth_keys
            count = (await self.conn.execute(select(func.count()).where(ak.c.kind == kind))).scalar_one()
            if count > MAX_CLASS_SETS:
                raise BadRequest(
                    f"tag auth_classes: this store already holds {MAX_CLASS_SETS} different sets of classes "
                    f"on its {kind}s; use one of those"
                )

    async def _granting_keys(self, kind: str, access: Access, action: str) -> list[str]:
        """The distinct class sets of ``kind`` (a few rows) that grant ``access`` the action."""
        ak = t.auth_keys
        rows = await self._all(select(ak.c.auth_key).where(ak.c.kind == kind))
        return sorted(r.auth_key for r in rows if access.allows(action, key_classes(r.auth_key)))

    async def visible(self, kind: str, id_col: Any, access: Access, action: str = READ) -> ColumnElement[bool] | None:
        """The SQL condition for rows whose ``id_col`` names a Source, Flow or webhook (``kind``)
        that ``access`` may act on (None: any). On the resource table itself (a listing), a test
        of each row's own ``auth_key`` against the keys that grant the caller, so that the
        listing keeps its index and order and pages stay full; elsewhere (an Object's Flows, a
        delete request's Flow) the same test on the row ``id_col`` names, where one that no
        longer exists counts as untagged."""
        if access.everything:
            return None
        table = _CLASSED_TABLES[kind]
        keys = await self._granting_keys(kind, access, action)
        allowed: ColumnElement[bool] = table.c.auth_key.in_(keys) if keys else false()
        if access.untagged_open:
            allowed = or_(table.c.auth_key.is_(None), allowed)
        if id_col is table.c.id:
            return allowed
        if access.untagged_open:  # no row of it that the caller may not see
            return not_(exists(select(literal(1)).where(table.c.id == id_col, not_(allowed))))
        return exists(select(literal(1)).where(table.c.id == id_col, allowed))

    async def classes_of(self, kind: str, resource_id: str) -> frozenset[str]:
        """The auth classes of one Source, Flow or webhook (empty: untagged or missing)."""
        table = _CLASSED_TABLES[kind]
        key = (await self.conn.execute(select(table.c.auth_key).where(table.c.id == resource_id))).scalar()
        return key_classes(key)

    async def readable_ids(self, kind: str, ids: Iterable[str], access: Access) -> set[str]:
        """Those of ``ids`` that ``access`` may read (for lists of ids inside documents)."""
        wanted = set(ids)
        if access.everything or not wanted:
            return wanted
        table = _CLASSED_TABLES[kind]
        rows = await self._all(select(table.c.id, table.c.auth_key).where(table.c.id.in_(sorted(wanted))))
        keys = {r.id: r.auth_key for r in rows}
        return {i for i in wanted if access.allows(READ, key_classes(keys.get(i)))}

    async def pages_token(self, flow_id: str) -> int | None:
        """The Flow's pages token (None: no such Flow). It changes in every transaction that
        changes what a segment page of the Flow shows: ``TimelineWrites`` renews it with the
        Flow's counters whenever segments come or go, ``_instances_changed`` when an
        Object's instances change."""
        rows = await self._driver_rows(PAGES_TOKEN, (flow_id,))
        return rows[0][0] if rows else None

    async def _instances_changed(self, object_ids: Iterable[str]) -> None:
        """Called by every write of an existing Object's instances. The Object no longer says
        it has one instance (``objects.sole_instance``), so pages read its instances; and the
        pages of every Flow whose segments use it, directly or as their init Object
        (object_refs counts both), are renewed: they show its URLs."""
        ids = [(o,) for o in set(object_ids)]
        if not ids:
            return
        await self._executemany("UPDATE objects SET sole_instance = false WHERE id = ? AND sole_instance", ids)
        await self._executemany(
            "UPDATE flows SET pages_token = ? WHERE id IN (SELECT flow_id FROM object_refs WHERE object_id = ?)",
            [(new_pages_token(), o) for (o,) in ids],
        )

    async def _add_on_conflict(
        self, table: Any, keys: list[str], counters: list[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE adding each new row's counters to the old;
        ``rows`` give the keys' then the counters' values. The same SQL on both databases, on the
        driver: building SQLAlchemy's dialect construct took longer than the statement."""
        columns = [*keys, *counters]
        added = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in counters)
        await self._executemany(
            f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}",
            rows,
        )
