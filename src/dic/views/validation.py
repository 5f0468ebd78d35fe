"""Validate a ViewDefinition: every problem at once, each with its JSON pointer.

Structure comes from the Pydantic model (`view_definition.py`); the named rules below work
on the raw JSON, so one pass reports a wrong type next to an unknown function:

- resource-present:   `resource` names an R4 resource type
- select-present:     at least one select
- column-name:        names match ^[A-Za-z][A-Za-z0-9_]*$ and are unique across the view's output
- one-iteration:      forEach, forEachOrNull and repeat are not combined in one select
- union-columns:      every unionAll branch has the same column names in the same order
- fhirpath-syntax:    every path parses, calls only known functions, uses only defined %constants
- where-boolean:      a where path yields a boolean, where the R4 model tells the type
- constant-value:     a constant has a valid name and exactly one value[x]
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import ValidationError

from dic.errors import DefinitionError, Problem
from dic.views.fhirpath import (
    FUNCTION_NAMES,
    R4_MODEL,
    FhirPathSyntaxError,
    constants_used,
    functions_used,
    parse_path,
    result_type,
    unknown_function_message,
)
from dic.views.view_definition import ViewDefinition

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Environment variables FHIRPath defines, plus the SQL-on-FHIR %rowIndex.
BUILT_IN_VARIABLES = frozenset({"rowIndex", "resource", "rootResource", "context", "ucum", "sct", "loinc"})
_RESOURCE_BASES = {"DomainResource", "Resource"}
RESOURCE_TYPES: frozenset[str] = frozenset(
    name
    for name, parent in R4_MODEL["type2Parent"].items()
    if parent in _RESOURCE_BASES and name[0].isupper()
) - {"DomainResource"}


def validate_view(raw: Any, source: str = "<view>") -> ViewDefinition:
    """The parsed view, or DefinitionError(source, problems) listing every problem found."""
    if not isinstance(raw, dict):
        raise DefinitionError(
            source, [Problem("", f"a ViewDefinition is a JSON object, not {type(raw).__name__}")]
        )
    problems = _structure_problems(raw)
    problems.extend(_ViewRules(raw).check())
    if problems:
        raise DefinitionError(source, _unique(problems))
    return ViewDefinition.model_validate(raw)


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _pointer(location: tuple) -> str:
    return "".join(f"/{part}" for part in location)


def _structure_problems(raw: dict) -> list[Problem]:
    try:
        ViewDefinition.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            location = tuple(p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            if item["type"] == "missing":
                message = f"required element '{location[-1]}' is missing"
            else:
                message = f"{item['msg']} (got {type(item.get('input')).__name__})"
            problems.append(Problem(_pointer(location), message))
        return problems
    return []


class _ViewRules:
    """The semantic rules, walking the raw JSON defensively (structure errors are reported above)."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.problems: list[Problem] = []
        constants = raw.get("constant")
        self.constant_names = (
            {c["name"] for c in constants if isinstance(c, dict) and isinstance(c.get("name"), str)}
            if isinstance(constants, list)
            else set()
        )
        resource = raw.get("resource")
        self.resource_type = resource if isinstance(resource, str) and resource in RESOURCE_TYPES else None

    def add(self, pointer: str, message: str) -> None:
        self.problems.append(Problem(pointer, message))

    def check(self) -> list[Problem]:
        self._check_resource()
        self._check_constants()
        selects = self.raw.get("select")
        if isinstance(selects, list):
            if not selects:
                self.add("/select", "a view needs at least one select")
            for i, select in enumerate(selects):
                self._check_select(select, f"/select/{i}")
            self._check_unique_names(selects)
        wheres = self.raw.get("where")
        if isinstance(wheres, list):
            for i, where in enumerate(wheres):
                if isinstance(where, dict) and isinstance(where.get("path"), str):
                    self._check_where(where["path"], f"/where/{i}/path")
        return self.problems

    def _check_resource(self) -> None:
        resource = self.raw.get("resource")
        if isinstance(resource, str) and resource not in RESOURCE_TYPES:
            close = difflib.get_close_matches(resource, sorted(RESOURCE_TYPES), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            self.add("/resource", f"'{resource}' is not an R4 resource type.{hint}")
        if "select" not in self.raw:
            self.add("/select", "required element 'select' is missing")

    def _check_constants(self) -> None:
        constants = self.raw.get("constant")
        if not isinstance(constants, list):
            return
        seen: set[str] = set()
        for i, constant in enumerate(constants):
            if not isinstance(constant, dict):
                continue
            name = constant.get("name")
            if isinstance(name, str):
                if not NAME.match(name):
                    self.add(f"/constant/{i}/name", f"'{name}' is not a valid name (^[A-Za-z][A-Za-z0-9_]*$)")
                if name in seen:
                    self.add(f"/constant/{i}/name", f"constant '{name}' is defined twice")
                seen.add(name)
            values = [k for k in constant if k.startswith("value")]
            if len(values) != 1:
                found = "none" if not values else ", ".join(values)
                self.add(f"/constant/{i}", f"a constant needs exactly one value[x] element (found {found})")

    def _check_select(self, select: Any, pointer: str) -> None:
        if not isinstance(select, dict):
            return
        iterations = [k for k in ("forEach", "forEachOrNull", "repeat") if select.get(k) is not None]
        if len(iterations) > 1:
            self.add(
                pointer, f"{' and '.join(iterations)} cannot be combined in one select; nest a select instead"
            )
        for key in ("forEach", "forEachOrNull"):
            if isinstance(select.get(key), str):
                self._check_path(select[key], f"{pointer}/{key}")
        repeat = select.get("repeat")
        if isinstance(repeat, list):
            if not repeat:
                self.add(f"{pointer}/repeat", "repeat needs at least one path")
            for i, path in enumerate(repeat):
                if isinstance(path, str):
                    self._check_path(path, f"{pointer}/repeat/{i}")
        columns = select.get("column")
        if isinstance(columns, list):
            for i, column in enumerate(columns):
                if not isinstance(column, dict):
                    continue
                name = column.get("name")
                if isinstance(name, str) and not NAME.match(name):
                    self.add(
                        f"{pointer}/column/{i}/name",
                        f"'{name}' is not a valid name (^[A-Za-z][A-Za-z0-9_]*$)",
                    )
                if isinstance(column.get("path"), str):
                    self._check_path(column["path"], f"{pointer}/column/{i}/path")
        for key in ("select", "unionAll"):
            children = select.get(key)
            if isinstance(children, list):
                for i, child in enumerate(children):
                    self._check_select(child, f"{pointer}/{key}/{i}")
        union = select.get("unionAll")
        if isinstance(union, list) and union:
            first = _output_names(union[0])
            for i, branch in enumerate(union[1:], start=1):
                names = _output_names(branch)
                if names != first:
                    self.add(
                        f"{pointer}/unionAll/{i}",
                        f"unionAll branches need the same columns in the same order: {names} differs from {first}",
                    )

    def _check_unique_names(self, selects: list) -> None:
        seen: set[str] = set()
        for name in (n for s in selects for n in _output_names(s)):
            if name in seen:
                self.add("/select", f"column name '{name}' is used more than once in the view's output")
            seen.add(name)

    def _check_path(self, expression: str, pointer: str) -> dict | None:
        try:
            ast = parse_path(expression)
        except FhirPathSyntaxError as error:
            self.add(pointer, f"'{expression}': {error}")
            return None
        for name in dict.fromkeys(functions_used(ast)):
            if name not in FUNCTION_NAMES:
                self.add(pointer, unknown_function_message(name))
        for name in dict.fromkeys(constants_used(ast)):
            if name not in self.constant_names and name not in BUILT_IN_VARIABLES:
                close = difflib.get_close_matches(name, sorted(self.constant_names), n=1)
                hint = f" Did you mean '%{close[0]}'?" if close else " Define it under 'constant'."
                self.add(pointer, f"unknown constant '%{name}'.{hint}")
        return ast

    def _check_where(self, expression: str, pointer: str) -> None:
        ast = self._check_path(expression, pointer)
        if ast is None or self.resource_type is None:
            return
        found = result_type(ast, self.resource_type)
        if found is not None and found != "boolean":
            self.add(pointer, f"a where path must yield a boolean, but '{expression}' yields {found}")


def _output_names(select: Any) -> list[str]:
    """Column names a select contributes to the output, in order (unionAll: its first branch's)."""
    if not isinstance(select, dict):
        return []
    names = []
    columns = select.get("column")
    if isinstance(columns, list):
        names.extend(c["name"] for c in columns if isinstance(c, dict) and isinstance(c.get("name"), str))
    nested = select.get("select")
    if isinstance(nested, list):
        for child in nested:
            names.extend(_output_names(child))
    union = select.get("unionAll")
    if isinstance(union, list) and union:
        names.extend(_output_names(union[0]))
    return names
