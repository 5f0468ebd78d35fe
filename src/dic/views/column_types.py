"""FHIR types of view columns → SQL column types, one table for every engine and evaluator.

FHIR dates and times keep their precision as given ("2020", "2020-03"), so they stay text;
a collection column holds a JSON array.
"""

from __future__ import annotations

SQL_TYPES: dict[str, str] = {
    "boolean": "BOOLEAN",
    "integer": "BIGINT",
    "positiveInt": "BIGINT",
    "unsignedInt": "BIGINT",
    "integer64": "BIGINT",
    "decimal": "DOUBLE",
}


def sql_type(fhir_type: str | None, collection: bool = False) -> str:
    if collection:
        return "JSON"
    return SQL_TYPES.get(fhir_type or "string", "TEXT")
