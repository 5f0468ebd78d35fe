"""Input: readers that turn source files into FHIR R4 records for the repository."""

from __future__ import annotations

from typing import Any

from dic.sources.fhir_files import find_fhir_files, is_fhir_file, read_fhir
from dic.sources.identity_records import IdentityRecord, patient_idat, patient_number, read_identity_records
from dic.sources.record import Entry, PatientMerge, Rejection, SourceResource

_BULK_EXPORT = {"BulkExportResult", "ExportProgress", "ExportedFile", "export_to_folder"}


def __getattr__(name: str) -> Any:
    # The $export client pulls in httpx; only `dic load --bulk-export` needs it.
    if name in _BULK_EXPORT:
        from dic.sources import bulk_export

        return getattr(bulk_export, name)
    raise AttributeError(f"module 'dic.sources' has no attribute {name!r}")


__all__ = [
    "BulkExportResult",
    "Entry",
    "ExportProgress",
    "ExportedFile",
    "IdentityRecord",
    "PatientMerge",
    "Rejection",
    "SourceResource",
    "export_to_folder",
    "find_fhir_files",
    "is_fhir_file",
    "patient_idat",
    "patient_number",
    "read_fhir",
    "read_identity_records",
]
