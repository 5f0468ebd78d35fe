"""One function renders SQL for an engine: `render(expr, engine)`.

sqlglot's default (WARN) logs and emits wrong SQL for constructs a dialect cannot express;
we RAISE instead, and also reject unknown functions (`exp.Anonymous`), which RAISE lets
through unchanged (setup-notes: DuckDB's `list_sum` comes out verbatim for Spark).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from dic.engines.dialects import DIALECTS
from dic.engines.engine import Engine
from dic.errors import DefinitionError, Problem

# Functions we know exist under the same name on every engine, or that are our own
# dialect nodes rendered per engine. Anything else anonymous is a mistranslation waiting.
PORTABLE_FUNCTIONS: frozenset[str] = frozenset()


def render(expr: exp.Expression, engine: Engine | str, *, pretty: bool = False) -> str:
    """Render `expr` for `engine`, refusing anything that would translate silently wrong."""
    engine = Engine(engine)
    unknown = sorted(
        {
            node.name
            for node in expr.find_all(exp.Anonymous)
            if node.name.lower() not in PORTABLE_FUNCTIONS
        }
    )
    if unknown:
        raise DefinitionError(
            "sql",
            [Problem("", f"function '{name}' has no translation for {engine}") for name in unknown],
        )
    return expr.sql(
        dialect=DIALECTS[engine], unsupported_level=ErrorLevel.RAISE, identify=True, pretty=pretty
    )


def parse_sql(sql: str, *, dialect: Engine | str = Engine.duckdb) -> exp.Expression:
    """Parse one statement written in `dialect` (DuckDB by default, our source dialect)."""
    statements = [s for s in sqlglot.parse(sql, dialect=DIALECTS[Engine(dialect)]) if s is not None]
    if len(statements) != 1:
        raise DefinitionError("sql", [Problem("", f"expected one statement, got {len(statements)}")])
    return statements[0]
