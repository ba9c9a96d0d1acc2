"""Named SQL statements parsed once at import from `sql/*.sql`."""

from __future__ import annotations

import importlib.resources
import re
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final, LiteralString

from psycopg import sql


def _sql_dir() -> Traversable:
    """`sql/` as package data: `repositories/sql` in an installed wheel (pyproject.toml maps
    it there), else the checkout's top-level `sql/`, which is what a developer edits."""
    packaged = importlib.resources.files("repositories").joinpath("sql")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


SQL_DIR: Final = _sql_dir()
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_sql(text: LiteralString) -> dict[str, LiteralString]:
    """Split a file into `-- name: x` blocks; each block (comments dropped) is one statement.

    Returns {name: statement text without its final `;`}. Raises ValueError for a block that
    is empty or holds more than one statement, and for a name defined twice.
    """
    blocks: dict[str, LiteralString] = {}
    matches = list(_NAME.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = "\n".join(
            line
            for line in text[match.end() : end].splitlines()
            if line.strip() and not line.lstrip().startswith("--")
        ).strip()
        body = body.removesuffix(";").strip()
        if not body or ";" in body:
            raise ValueError(f"statement {match['name']!r} must be exactly one statement")
        if match["name"] in blocks:
            raise ValueError(f"statement {match['name']!r} is defined twice")
        blocks[match["name"]] = body
    return blocks


def load(name: str) -> dict[str, LiteralString]:
    """The named statements of `sql/<name>` (`parse_sql`); raises OSError when the file is
    missing and ValueError when it does not parse."""
    return parse_sql((SQL_DIR / name).read_text(encoding="utf-8"))


Q: Final = load("tasks.sql")

# The only fragments a list statement may be composed with: status filter and ordering.
STATUS_FILTERS: Final[dict[str, LiteralString]] = {
    "all": "",
    "pending": "AND completed = false",
    "completed": "AND completed = true",
}
ORDERINGS: Final[dict[tuple[str, str], tuple[LiteralString, LiteralString]]] = {
    ("created", "asc"): ("created_at ASC, id ASC", "page.created_at ASC, page.id ASC"),
    ("created", "desc"): ("created_at DESC, id DESC", "page.created_at DESC, page.id DESC"),
    # title_key: the case-folded title (migration 0002), compared by code point whatever the
    # database's locale; ties by id.
    ("title", "asc"): (
        'title_key COLLATE "C" ASC, id ASC',
        'page.title_key COLLATE "C" ASC, page.id ASC',
    ),
    ("title", "desc"): (
        'title_key COLLATE "C" DESC, id DESC',
        'page.title_key COLLATE "C" DESC, page.id DESC',
    ),
}


def _compose(template: LiteralString, status: str, sort: str, order: str) -> LiteralString:
    # Keyed lookups only: a value outside the whitelists is a KeyError, never SQL text.
    order_sql, page_order_sql = ORDERINGS[(sort, order)]
    composed = sql.SQL(template).format(
        status=sql.SQL(STATUS_FILTERS[status]),
        order=sql.SQL(order_sql),
        page_order=sql.SQL(page_order_sql),
    )
    # Only whitelisted SQL fragments went in, so the text is as literal as its parts.
    return composed.as_string(None)


# Built once so each variant has one fixed text (and so one prepared statement).
LIST_STATEMENTS: Final = {
    (status, sort, order, paged): _compose(
        Q["list_tasks_page" if paged else "list_tasks"], status, sort, order
    )
    for status in STATUS_FILTERS
    for sort, order in ORDERINGS
    for paged in (False, True)
}
