"""FHIR R4 resource helpers shared by every layer above."""

from dic.fhir.content import content_hash, last_updated
from dic.fhir.elements import Element, choice_element, choice_types, element, known_type
from dic.fhir.identifying_data import remove_identifying
from dic.fhir.resource_check import check_resource, resource_types

__all__ = [
    "Element",
    "check_resource",
    "choice_element",
    "choice_types",
    "content_hash",
    "element",
    "known_type",
    "last_updated",
    "remove_identifying",
    "resource_types",
]
