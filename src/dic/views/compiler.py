"""ViewDefinition → one engine-neutral sqlglot query over the `resource` table.

`compile_view(view)` returns a `CompiledView`; `CompiledView.select(resource_filter, with_key)`
gives the query. FHIRPath is compiled to the JSON nodes of `dic.engines.json_functions`,
which each engine renders in its dialect. A resource's scalar paths become direct JSON
extraction; `forEach`/`forEachOrNull` become lateral joins over the array's elements;
`unionAll` a lateral UNION ALL subquery. Which elements are arrays comes from the FHIR
element table (`dic.fhir.elements`); unknown elements are checked at run time.

A construct outside the compiled subset raises `NotCompilableError` naming it and its JSON
pointer; the materializer then falls back to the reference evaluator.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace

from sqlglot import exp

from dic.engines import column, table
from dic.engines import json_functions as jf
from dic.errors import NotCompilableError, Problem
from dic.fhir import choice_element, choice_types, element, known_type
from dic.views.column_types import sql_type
from dic.views.fhirpath_syntax import (
    Binary,
    Call,
    Constant,
    FhirPathSyntaxError,
    Index,
    Literal,
    Member,
    Node,
    This,
    Unary,
    parse_fhirpath,
)
from dic.views.view_definition import Column, Select, ViewDefinition

RESOURCE_ALIAS = "r"
_ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEY_COLUMN = "_key"
BUNDLE_COLUMN = "_texts"
# FHIR primitive types whose JSON value is not text.
_FHIR_KINDS = {"boolean": "boolean", "integer": "integer", "positiveInt": "integer", "unsignedInt": "integer",
               "integer64": "integer", "decimal": "number"}
_CONSTANT_KINDS = {"valueBoolean": "boolean", "valueInteger": "integer", "valuePositiveInt": "integer",
                   "valueUnsignedInt": "integer", "valueInteger64": "integer", "valueDecimal": "number"}


class _Unsupported(Exception):
    """Raised inside the compiler; turned into NotCompilableError with the JSON pointer."""


@dataclass(frozen=True)
class Value:
    """A compiled FHIRPath value.

    `many`: a collection (else at most one value). `kind`: "json" for FHIR data, or the SQL
    scalar kind "text", "number", "integer", "boolean". A path from one JSON value keeps its
    `root` and `steps` so consecutive member steps fuse into one JSON extraction.
    """

    sql: exp.Expression
    many: bool
    kind: str = "json"
    fhir_type: str | None = None
    root: exp.Expression | None = None
    steps: tuple[tuple[str, str], ...] = ()
    root_many: bool = False


def _path_value(root: exp.Expression, steps: tuple[tuple[str, str], ...], fhir_type: str | None,
                root_many: bool = False) -> Value:
    """Member `steps` from `root`: one JSON value, or every element of a collection (`root_many`)."""
    if root_many:
        node = jf.JsonGetAll(this=root, steps=jf.steps_node(steps), collection=exp.true())
        return Value(node, True, "json", fhir_type, root, steps, True)
    if not steps:
        return Value(root, False, "json", fhir_type, root, ())
    if all(cardinality == jf.ONE for _, cardinality in steps):
        return Value(jf.JsonGet(this=root, steps=jf.steps_node(steps)), False, "json", fhir_type, root, steps)
    return Value(jf.JsonGetAll(this=root, steps=jf.steps_node(steps)), True, "json", fhir_type, root, steps)


@dataclass
class _Scope:
    this: Value
    constants: dict[str, Value]
    row_index: exp.Expression
    names: itertools.count = field(default_factory=lambda: itertools.count(1))

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    def with_this(self, this: Value, row_index: exp.Expression | None = None) -> _Scope:
        return replace(self, this=this, row_index=self.row_index if row_index is None else row_index)


# ------------------------------------------------------------------------------- conversions
def _one(value: Value) -> Value:
    if not value.many:
        return value
    return Value(jf.CollectionAt(this=value.sql, index=exp.Literal.number(0)), False, value.kind, value.fhir_type)


def _collection(value: Value) -> exp.Expression:
    if value.many:
        return value.sql
    return jf.CollectionOf(expressions=[_json(value).sql])


def _json(value: Value) -> Value:
    value = _one(value)
    return value if value.kind == "json" else Value(jf.ToJson(this=value.sql), False, "json")


def _natural_kind(value: Value) -> str:
    return _FHIR_KINDS.get(value.fhir_type or "", "text") if value.kind == "json" else value.kind


def _as(value: Value, kind: str) -> exp.Expression:
    """The single value as a SQL scalar of `kind` ("text", "number", "integer", "boolean")."""
    value = _one(value)
    sql_types = {"text": "TEXT", "number": "DOUBLE", "integer": "BIGINT", "boolean": "BOOLEAN"}
    if value.kind == "json":
        text = jf.JsonText(this=value.sql)
        return text if kind == "text" else exp.cast(text, sql_types[kind])
    if value.kind == kind or (value.kind == "integer" and kind == "number"):
        return value.sql
    return exp.cast(value.sql, sql_types[kind])


def _count(value: Value) -> exp.Expression:
    return jf.CollectionCount(this=value.sql)


def _exists(value: Value) -> exp.Expression:
    if value.many:
        return exp.GT(this=_count(value), expression=exp.Literal.number(0))
    return exp.Not(this=exp.Is(this=value.sql, expression=exp.null()))


# ------------------------------------------------------------------------------- FHIRPath
class _FhirPathCompiler:
    def __init__(self, resource_type: str):
        self.resource_type = resource_type
        self.names = itertools.count(1)

    def compile(self, node: Node, scope: _Scope) -> Value:
        method = getattr(self, f"_{type(node).__name__.lower()}")
        return method(node, scope)

    def _literal(self, node: Literal, scope: _Scope) -> Value:
        if node.kind == "empty":
            return Value(exp.null(), False, "text")
        kind = {"decimal": "number", "string": "text"}.get(node.kind, node.kind)
        return Value(exp.convert(node.value), False, kind)

    def _this(self, node: This, scope: _Scope) -> Value:
        return scope.this

    def _constant(self, node: Constant, scope: _Scope) -> Value:
        if node.name == "rowIndex":
            return Value(scope.row_index, False, "integer")
        if node.name not in scope.constants:
            raise _Unsupported(f"constant %{node.name}")
        return scope.constants[node.name]

    def _member(self, node: Member, scope: _Scope) -> Value:
        base = scope.this if node.base is None else self.compile(node.base, scope)
        if node.base is None and node.name == self.resource_type and base.fhir_type == self.resource_type:
            return base  # `Patient.name` at the root
        return self._step(base, node.name)

    def _step(self, base: Value, name: str) -> Value:
        if not _ELEMENT_NAME.fullmatch(name):
            raise _Unsupported(f"member name {name!r} (only letters, digits and '_' are compiled)")
        if base.kind != "json":
            raise _Unsupported(f"member '{name}' of a computed value")
        found = element(base.fhir_type, name)
        if found is None and known_type(base.fhir_type) and choice_types(base.fhir_type, name):
            raise _Unsupported(f"choice element '{name}' without ofType()")
        cardinality = jf.UNKNOWN if found is None else (jf.MANY if found.is_array else jf.ONE)
        fhir_type = None if found is None else found.type
        if base.root is not None:
            return _path_value(base.root, (*base.steps, (name, cardinality)), fhir_type, base.root_many)
        return _path_value(base.sql, ((name, cardinality),), fhir_type, base.many)

    def _index(self, node: Index, scope: _Scope) -> Value:
        base = self.compile(node.base, scope)
        index = _as(self.compile(node.index, scope), "integer")
        return Value(jf.CollectionAt(this=_collection(base), index=index), False, base.kind, base.fhir_type)

    def _unary(self, node: Unary, scope: _Scope) -> Value:
        operand = self.compile(node.operand, scope)
        kind = "integer" if _natural_kind(operand) == "integer" else "number"
        sql = _as(operand, kind)
        return Value(exp.Neg(this=sql) if node.op == "-" else sql, False, kind)

    # ---- functions
    def _call(self, node: Call, scope: _Scope) -> Value:
        name = node.name
        if name == "getResourceKey" and node.base is None and not node.args:
            key = exp.Concat(expressions=[column("resource_type", RESOURCE_ALIAS), exp.Literal.string("/"),
                                          column("id", RESOURCE_ALIAS)])
            return Value(key, False, "text")
        if name == "ofType":
            return self._of_type(node, scope)
        if name == "extension" and len(node.args) == 1:
            url = Binary("=", Member(None, "url"), node.args[0])
            return self.compile(Call(Member(node.base, "extension"), "where", (url,)), scope)
        base = scope.this if node.base is None else self.compile(node.base, scope)
        if name == "where" and len(node.args) == 1:
            return self._where(base, node.args[0], scope)
        if name == "exists":
            if node.args:
                base = self._where(base, node.args[0], scope)
            return Value(_exists(base), False, "boolean")
        if name == "empty" and not node.args:
            return Value(exp.Not(this=exp.Paren(this=_exists(base))), False, "boolean")
        if name == "first" and not node.args:
            return _one(base)
        if name == "count" and not node.args:
            return Value(_count(Value(_collection(base), True)), False, "integer")
        if name == "not" and not node.args:
            return Value(exp.Not(this=exp.Paren(this=_as(base, "boolean"))), False, "boolean")
        if name == "join" and len(node.args) <= 1:
            separator = _as(self.compile(node.args[0], scope), "text") if node.args else exp.Literal.string("")
            return Value(jf.CollectionJoin(this=_collection(base), separator=separator), False, "text")
        if name == "getReferenceKey" and len(node.args) <= 1:
            return self._reference_key(base, node.args[0] if node.args else None)
        raise _Unsupported(f"function '{name}()'")

    def _of_type(self, node: Call, scope: _Scope) -> Value:
        if len(node.args) != 1 or not isinstance(node.args[0], Member) or node.args[0].base is not None:
            raise _Unsupported("ofType() with a non-type argument")
        type_name = node.args[0].name
        if not isinstance(node.base, Member):
            raise _Unsupported("ofType() on something other than a choice element")
        owner = scope.this if node.base.base is None else self.compile(node.base.base, scope)
        found = choice_element(owner.fhir_type, node.base.name, type_name)
        if found is None:
            if known_type(owner.fhir_type):
                return Value(exp.null(), False, "text")  # a type the choice does not allow: always empty
            raise _Unsupported(f"ofType({type_name}) on an element of unknown type")
        return self._step(owner, found.name)

    def _where(self, base: Value, criterion: Node, scope: _Scope) -> Value:
        var_name = scope.fresh("w")
        var = exp.to_identifier(var_name, quoted=True)
        element_value = Value(exp.column(var), False, "json", base.fhir_type, exp.column(var), ())
        condition = _as(self.compile(criterion, scope.with_this(element_value)), "boolean")
        filtered = jf.CollectionFilter(this=_collection(base), var=var, condition=condition)
        return Value(filtered, True, "json", base.fhir_type)

    def _reference_key(self, base: Value, type_node: Node | None) -> Value:
        """'Patient/p1' from 'Patient/p1', '.../Patient/p1' or '.../Patient/p1/_history/2'.

        String functions, not a regular expression: PostgreSQL's regex engine costs ~8 µs a call."""
        reference = _as(self._step(base, "reference"), "text")
        unversioned = exp.SplitPart(this=reference, delimiter=exp.Literal.string("/_history/"),
                                    part_index=exp.Literal.number(1))

        def part(index: int) -> exp.Expression:
            return exp.SplitPart(this=unversioned.copy(), delimiter=exp.Literal.string("/"),
                                 part_index=exp.Literal.number(index))

        resource_type, resource_id = part(-2), part(-1)
        has_id = exp.NEQ(this=resource_id, expression=exp.Literal.string(""))
        if type_node is None:
            matches = exp.NEQ(this=resource_type, expression=exp.Literal.string(""))
            key = exp.Concat(expressions=[resource_type.copy(), exp.Literal.string("/"), resource_id.copy()])
        else:
            if not isinstance(type_node, Member) or type_node.base is not None or not type_node.name.isalpha():
                raise _Unsupported("getReferenceKey() with a non-type argument")
            matches = exp.EQ(this=resource_type, expression=exp.Literal.string(type_node.name))
            key = exp.Concat(expressions=[exp.Literal.string(type_node.name + "/"), resource_id.copy()])
        return Value(exp.Case(ifs=[exp.If(this=exp.and_(matches, has_id), true=key)]), False, "text")

    # ---- operators
    def _binary(self, node: Binary, scope: _Scope) -> Value:
        left, right = self.compile(node.left, scope), self.compile(node.right, scope)
        op = node.op
        if op in ("and", "or", "implies", "xor"):
            a, b = exp.Paren(this=_as(left, "boolean")), exp.Paren(this=_as(right, "boolean"))
            sql = {"and": lambda: exp.And(this=a, expression=b),
                   "or": lambda: exp.Or(this=a, expression=b),
                   "implies": lambda: exp.Or(this=exp.Not(this=a), expression=b),
                   "xor": lambda: exp.NEQ(this=a, expression=b)}[op]()
            return Value(sql, False, "boolean")
        if op in ("=", "!=", "<", ">", "<=", ">="):
            return self._compare(op, left, right)
        if op in ("+", "-", "*", "/"):
            kinds = {_natural_kind(left), _natural_kind(right)}
            if op == "+" and kinds == {"text"}:
                return Value(exp.DPipe(this=_as(left, "text"), expression=_as(right, "text")), False, "text")
            kind = "integer" if kinds == {"integer"} and op != "/" else "number"
            a, b = _as(left, kind), _as(right, kind)
            make = {"+": exp.Add, "-": exp.Sub, "*": exp.Mul, "/": exp.Div}[op]
            sql = make(this=a, expression=b) if op != "/" else exp.Div(this=a, expression=b, typed=False, safe=True)
            return Value(exp.Paren(this=sql), False, kind)
        raise _Unsupported(f"operator '{op}'")

    def _compare(self, op: str, left: Value, right: Value) -> Value:
        kinds = {_natural_kind(left), _natural_kind(right)}
        kind = next((k for k in ("boolean", "number", "integer") if k in kinds), "text")
        if kind == "integer":
            kind = "number"
        make = {"=": exp.EQ, "!=": exp.NEQ, "<": exp.LT, ">": exp.GT, "<=": exp.LTE, ">=": exp.GTE}[op]
        sql: exp.Expression = make(this=_as(left, kind), expression=_as(right, kind))
        for side in (left, right):
            if side.many and op in ("=", "!="):
                # collection equality: empty → empty; more than one item → not equal
                count = _count(side)
                sql = exp.Case(ifs=[exp.If(this=exp.EQ(this=count, expression=exp.Literal.number(0)), true=exp.null()),
                                    exp.If(this=exp.GT(this=count.copy(), expression=exp.Literal.number(1)),
                                           true=exp.convert(op == "!="))],
                               default=sql)
        return Value(sql, False, "boolean")


# ------------------------------------------------------------------------------- selects
@dataclass(frozen=True)
class OutputColumn:
    name: str
    sql_type: str  # TEXT, BIGINT, DOUBLE, BOOLEAN or JSON (collections)


def resource_key() -> exp.Expression:
    """The key of the `resource` row under alias `r`: 'Patient/p1', as getResourceKey() gives it."""
    return exp.Concat(expressions=[column("resource_type", RESOURCE_ALIAS), exp.Literal.string("/"),
                                   column("id", RESOURCE_ALIAS)])


@dataclass(frozen=True)
class CompiledView:
    """The compiled view: its output columns in order and the query that produces them."""

    view: ViewDefinition
    columns: list[OutputColumn]
    expressions: list[exp.Expression]
    joins: list[exp.Join]
    where: exp.Condition | None

    def select(self, resource_filter: exp.Condition | None = None, with_key: bool = False) -> exp.Select:
        """The rows of the view, for resources matching `resource_filter` (a condition on
        table alias `r`, the `resource` row); with `_key` ('Patient/p1') if asked."""
        projections = [
            exp.alias_(e.copy(), c.name, quoted=True) for c, e in zip(self.columns, self.expressions, strict=True)
        ]
        if with_key:
            projections.append(exp.alias_(resource_key(), KEY_COLUMN, quoted=True))
        conditions = [
            column("resource_type", RESOURCE_ALIAS).eq(exp.Literal.string(self.view.resource)),
            exp.not_(column("deleted", RESOURCE_ALIAS)),
        ]
        if self.where is not None:
            conditions.append(self.where.copy())
        if resource_filter is not None:
            conditions.append(exp.Paren(this=resource_filter.copy()))
        projections, bundle = _bundle_texts(projections)
        source: exp.Expression = table("resource", RESOURCE_ALIAS)
        if bundle is not None:
            inner = exp.select(exp.Star(), exp.alias_(bundle, BUNDLE_COLUMN, quoted=True)).from_(table("resource"))
            source = exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(RESOURCE_ALIAS, quoted=True)))
        query = exp.select(*projections).from_(source)
        for join in self.joins:
            query = query.join(join.copy())
        return query.where(exp.and_(*conditions))


def _bundle_texts(projections: list[exp.Expression]) -> tuple[list[exp.Expression], exp.Expression | None]:
    """Texts at single-valued paths of the resource, read through one `JsonTextBundle` per row
    (DuckDB then parses each document once instead of once per column)."""
    root = column("content", RESOURCE_ALIAS)
    paths: dict[str, int] = {}
    steps_nodes: list[exp.Expression] = []

    def pick(node: exp.Expression) -> exp.Expression:
        if isinstance(node, jf.JsonText) and isinstance(node.this, jf.JsonGet) and node.this.this == root:
            key = repr(jf.steps_of(node.this))
            if key not in paths:
                paths[key] = len(paths) + 1
                steps_nodes.append(node.this.args["steps"].copy())
            return jf.JsonTextPick(this=column(BUNDLE_COLUMN, RESOURCE_ALIAS), index=exp.Literal.number(paths[key]),
                                   original=node.copy())
        return node

    picked = [p.transform(pick) for p in projections]
    if len(paths) < 2:
        return projections, None
    return picked, jf.JsonTextBundle(this=column("content"), paths=exp.Array(expressions=steps_nodes))


class _ViewCompiler:
    def __init__(self, view: ViewDefinition):
        self.view = view
        self.fhirpath = _FhirPathCompiler(view.resource)
        self.pointer = ""

    def path(self, text: str, pointer: str, scope: _Scope) -> Value:
        self.pointer = pointer
        try:
            return self.fhirpath.compile(parse_fhirpath(text), scope)
        except FhirPathSyntaxError as error:
            raise _Unsupported(f"FHIRPath syntax outside the compiled subset: {error}") from error

    def column(self, col: Column, pointer: str, scope: _Scope) -> tuple[OutputColumn, exp.Expression]:
        value = self.path(col.path, pointer + "/path", scope)
        if col.collection:
            return OutputColumn(col.name, "JSON"), jf.CollectionToJson(this=_collection(value))
        declared = col.type
        if declared is None:
            kind = _natural_kind(value)
            declared = {"integer": "integer", "number": "decimal", "boolean": "boolean"}.get(kind, "string")
        target = sql_type(declared)
        kind = {"BOOLEAN": "boolean", "BIGINT": "integer", "DOUBLE": "number"}.get(target, "text")
        return OutputColumn(col.name, target), _as(value, kind)

    def select(self, sel: Select, pointer: str, scope: _Scope, joins: list[exp.Join]) -> list[tuple[OutputColumn, exp.Expression]]:
        if sel.repeat:
            self.pointer = pointer + "/repeat"
            raise _Unsupported("repeat")
        path, outer = (sel.forEach, False) if sel.forEach is not None else (sel.forEachOrNull, True)
        if path is not None:
            value = self.path(path, pointer + ("/forEachOrNull" if outer else "/forEach"), scope)
            alias = exp.to_identifier(scope.fresh("e"), quoted=True)
            elements = jf.JsonElements(this=_collection(value), alias=alias)
            joins.append(exp.Join(this=elements, side="LEFT", on=exp.true()) if outer
                         else exp.Join(this=elements, kind="CROSS"))
            item = exp.column("value", table=alias.name, quoted=True)
            position = exp.column("idx", table=alias.name, quoted=True)
            index = exp.Coalesce(this=exp.Sub(this=position, expression=exp.Literal.number(1)),
                                 expressions=[exp.Literal.number(0)])
            scope = scope.with_this(Value(item, False, "json", value.fhir_type, item, ()), index)
        columns = [self.column(c, f"{pointer}/column/{i}", scope) for i, c in enumerate(sel.column)]
        for i, nested in enumerate(sel.select):
            columns += self.select(nested, f"{pointer}/select/{i}", scope, joins)
        if sel.unionAll:
            columns += self.union_all(sel.unionAll, f"{pointer}/unionAll", scope, joins)
        return columns

    def union_all(self, branches: list[Select], pointer: str, scope: _Scope, joins: list[exp.Join]) -> list[tuple[OutputColumn, exp.Expression]]:
        queries, first = [], None
        for i, branch in enumerate(branches):
            branch_joins: list[exp.Join] = []
            columns = self.select(branch, f"{pointer}/{i}", scope, branch_joins)
            first = first or [c for c, _ in columns]
            if [c.name for c, _ in columns] != [c.name for c in first]:
                self.pointer = f"{pointer}/{i}"
                raise _Unsupported("unionAll branches with different columns")
            query = exp.select(*[exp.alias_(e, c.name, quoted=True) for c, e in columns])
            if branch_joins:
                query = query.from_(exp.Subquery(this=exp.select(exp.Literal.number(1)),
                                                 alias=exp.TableAlias(this=exp.to_identifier(scope.fresh("one"), quoted=True))))
                for join in branch_joins:
                    query = query.join(join)
            queries.append(query)
        union = queries[0]
        for query in queries[1:]:
            union = exp.union(union, query, distinct=False)
        alias = scope.fresh("u")
        lateral = exp.Lateral(this=exp.Subquery(this=union), alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
        joins.append(exp.Join(this=lateral, kind="CROSS"))
        return [(c, exp.column(c.name, table=alias, quoted=True)) for c in first or []]

    def compile(self) -> CompiledView:
        root = column("content", RESOURCE_ALIAS)
        scope = _Scope(Value(root, False, "json", self.view.resource, root, ()), {}, exp.Literal.number(0))
        for i, constant in enumerate(self.view.constant):
            key = constant.value_key
            if key is None:
                self.pointer = f"/constant/{i}"
                raise _Unsupported("constant without exactly one value[x]")
            kind = _CONSTANT_KINDS.get(key, "text")
            scope.constants[constant.name] = Value(exp.convert(constant.value), False, kind)
        joins: list[exp.Join] = []
        columns: list[tuple[OutputColumn, exp.Expression]] = []
        for i, sel in enumerate(self.view.select):
            columns += self.select(sel, f"/select/{i}", scope, joins)
        conditions = [_as(self.path(w.path, f"/where/{i}/path", scope), "boolean") for i, w in enumerate(self.view.where)]
        where = exp.and_(*[exp.Paren(this=c) for c in conditions]) if conditions else None
        return CompiledView(self.view, [c for c, _ in columns], [e for _, e in columns], joins, where)


def compile_view(view: ViewDefinition) -> CompiledView:
    """Compile `view` to SQL; raises NotCompilableError for constructs outside the subset."""
    compiler = _ViewCompiler(view)
    try:
        return compiler.compile()
    except _Unsupported as error:
        raise NotCompilableError(view.name or view.resource, [Problem(compiler.pointer, f"not compiled to SQL: {error}")]) from error


__all__ = ["CompiledView", "OutputColumn", "compile_view"]
