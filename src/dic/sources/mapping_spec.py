"""The YAML mapping spec of a CSV/Excel source: which columns become which FHIR R4 elements.

    Mapping                    the pydantic model of one spec (a registry, a biobank, a study database)
    load_mapping(path_or_name) a shipped spec by name ("ms-registry", "biobank") or a YAML file, validated
    shipped_mappings()         {name: path} of the specs in `dic/sources/mappings/`
    fhir_id(text)              the FHIR id of a source id: verbatim when valid, else a stable hash
    template_columns(template) the columns a "{a}-{b}" template names

A spec onboards a new registry without code. In short (the shipped `mappings/*.yaml` are whole
examples):

    name: ms-registry
    delimiter: ";"                       # CSV defaults; a file may override them
    code_maps:
      sex: {ignore_case: true, values: {w: female, m: male}}
    files:                               # read in this order: patients first
      - file: visits                     # a glob; without a suffix visits.csv and visits.xlsx match
        resources:                       # what one row becomes (zero or more resources)
          - resource_type: Observation
            id: "{visit_id}"             # a template over columns, made FHIR-safe
            profile: [...]
            elements:                    # element rules, applied in order
              - {path: status, constant: final}
              - {path: subject, column: registry_id, reference: Patient}
              - {path: effectiveDateTime, column: visit_date, date: "%Y-%m-%d", required: true}
              - {path: valueQuantity, column: edss, number: decimal, unit: "{score}"}

An element rule takes its value from one `column`, a `template` ("{a}-{b}") or a `constant` (any
YAML value), then applies at most one of `date` (strptime formats; with a time: Europe/Berlin),
`number` (integer or decimal, decimal comma allowed; with `unit`/`unit_column` or `convert` it
becomes a Quantity), `code_map` (a declared map, value -> any JSON value, an unknown value is an
error), `reference` (a resource type: {"reference": "Type/<id>"}) and `split` (a list). An empty
cell leaves the element out, or fails the row if `required`; `when` makes a rule (or a group of
rules under one `path`, given as `elements`) depend on a column. Paths are FHIR element paths with
list indices (`name[0].given`, `code.coding[0]`), checked against the R4 element table.

Data declares and never executes: templates only join column values, there are no expressions.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from dic.errors import DefinitionError, InputError, Problem
from dic.fhir import element, known_type, resource_types

MAPPINGS_DIR = Path(__file__).with_name("mappings")
UCUM = "http://unitsofmeasure.org"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_STEP = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:\[(\d+)\])?")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_DIRECTIVE = re.compile(r"%(.)")
_DATE_DIRECTIVES = set("YmdHMSzbBjyIpfaAe%")
_TIME_DIRECTIVES = set("HIMSpf")
# Leaf types a transform may write (None: the element table does not know the type).
_DATE_TYPES = {"date", "dateTime", "instant", "string"}
_NUMBER_TYPES = {"decimal", "integer", "positiveInt", "unsignedInt", "integer64", "string"}


def fhir_id(text: str) -> str:
    """A source id as a FHIR id: itself when it is one (`[A-Za-z0-9-.]{1,64}`), else "x-" and 40 hex
    digits of its SHA-256, so that the same source id always gives the same FHIR id."""
    if _ID.fullmatch(text):
        return text
    return "x-" + hashlib.sha256(text.encode()).hexdigest()[:40]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class When(_Model):
    """A condition on the row: `column` (or `any_of` several) is non-empty, or empty with
    `present: false`, or equals a value / one of `in`."""

    column: str | None = None
    any_of: list[str] | None = None
    present: bool = True
    equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")

    def columns(self) -> list[str]:
        return [self.column] if self.column is not None else list(self.any_of or ())


class Convert(_Model):
    """A unit conversion without a library: value x factor, written in unit `to` (UCUM)."""

    from_: str = Field(alias="from")
    to: str
    factor: float
    digits: int | None = None  # round to this many decimals (default: 12 significant digits)


class CodeMap(_Model):
    """Source values -> what they become (a code, a Coding, a boolean, any JSON value)."""

    values: dict[str, Any]
    ignore_case: bool = False
    description: str = ""


class Rule(_Model):
    """One element of a resource, or (with `elements`) a group of them under `path`."""

    path: str
    column: str | None = None
    template: str | None = None
    constant: Any = None
    required: bool = False
    when: str | When | None = None
    date: str | list[str] | None = None
    number: Literal["integer", "decimal"] | None = None
    unit: str | None = None  # UCUM code: the number becomes a Quantity
    unit_column: str | None = None  # ... or the unit comes from a column, through `unit_code_map`
    unit_code_map: str | None = None
    convert: Convert | None = None
    code_map: str | None = None
    reference: str | None = None  # a resource type
    split: str | None = None  # a separator (" ": any whitespace); the element gets the list
    elements: list[Rule] | None = None

    @property
    def has_constant(self) -> bool:
        return "constant" in self.model_fields_set


class ResourceSpec(_Model):
    """One resource a row becomes."""

    resource_type: str
    id: str  # a template over the row's columns
    profile: list[str] = []
    when: str | When | None = None
    once: bool = False  # several rows name the same resource: the first one makes it
    elements: list[Rule]


class FileSpec(_Model):
    """One table: a CSV file or an Excel sheet."""

    file: str  # a glob on the file name; without a suffix, .csv and .xlsx match
    sheet: str | None = None  # xlsx: the sheet (default: the first)
    delimiter: str | None = None
    encoding: str | None = None
    quote: str | None = None
    optional: bool = False  # a missing file is no error
    optional_columns: list[str] = []  # columns the header may lack (their elements are left out)
    resources: list[ResourceSpec]


class Mapping(_Model):
    """A source's mapping spec: its files in reading order, and the code maps its rules name."""

    name: str
    description: str = ""
    delimiter: str = ";"
    encoding: str = "utf-8"
    quote: str = '"'
    code_maps: dict[str, CodeMap] = {}
    files: list[FileSpec]
    _origin: str = PrivateAttr(default="<inline>")

    @property
    def origin(self) -> str:
        """Where the spec was read from (for messages)."""
        return self._origin

    def problems(self) -> list[Problem]:
        """What the schema cannot see: element paths, code map names, formats, combinations."""
        found: list[Problem] = []
        types = resource_types()
        for f, spec in enumerate(self.files):
            if len(spec.delimiter or self.delimiter) != 1 or len(spec.quote or self.quote) != 1:
                found.append(Problem(f"/files/{f}", "delimiter and quote are one character each"))
            try:
                codecs.lookup(spec.encoding or self.encoding)
            except LookupError:
                found.append(Problem(f"/files/{f}/encoding", f"unknown encoding {spec.encoding or self.encoding!r}"))
            for r, resource in enumerate(spec.resources):
                where = f"/files/{f}/resources/{r}"
                if resource.resource_type not in types:
                    found.append(Problem(f"{where}/resource_type",
                                         f"{resource.resource_type!r} is not a FHIR R4 resource type"))
                found += _template_problems(resource.id, f"{where}/id")
                found += _when_problems(resource.when, f"{where}/when")
                for n, rule in enumerate(resource.elements):
                    found += self._rule_problems(rule, resource.resource_type, (), f"{where}/elements/{n}")
        return found

    def _rule_problems(self, rule: Rule, type_name: str | None, above: tuple[str, ...],
                       where: str) -> list[Problem]:
        found = _when_problems(rule.when, f"{where}/when")
        leaf, path_problems = _walk_path(rule.path, type_name, whole_list=rule.split is not None)
        found += [Problem(f"{where}/path", p) for p in path_problems]
        sources = [name for name, given in (("column", rule.column is not None),
                                            ("template", rule.template is not None),
                                            ("constant", rule.has_constant)) if given]
        transforms = [name for name in ("date", "number", "code_map", "reference", "split")
                      if getattr(rule, name) is not None]
        if rule.elements is not None:
            if sources or transforms or rule.required:
                found.append(Problem(where, "a group (elements) takes no value, transform or required"))
            for n, inner in enumerate(rule.elements):
                found += self._rule_problems(inner, leaf, (*above, rule.path), f"{where}/elements/{n}")
            return found
        if len(sources) != 1:
            found.append(Problem(where, "give exactly one of column, template, constant"
                                 + (f" (got {', '.join(sources)})" if sources else "")))
        if len(transforms) > 1:
            found.append(Problem(where, f"at most one of date, number, code_map, reference, split "
                                        f"(got {', '.join(transforms)})"))
        if rule.has_constant and transforms:
            found.append(Problem(where, "a constant is written as given: no transform"))
        if rule.template is not None:
            found += _template_problems(rule.template, f"{where}/template")
        for name in (rule.code_map, rule.unit_code_map):
            if name is not None and name not in self.code_maps:
                key = "code_map" if name == rule.code_map else "unit_code_map"
                found.append(Problem(f"{where}/{key}", f"no code map {name!r} (declared: "
                                                        f"{', '.join(sorted(self.code_maps)) or 'none'})"))
        if rule.date is not None:
            for n, fmt in enumerate([rule.date] if isinstance(rule.date, str) else rule.date):
                found += _format_problems(fmt, f"{where}/date" + ("" if isinstance(rule.date, str) else f"/{n}"))
        quantity = rule.unit is not None or rule.unit_column is not None or rule.convert is not None
        if quantity and rule.number is None:
            found.append(Problem(where, "unit, unit_column and convert need number"))
        if sum(x is not None for x in (rule.unit, rule.unit_column, rule.convert)) > 1:
            found.append(Problem(where, "give one of unit, unit_column, convert (convert sets unit `to`)"))
        if (rule.unit_column is None) != (rule.unit_code_map is None):
            found.append(Problem(where, "unit_column needs unit_code_map (the units it may hold, as UCUM codes)"))
        if rule.reference is not None and rule.reference not in resource_types():
            found.append(Problem(f"{where}/reference", f"{rule.reference!r} is not a FHIR R4 resource type"))
        found += _leaf_problems(rule, leaf, quantity, where)
        return found


def _walk_path(path: str, type_name: str | None, whole_list: bool) -> tuple[str | None, list[str]]:
    """The FHIR type at the end of `path` below `type_name` (None if unknown), and what is wrong with it."""
    steps = path.split(".")
    for n, step in enumerate(steps):
        match = _STEP.fullmatch(step)
        if match is None:
            return None, [f"{path!r}: {step!r} is not an element name with an optional [index]"]
        if type_name is None:
            continue
        name, index = match.groups()
        found = element(type_name, name)
        if found is None:
            if known_type(type_name):
                return None, [f"{type_name} has no element {name!r}"]
            type_name = None
            continue
        last = n == len(steps) - 1
        if found.is_array and index is None and not (last and whole_list):
            return None, [f"{name} is a list: write {name}[0] (or split a value into the whole list)"]
        if not found.is_array and index is not None:
            return None, [f"{name} is not a list: drop [{index}]"]
        type_name = found.type
    return type_name, []


def _leaf_problems(rule: Rule, leaf: str | None, quantity: bool, where: str) -> list[Problem]:
    if leaf is None:
        return []
    if rule.date is not None and leaf not in _DATE_TYPES:
        return [Problem(f"{where}/date", f"{rule.path} is a {leaf}, not a date or dateTime")]
    if quantity and leaf != "Quantity":
        return [Problem(where, f"{rule.path} is a {leaf}: a number with a unit needs a Quantity element")]
    if rule.number is not None and not quantity and leaf not in _NUMBER_TYPES:
        return [Problem(f"{where}/number", f"{rule.path} is a {leaf}: give a unit to make a Quantity")]
    if rule.reference is not None and leaf != "Reference":
        return [Problem(f"{where}/reference", f"{rule.path} is a {leaf}, not a Reference")]
    if rule.date is not None and leaf == "date" and any(
            set(_DIRECTIVE.findall(f)) & _TIME_DIRECTIVES for f in _formats(rule.date)):
        return [Problem(f"{where}/date", f"{rule.path} is a date: a format with a time does not fit")]
    return []


def _formats(date: str | list[str]) -> list[str]:
    return [date] if isinstance(date, str) else list(date)


def _format_problems(fmt: str, where: str) -> list[Problem]:
    directives = set(_DIRECTIVE.findall(fmt))
    unknown = sorted(directives - _DATE_DIRECTIVES)
    if unknown:
        return [Problem(where, f"unknown directive(s) {', '.join('%' + d for d in unknown)} in {fmt!r}")]
    if not directives & {"Y", "y"}:
        return [Problem(where, f"{fmt!r} has no year (%Y)")]
    return []


def _template_problems(template: str, where: str) -> list[Problem]:
    names = template_columns(template)
    if not names:
        return [Problem(where, f"{template!r} names no column ({{column}})")]
    if any(not n.strip() for n in names):
        return [Problem(where, f"{template!r} has an empty {{}}")]
    return []


def _when_problems(when: str | When | None, where: str) -> list[Problem]:
    if not isinstance(when, When):
        return []
    if (when.column is None) == (when.any_of is None):
        return [Problem(where, "give one of column, any_of")]
    if when.equals is not None and when.in_ is not None:
        return [Problem(where, "give one of equals, in")]
    if when.any_of is not None and (when.equals is not None or when.in_ is not None or not when.present):
        return [Problem(where, "any_of means 'any of these is non-empty': no equals, in, present")]
    return []


def template_columns(template: str) -> list[str]:
    """The column names a template's {placeholders} name, in order."""
    return _PLACEHOLDER.findall(template)


# ------------------------------------------------------------------ loading
def shipped_mappings() -> dict[str, Path]:
    """The mapping specs shipped with the DIC, by name (the file stem)."""
    return {p.stem: p for p in sorted(MAPPINGS_DIR.glob("*.yaml"))}


def load_mapping(path_or_name: str | Path) -> Mapping:
    """A shipped mapping by name, or the spec in a YAML file; raises DefinitionError naming the file
    and every problem's path inside it, InputError if there is no such mapping."""
    shipped = shipped_mappings()
    if isinstance(path_or_name, str) and path_or_name in shipped:
        return _load_shipped(path_or_name)
    path = Path(path_or_name)
    if not path.is_file():
        raise InputError(f"{path_or_name}: no such mapping: neither a file nor a shipped name "
                         f"({', '.join(shipped)})")
    return _load(path)


@cache
def _load_shipped(name: str) -> Mapping:
    return _load(shipped_mappings()[name])


def _load(path: Path) -> Mapping:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise DefinitionError(str(path), [Problem(where, f"not YAML: {getattr(error, 'problem', error)}")]) from error
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as error:
        raise DefinitionError(str(path), [Problem(_pointer(e["loc"]), e["msg"]) for e in error.errors()]) from error
    if problems := mapping.problems():
        raise DefinitionError(str(path), problems)
    mapping._origin = str(path)
    return mapping


def _pointer(loc: tuple[Any, ...]) -> str:
    """A JSON pointer from a pydantic error location, without the union-member tags pydantic adds."""
    tags = {"str", "int", "float", "bool", "list", "dict", "When", "Convert", "Rule", "list[str]"}
    return "/" + "/".join(str(p) for p in loc if not (isinstance(p, str) and (p in tags or "[" in p)))
