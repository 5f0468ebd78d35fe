"""A small FHIRPath syntax tree and parser: the grammar views use, for the SQL compiler.

Covers literals (string, number, boolean, `{}`), identifiers (also `backticked`), `$this`,
`%constants`, invocation chains (`a.b.f(x)`), indexers (`a[0]`), unary minus and the binary
operators with FHIRPath precedence. Anything else is a `FhirPathSyntaxError`, which the
compiler reports as not compilable (the reference evaluator has the full grammar).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class FhirPathSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Node:
    pass


@dataclass(frozen=True)
class Literal(Node):
    value: str | int | float | bool | None  # None: the empty collection `{}`
    kind: str  # "string", "integer", "decimal", "boolean", "empty"


@dataclass(frozen=True)
class This(Node):
    pass


@dataclass(frozen=True)
class Constant(Node):
    name: str


@dataclass(frozen=True)
class Member(Node):
    """`name` on the input collection (`base` None: the context)."""

    base: Node | None
    name: str


@dataclass(frozen=True)
class Call(Node):
    base: Node | None
    name: str
    args: tuple[Node, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Index(Node):
    base: Node
    index: Node


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<number>\d+(?:\.\d+)?)
    | (?P<quoted>`[^`]*`)
    | (?P<const>%[A-Za-z_][A-Za-z0-9_]*|%`[^`]*`)
    | (?P<name>\$?[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op><=|>=|!=|!~|[-+*/&|<>=~().,\[\]{}])
    )""",
    re.VERBOSE,
)

# Binding power of the binary operators (higher binds tighter), FHIRPath §6 precedence.
_BINARY = {
    "*": 70, "/": 70, "div": 70, "mod": 70,
    "+": 60, "-": 60, "&": 60,
    "is": 55, "as": 55,
    "|": 50,
    "<": 45, ">": 45, "<=": 45, ">=": 45,
    "=": 40, "~": 40, "!=": 40, "!~": 40,
    "in": 35, "contains": 35,
    "and": 30,
    "or": 20, "xor": 20,
    "implies": 10,
}
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise FhirPathSyntaxError(f"unexpected character at {position}: {text[position:position + 10]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.position = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise FhirPathSyntaxError(f"expected {value or 'more input'}, got {token[1] if token else 'end'}")
        self.position += 1
        return token

    def expression(self, min_power: int = 0) -> Node:
        left = self.unary()
        while (token := self.peek()) is not None and token[1] in _BINARY and token[0] in ("op", "name"):
            power = _BINARY[token[1]]
            if power <= min_power:
                break
            self.take()
            left = Binary(token[1], left, self.expression(power))
        return left

    def unary(self) -> Node:
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] in "+-":
            self.take()
            return Unary(token[1], self.unary())
        return self.postfix(self.term())

    def term(self) -> Node:
        kind, value = self.take()
        if kind == "string":
            return Literal(_unescape(value[1:-1]), "string")
        if kind == "number":
            return Literal(float(value), "decimal") if "." in value else Literal(int(value), "integer")
        if kind == "const":
            return Constant(value[1:].strip("`"))
        if value == "(":
            inner = self.expression()
            self.take(")")
            return inner
        if value == "{":
            self.take("}")
            return Literal(None, "empty")
        if kind == "name" and value in ("true", "false"):
            return Literal(value == "true", "boolean")
        if kind == "name" and value == "$this":
            return This()
        if kind in ("name", "quoted") and not value.startswith("$"):
            return self.invocation(None, value.strip("`"))
        raise FhirPathSyntaxError(f"unexpected {value!r}")

    def invocation(self, base: Node | None, name: str) -> Node:
        if self.peek() == ("op", "("):
            self.take("(")
            args: list[Node] = []
            if self.peek() != ("op", ")"):
                args.append(self.expression())
                while self.peek() == ("op", ","):
                    self.take(",")
                    args.append(self.expression())
            self.take(")")
            return Call(base, name, tuple(args))
        return Member(base, name)

    def postfix(self, node: Node) -> Node:
        while (token := self.peek()) is not None and token[1] in (".", "["):
            self.take()
            if token[1] == "[":
                node = Index(node, self.expression())
                self.take("]")
                continue
            kind, value = self.take()
            if kind not in ("name", "quoted") or value.startswith("$"):
                raise FhirPathSyntaxError(f"expected a name after '.', got {value!r}")
            node = self.invocation(node, value.strip("`"))
        return node


def parse_fhirpath(text: str) -> Node:
    """Parse one FHIRPath expression into the syntax tree above."""
    parser = _Parser(text)
    node = parser.expression()
    if parser.peek() is not None:
        raise FhirPathSyntaxError(f"unexpected {parser.peek()[1]!r} after the expression")  # type: ignore[index]
    return node
