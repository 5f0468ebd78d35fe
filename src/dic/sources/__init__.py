"""Input: readers that turn source files into FHIR R4 records for the repository."""

from __future__ import annotations

from typing import Any

from dic.sources.fhir_files import find_fhir_files, is_fhir_file, read_fhir
from dic.sources.identity_records import IdentityRecord, patient_idat, patient_number, read_identity_records
from dic.sources.record import Entry, PatientMerge, Rejection, SourceResource

_BULK_EXPORT = {"BulkExportResult", "ExportProgress", "ExportedFile", "export_to_folder"}


_FORMATS = {"SourceFormat", "mapping_format", "plan_load", "source_formats"}
_LIVE_FEED = {"MllpListener": "dic.sources.mllp", "Spool": "dic.sources.mllp", "message_records": "dic.sources.hl7v2"}


def __getattr__(name: str) -> Any:
    # The $export client pulls in httpx; only `dic load --bulk-export` needs it.
    if name in _BULK_EXPORT:
        from dic.sources import bulk_export

        return getattr(bulk_export, name)
    # The adapters pull in python-hl7, pysam and openpyxl; FHIR loads do without them.
    if name in _FORMATS:
        from dic.sources import formats

        return getattr(formats, name)
    if name in _LIVE_FEED:
        from importlib import import_module

        return getattr(import_module(_LIVE_FEED[name]), name)
    raise AttributeError(f"module 'dic.sources' has no attribute {name!r}")


__all__ = [
    "BulkExportResult",
    "Entry",
    "ExportProgress",
    "ExportedFile",
    "IdentityRecord",
    "MllpListener",
    "PatientMerge",
    "Rejection",
    "SourceFormat",
    "SourceResource",
    "Spool",
    "export_to_folder",
    "find_fhir_files",
    "is_fhir_file",
    "mapping_format",
    "message_records",
    "patient_idat",
    "patient_number",
    "plan_load",
    "read_fhir",
    "read_identity_records",
    "source_formats",
]
