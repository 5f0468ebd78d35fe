"""FHIRPath for views, on top of fhirpathpy (R4 model), plus the SQL-on-FHIR additions.

fhirpathpy has the grammar and the standard functions (`where`, `ofType`, `extension`,
`join`, `repeat`, ...). What it lacks is added here:

- `getResourceKey()` and `getReferenceKey([type])`, with the key convention the SQL compiler
  shares: a Patient with id "p1" has the key "Patient/p1"; the reference "Patient/p1" (also
  ".../Patient/p1" and "Patient/p1/_history/2") has the key "Patient/p1".
- `lowBoundary()` / `highBoundary()` for decimal, date, dateTime and time.
- a parser that reports syntax errors (fhirpathpy's listener silently recovers) and checks
  that the whole expression was consumed.
- static checks for validation: unknown functions (with a suggestion), `%constants` used,
  and the result type of a path where the R4 model tells it.

Paths are parsed once (`FhirPath`); evaluation calls fhirpathpy's `do_eval` directly so our
functions receive the typed nodes (the library's user-function hook strips the types, which
`lowBoundary()` needs to tell a date from a dateTime).
"""

from __future__ import annotations

import calendar
import difflib
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations import invocation_registry as _LIBRARY_FUNCTIONS
from fhirpathpy.engine.invocations.constants import constants as _library_constants
from fhirpathpy.engine.nodes import FP_Type, ResourceNode, TypeInfo
from fhirpathpy.engine.util import arraify, get_data
from fhirpathpy.models import models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

R4_MODEL: dict = models["r4"]
_PATH_TYPES: dict[str, str] = R4_MODEL["path2Type"]
_CHOICE_PATHS: dict[str, list[str]] = R4_MODEL["choiceTypePaths"]
_TYPE_PARENTS: dict[str, str] = R4_MODEL["type2Parent"]


class FhirPathSyntaxError(ValueError):
    """An expression that does not parse; `validation.py` turns it into a Problem."""


class FhirPathEvaluationError(ValueError):
    """fhirpathpy failed while evaluating; the evaluator wraps it with the view and resource."""


# --- parsing -------------------------------------------------------------------------------


class _RaisingListener(ErrorListener):
    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):
        raise FhirPathSyntaxError(f"syntax error at column {column + 1}: {msg}")


def _lexer_recover(error: Exception) -> None:
    raise FhirPathSyntaxError(f"syntax error: unexpected character ({error})")


def parse_path(expression: str) -> dict:
    """The fhirpathpy AST of `expression`; FhirPathSyntaxError unless all of it parses."""
    if not expression.strip():
        raise FhirPathSyntaxError("empty expression")
    listener = _RaisingListener()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.recover = _lexer_recover
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    tokens = CommonTokenStream(lexer)
    parser = FHIRPathParser(tokens)
    parser.buildParseTrees = True
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    try:
        tree = parser.expression()
    except FhirPathSyntaxError:
        raise
    except Exception as error:  # antlr raises its own recognition errors on bad input
        raise FhirPathSyntaxError(f"syntax error: {error}") from error
    if tokens.LA(1) != Token.EOF:
        raise FhirPathSyntaxError(
            f"syntax error: unexpected '{tokens.LT(1).text}' at column {tokens.LT(1).column + 1}"
        )
    ast_listener = ASTPathListener()
    ParseTreeWalker().walk(ast_listener, tree)
    return ast_listener.parentStack[0]


# --- SQL-on-FHIR functions ---------------------------------------------------------------


def _resource_key(ctx: dict, inputs: list) -> list[str]:
    keys = []
    for item in inputs:
        data = get_data(item)
        if isinstance(data, Mapping) and data.get("resourceType") and data.get("id"):
            keys.append(f"{data['resourceType']}/{data['id']}")
    return keys


_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


def reference_key(reference: str, resource_type: str | None = None) -> str | None:
    """ "Patient/p1" for "Patient/p1", ".../Patient/p1" or "Patient/p1/_history/2"; None otherwise."""
    match = _REFERENCE.search(reference)
    if match is None or (resource_type is not None and match.group(1) != resource_type):
        return None
    return f"{match.group(1)}/{match.group(2)}"


def _reference_key(ctx: dict, inputs: list, type_info: TypeInfo | None = None) -> list[str]:
    wanted = None if type_info is None else type_info.name
    keys = []
    for item in inputs:
        data = get_data(item)
        reference = data.get("reference") if isinstance(data, Mapping) else None
        key = reference_key(reference, wanted) if isinstance(reference, str) else None
        if key is not None:
            keys.append(key)
    return keys


_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_TIME = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")


def _node_type(item: Any) -> str | None:
    if isinstance(item, ResourceNode):
        info = item.get_type_info()
        return None if info is None else info.name.lower()
    return None


def _date_boundary(match: re.Match, high: bool) -> str:
    year, month, day = int(match.group(1)), match.group(2), match.group(3)
    month_n = int(month) if month else (12 if high else 1)
    day_n = int(day) if day else (calendar.monthrange(year, month_n)[1] if high else 1)
    return f"{year:04d}-{month_n:02d}-{day_n:02d}"


def _time_boundary(
    hour: str | None, minute: str | None, second: str | None, fraction: str | None, high: bool
) -> str:
    hour_n = int(hour) if hour else (23 if high else 0)
    minute_n = int(minute) if minute else (59 if high else 0)
    second_n = int(second) if second else (59 if high else 0)
    if fraction:
        millis = (fraction + ("9" if high else "0") * 3)[:3]
    else:
        millis = "999" if high else "000"
    return f"{hour_n:02d}:{minute_n:02d}:{second_n:02d}.{millis}"


def _decimal_boundary(value: Decimal, high: bool) -> Decimal:
    exponent = value.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    half = Decimal(5).scaleb(-(places + 1))
    return value + half if high else value - half


def _boundary(item: Any, high: bool) -> Any:
    data = get_data(item)
    kind = _node_type(item)
    if isinstance(data, bool):
        return None
    if isinstance(data, int | Decimal):
        return float(_decimal_boundary(Decimal(data), high))
    if not isinstance(data, str):
        return None
    if kind == "time" and (match := _TIME.match(data)):
        return _time_boundary(*match.groups(), high)
    if kind == "date" and (match := _DATE.match(data)):
        return _date_boundary(match, high)
    if (kind in ("datetime", "instant") or kind is None) and (match := _DATETIME.match(data)):
        date = _date_boundary(_DATE.match("-".join(g for g in match.groups()[:3] if g)), high)
        time = _time_boundary(*match.groups()[3:7], high)
        zone = match.group(8) or ("-12:00" if high else "+14:00")
        return f"{date}T{time}{zone}"
    return None


def _low_boundary(ctx: dict, inputs: list, precision: Any = None) -> list:
    # The library has no lowBoundary(); precision is not used by the views we know of.
    return [b for b in (_boundary(i, high=False) for i in inputs) if b is not None]


def _high_boundary(ctx: dict, inputs: list, precision: Any = None) -> list:
    return [b for b in (_boundary(i, high=True) for i in inputs) if b is not None]


def _join(ctx: dict, inputs: list, separator: str | list = "") -> str:
    # The library gives {} for an empty input; SQL-on-FHIR expects "" (fhirpath.json "string join").
    values = [get_data(i) for i in inputs if not _is_extension_only(i)]
    if not all(isinstance(v, str) for v in values):
        raise FhirPathEvaluationError("join() needs a collection of strings")
    return (separator if isinstance(separator, str) else "").join(values)


FUNCTIONS: dict[str, dict] = {
    "join": {"fn": _join, "arity": {0: [], 1: ["String"]}},
    "getResourceKey": {"fn": _resource_key, "arity": {0: []}},
    "getReferenceKey": {"fn": _reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "lowBoundary": {"fn": _low_boundary, "arity": {0: [], 1: ["Integer"]}},
    "highBoundary": {"fn": _high_boundary, "arity": {0: [], 1: ["Integer"]}},
}
FUNCTION_NAMES: frozenset[str] = frozenset(_LIBRARY_FUNCTIONS) | frozenset(FUNCTIONS)


# --- static checks -------------------------------------------------------------------------


def _walk(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("children", []):
        yield from _walk(child)


def _identifier(node: dict) -> str:
    return node["text"].strip("`")


def functions_used(ast: dict) -> list[str]:
    return [_identifier(n["children"][0]) for n in _walk(ast) if n.get("type") == "Functn"]


def constants_used(ast: dict) -> list[str]:
    return [_identifier(n["children"][0]) for n in _walk(ast) if n.get("type") == "ExternalConstant"]


def unknown_function_message(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(FUNCTION_NAMES), n=1)
    hint = f" Did you mean '{close[0]}()'?" if close else ""
    return f"unknown function '{name}()'.{hint}"


_BOOLEAN_FUNCTIONS = frozenset(
    [
        "exists",
        "empty",
        "all",
        "allTrue",
        "anyTrue",
        "allFalse",
        "anyFalse",
        "not",
        "hasValue",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "subsetOf",
        "supersetOf",
        "isDistinct",
        "is",
        "convertsToBoolean",
        "convertsToInteger",
        "convertsToDecimal",
        "convertsToString",
        "convertsToDate",
        "convertsToDateTime",
        "convertsToTime",
        "convertsToQuantity",
    ]
)
_BOOLEAN_EXPRESSIONS = frozenset(
    [
        "EqualityExpression",
        "InequalityExpression",
        "AndExpression",
        "OrExpression",
        "XorExpression",
        "ImpliesExpression",
        "MembershipExpression",
    ]
)
_TYPE_PRESERVING = frozenset(["first", "last", "single", "where", "tail", "skip", "take", "distinct"])


def _member_type(owner: str, name: str) -> str | None:
    """The model type (or backbone path) of `owner.name`, None if the model does not say."""
    current: str | None = owner
    while current:
        path = f"{current}.{name}"
        if path in _PATH_TYPES:
            return _PATH_TYPES[path]
        if path in _CHOICE_PATHS:
            return None
        if any(key.startswith(path + ".") for key in _PATH_TYPES):
            return path  # a backbone element: its children are keyed by path
        current = _TYPE_PARENTS.get(current)
    return None


def result_type(ast: dict, resource_type: str) -> str | None:
    """The FHIR type the expression yields ('boolean', 'string', 'HumanName', ...), or None if unknown."""
    return _type_of(ast["children"][0], resource_type)


def _type_of(node: dict, context: str | None) -> str | None:
    kind = node["type"]
    if kind in _BOOLEAN_EXPRESSIONS:
        return "boolean"
    if kind == "TypeExpression":  # `x is T` is a boolean, `x as T` is not known here
        return "boolean" if node.get("terminalNodeText") == ["is"] else None
    if kind == "ParenthesizedTerm":
        return _type_of(node["children"][0], context)
    if kind in ("TermExpression", "InvocationTerm"):
        return _type_of(node["children"][0], context)
    if kind == "LiteralTerm":
        literal = node["children"][0]["type"]
        return {"BooleanLiteral": "boolean", "StringLiteral": "string"}.get(literal)
    if kind == "InvocationExpression":
        return _type_of(node["children"][1], _type_of(node["children"][0], context))
    if kind == "MemberInvocation":
        if context is None:
            return None
        name = _identifier(node["children"][0])
        if name == context:  # `Patient.name` at the root
            return context
        found = _member_type(context, name)
        return (
            None
            if found is None
            else found.removeprefix("System.").lower()
            if found.startswith("System.")
            else found
        )
    if kind == "FunctionInvocation":
        name = _identifier(node["children"][0]["children"][0])
        if name in _BOOLEAN_FUNCTIONS:
            return "boolean"
        return context if name in _TYPE_PRESERVING else None
    if kind == "ThisInvocation":
        return context
    return None


# --- evaluation ----------------------------------------------------------------------------


class FhirPath:
    """One expression, parsed once; `evaluate` returns the typed nodes, `values` plain Python values."""

    __slots__ = ("ast", "expression")

    def __init__(self, expression: str):
        self.expression = expression
        self.ast = parse_path(expression)

    def evaluate(self, focus: Any, variables: Mapping[str, Any] | None = None) -> list:
        _library_constants.reset()  # fhirpathpy caches now()/today() per evaluation
        root = arraify(focus)
        ctx = {
            "dataRoot": root,
            "vars": {"context": focus, "ucum": "http://unitsofmeasure.org", **(variables or {})},
            "model": R4_MODEL,
            "userInvocationTable": FUNCTIONS,
            "$this": root,  # the library sets $this only inside where()/select(); views use it at the focus
        }
        try:
            return arraify(do_eval(ctx, root, self.ast["children"][0]))
        except Exception as error:  # the library raises bare Exceptions
            raise FhirPathEvaluationError(f"'{self.expression}': {error}") from error

    def values(self, focus: Any, variables: Mapping[str, Any] | None = None) -> list:
        return [plain_value(n) for n in self.evaluate(focus, variables) if not _is_extension_only(n)]


def _is_extension_only(node: Any) -> bool:
    # fhirpathpy represents a primitive's extensions (`_given`) as a node holding only them
    return (
        isinstance(node, ResourceNode) and isinstance(node.data, Mapping) and list(node.data) == ["extension"]
    )


def plain_value(node: Any) -> Any:
    """JSON-like Python value of a node: dicts, lists, str, bool, int, Decimal."""
    data = get_data(node)
    if isinstance(data, FP_Type):
        return str(data)
    if isinstance(data, Mapping):
        return {k: plain_value(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain_value(v) for v in data]
    return data
