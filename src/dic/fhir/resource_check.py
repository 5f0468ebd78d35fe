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
def _r4_model() -> tuple[frozenset[str], dict[str, str]]:
    # fhirpathpy ships the R4 type tables it evaluates with; we read the same tables
    # rather than keeping a second copy of the R4 structure definitions.
    root = files("fhirpathpy") / "models" / "r4"
    parents: dict[str, str] = json.loads((root / "type2Parent.json").read_text())
    types = frozenset(t for t, p in parents.items() if p in {"DomainResource", "Resource"} and t[0].isupper())
    path_types: dict[str, str] = json.loads((root / "path2Type.json").read_text())
    return types | {"Bundle", "Binary", "Parameters"}, path_types


def resource_types() -> frozenset[str]:
    """Every FHIR R4 resource type name."""
    return _r4_model()[0]


def _kind_ok(fhir_type: str, value: Any) -> bool:
    if fhir_type == "boolean":
        return isinstance(value, bool)
    if fhir_type in _INTEGER_TYPES:
        return isinstance(value, int) and not isinstance(value, bool)
    if fhir_type == "decimal":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if fhir_type[0].islower() or fhir_type.startswith("System."):
        return isinstance(value, str)
    return isinstance(value, dict)


def check_resource(resource: Any) -> str | None:
    """The reason `resource` cannot be stored, or None if it can."""
    if not isinstance(resource, dict):
        return f"not a FHIR resource: a JSON {_KIND_NAMES.get(type(resource), 'value')}, not an object"
    resource_type = resource.get("resourceType")
    if resource_type is None:
        return "not a FHIR resource: no resourceType"
    types, path_types = _r4_model()
    if not isinstance(resource_type, str) or resource_type not in types:
        return "unknown resourceType (not a FHIR R4 resource type)"
    rid = resource.get("id")
    if rid is None:
        return f"{resource_type} has no id"
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        return f"{resource_type}.id is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})"
    for element, value in resource.items():
        fhir_type = path_types.get(f"{resource_type}.{element}")
        if fhir_type is None or element in {"resourceType", "id", "contained"}:
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not _kind_ok(fhir_type, item):
                got = _KIND_NAMES.get(type(item), "value") if item is not None else "null"
                return f"{resource_type}.{element}: expected {fhir_type}, got a JSON {got}"
    return None
