"""Our own sqlglot nodes for reading FHIR JSON: the small vocabulary the view compiler speaks.

Each node is engine-neutral; `dialects.py` renders it per engine with one TRANSFORMS entry.
Two value shapes appear:

- a *JSON value*: one JSON value or NULL (DuckDB JSON, PostgreSQL JSONB, Spark STRING with
  JSON text — Spark unwraps strings, so a string value is its bare text there);
- a *collection*: an ordered list of JSON values (DuckDB JSON[], PostgreSQL a JSONB array,
  Spark ARRAY<STRING>). NULL counts as the empty collection.

Paths are lists of `(element name, cardinality)` with cardinality "one", "many" (a FHIR
array) or "unknown" (not in the FHIR element table: checked per value at run time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from sqlglot import exp

ONE, MANY, UNKNOWN = "one", "many", "unknown"


class JsonGet(exp.Expression, exp.Func):
    """JSON value at a path of single-valued elements: `this.a.b`."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "steps": True}


class JsonGetAll(exp.Expression, exp.Func):
    """Collection of every value along a path, FHIR arrays flattened: `this.name.given`.

    With `collection` true, `this` is a collection and the path starts at each element."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "steps": True, "collection": False}


class JsonText(exp.Expression, exp.Func):
    """A JSON value as text: strings without quotes, other values as JSON text."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


class ToJson(exp.Expression, exp.Func):
    """A SQL scalar (text, number, boolean) as a JSON value."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


class CollectionOf(exp.Expression, exp.Func):
    """The collection of the given JSON values, NULLs left out."""

    arg_types: ClassVar[dict[str, bool]] = {"expressions": True}
    is_var_len_args = True


class CollectionFilter(exp.Expression, exp.Func):
    """Elements of collection `this` for which `condition` (over the element `var`) is true."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "var": True, "condition": True}


class CollectionFlatMap(exp.Expression, exp.Func):
    """Concatenation of collection `body` computed for each element `var` of collection `this`."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "var": True, "body": True}


class CollectionAt(exp.Expression, exp.Func):
    """Element at 0-based `index` of collection `this` (a JSON value, NULL if out of range)."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "index": True}


class CollectionCount(exp.Expression, exp.Func):
    """Number of elements (0 for NULL)."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


class CollectionJoin(exp.Expression, exp.Func):
    """Text of the elements joined with `separator` (NULL elements left out)."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "separator": True}


class CollectionToJson(exp.Expression, exp.Func):
    """A collection as one JSON array value (the representation of collection columns)."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


class JsonElements(exp.Expression, exp.Func):
    """Table source: one row per element of collection `this`, columns `value` and 1-based `idx`,
    under table alias `alias`. Used as the `this` of a (lateral) JOIN."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "alias": True}


class JsonTextBundle(exp.Expression, exp.Func):
    """Texts at several single-valued paths of one JSON value, for `JsonTextPick`: a per-row
    extraction plan. DuckDB parses the document once for all paths; engines that keep JSON
    parsed (PostgreSQL JSONB) or parse per call (Spark) render it as NULL and pick directly."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "paths": True}  # paths: an Array of steps_node arrays


class JsonTextPick(exp.Expression, exp.Func):
    """Item `index` (1-based) of a `JsonTextBundle` column; `original` is the same value as a
    `JsonText(JsonGet(...))` for engines that do not bundle."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True, "index": True, "original": True}


def steps_node(steps: Sequence[tuple[str, str]]) -> exp.Array:
    """Path steps as a sqlglot value: an array of (name, cardinality) tuples of literals."""
    return exp.Array(
        expressions=[
            exp.Tuple(expressions=[exp.Literal.string(name), exp.Literal.string(cardinality)])
            for name, cardinality in steps
        ]
    )


def steps_list(steps: exp.Expression) -> list[tuple[str, str]]:
    """The (name, cardinality) steps of a `steps_node` array."""
    return [(t.expressions[0].name, t.expressions[1].name) for t in steps.expressions]


def steps_of(node: exp.Expression) -> list[tuple[str, str]]:
    """The (name, cardinality) steps of a node's `steps` argument."""
    return steps_list(node.args["steps"])


JSON_FUNCTIONS = (
    JsonGet,
    JsonGetAll,
    JsonText,
    ToJson,
    CollectionOf,
    CollectionFilter,
    CollectionFlatMap,
    CollectionAt,
    CollectionCount,
    CollectionJoin,
    CollectionToJson,
    JsonElements,
    JsonTextBundle,
    JsonTextPick,
)
