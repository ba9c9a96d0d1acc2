"""Print the SQL of `task_title_key(text)`: Unicode full case folding without ICU or locale.

Used to write sql/migrations/0002_title_order.sql; a later Unicode version needs a new
migration (an applied one is never edited), made with this script under that Python.
The mapping is Python's `str.casefold` (CaseFolding.txt, statuses C and F), one code point
at a time; tests/test_title_order.py checks the migrated function against it.

    uv run python scripts/casefold_sql.py > body.sql
"""

from __future__ import annotations

import unicodedata

PER_LINE = 12


def literal(text: str) -> str:
    """A PostgreSQL escape string (E'...') that keeps the file ASCII and reviewable."""
    out = []
    for ch in text:
        cp = ord(ch)
        if 0x20 < cp < 0x7F and ch not in "'\\":
            out.append(ch)
        elif cp <= 0xFFFF:
            out.append(f"\\u{cp:04X}")
        else:
            out.append(f"\\U{cp:08X}")
    return "E'" + "".join(out) + "'"


def mappings() -> tuple[dict[str, str], dict[str, str]]:
    """(one code point to one, one code point to several) for every code point that folds."""
    single: dict[str, str] = {}
    multi: dict[str, str] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:  # surrogates: PostgreSQL cannot store them
            continue
        ch = chr(cp)
        folded = ch.casefold()
        if folded != ch:
            (single if len(folded) == 1 else multi)[ch] = folded
    return single, multi


def function_sql() -> str:
    single, multi = mappings()
    # Nested replace() calls, written as one line of `replace(` per call, then `title`, then
    # one line per (from, to) pair, innermost first: each pair is read on its own line.
    pairs = [f"{literal(source)}, {literal(target)})" for source, target in multi.items()]
    opens = ["replace(" * min(10, len(pairs) - start) for start in range(0, len(pairs), 10)]
    indent = "\n            "
    expr = indent.join([*opens, "title"]) + "," + indent + ("," + indent).join(pairs)
    sources = list(single)
    src_lines = []
    dst_lines = []
    for start in range(0, len(sources), PER_LINE):
        chunk = sources[start : start + PER_LINE]
        src_lines.append(literal("".join(chunk)))
        dst_lines.append(literal("".join(single[c] for c in chunk)))
    joiner = "\n            || "
    return (
        f"-- Unicode {unicodedata.unidata_version}: {len(single)} one-to-one foldings "
        f"(translate) and {len(multi)} one-to-several (replace).\n"
        "CREATE FUNCTION task_title_key(title text) RETURNS text\n"
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE\n"
        "RETURN CASE\n"
        "    -- ASCII only (the common case): fold A-Z, whatever LC_CTYPE says.\n"
        '    WHEN octet_length(title) = char_length(title) THEN lower(title COLLATE "C")\n'
        "    ELSE translate(\n"
        f"        {expr},\n"
        f"        {joiner.join(src_lines)},\n"
        f"        {joiner.join(dst_lines)})\n"
        "END;\n"
    )


if __name__ == "__main__":
    print(function_sql(), end="")
