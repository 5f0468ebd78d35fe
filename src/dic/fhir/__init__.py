"""FHIR R4 resource helpers shared by every layer above."""

from dic.fhir.resource_check import check_resource, resource_types

__all__ = ["check_resource", "resource_types"]
