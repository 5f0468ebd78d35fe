"""Read CSV and Excel files with a YAML mapping spec (see `mapping_spec`): rows become FHIR resources.

    read_mapped(folder_or_file, mapping) -> Iterator[SourceResource | Rejection]
    detect_mapping(path)                 -> str | None   the shipped mapping whose files are all there
    (Mapping, load_mapping and shipped_mappings come from `mapping_spec` and are re-exported here.)

A folder's files are read in the spec's order (patients first), each file's rows in file order.
Delimited text and `.xlsx` workbooks (openpyxl, read-only; the declared sheet or the first) read
the same way: row 1 is the header and names the columns, so their order does not matter. Excel
cells keep their types: a date cell needs no format, a number cell no parsing.

Positions are "<file name> row N", N counted as a spreadsheet user does: the header is row 1, the
first data row is row 2, blank rows count (and are skipped), a quoted CSV value spanning lines is
one row.

Bad input is a Rejection, never an exception, and good rows still load:
- a declared file that is missing, a header without a column the rules use (unless it is one of
  the file's `optional_columns`), an unreadable workbook: one Rejection for the file;
- a row with more or fewer cells than the header, bytes not in the declared encoding: its Rejection;
- a value that fails a rule: the row's Rejection, naming every failure, e.g. "visits.csv row 12,
  column edss: '12,5x' is not a number (rule Observation.valueQuantity number)". A row is all or
  nothing: a patients row that cannot become its Patient does not leave a Condition behind.
Values of identifying elements (anything on a Patient, identifiers) are never quoted in a reason.
"""

from __future__ import annotations

import codecs
import csv
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from dic.errors import InputError
from dic.fhir import check_resource
from dic.sources.mapping_spec import (
    UCUM,
    FileSpec,
    Mapping,
    ResourceSpec,
    Rule,
    When,
    fhir_id,
    load_mapping,
    shipped_mappings,
    template_columns,
)
from dic.sources.record import Rejection, SourceResource

__all__ = ["Mapping", "detect_mapping", "load_mapping", "read_mapped", "shipped_mappings"]

BERLIN = ZoneInfo("Europe/Berlin")
RAW_LIMIT_BYTES = 64 * 1024
TEXT_SUFFIXES = (".csv", ".txt", ".tsv")
TABLE_SUFFIXES = (*TEXT_SUFFIXES, ".xlsx")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)")
_TIME_DIRECTIVES = re.compile(r"%[HIMSpf]")
# ISO formats: a regex for exactly what strptime would take, then fromisoformat. Measured: 0.5 us
# against strptime's 12 us a value (fromisoformat alone is laxer: week dates, 'T' for ' ').
_ISO = {"%Y-%m-%d": re.compile(r"\d{4}-\d{2}-\d{2}"),
        "%Y-%m-%d %H:%M": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"),
        "%Y-%m-%d %H:%M:%S": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"),
        "%Y-%m-%dT%H:%M:%S": re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")}

Record = SourceResource | Rejection
Row = dict[str, Any]  # column -> value (None when empty); str from CSV, typed from Excel


# What opening or streaming a broken file raises: openpyxl has no one exception (zip, XML parse
# errors are SyntaxErrors, missing parts KeyErrors); ours for a missing sheet is an InputError (a
# ValueError). openpyxl's InvalidFileException is about file name suffixes: we only open `.xlsx`.
_UNREADABLE = (OSError, ValueError, KeyError, TypeError, SyntaxError, zipfile.BadZipFile)


class _RuleError(Exception):
    """A value that fails a rule; the message names the column and the rule."""


# ------------------------------------------------------------------ entry points
def read_mapped(folder_or_file: Path, mapping: Mapping) -> Iterator[Record]:
    """The resources of every file `mapping` declares in a folder (or of one such file), in order."""
    path = Path(folder_or_file)
    compiled = {id(spec): [_CompiledResource(r, mapping) for r in spec.resources] for spec in mapping.files}
    seen: set[tuple[str, str]] = set()  # resources declared `once`, made already
    if path.is_dir():
        for spec in mapping.files:
            found = _find_files(path, spec)
            if not found and not spec.optional:
                reason = (f"{mapping.name}: no file matches {spec.file!r} ({', '.join(_patterns(spec))}) in "
                          f"{path}; the mapping declares it (mark it `optional: true` if it may be absent)")
                yield Rejection(str(path / spec.file), spec.file, reason, b"", 0)
            for file in found:
                yield from _read_file(file, spec, mapping, compiled[id(spec)], seen)
    elif path.is_file():
        specs = [spec for spec in mapping.files if _matches(path.name, spec)]
        if not specs:
            raise InputError(f"{path}: the mapping {mapping.name} declares no such file "
                             f"({', '.join(p for s in mapping.files for p in _patterns(s))})")
        for spec in specs:
            yield from _read_file(path, spec, mapping, compiled[id(spec)], seen)
    else:
        raise InputError(f"{path}: no such file or folder")


def detect_mapping(path: Path) -> str | None:
    """The shipped mapping whose declared (non-optional) files are all in the folder (for a file: in
    its folder, and it is one of them); with several, the one declaring the most files."""
    path = Path(path)
    folder, single = (path, None) if path.is_dir() else (path.parent, path)
    if not folder.is_dir():
        return None
    best: tuple[int, str] | None = None
    for name in shipped_mappings():
        mapping = load_mapping(name)
        needed = [spec for spec in mapping.files if not spec.optional]
        if not all(_find_files(folder, spec) for spec in needed):
            continue
        if single is not None and not any(_matches(single.name, spec) for spec in mapping.files):
            continue
        if best is None or len(needed) > best[0]:
            best = (len(needed), name)
    return None if best is None else best[1]


def _find_files(folder: Path, spec: FileSpec) -> list[Path]:
    """The files of `folder` a file spec matches (case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and _matches(p.name, spec))


def _patterns(spec: FileSpec) -> list[str]:
    pattern = spec.file.lower()
    return [pattern] if pattern.endswith(TABLE_SUFFIXES) else [pattern + ".csv", pattern + ".xlsx"]


def _matches(name: str, spec: FileSpec) -> bool:
    return any(fnmatch(name.lower(), pattern) for pattern in _patterns(spec))


# ------------------------------------------------------------------ one file
@dataclass(slots=True)
class _Line:
    number: int  # the spreadsheet row number
    cells: list[Any]
    raw: bytes
    problem: str | None = None


def _read_file(path: Path, spec: FileSpec, mapping: Mapping, resources: list[_CompiledResource],
               seen: set[tuple[str, str]]) -> Iterator[Record]:
    source, name = str(path), path.name
    try:
        lines = _xlsx_lines(path, spec) if path.suffix.lower() == ".xlsx" else _text_lines(path, spec, mapping)
        header_line = next((line for line in lines if line.cells or line.problem), None)
    except _UNREADABLE as error:
        yield Rejection(source, name, f"{name}: not readable as {path.suffix or 'text'} ({error})", b"", 0)
        return
    if header_line is None:
        yield Rejection(source, name, f"{name}: empty file (no header row)", b"", 0)
        return
    header = [_cell_text(cell).strip() for cell in header_line.cells]
    where = f"{name} row {header_line.number}"
    if problem := header_line.problem or _header_problem(header, spec, resources):
        yield Rejection(source, where, f"{where} (header): {problem}; the file is not read",
                        header_line.raw[:RAW_LIMIT_BYTES], len(header_line.raw))
        return
    width, text = len(header), path.suffix.lower() != ".xlsx"
    for line in lines:
        if not line.cells and not line.problem:
            continue  # a blank row
        position = f"{name} row {line.number}"
        raw = line.raw[:RAW_LIMIT_BYTES]
        if line.problem:
            yield Rejection(source, position, f"{position}: {line.problem}", raw, len(line.raw))
            continue
        cells = line.cells
        if len(cells) != width and (text or len(cells) > width):  # Excel leaves out trailing empty cells
            yield Rejection(source, position, f"{position}: {len(cells)} cells, but the header has {width} "
                            f"(a missing or extra {'delimiter' if text else 'cell'}?)", raw, len(line.raw))
            continue
        row = {column: _empty_to_none(cell) for column, cell in zip(header, cells)}
        yield from _row_records(row, resources, source, position, raw, len(line.raw), seen)


def _row_records(row: Row, resources: list[_CompiledResource], source: str, position: str, raw: bytes,
                 size: int, seen: set[tuple[str, str]]) -> Iterator[Record]:
    made: list[tuple[_CompiledResource, dict[str, Any]]] = []
    errors: list[str] = []
    for compiled in resources:
        if compiled.when is not None and not compiled.when(row):
            continue
        resource = compiled.build(row, errors)
        if resource is not None:
            made.append((compiled, resource))
    if errors:
        yield Rejection(source, position, "; ".join(f"{position}, {e}" for e in errors), raw, size)
        return
    for compiled, resource in made:
        if compiled.once:
            key = (resource["resourceType"], resource["id"])
            if key in seen:
                continue
            seen.add(key)
        yield SourceResource(resource, source, position)


def _header_problem(header: list[str], spec: FileSpec, resources: list[_CompiledResource]) -> str | None:
    twice = sorted({c for c in header if c and header.count(c) > 1})
    if twice:
        return f"the header names column(s) {', '.join(twice)} more than once"
    used: dict[str, str] = {}
    for compiled in resources:
        for column, label in compiled.columns():
            used.setdefault(column, label)
    present, optional = set(header), set(spec.optional_columns)
    missing = [f"{c} (used by {label})" for c, label in used.items() if c not in present and c not in optional]
    return f"the header lacks column(s) {', '.join(missing)}" if missing else None


def _text_lines(path: Path, spec: FileSpec, mapping: Mapping) -> Iterator[_Line]:
    """Delimited text, one record at a time with its raw bytes; decoded line by line so that a
    byte sequence invalid in the declared encoding costs only its row."""
    encoding = spec.encoding or mapping.encoding
    utf8 = codecs.lookup(encoding).name == "utf-8"
    with path.open("rb") as handle:
        taken: list[bytes] = []
        broken = False

        def lines() -> Iterator[str]:
            nonlocal broken
            for n, raw in enumerate(handle):
                taken.append(raw)
                if n == 0 and utf8:
                    raw = raw.removeprefix(codecs.BOM_UTF8)  # Excel writes one
                try:
                    yield raw.decode(encoding)
                except UnicodeDecodeError:
                    broken = True
                    yield raw.decode(encoding, "replace")

        reader = csv.reader(lines(), delimiter=spec.delimiter or mapping.delimiter,
                            quotechar=spec.quote or mapping.quote)
        number = 0
        while True:
            number += 1
            try:
                cells = next(reader)
                problem = f"bytes not valid {encoding} (the mapping's encoding)" if broken else None
            except StopIteration:
                return
            except csv.Error as error:
                cells, problem = [], f"not a CSV record ({error})"
            raw = b"".join(taken)
            taken.clear()
            broken = False
            yield _Line(number, cells, raw, problem)


def _xlsx_lines(path: Path, spec: FileSpec) -> Iterator[_Line]:
    from openpyxl import load_workbook  # only a workbook needs it

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        if spec.sheet is not None and spec.sheet not in book.sheetnames:
            raise InputError(f"no sheet {spec.sheet!r} (sheets: {', '.join(book.sheetnames)})")
        sheet = book[spec.sheet] if spec.sheet is not None else book.worksheets[0]
        sheet.reset_dimensions()  # trust the cells, not the size the writer recorded
        number = 0
        try:
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                cells = list(values)
                while cells and _empty_to_none(cells[-1]) is None:
                    cells.pop()
                yield _Line(number, cells, ";".join(_cell_text(c) for c in cells).encode())
        except _UNREADABLE as error:
            yield _Line(number + 1, [], b"", f"the workbook breaks off here ({error}); rows after it are not read")
    finally:
        book.close()


def _empty_to_none(cell: Any) -> Any:
    if cell is None:
        return None
    if isinstance(cell, str):
        cell = cell.strip()
        return cell or None
    return cell


def _cell_text(cell: Any) -> str:
    """A cell as text: CSV cells are text already; Excel numbers and dates are written plainly."""
    if isinstance(cell, str):
        return cell
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, datetime):
        return cell.date().isoformat() if cell.time() == time() else cell.isoformat(" ")
    if isinstance(cell, date):
        return cell.isoformat()
    return str(cell)


# ------------------------------------------------------------------ compiled rules
def _when(when: str | When | None) -> Callable[[Row], bool] | None:
    if when is None:
        return None
    if isinstance(when, str):
        when = When(column=when)
    if when.any_of is not None:
        columns = tuple(when.any_of)
        return lambda row: any(row.get(c) is not None for c in columns)
    column = when.column
    if when.equals is not None:
        wanted = {when.equals}
    elif when.in_ is not None:
        wanted = set(when.in_)
    else:
        present = when.present
        return lambda row: (row.get(column) is not None) == present
    return lambda row: row.get(column) is not None and _cell_text(row[column]) in wanted


def _steps(path: str) -> list[tuple[str, int | None]]:
    steps = []
    for step in path.split("."):
        name, _, index = step.partition("[")
        steps.append((name, int(index[:-1]) if index else None))
    return steps


class _CompiledResource:
    """One ResourceSpec, ready to build a resource from a row."""

    def __init__(self, spec: ResourceSpec, mapping: Mapping):
        self.spec = spec
        self.once = spec.once
        self.when = _when(spec.when)
        self.id_template = _template(spec.id)
        self.rules = [_CompiledRule(r, spec.resource_type, [], mapping) for r in spec.elements]

    def columns(self) -> Iterator[tuple[str, str]]:
        """(column, rule label) for every column this resource reads."""
        label = f"{self.spec.resource_type}.id"
        yield from ((c, label) for c in template_columns(self.spec.id))
        if isinstance(self.spec.when, str):
            yield self.spec.when, f"{self.spec.resource_type} when"
        elif self.spec.when is not None:
            yield from ((c, f"{self.spec.resource_type} when") for c in self.spec.when.columns())
        for rule in self.rules:
            yield from rule.columns()

    def build(self, row: Row, errors: list[str]) -> dict[str, Any] | None:
        kind = self.spec.resource_type
        source_id = self.id_template(row)
        if source_id is None:
            empty = [c for c in template_columns(self.spec.id) if row.get(c) is None]
            errors.append(f"column {', '.join(empty)}: empty, but {kind}.id is {self.spec.id!r}")
            return None
        resource: dict[str, Any] = {"resourceType": kind, "id": fhir_id(source_id)}
        if self.spec.profile:
            resource["meta"] = {"profile": list(self.spec.profile)}
        before = len(errors)
        holes = False
        for rule in self.rules:
            holes |= rule.apply(row, resource, errors)
        if len(errors) > before:
            return None
        if holes:
            resource = _compact(resource)
        if (reason := check_resource(resource)) is not None:
            errors.append(f"{kind}: {reason} (the mapping makes an invalid resource)")
            return None
        return resource


class _CompiledRule:
    """One element rule (or a group of them): where it writes, how it gets and converts its value."""

    def __init__(self, rule: Rule, resource_type: str, above: list[tuple[str, int | None]], mapping: Mapping):
        self.rule = rule
        self.steps = [*above, *_steps(rule.path)]
        self.walk, self.leaf = tuple(self.steps[:-1]), self.steps[-1]
        self.path = ".".join(f"{n}[{i}]" if i is not None else n for n, i in self.steps)
        self.when = _when(rule.when)
        self.hide = resource_type == "Patient" or self.steps[0][0] == "identifier"
        transform = next((t for t in ("date", "number", "code_map", "reference", "split")
                          if getattr(rule, t) is not None), None)
        self.label = f"{resource_type}.{self.path}" + (f" {transform}" if transform else "")
        self.children = None if rule.elements is None else [
            _CompiledRule(r, resource_type, self.steps, mapping) for r in rule.elements]
        self.fetch = _fetcher(rule)
        self.convert = _converter(rule, mapping, self.hide)
        self.column = f"column {rule.column}" if rule.column is not None else (
            f"columns {', '.join(template_columns(rule.template))}" if rule.template is not None else "constant")

    def columns(self) -> Iterator[tuple[str, str]]:
        rule = self.rule
        named = [rule.column] if rule.column is not None else template_columns(rule.template or "")
        named += [rule.unit_column] if rule.unit_column is not None else []
        named += [rule.when] if isinstance(rule.when, str) else rule.when.columns() if rule.when else []
        yield from ((c, f"rule {self.label}") for c in named)
        for child in self.children or ():
            yield from child.columns()

    def apply(self, row: Row, resource: dict[str, Any], errors: list[str]) -> bool:
        """Write the rule's element; True if that left a hole in a list (name[1] without name[0])."""
        if self.when is not None and not self.when(row):
            return False
        if self.children is not None:
            holes = False
            for child in self.children:
                holes |= child.apply(row, resource, errors)
            return holes
        value = self.fetch(row)
        rule = self.rule
        if value is None:
            if rule.required:
                errors.append(f"{self.column}: empty (rule {self.label} required)")
            return False
        try:
            converted = self.convert(value, row)
            return converted is not None and _put(resource, self.walk, *self.leaf, converted)
        except _RuleError as error:
            errors.append(f"{self.column}: {error} (rule {self.label})")
            return False


def _template(template: str) -> Callable[[Row], str | None]:
    """A template's renderer: its text with each {column} replaced, None if one is empty."""
    parts = re.split(r"\{([^{}]*)\}", template)  # literal, column, literal, column, ..., literal
    literals, columns = parts[0::2], parts[1::2]

    def render(row: Row) -> str | None:
        out = [literals[0]]
        for column, literal in zip(columns, literals[1:]):
            value = row.get(column)
            if value is None:
                return None
            out += (_cell_text(value), literal)
        return "".join(out)

    return render


def _fetcher(rule: Rule) -> Callable[[Row], Any]:
    if rule.column is not None:
        column = rule.column
        return lambda row: row.get(column)
    if rule.template is not None:
        return _template(rule.template)
    constant = rule.constant
    if isinstance(constant, dict | list):
        return _fresh(constant)
    return lambda row: constant


def _fresh(value: dict[str, Any] | list[Any]) -> Callable[..., Any]:
    """A new copy of a structure on each call, so that rows never share one (an orjson round trip
    costs ~1 us; copy.deepcopy ~15 us on a Coding)."""
    frozen = orjson.dumps(value)
    return lambda *_: orjson.loads(frozen)


def _shown(value: Any, hide: bool) -> str:
    return "the value" if hide else repr(_cell_text(value))


Converter = Callable[[Any, Row], Any]


def _converter(rule: Rule, mapping: Mapping, hide: bool) -> Converter:
    """The rule's transform: value (and row) -> the JSON value to write; raises _RuleError."""
    if rule.has_constant:
        return lambda value, row: value
    if rule.date is not None:
        return _date_converter([rule.date] if isinstance(rule.date, str) else rule.date, hide)
    if rule.number is not None:
        return _number_converter(rule, mapping, hide)
    if rule.code_map is not None:
        lookup = _code_lookup(mapping, rule.code_map, hide)
        return lambda value, row: lookup(value)
    if rule.reference is not None:
        kind = rule.reference
        return lambda value, row: {"reference": f"{kind}/{fhir_id(_cell_text(value))}"}
    if rule.split is not None:
        separator = rule.split
        if separator == " ":
            return lambda value, row: _cell_text(value).split() or None
        return lambda value, row: [p.strip() for p in _cell_text(value).split(separator) if p.strip()] or None
    return lambda value, row: _cell_text(value)


def _code_lookup(mapping: Mapping, name: str, hide: bool) -> Callable[[Any], Any]:
    declared = mapping.code_maps[name]
    fold = declared.ignore_case
    values = {(k.casefold() if fold else k): _fresh(v) if isinstance(v, dict | list) else v
              for k, v in declared.values.items()}
    known = ", ".join(declared.values)

    def lookup(value: Any) -> Any:
        key = _cell_text(value)
        found = values.get(key.casefold() if fold else key, _MISSING)
        if found is _MISSING:  # the map's own values are no patient data: always listed
            raise _RuleError(f"{_shown(value, hide)} is not in code map {name} (known: {known})")
        return found() if callable(found) else found

    return lookup


_MISSING = object()


def _date_converter(formats: list[str], hide: bool) -> Converter:
    """Dates by the first matching format. With a time, a dateTime in Europe/Berlin (unless the
    format reads an offset, %z); without, a date as precise as the format: day, month or year."""
    plans = [(fmt, _precision(fmt), _ISO.get(fmt)) for fmt in formats]
    first = plans[0][1]

    def convert(value: Any, row: Row) -> str:
        if isinstance(value, datetime):  # an Excel date cell
            return _render(value, first)
        if isinstance(value, date):
            return _render(datetime(value.year, value.month, value.day), "day" if first == "time" else first)
        text = _cell_text(value)
        for fmt, precision, iso in plans:
            try:
                parsed = datetime.fromisoformat(text) if iso is not None and iso.fullmatch(text) else \
                    datetime.strptime(text, fmt)
            except ValueError:
                continue
            return _render(parsed, precision)
        raise _RuleError(f"{_shown(value, hide)} is not a date in the format {' or '.join(formats)}")

    return convert


def _precision(fmt: str) -> str:
    if _TIME_DIRECTIVES.search(fmt):
        return "time"
    if "%d" in fmt or "%j" in fmt:
        return "day"
    if "%m" in fmt or "%b" in fmt or "%B" in fmt:
        return "month"
    return "year"


def _render(moment: datetime, precision: str) -> str:
    if precision == "time":
        local = moment if moment.tzinfo is not None else moment.replace(tzinfo=BERLIN)
        return local.isoformat(timespec="seconds")
    if precision == "day":
        return moment.date().isoformat()
    if precision == "month":
        return f"{moment.year:04d}-{moment.month:02d}"
    return f"{moment.year:04d}"


def _number_converter(rule: Rule, mapping: Mapping, hide: bool) -> Converter:
    kind, convert = rule.number, rule.convert
    unit_lookup = None if rule.unit_code_map is None else _code_lookup(mapping, rule.unit_code_map, False)
    unit_column = rule.unit_column

    def number(value: Any, row: Row) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _RuleError(f"{_shown(value, hide)} is not a number")
        if isinstance(value, str):
            if not _NUMBER.fullmatch(value):
                raise _RuleError(f"{_shown(value, hide)} is not a number")
            value = float(value.replace(",", "."))
        if convert is not None:
            value = value * convert.factor
            value = round(value, convert.digits) if convert.digits is not None else float(f"{value:.12g}")
        if kind == "integer":
            if not float(value).is_integer():
                raise _RuleError(f"{_shown(value, hide)} is not a whole number")
            value = int(value)
        else:
            value = float(value)
        if convert is not None:
            return _quantity(value, convert.to)
        if rule.unit is not None:
            return _quantity(value, rule.unit)
        if unit_lookup is not None:
            unit = row.get(unit_column)
            if unit is None:
                raise _RuleError(f"the unit column {unit_column} is empty")
            try:
                return _quantity(value, unit_lookup(unit))
            except _RuleError as error:
                raise _RuleError(f"unit column {unit_column}: {error}") from None
        return value

    return number


def _quantity(value: float, ucum: str) -> dict[str, Any]:
    return {"value": value, "unit": ucum, "system": UCUM, "code": ucum}


# ------------------------------------------------------------------ writing into a resource
def _put(node: Any, walk: tuple[tuple[str, int | None], ...], name: str, index: int | None, value: Any) -> bool:
    """Write `value` at element `name`[`index`] below the path `walk`; True if a list got padded
    below an index (a hole for `_compact`)."""
    holes = False
    for step, at in walk:
        if not isinstance(node, dict):
            raise _RuleError(f"{step}: a parent element already holds a value from another rule")
        if at is None:
            node = node.setdefault(step, {})
            continue
        items = node.setdefault(step, [])
        if not isinstance(items, list):
            raise _RuleError(f"{step}: already holds a non-list value from another rule")
        if len(items) <= at:
            holes |= len(items) < at
            items.extend([None] * (at + 1 - len(items)))
        if items[at] is None:
            items[at] = {}
        node = items[at]
    if not isinstance(node, dict):
        raise _RuleError(f"{name}: a parent element already holds a value from another rule")
    if index is None:
        node[name] = value
        return holes
    items = node.setdefault(name, [])
    if not isinstance(items, list):
        raise _RuleError(f"{name}: already holds a non-list value from another rule")
    if len(items) <= index:
        holes |= len(items) < index
        items.extend([None] * (index + 1 - len(items)))
    items[index] = value
    return holes


def _compact(node: Any) -> Any:
    """Without the holes rules left: None, empty objects and lists (a `when` skipped name[0], so a
    name[1] becomes the first name)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            value = _compact(value)
            if value is not None and value != {} and value != []:
                out[key] = value
        return out
    if isinstance(node, list):
        kept = (_compact(item) for item in node if item is not None)
        return [item for item in kept if item != {} and item != []]
    return node
