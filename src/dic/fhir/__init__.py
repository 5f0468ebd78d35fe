"""FHIR R4 resource helpers shared by every layer above."""

from dic.fhir.content import content_hash, last_updated
from dic.fhir.resource_check import check_resource, resource_types

__all__ = ["check_resource", "content_hash", "last_updated", "resource_types"]
