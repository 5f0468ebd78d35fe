"""The reference evaluator: a ViewDefinition over FHIR resources (dicts), row by row, in Python.

It follows the SQL-on-FHIR v2 processing algorithm (https://sql-on-fhir.org/ig/latest/):
each select yields rows for its focus (the resource, each `forEach`/`forEachOrNull` item, or
every node reached by `repeat`); its columns, nested selects and `unionAll` are cross-joined;
`forEachOrNull` over nothing yields one row with nulls; `%rowIndex` is the position in the
nearest iteration (0 outside any). The SQL compiler must give the same rows; where it cannot
compile a view, the materializer falls back to this evaluator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from itertools import product
from typing import Any

from dic.errors import DefinitionError, Problem
from dic.views.fhirpath import FhirPath, FhirPathEvaluationError, FhirPathSyntaxError, plain_value
from dic.views.view_definition import Column, Select, ViewDefinition

INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})


@dataclass(frozen=True)
class ViewColumn:
    """One column of a view's output, in output order."""

    name: str
    type: str | None
    collection: bool


def view_columns(view: ViewDefinition) -> list[ViewColumn]:
    """The ordered output schema: a select's columns, then its nested selects', then its unionAll's."""
    columns: list[ViewColumn] = []
    for select in view.select:
        columns.extend(_select_columns(select))
    return columns


def _select_columns(select: Select) -> list[ViewColumn]:
    columns = [ViewColumn(c.name, c.type, bool(c.collection)) for c in select.column]
    for nested in select.select:
        columns.extend(_select_columns(nested))
    if select.unionAll:
        columns.extend(_select_columns(select.unionAll[0]))
    return columns


def constant_values(view: ViewDefinition) -> dict[str, Any]:
    """`%name` → value of the constant's single value[x] (decimals as Decimal, as FHIRPath has them)."""
    values = {}
    for constant in view.constant:
        value = constant.value
        if isinstance(value, float):
            value = Decimal(str(value))
        values[constant.name] = value
    return values


# --- the plan: the view with every path parsed once -------------------------------------------


class _Evaluation:
    """The state of one view's evaluation: its source name and constants."""

    def __init__(self, view: ViewDefinition):
        self.source = view.name or view.url or view.resource
        self.constants = constant_values(view)

    def fail(self, pointer: str, message: str, cause: Exception | None = None) -> DefinitionError:
        error = DefinitionError(self.source, [Problem(pointer, message)])
        error.__cause__ = cause
        return error


def _compile(path: str, pointer: str, evaluation: _Evaluation) -> FhirPath:
    try:
        return FhirPath(path)
    except FhirPathSyntaxError as error:
        raise evaluation.fail(pointer, str(error), error) from error


@dataclass
class _ColumnPlan:
    column: Column
    path: FhirPath
    pointer: str


@dataclass
class _SelectPlan:
    pointer: str
    columns: list[_ColumnPlan]
    selects: list[_SelectPlan]
    union: list[_SelectPlan]
    for_each: FhirPath | None
    or_null: bool
    repeat: list[FhirPath]
    names: list[str]


def _plan(select: Select, pointer: str, evaluation: _Evaluation) -> _SelectPlan:
    iterate = select.forEach if select.forEach is not None else select.forEachOrNull
    iterate_key = "forEach" if select.forEach is not None else "forEachOrNull"
    return _SelectPlan(
        pointer=pointer,
        columns=[
            _ColumnPlan(
                c, _compile(c.path, f"{pointer}/column/{i}/path", evaluation), f"{pointer}/column/{i}"
            )
            for i, c in enumerate(select.column)
        ],
        selects=[_plan(s, f"{pointer}/select/{i}", evaluation) for i, s in enumerate(select.select)],
        union=[_plan(s, f"{pointer}/unionAll/{i}", evaluation) for i, s in enumerate(select.unionAll)],
        for_each=None if iterate is None else _compile(iterate, f"{pointer}/{iterate_key}", evaluation),
        or_null=select.forEach is None and select.forEachOrNull is not None,
        repeat=[_compile(p, f"{pointer}/repeat/{i}", evaluation) for i, p in enumerate(select.repeat or [])],
        names=[c.name for c in _select_columns(select)],
    )


# --- evaluation ----------------------------------------------------------------------------


class ViewEvaluator:
    """A view with every path parsed once, evaluated resource by resource.

    Raises DefinitionError when a path fails on a resource, or a column that is not a
    collection yields more than one value (the problem names the column and the resource).
    """

    def __init__(self, view: ViewDefinition):
        self.view = view
        self._evaluation = _Evaluation(view)
        self._plans = [_plan(s, f"/select/{i}", self._evaluation) for i, s in enumerate(view.select)]
        self._wheres = [_compile(w.path, f"/where/{i}/path", self._evaluation) for i, w in enumerate(view.where)]
        self._names = [c.name for c in view_columns(view)]

    def rows(self, resource: dict) -> Iterator[dict]:
        """Rows of the view for one resource (none for another resource type), in column order."""
        evaluation = self._evaluation
        if resource.get("resourceType") != self.view.resource:
            return
        if not all(_is_true(w, resource, f"/where/{i}/path", evaluation) for i, w in enumerate(self._wheres)):
            return
        parts = [_rows(plan, resource, 0, evaluation, resource) for plan in self._plans]
        for combination in product(*parts):
            merged: dict[str, Any] = {}
            for part in combination:
                merged.update(part)
            yield {name: merged.get(name) for name in self._names}


def evaluate_view(view: ViewDefinition, resources: Iterable[dict]) -> Iterator[dict]:
    """Rows of `view` over `resources` (other resource types are skipped), each a dict in column order."""
    evaluator = ViewEvaluator(view)
    for resource in resources:
        yield from evaluator.rows(resource)


def _describe(resource: Mapping) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _run(
    path: FhirPath, focus: Any, variables: dict, pointer: str, evaluation: _Evaluation, resource: Mapping
) -> list:
    try:
        return path.evaluate(focus, variables)
    except FhirPathEvaluationError as error:
        raise evaluation.fail(pointer, f"failed on {_describe(resource)}: {error}", error) from error


def _is_true(path: FhirPath, resource: Mapping, pointer: str, evaluation: _Evaluation) -> bool:
    result = _run(path, resource, {**evaluation.constants, "rowIndex": 0}, pointer, evaluation, resource)
    return len(result) == 1 and plain_value(result[0]) is True


def _repeat_nodes(
    focus: Any,
    paths: list[FhirPath],
    variables: dict,
    plan: _SelectPlan,
    evaluation: _Evaluation,
    resource: Mapping,
) -> list:
    """Every node reached from `focus` by any of `paths`, recursively, depth first (focus excluded)."""
    found = []
    for position, path in enumerate(paths):
        for child in _run(path, focus, variables, f"{plan.pointer}/repeat/{position}", evaluation, resource):
            found.append(child)
            found.extend(_repeat_nodes(child, paths, variables, plan, evaluation, resource))
    return found


def _rows(
    plan: _SelectPlan, focus: Any, row_index: int, evaluation: _Evaluation, resource: Mapping
) -> list[dict]:
    variables = {**evaluation.constants, "rowIndex": row_index}
    if plan.for_each is not None:
        foci = _run(plan.for_each, focus, variables, plan.pointer, evaluation, resource)
        foci = [f for f in foci if not _is_primitive_extension(f)]
    elif plan.repeat:
        foci = _repeat_nodes(focus, plan.repeat, variables, plan, evaluation, resource)
    else:
        return _focus_rows(plan, focus, row_index, evaluation, resource)
    rows = []
    for position, item in enumerate(foci):
        rows.extend(_focus_rows(plan, item, position, evaluation, resource))
    if not foci and plan.or_null:
        rows.append(_null_row(plan, evaluation, resource))
    return rows


def _is_primitive_extension(node: Any) -> bool:
    data = getattr(node, "data", node)
    return isinstance(data, Mapping) and list(data) == ["extension"]


def _null_row(plan: _SelectPlan, evaluation: _Evaluation, resource: Mapping) -> dict:
    """forEachOrNull over nothing: own columns on an empty focus (so %rowIndex is 0), the rest null."""
    row = dict.fromkeys(plan.names)
    row.update(_column_values(plan, [], 0, evaluation, resource))
    return row


def _focus_rows(
    plan: _SelectPlan, focus: Any, row_index: int, evaluation: _Evaluation, resource: Mapping
) -> list[dict]:
    parts = [[_column_values(plan, focus, row_index, evaluation, resource)]]
    parts.extend(_rows(nested, focus, row_index, evaluation, resource) for nested in plan.selects)
    if plan.union:
        parts.append(
            [row for branch in plan.union for row in _rows(branch, focus, row_index, evaluation, resource)]
        )
    rows = []
    for combination in product(*parts):
        merged: dict[str, Any] = {}
        for part in combination:
            merged.update(part)
        rows.append(merged)
    return rows


def _column_values(
    plan: _SelectPlan, focus: Any, row_index: int, evaluation: _Evaluation, resource: Mapping
) -> dict[str, Any]:
    variables = {**evaluation.constants, "rowIndex": row_index}
    values = {}
    for column_plan in plan.columns:
        column = column_plan.column
        try:
            found = column_plan.path.values(focus, variables)
        except FhirPathEvaluationError as error:
            raise evaluation.fail(
                column_plan.pointer, f"failed on {_describe(resource)}: {error}", error
            ) from error
        if column.collection:
            values[column.name] = [coerce_value(v, column.type) for v in found]
        elif len(found) > 1:
            raise evaluation.fail(
                column_plan.pointer,
                f"'{column.path}' gave {len(found)} values for {_describe(resource)}, but column '{column.name}' "
                'is not a collection: add first() to the path or set "collection": true',
            )
        else:
            values[column.name] = coerce_value(found[0], column.type) if found else None
    return values


def coerce_value(value: Any, fhir_type: str | None) -> Any:
    """A FHIRPath value as the column's Python value: integer types → int, decimal → float, else as is."""
    if isinstance(value, bool) or value is None:
        return value
    if fhir_type in INTEGER_TYPES and isinstance(value, int | Decimal) and value == int(value):
        return int(value)
    if isinstance(value, Decimal):
        return float(value)
    return value
