"""Our sqlglot dialects: the stock ones plus the few quirks we fix, one entry each.

`render()` always goes through these, never through the stock dialects, so an engine quirk
is one TRANSFORMS entry here and nowhere else. The FHIR JSON nodes of `json_functions.py`
are rendered here, one function per node and engine:

| node              | DuckDB (JSON, JSON[])          | PostgreSQL (JSONB, JSONB array)    | Spark (STRING, ARRAY<STRING>)        |
|-------------------|--------------------------------|------------------------------------|--------------------------------------|
| JsonGet           | json_extract(x, '$.a.b')       | jsonb_extract_path(x, 'a', 'b')    | get_json_object(x, '$.a.b')          |
| JsonGetAll        | json_extract(x, '$.a[*].b')    | jsonb_path_query_array (lax mode)  | transform/from_json per step         |
| JsonText          | json_extract_string(x, '$')    | x #>> '{}'                         | x (already text)                     |
| Collection*       | list functions and lambdas     | subqueries over jsonb_array_elements | higher-order functions             |
| JsonElements      | unnest … WITH ORDINALITY       | jsonb_array_elements … WITH ORDINALITY | posexplode                       |

The FHIR time nodes of `fhir_time.py` (FhirTimeLow/High) expand to portable SQL, with TRY_CAST
on DuckDB and a regular expression screening the text elsewhere. Spark drops the MATERIALIZED
hint of a CTE.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.dialects.postgres import Postgres
from sqlglot.dialects.spark import Spark
from sqlglot.generator import Generator

from dic.engines import json_functions as jf
from dic.engines.engine import Engine
from dic.engines.fhir_time import FhirTimeHigh, FhirTimeLow, expand_bound

Transform = Callable[[Generator, exp.Expression], str]


def _f(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def _s(text: str) -> exp.Literal:
    return exp.Literal.string(text)


def _var(node: exp.Expression) -> exp.Identifier:
    return exp.to_identifier(node.args["var"].name, quoted=True)


def _lambda(var: exp.Identifier, body: exp.Expression) -> exp.Lambda:
    return exp.Lambda(this=body, expressions=[var])


def _paren(generator: Generator, node: exp.Expression) -> str:
    return generator.sql(exp.Paren(this=node))


def _jsonpath(steps: list[tuple[str, str]], wildcard_unknown: bool) -> str:
    """A JSONPath over validated FHIR element names (letters, digits, '_' only)."""
    parts = ["$"]
    for name, cardinality in steps:
        parts.append(f'."{name}"')
        if cardinality == jf.MANY or (cardinality == jf.UNKNOWN and wildcard_unknown):
            parts.append("[*]")
    return "".join(parts)


def _scalar_subquery(select: exp.Select) -> exp.Subquery:
    return exp.Subquery(this=select)


# ------------------------------------------------------------------------------- DuckDB
def _duck_empty() -> exp.Expression:
    return exp.cast(exp.Array(expressions=[]), exp.DataType.build("JSON[]", dialect="duckdb"))


def _duck_wrap(value: exp.Expression) -> exp.Expression:
    """A single JSON value (or NULL) as a collection."""
    return exp.Case(ifs=[exp.If(this=value.copy().is_(exp.null()), true=_duck_empty())],
                    default=exp.Array(expressions=[value]))


def _duck_extract(source: exp.Expression | None, this: exp.Expression, steps: list[tuple[str, str]]) -> exp.Expression:
    path = _jsonpath(steps, wildcard_unknown=False)
    many = any(cardinality == jf.MANY for _, cardinality in steps)

    def extract(value: exp.Expression) -> exp.Expression:
        found = _f("json_extract", value, _s(path))
        return found if many else _duck_wrap(found)

    if source is None:
        return extract(this)
    v = exp.to_identifier("v", quoted=True)
    return _f("flatten", _f("list_transform", source, _lambda(v, extract(exp.column(v)))))


def _duck_unwrap_arrays(source: exp.Expression) -> exp.Expression:
    v = exp.to_identifier("v", quoted=True)
    is_array = _f("json_type", exp.column(v)).eq(_s("ARRAY"))
    body = exp.Case(ifs=[exp.If(this=is_array, true=_f("json_extract", exp.column(v), _s("$[*]")))],
                    default=_duck_wrap(exp.column(v)))
    return _f("flatten", _f("list_transform", source, _lambda(v, body)))


def _over_collection(e: jf.JsonGetAll) -> bool:
    return bool(e.args.get("collection"))


def _duck_get_all(self: Generator, e: jf.JsonGetAll) -> str:
    collection: exp.Expression | None = e.this if _over_collection(e) else None
    pending: list[tuple[str, str]] = []
    for name, cardinality in jf.steps_of(e):
        if cardinality == jf.UNKNOWN:
            collection = _duck_unwrap_arrays(_duck_extract(collection, e.this, [*pending, (name, jf.ONE)]))
            pending = []
        else:
            pending.append((name, cardinality))
    if pending or collection is None:
        collection = _duck_extract(collection, e.this, pending)
    return self.sql(collection)


def _duck_text(self: Generator, e: jf.JsonText) -> str:
    if isinstance(e.this, jf.JsonGet):
        return self.sql(_f("json_extract_string", e.this.this, _s(_jsonpath(jf.steps_of(e.this), False))))
    return self.sql(_f("json_extract_string", e.this, _s("$")))


def _duck_filter(self: Generator, e: jf.CollectionFilter) -> str:
    return self.sql(_f("list_filter", e.this, _lambda(_var(e), e.args["condition"])))


def _duck_flat_map(self: Generator, e: jf.CollectionFlatMap) -> str:
    return self.sql(_f("flatten", _f("list_transform", e.this, _lambda(_var(e), e.args["body"]))))


def _duck_of(self: Generator, e: jf.CollectionOf) -> str:
    v = exp.to_identifier("v", quoted=True)
    items = exp.Array(expressions=list(e.expressions))
    return self.sql(_f("list_filter", items, _lambda(v, exp.column(v).is_(exp.null()).not_())))


def _duck_join(self: Generator, e: jf.CollectionJoin) -> str:
    v = exp.to_identifier("v", quoted=True)
    texts = _f("list_transform", e.this, _lambda(v, _f("json_extract_string", exp.column(v), _s("$"))))
    return self.sql(_f("array_to_string", texts, e.args["separator"]))


def _duck_elements(self: Generator, e: jf.JsonElements) -> str:
    alias = exp.TableAlias(this=e.args["alias"], columns=[exp.to_identifier("value", quoted=True),
                                                           exp.to_identifier("idx", quoted=True)])
    return f"LATERAL UNNEST({self.sql(e.this)}) WITH ORDINALITY AS {self.sql(alias)}"


DUCKDB_TRANSFORMS: dict[type[exp.Expression], Transform] = {
    jf.JsonGet: lambda self, e: self.sql(_f("json_extract", e.this, _s(_jsonpath(jf.steps_of(e), False)))),
    jf.JsonGetAll: _duck_get_all,
    jf.JsonText: _duck_text,
    jf.ToJson: lambda self, e: self.sql(_f("to_json", e.this)),
    jf.CollectionOf: _duck_of,
    jf.CollectionFilter: _duck_filter,
    jf.CollectionFlatMap: _duck_flat_map,
    jf.CollectionAt: lambda self, e: self.sql(_f("list_extract", e.this, exp.Add(this=e.args["index"], expression=exp.Literal.number(1)))),
    jf.CollectionCount: lambda self, e: self.sql(exp.Coalesce(this=_f("len", e.this), expressions=[exp.Literal.number(0)])),
    jf.CollectionJoin: _duck_join,
    jf.CollectionToJson: lambda self, e: self.sql(exp.Coalesce(this=exp.cast(e.this, "JSON"), expressions=[exp.cast(_s("[]"), "JSON")])),
    jf.JsonElements: _duck_elements,
    jf.JsonTextBundle: lambda self, e: self.sql(_f("json_extract_string", e.this, exp.Array(expressions=[
        _s(_jsonpath(jf.steps_list(steps), False)) for steps in e.args["paths"].expressions]))),
    jf.JsonTextPick: lambda self, e: self.sql(_f("list_extract", e.this, e.args["index"])),
}


# ------------------------------------------------------------------------------- PostgreSQL
def _pg_empty() -> exp.Expression:
    return exp.cast(_s("[]"), exp.DataType.build("JSONB", dialect="postgres"))


def _pg_elements_of(collection: exp.Expression, alias: str, column_name: str) -> exp.Expression:
    return exp.Table(this=_f("jsonb_array_elements", collection),
                     alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True),
                                          columns=[exp.to_identifier(column_name, quoted=True)]))


def _pg_aggregate(value: exp.Expression) -> exp.Expression:
    return exp.Coalesce(this=_f("jsonb_agg", value), expressions=[_pg_empty()])


def _pg_text(self: Generator, e: jf.JsonText) -> str:
    if isinstance(e.this, jf.JsonGet):
        names = [_s(name) for name, _ in jf.steps_of(e.this)]
        return self.sql(_f("jsonb_extract_path_text", e.this.this, *names))
    return f"({self.sql(e.this)} #>> '{{}}')"


def _pg_filter(self: Generator, e: jf.CollectionFilter) -> str:
    var = e.args["var"].name
    select = (exp.select(_pg_aggregate(exp.column(var, quoted=True)))
              .from_(_pg_elements_of(e.this, f"{var}_elements", var)).where(e.args["condition"]))
    return self.sql(_scalar_subquery(select))


def _pg_flat_map(self: Generator, e: jf.CollectionFlatMap) -> str:
    var = e.args["var"].name
    inner = f"{var}_item"
    select = (exp.select(_pg_aggregate(exp.column(inner, quoted=True)))
              .from_(_pg_elements_of(e.this, f"{var}_elements", var))
              .join(exp.Lateral(this=_f("jsonb_array_elements", e.args["body"]),
                                alias=exp.TableAlias(this=exp.to_identifier(f"{inner}_t", quoted=True),
                                                     columns=[exp.to_identifier(inner, quoted=True)])),
                    join_type="cross"))
    return self.sql(_scalar_subquery(select))


def _pg_of(self: Generator, e: jf.CollectionOf) -> str:
    built = _f("jsonb_build_array", *e.expressions)
    return self.sql(_f("jsonb_path_query_array", built, _s('$[*] ? (@.type() != "null")')))


def _pg_join(self: Generator, e: jf.CollectionJoin) -> str:
    text = exp.Paren(this=exp.JSONBExtractScalar(this=exp.column("v", quoted=True), expression=_s("{}")))
    select = exp.select(_f("string_agg", text, e.args["separator"])).from_(_pg_elements_of(e.this, "v_elements", "v"))
    return self.sql(exp.Coalesce(this=_scalar_subquery(select), expressions=[_s("")]))


def _pg_at(self: Generator, e: jf.CollectionAt) -> str:
    return f"({self.sql(e.this)} -> CAST({self.sql(e.args['index'])} AS INT))"


def _pg_elements(self: Generator, e: jf.JsonElements) -> str:
    alias = exp.TableAlias(this=e.args["alias"], columns=[exp.to_identifier("value", quoted=True),
                                                           exp.to_identifier("idx", quoted=True)])
    return f"LATERAL JSONB_ARRAY_ELEMENTS({self.sql(e.this)}) WITH ORDINALITY AS {self.sql(alias)}"


POSTGRES_TRANSFORMS: dict[type[exp.Expression], Transform] = {
    jf.JsonGet: lambda self, e: self.sql(_f("jsonb_extract_path", e.this, *[_s(n) for n, _ in jf.steps_of(e)])),
    jf.JsonGetAll: lambda self, e: self.sql(_f("jsonb_path_query_array", e.this, _s(
        _jsonpath(jf.steps_of(e), True).replace("$", "$[*]" if _over_collection(e) else "$", 1)))),
    jf.JsonText: _pg_text,
    jf.ToJson: lambda self, e: self.sql(_f("to_jsonb", e.this)),
    jf.CollectionOf: _pg_of,
    jf.CollectionFilter: _pg_filter,
    jf.CollectionFlatMap: _pg_flat_map,
    jf.CollectionAt: _pg_at,
    jf.CollectionCount: lambda self, e: self.sql(exp.Coalesce(this=_f("jsonb_array_length", e.this), expressions=[exp.Literal.number(0)])),
    jf.CollectionJoin: _pg_join,
    jf.CollectionToJson: lambda self, e: self.sql(exp.Coalesce(this=e.this, expressions=[_pg_empty()])),
    jf.JsonElements: _pg_elements,
    jf.JsonTextBundle: lambda self, e: "NULL",
    jf.JsonTextPick: lambda self, e: self.sql(e.args["original"]),
    # PostgreSQL has no regexp_extract: the first group of regexp_match
    exp.RegexpExtract: lambda self, e: f"(REGEXP_MATCH({self.sql(e.this)}, {self.sql(e.expression)}))[{self.sql(e.args.get('group') or exp.Literal.number(0))}]",
}


# ------------------------------------------------------------------------------- Spark
def _spark_array_of(text: exp.Expression) -> exp.Expression:
    """JSON array text → ARRAY<STRING> of element texts (NULL → empty)."""
    parsed = _f("from_json", text, _s("array<string>"))
    return exp.Coalesce(this=parsed, expressions=[exp.Array(expressions=[])])


def _spark_get_all(self: Generator, e: jf.JsonGetAll) -> str:
    collection: exp.Expression = e.this if _over_collection(e) else exp.Array(expressions=[e.this])
    for name, cardinality in jf.steps_of(e):
        v = exp.to_identifier("v", quoted=True)
        member = _f("get_json_object", exp.column(v), _s(f"$.{name}"))
        if cardinality == jf.ONE:
            values = _f("transform", collection, _lambda(v, member))
            x = exp.to_identifier("x", quoted=True)
            collection = _f("filter", values, _lambda(x, exp.column(x).is_(exp.null()).not_()))
            continue
        if cardinality == jf.MANY:
            body = _spark_array_of(member)
        else:
            looks_like_array = _f("startswith", _f("ltrim", member.copy()), _s("["))
            wrapped = exp.Case(ifs=[exp.If(this=member.copy().is_(exp.null()), true=exp.Array(expressions=[]))],
                               default=exp.Array(expressions=[member.copy()]))
            body = exp.Case(ifs=[exp.If(this=looks_like_array, true=_spark_array_of(member))], default=wrapped)
        collection = _f("flatten", _f("transform", collection, _lambda(v, body)))
    return self.sql(collection)


def _spark_elements(self: Generator, e: jf.JsonElements) -> str:
    pos, col = exp.column("pos", quoted=True), exp.column("col", quoted=True)
    inner = exp.select(col.as_("value", quoted=True), exp.Add(this=pos, expression=exp.Literal.number(1)).as_("idx", quoted=True)).from_(
        exp.Table(this=_f("posexplode", e.this)))
    return f"LATERAL ({self.sql(inner)}) AS {self.sql(e.args['alias'])}"


def _spark_of(self: Generator, e: jf.CollectionOf) -> str:
    x = exp.to_identifier("x", quoted=True)
    return self.sql(_f("filter", exp.Array(expressions=list(e.expressions)), _lambda(x, exp.column(x).is_(exp.null()).not_())))


SPARK_TRANSFORMS: dict[type[exp.Expression], Transform] = {
    jf.JsonGet: lambda self, e: self.sql(_f("get_json_object", e.this, _s("$" + "".join(f".{n}" for n, _ in jf.steps_of(e))))),
    jf.JsonGetAll: _spark_get_all,
    jf.JsonText: lambda self, e: self.sql(e.this),
    jf.ToJson: lambda self, e: self.sql(exp.cast(e.this, "STRING")),
    jf.CollectionOf: _spark_of,
    jf.CollectionFilter: lambda self, e: self.sql(_f("filter", e.this, _lambda(_var(e), e.args["condition"]))),
    jf.CollectionFlatMap: lambda self, e: self.sql(_f("flatten", _f("transform", e.this, _lambda(_var(e), e.args["body"])))),
    jf.CollectionAt: lambda self, e: self.sql(_f("try_element_at", e.this, exp.Add(this=e.args["index"], expression=exp.Literal.number(1)))),
    jf.CollectionCount: lambda self, e: self.sql(exp.Coalesce(this=_f("size", e.this), expressions=[exp.Literal.number(0)])),
    jf.CollectionJoin: lambda self, e: self.sql(_f("array_join", e.this, e.args["separator"])),
    jf.CollectionToJson: lambda self, e: self.sql(_f("to_json", e.this)),
    jf.JsonElements: _spark_elements,
    jf.JsonTextBundle: lambda self, e: "NULL",
    jf.JsonTextPick: lambda self, e: self.sql(e.args["original"]),
}


# FHIR date/dateTime text → UTC TIMESTAMP bounds (fhir_time.py). PostgreSQL has no TRY_CAST, and
# sqlglot writes TRY_CAST as CAST for Spark, which fails on bad text in ANSI mode (Spark 4's default)
for _transforms, _try_cast in ((DUCKDB_TRANSFORMS, True), (POSTGRES_TRANSFORMS, False), (SPARK_TRANSFORMS, False)):
    _transforms[FhirTimeLow] = lambda self, e, t=_try_cast: self.sql(expand_bound(e.this, upper=False, try_cast=t))
    _transforms[FhirTimeHigh] = lambda self, e, t=_try_cast: self.sql(expand_bound(e.this, upper=True, try_cast=t))


def _spark_cte(self: Generator, e: exp.CTE) -> str:
    """Spark has no MATERIALIZED hint (it plans CTEs itself): render the CTE without it."""
    plain = e.copy()
    plain.set("materialized", None)
    return Generator.cte_sql(self, plain)


SPARK_TRANSFORMS[exp.CTE] = _spark_cte


class DicDuckDB(DuckDB):
    class Generator(DuckDB.Generator):
        TRANSFORMS = {**DuckDB.Generator.TRANSFORMS, **DUCKDB_TRANSFORMS}


class DicPostgres(Postgres):
    class Generator(Postgres.Generator):
        TRANSFORMS = {**Postgres.Generator.TRANSFORMS, **POSTGRES_TRANSFORMS}
        # JSONB: indexed, de-duplicated keys, and the jsonb_* functions our views use.
        TYPE_MAPPING = {**Postgres.Generator.TYPE_MAPPING, exp.DataType.Type.JSON: "JSONB"}


class DicSpark(Spark):
    class Generator(Spark.Generator):
        TRANSFORMS = {**Spark.Generator.TRANSFORMS, **SPARK_TRANSFORMS}
        # Spark keeps JSON as text and parses it with get_json_object/from_json.
        TYPE_MAPPING = {**Spark.Generator.TYPE_MAPPING, exp.DataType.Type.JSON: "STRING"}


DIALECTS = {Engine.duckdb: DicDuckDB, Engine.postgres: DicPostgres, Engine.spark: DicSpark}
