"""Structural checks of a FHIR R4 resource that the repository insists on before storing it.

Cheap on purpose (it runs on every resource of every load): the resource type is an R4
type, the id is a valid FHIR id, and each top-level element has the JSON kind its R4 type
demands (a string for `birthDate`, an object for `subject`, ...). Full profile validation
belongs to the quality layer. Messages name the element, never its value.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from typing import Any

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_INTEGER_TYPES = {"integer", "positiveInt", "unsignedInt", "integer64"}
_KIND_NAMES = {bool: "boolean", int: "integer", float: "decimal", str: "string", dict: "object", list: "array"}


@cache
def _r4_model() -> tuple[frozenset[str], dict[str, dict[str, tuple[frozenset[type], str]]]]:
    """R4 resource types, and per type the JSON kinds each top-level element accepts.

    fhirpathpy ships the R4 type tables it evaluates with; we read the same tables rather
    than keeping a second copy of the R4 structure definitions. Checks compare exact
    Python types (`type(v) in kinds`), so a JSON boolean is never taken for an integer.
    """
    root = files("fhirpathpy") / "models" / "r4"
    parents: dict[str, str] = json.loads((root / "type2Parent.json").read_text())
    types = frozenset(t for t, p in parents.items() if p in {"DomainResource", "Resource"} and t[0].isupper())
    types |= {"Bundle", "Binary", "Parameters"}
    path_types: dict[str, str] = json.loads((root / "path2Type.json").read_text())
    elements: dict[str, dict[str, tuple[frozenset[type], str]]] = {t: {} for t in types}
    for path, fhir_type in path_types.items():
        resource_type, _, element = path.partition(".")
        if resource_type in elements and "." not in element and element not in {"resourceType", "id", "contained"}:
            elements[resource_type][element] = (_json_kinds(fhir_type), fhir_type)
    return types, elements


def _json_kinds(fhir_type: str) -> frozenset[type]:
    if fhir_type == "boolean":
        return frozenset({bool})
    if fhir_type in _INTEGER_TYPES:
        return frozenset({int})
    if fhir_type == "decimal":
        return frozenset({int, float})
    if fhir_type[0].islower() or fhir_type.startswith("System."):
        return frozenset({str})
    return frozenset({dict})


def resource_types() -> frozenset[str]:
    """Every FHIR R4 resource type name."""
    return _r4_model()[0]


def check_resource(resource: Any) -> str | None:
    """The reason `resource` cannot be stored, or None if it can."""
    if not isinstance(resource, dict):
        return f"not a FHIR resource: a JSON {_KIND_NAMES.get(type(resource), 'value')}, not an object"
    resource_type = resource.get("resourceType")
    if resource_type is None:
        return "not a FHIR resource: no resourceType"
    types, elements = _r4_model()
    if not isinstance(resource_type, str) or resource_type not in types:
        return "unknown resourceType (not a FHIR R4 resource type)"
    rid = resource.get("id")
    if rid is None:
        return f"{resource_type} has no id"
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        return f"{resource_type}.id is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})"
    expected = elements[resource_type]
    for element, value in resource.items():
        rule = expected.get(element)
        if rule is None:
            continue
        kinds, fhir_type = rule
        for item in value if type(value) is list else (value,):
            if type(item) not in kinds:
                got = _KIND_NAMES.get(type(item), "value") if item is not None else "null"
                return f"{resource_type}.{element}: expected {fhir_type}, got a JSON {got}"
    return None
