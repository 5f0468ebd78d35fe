"""The CCDL conformance runner: test cases in the layout the MII uses for its CCDL v3 examples.

    DIR/<name>.json                       the CCDL query (version 2 or 3)
    DIR/testdata/<name>-data.json         a FHIR Bundle (transaction or collection) with the patients
    DIR/testdata/<name>-expected.json     {"ccdl": "<name>.json", "referenceDate": "YYYY-MM-DD",
                                           "includedPatients": [Patient ids], "excludedPatients": [Patient ids]}

A case is an expected file. It passes when every included patient is in the cohort and no excluded
patient is; the reference date is "now". A case whose files are missing or broken, whose query is
invalid or whose data the loader rejects fails with the reason; nothing here raises for a case.

    find_cases(folder)                                   -> the expected files, sorted
    run_cases(folder, engine="duckdb", url=None, ...)    -> CcdlReport
    CcdlReport.lines()                                   -> a line per case, then 'N passed, M failed'

Each case's Bundle is read like a load (`dic.sources.read_fhir`, identifying elements kept: test
data), annotated like a load (`dic.terminology.annotate_resource`: the normalized lab values the
quantity filters compare), loaded without the trust center, the standard views refreshed, and the
query answered by `cohort_patients`. Materializing the standard views of a scratch repository
costs about 5 s (23 views at ~0.2 s each on DuckDB, 2 cores, even for a handful of resources), as
much as several queries (0.1-2 s each, mostly compiling and rendering the SQL), so cases whose
resources share no (type, id) are loaded side by side into one scratch repository:
membership is decided per patient, and a case only looks at its own Bundle's patients (an expected
id that is no Patient of its Bundle breaks the case). `isolate=True` gives each case its own.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from dic.cohort.ccdl import parse_ccdl
from dic.cohort.model import Query
from dic.cohort.select import cohort_patients
from dic.engines import Database, Engine, connect
from dic.errors import ConfigError, DefinitionError, DicError, InputError
from dic.repository import drop_schema, ensure_schema, load_records
from dic.sources import Entry, Rejection, read_fhir
from dic.terminology import annotate_resource
from dic.views import load_catalog, refresh_views

EXPECTED_SUFFIX = "-expected.json"
DATA_SUFFIX = "-data.json"
SHOWN_REJECTIONS = 3


@dataclass(frozen=True)
class CaseResult:
    """One case: passed, or why not (`reason`, and for an invalid query every problem)."""

    name: str
    passed: bool
    reason: str | None = None
    problems: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # included patients the cohort lacks
    unexpected: tuple[str, ...] = ()  # excluded patients the cohort has
    warnings: tuple[str, ...] = ()  # the query's (codes matched literally, ...)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class CcdlReport:
    cases: list[CaseResult] = field(default_factory=list)
    repositories: int = 0  # scratch repositories used
    engine: str = "duckdb"

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def failed(self) -> int:
        return len(self.cases) - self.passed

    def lines(self) -> Iterator[str]:
        """`PASS name`, `FAIL name: reason` (an invalid query's problems indented below), then the totals."""
        for case in self.cases:
            if case.passed:
                yield f"PASS {case.name}"
                continue
            yield f"FAIL {case.name}: {case.reason}"
            for problem in case.problems:
                yield f"  {problem}"
        yield f"{self.passed} passed, {self.failed} failed"

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "passed": self.passed, "failed": self.failed,
                "repositories": self.repositories, "cases": [c.as_dict() for c in self.cases]}


@dataclass
class _Case:
    """A case whose files are all readable: ready to load and run."""

    name: str
    query: Query
    reference_date: date
    included: list[str]
    excluded: list[str]
    entries: list[Entry]
    keys: set[tuple[str, str]]


def find_cases(folder: Path | str) -> list[Path]:
    """The expected files of `folder` (testdata/*-expected.json), sorted by case name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    return sorted((folder / "testdata").glob(f"*{EXPECTED_SUFFIX}"))


def case_name(expected: Path) -> str:
    return expected.name.removesuffix(EXPECTED_SUFFIX)


def run_cases(folder: Path | str, engine: Engine | str = Engine.duckdb, url: str | None = None, *,
              isolate: bool = False, scratch: Path | None = None) -> CcdlReport:
    """Run every case of `folder`; InputError if it holds none (an empty suite passes nothing)."""
    folder = Path(folder)
    expected_files = find_cases(folder)
    if not expected_files:
        raise InputError(f"{folder}: no CCDL cases (testdata/<name>{EXPECTED_SUFFIX})")
    engine = Engine(engine)
    if engine is Engine.postgres and not url:
        raise ConfigError("--engine postgres needs --url postgresql://user@host:port/database")
    results: dict[str, CaseResult] = {}
    ready: list[_Case] = []
    for path in expected_files:
        prepared = _prepare(folder, path)
        if isinstance(prepared, CaseResult):
            results[prepared.name] = prepared
        else:
            ready.append(prepared)
    packs = [[case] for case in ready] if isolate else _packs(ready)
    with tempfile.TemporaryDirectory(prefix="dic-ccdl-") as temporary:
        where = Path(scratch or temporary)
        for index, pack in enumerate(packs):
            for result in _run_pack(pack, _scratch_database(engine, url, where, index)):
                results[result.name] = result
    names = [case_name(p) for p in expected_files]
    return CcdlReport([results[n] for n in names], len(packs), str(engine))


# ---------------------------------------------------------------- reading a case
def _broken(name: str, reason: str) -> CaseResult:
    return CaseResult(name, False, reason)


def _prepare(folder: Path, expected_path: Path) -> _Case | CaseResult:
    name = case_name(expected_path)
    try:
        expected = orjson.loads(expected_path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as error:
        return _broken(name, f"broken case: testdata/{expected_path.name} is not readable JSON: {error}")
    checked = _check_expected(expected, expected_path.name)
    if isinstance(checked, str):
        return _broken(name, f"broken case: {checked}")
    ccdl_name, reference_date, included, excluded = checked
    ccdl_path, data_path = folder / ccdl_name, folder / "testdata" / f"{name}{DATA_SUFFIX}"
    for path in (ccdl_path, data_path):
        if not path.is_file():
            return _broken(name, f"broken case: {path.relative_to(folder)} is missing")
    try:
        query = parse_ccdl(ccdl_path.read_bytes(), source=ccdl_name)
    except DefinitionError as error:
        return CaseResult(name, False, f"invalid query {ccdl_name}: {len(error.problems)} problem(s)",
                          problems=tuple(str(p) for p in error.problems))
    entries, rejected = _read_bundle(data_path)
    if rejected:
        shown = "; ".join(f"{r.position}: {r.reason}" for r in rejected[:SHOWN_REJECTIONS])
        return _broken(name, f"data: {len(rejected)} record(s) rejected ({shown})")
    patients = {e.id for e in entries if e.resource_type == "Patient" and not e.delete}
    strangers = sorted(set(included + excluded) - patients)
    if strangers:
        return _broken(name, f"broken case: no Patient in testdata/{data_path.name} for [{', '.join(strangers)}]")
    keys = {(e.resource_type, e.id) for e in entries}
    return _Case(name, query, reference_date, included, excluded, entries, keys)


def _check_expected(expected: Any, file_name: str) -> tuple[str, date, list[str], list[str]] | str:
    """The expected file's fields, or what is wrong with it."""
    if not isinstance(expected, dict):
        return f"{file_name} is not a JSON object"
    ccdl = expected.get("ccdl")
    if not isinstance(ccdl, str) or not ccdl:
        return f"{file_name}: 'ccdl' (the query's file name) is missing"
    try:
        reference_date = date.fromisoformat(str(expected.get("referenceDate")))
    except ValueError:
        return f"{file_name}: 'referenceDate' {expected.get('referenceDate')!r} is not a date YYYY-MM-DD"
    lists = []
    for key in ("includedPatients", "excludedPatients"):
        value = expected.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return f"{file_name}: '{key}' is not a list of Patient ids"
        lists.append(value)
    included, excluded = lists
    if not included and not excluded:
        return f"{file_name}: names no patients"
    both = sorted(set(included) & set(excluded))
    if both:
        return f"{file_name}: [{', '.join(both)}] both included and excluded"
    return ccdl, reference_date, included, excluded


def _annotated_entry(resource: dict[str, Any], source: str, position: str) -> Entry:
    annotate_resource(resource)  # as a load does: the normalized-value extension the quantity filters compare
    return Entry.of(resource, source, position)


def _read_bundle(path: Path) -> tuple[list[Entry], list[Rejection]]:
    entries: list[Entry] = []
    rejected: list[Rejection] = []
    for record in read_fhir(path, keep_identifying=True, prepare=_annotated_entry):
        (rejected if isinstance(record, Rejection) else entries).append(record)
    if not entries and not rejected:
        rejected.append(Rejection(str(path), "file", "the Bundle holds no resources", b"", 0))
    return entries, rejected


# ---------------------------------------------------------------- running
def _packs(cases: list[_Case]) -> list[list[_Case]]:
    """Cases grouped first-fit into repositories whose resources share no (type, id)."""
    packs: list[tuple[list[_Case], set[tuple[str, str]]]] = []
    for case in cases:
        for members, keys in packs:
            if keys.isdisjoint(case.keys):
                members.append(case)
                keys.update(case.keys)
                break
        else:
            packs.append(([case], set(case.keys)))
    return [members for members, _ in packs]


def _scratch_database(engine: Engine, url: str | None, scratch: Path, index: int) -> Database:
    if engine is Engine.duckdb:
        return connect(engine, scratch / f"ccdl-{index}.duckdb")
    if engine is Engine.spark:
        return connect(engine, url or f"local[2]?warehouse={scratch / 'warehouse'}&database=ccdl")
    return connect(engine, str(url))


def _run_pack(pack: list[_Case], db: Database) -> list[CaseResult]:
    started = time.perf_counter()
    try:
        drop_schema(db)  # a server database is reused: start every repository empty
        ensure_schema(db)
        load_records(db, "ccdl conformance cases", (e for case in pack for e in case.entries))
        refresh_views(db, load_catalog(), full=True)
    except Exception as error:  # noqa: BLE001 (a repository that cannot be set up fails its cases, not the run)
        db.close()
        return [_broken(case.name, f"loading the data failed: {_first_line(error)}") for case in pack]
    setup_s = (time.perf_counter() - started) / len(pack)
    try:
        return [_run_case(case, db, setup_s) for case in pack]
    finally:
        db.close()


def _run_case(case: _Case, db: Database, setup_s: float) -> CaseResult:
    started = time.perf_counter()
    try:
        keys = cohort_patients(db, case.query, case.reference_date)
    except DicError as error:
        return CaseResult(case.name, False, f"{type(error).__name__}: {_first_line(error)}",
                          problems=tuple(str(p) for p in getattr(error, "problems", ())))
    except Exception as error:  # noqa: BLE001 (a crashing case is a failed case, not an aborted run)
        return CaseResult(case.name, False, f"crashed: {type(error).__name__}: {_first_line(error)}")
    cohort = {key.removeprefix("Patient/") for key in keys}
    missing = tuple(p for p in case.included if p not in cohort)
    unexpected = tuple(p for p in case.excluded if p in cohort)
    seconds = round(setup_s + time.perf_counter() - started, 3)
    warnings = tuple(case.query.warnings)
    if missing or unexpected:
        reason = f"missing [{', '.join(missing)}] unexpected [{', '.join(unexpected)}]"
        return CaseResult(case.name, False, reason, missing=missing, unexpected=unexpected, warnings=warnings,
                          seconds=seconds)
    return CaseResult(case.name, True, warnings=warnings, seconds=seconds)


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0] if lines else type(error).__name__
