"""Input: readers that turn source files into FHIR R4 records for the repository."""

from dic.sources.fhir_files import find_fhir_files, is_fhir_file, read_fhir
from dic.sources.record import Entry, Rejection

__all__ = ["Entry", "Rejection", "find_fhir_files", "is_fhir_file", "read_fhir"]
