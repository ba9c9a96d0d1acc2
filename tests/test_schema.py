"""Migrations, the SQLModel tables against the migrated schema, the SQL file, and the plans."""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Index

from repositories import tasks as tasks_module
from repositories.migrations import discover, latest_version, migrate
from repositories.models import IdempotencyKey, Task, User
from repositories.queries import LIST_STATEMENTS, Q, parse_sql
from repositories.service import SERVICE_Q
from tests.support import create_database, drop_database


async def test_migrate_applies_everything_once_then_is_a_no_op(empty_database: str) -> None:
    first = await migrate(empty_database)
    assert first == [m.version for m in discover()]
    assert await migrate(empty_database) == []
    async with await psycopg.AsyncConnection.connect(empty_database) as conn:
        cur = await conn.execute("SELECT max(version), count(*) FROM schema_migrations")
        assert await cur.fetchone() == (latest_version(), len(first))


async def test_concurrent_migrations_serialise_on_the_advisory_lock(empty_database: str) -> None:
    import asyncio

    results = await asyncio.gather(*(migrate(empty_database) for _ in range(4)))
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in discover()]  # each version applied exactly once


async def test_an_edited_applied_migration_stops_start_up(
    empty_database: str, tmp_path: Path
) -> None:
    from repositories.errors import MigrationError

    for migration in discover():
        (tmp_path / f"{migration.version:04d}_{migration.name}.sql").write_text(migration.sql)
    await migrate(empty_database, directory=tmp_path)
    edited = sorted(tmp_path.glob("*.sql"))[0]
    edited.write_text(edited.read_text() + "\n-- sneaky edit\n")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(empty_database, directory=tmp_path)


async def _columns(conn: psycopg.AsyncConnection[Any], table: str) -> dict[str, tuple[str, bool]]:
    cur = await conn.execute(
        "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s",
        (table,),
    )
    return {name: (dtype, nullable) for name, dtype, nullable in await cur.fetchall()}


_PG_TYPES = {
    "TEXT": "text",
    "BIGINTEGER": "bigint",
    "BOOLEAN": "boolean",
    "DATETIME": "timestamp with time zone",
    "VARCHAR": "character varying",
    "SMALLINTEGER": "smallint",
    "LARGEBINARY": "bytea",
    "JSONB": "jsonb",
}


@pytest.mark.parametrize(
    "model", [User, Task, IdempotencyKey], ids=["users", "tasks", "idempotency_keys"]
)
async def test_sqlmodel_tables_and_migrated_schema_agree(empty_database: str, model: Any) -> None:
    await migrate(empty_database)
    table = model.__table__
    async with await psycopg.AsyncConnection.connect(empty_database) as conn:
        actual = await _columns(conn, table.name)
        declared = {
            column.name: (_PG_TYPES[type(column.type).__name__.upper()], bool(column.nullable))
            for column in table.columns
        }
        assert actual == declared
        cur = await conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename = %s AND indexname LIKE 'ix_%%'",
            (table.name,),
        )
        actual_indexes = {name: definition for name, definition in await cur.fetchall()}
    declared_indexes: dict[str, list[str]] = {
        index.name: [str(getattr(e, "name", None) or e) for e in index.expressions]
        for index in table.indexes
        if isinstance(index, Index)
    }
    assert set(actual_indexes) == set(declared_indexes)
    for name, parts in declared_indexes.items():
        definition = actual_indexes[name]
        assert definition.split("(", 1)[1].rstrip(")").replace(" ", "") == ",".join(parts).replace(
            " ", ""
        ), (
            name,
            definition,
        )


async def test_task_ids_are_64_bit(empty_database: str) -> None:
    await migrate(empty_database)
    async with await psycopg.AsyncConnection.connect(empty_database) as conn:
        cols = await _columns(conn, "tasks")
    assert cols["id"][0] == "bigint"


def test_every_index_leads_with_user_id() -> None:
    for index in Task.__table__.indexes:
        first = next(iter(index.expressions))
        assert getattr(first, "name", None) == "user_id", index.name


def test_sql_file_blocks_parse_into_single_statements() -> None:
    assert set(Q) >= {
        "create_task",
        "create_task_idempotent",
        "get_task",
        "list_tasks",
        "list_tasks_page",
        "update_task",
        "toggle_task",
        "set_task_completed",
        "delete_task",
    }
    assert set(SERVICE_Q) == {"schema_version", "connection_slots"}
    with pytest.raises(ValueError, match="exactly one statement"):
        parse_sql("-- name: two\nSELECT 1; SELECT 2;\n")
    for name, statement in (Q | SERVICE_Q).items():
        assert "f'" not in statement and '{"' not in statement, name


def test_every_statement_is_used_by_the_repository_method_of_its_name() -> None:
    """Every block is run by name, `self._run("name", …)`, from the method of that name."""
    tree = ast.parse(inspect.getsource(tasks_module))
    used: dict[str, set[str]] = {}
    for method in ast.walk(tree):
        if not isinstance(method, ast.AsyncFunctionDef):
            continue
        for node in ast.walk(method):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "_run"
            ):
                for arg in ast.walk(node.args[0]):
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        used.setdefault(arg.value, set()).add(method.name)
    assert set(used) == set(Q)
    for name, methods in used.items():
        expected = "list_tasks" if name == "list_tasks_page" else name
        assert methods == {expected}, f"statement {name} is run by {methods}"


def test_every_owner_scoped_statement_filters_by_user_id() -> None:
    for name, statement in Q.items():
        if name == "create_task":  # an insert: the owner is the value it writes
            assert "VALUES (%(user_id)s, %(title)s" in statement
            continue
        if name == "create_task_idempotent":  # inserts of the owner's rows
            assert "SELECT %(user_id)s, %(key)s, %(fingerprint)s" in statement
            assert "SELECT n.id, %(user_id)s, %(title)s" in statement
            continue
        assert "user_id = %(user_id)s" in statement, name


# --- plans on a table big enough for the planner to care -------------------------------------

SEED_USERS = 200
SEED_PER_USER = 150


@pytest.fixture(scope="module")
def seeded_database(pg_server_url: str) -> Iterator[str]:
    import asyncio

    url = create_database(pg_server_url, prefix="tasks_plans")
    asyncio.run(migrate(url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id) SELECT 'u' || g FROM generate_series(1, %s) g", (SEED_USERS,)
        )
        conn.execute(
            "INSERT INTO tasks (user_id, title, completed, created_at, updated_at)"
            " SELECT 'u' || (g %% %s + 1), md5(g::text), g %% 3 = 0,"
            "        now() - g * interval '1 second', now()"
            " FROM generate_series(1, %s) g",
            (SEED_USERS, SEED_USERS * SEED_PER_USER),
        )
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE tasks")
    try:
        yield url
    finally:
        drop_database(pg_server_url, url)


PARAMS = {
    "user_id": "u7",
    "task_id": 7,
    "name": None,
    "email": None,
    "title": "t",
    "description": None,
    "set_title": True,
    "set_description": False,
    "completed": True,
    "limit": 50,
    "offset": 0,
    "if_match": [1],
    "known": [],
    "key": "k",
    "fingerprint": b"f",
}


def _plan(conn: psycopg.Connection[Any], statement: str) -> dict[str, Any]:
    # Writes are explained inside a transaction that is rolled back: plans, not side effects.
    with conn.transaction(force_rollback=True):
        cur = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, PARAMS)  # type: ignore[operator]
        row = cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _scans_of_tasks(plan: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Scan nodes reading `tasks` (a bitmap index scan names its index, not its relation)."""
    task_indexes = {index.name for index in Task.__table__.indexes} | {"tasks_pkey"}
    return [
        (node["Node Type"], node.get("Index Name"))
        for node in _nodes(plan)
        if node.get("Relation Name") == "tasks" or node.get("Index Name") in task_indexes
    ]


TASK_INDEXES = {index.name for index in Task.__table__.indexes}


@pytest.mark.parametrize("variant", sorted(LIST_STATEMENTS), ids=lambda v: "-".join(map(str, v)))
def test_every_list_variant_scans_an_index_leading_with_user_id(
    seeded_database: str, variant: tuple[str, str, str, bool]
) -> None:
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        plan = _plan(conn, LIST_STATEMENTS[variant])
    scans = _scans_of_tasks(plan)
    assert scans, json.dumps(plan)[:2000]
    assert all(kind != "Seq Scan" for kind, _ in scans), scans
    assert {index for _, index in scans if index} <= TASK_INDEXES, scans
    assert any(index in TASK_INDEXES for _, index in scans), scans


def test_every_declared_index_is_used_by_some_plan(seeded_database: str) -> None:
    used: set[str] = set()
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        templates = {"list_tasks", "list_tasks_page"}  # explained as their composed variants
        statements = [*LIST_STATEMENTS.values(), *(q for n, q in Q.items() if n not in templates)]
        for statement in statements:
            used |= {index for _, index in _scans_of_tasks(_plan(conn, statement)) if index}
    assert used >= TASK_INDEXES, f"never used: {TASK_INDEXES - used}"


@pytest.mark.parametrize(
    "name",
    [
        "get_task",
        "update_task",
        "toggle_task",
        "set_task_completed",
        "delete_task",
        "create_task",
        "create_task_idempotent",
    ],
)
def test_single_task_statements_use_an_index(seeded_database: str, name: str) -> None:
    with psycopg.connect(seeded_database, autocommit=True) as conn:
        plan = _plan(conn, Q[name])
    scans = _scans_of_tasks(plan)
    assert all(kind != "Seq Scan" for kind, _ in scans), (name, scans)
