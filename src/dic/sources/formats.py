"""Which reader reads what: the source formats `dic load --format NAME` knows, and auto-detection.

    source_formats()                      -> {name: SourceFormat}  (fhir, hl7v2, p21, vcf, and one per shipped mapping)
    plan_load(paths, format_name=None)    -> [(SourceFormat, unit)]  one load batch per unit, in load order

A unit is what one batch loads: a file (FHIR, HL7 v2, VCF) or a folder (a §21 export, whose ICD
and OPS rows name their patient only through FALL; a mapped registry, whose files refer to each
other). Detection goes by what is unambiguous: a folder with FALL.csv is a §21 export, a folder
holding every file of a shipped mapping is that registry, `.hl7` and `MSH|` files are HL7 v2,
`.vcf(.gz)` is VCF, `.ndjson`/`.json` is FHIR. Anything else must be named with --format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from dic.errors import InputError
from dic.sources.fhir_files import find_fhir_files, is_fhir_file, read_fhir
from dic.sources.hl7v2 import is_hl7v2_file, read_hl7v2
from dic.sources.mapping import detect_mapping, load_mapping, read_mapped, shipped_mappings
from dic.sources.p21 import is_p21_folder, read_p21
from dic.sources.record import SourceResource
from dic.sources.vcf import is_vcf_file, read_vcf


@dataclass(frozen=True)
class SourceFormat:
    name: str
    summary: str
    read: Callable[[Path], Iterator[Any]]  # one unit -> SourceResource | Rejection | PatientMerge
    is_unit: Callable[[Path], bool]  # a file or folder this format reads as one batch
    folders: bool = False  # its units are folders


def _read_fhir(path: Path) -> Iterator[Any]:
    return read_fhir(path, prepare=SourceResource)


def _mapped(name: str, spec: Path) -> SourceFormat:
    mapping = load_mapping(spec)
    return SourceFormat(name, f"CSV/Excel mapped by {spec.name}", lambda path: read_mapped(path, mapping),
                        lambda path: path.is_dir() and detect_mapping(path) == name, folders=True)


@cache
def source_formats() -> dict[str, SourceFormat]:
    formats = [
        SourceFormat("fhir", "FHIR R4 NDJSON(.gz), Bundles, resources", _read_fhir,
                     lambda path: path.is_file() and is_fhir_file(path)),
        SourceFormat("hl7v2", "HL7 v2.3-2.6 ADT^A01/A03/A04/A08/A11/A40, ORU^R01", read_hl7v2,
                     lambda path: path.is_file() and is_hl7v2_file(path)),
        SourceFormat("p21", "§21 KHEntgG billing export folder (FALL, FAB, ICD, OPS, ENTGELTE)", read_p21,
                     lambda path: path.is_dir() and is_p21_folder(path), folders=True),
        SourceFormat("vcf", "VCF 4.x -> MII molecular genetics Observations", read_vcf,
                     lambda path: path.is_file() and is_vcf_file(path)),
    ]
    formats += [_mapped(name, spec) for name, spec in sorted(shipped_mappings().items())]
    return {f.name: f for f in formats}


def mapping_format(spec: Path) -> SourceFormat:
    """A format for a mapping spec of one's own (`dic load --mapping FILE`): every folder is read with it."""
    mapping = load_mapping(spec)
    return SourceFormat(f"mapping:{spec.name}", f"CSV/Excel mapped by {spec}", lambda path: read_mapped(path, mapping),
                        lambda path: True, folders=True)


def plan_load(paths: Iterable[Path | str], format_name: str | None = None,
              fmt: SourceFormat | None = None) -> list[tuple[SourceFormat, Path]]:
    """The load units under `paths` with their format, in a stable order (FHIR Patient files first).
    A named format reads every path given with it; without one, each unit is detected."""
    formats = source_formats()
    if fmt is None and format_name is not None:
        if format_name not in formats:
            raise InputError(f"unknown format {format_name!r}; known: {', '.join(formats)}")
        fmt = formats[format_name]
    plan: list[tuple[SourceFormat, Path]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        found = _units(path, [fmt] if fmt else list(formats.values()))
        if not found:
            wanted = f"no {fmt.name} input" if fmt else "no input of a known format"
            raise InputError(f"{path}: {wanted} found (formats: {', '.join(formats)}; name one with --format)")
        plan += found
    return _patients_first(plan)


def _units(path: Path, candidates: list[SourceFormat]) -> list[tuple[SourceFormat, Path]]:
    if path.is_dir() and len(candidates) == 1 and candidates[0].folders:
        return [(candidates[0], path)]
    for fmt in candidates:
        if fmt.is_unit(path):
            return [(fmt, path)]
    if path.is_dir():
        return [unit for child in sorted(path.iterdir()) for unit in _units(child, candidates)]
    if len(candidates) == 1 and not candidates[0].folders:  # named: read it, and let the reader say what is wrong
        return [(candidates[0], path)]
    return []


def _patients_first(plan: list[tuple[SourceFormat, Path]]) -> list[tuple[SourceFormat, Path]]:
    """FHIR Patient files before the others: references resolve only to registered patients."""
    patients = {p for p in find_fhir_files([path for fmt, path in plan if fmt.name == "fhir"])
                if p.name.startswith("Patient")}
    return sorted(plan, key=lambda unit: unit[1] not in patients)
